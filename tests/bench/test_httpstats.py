"""bench/httpstats.py: the gateway's answers by status against the clients' (phantom 5xx)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import httpstats, targets
from tests.bench.results_fixture import results

EXPOSITION = """# HELP pr_http_requests_total HTTP requests answered.
# TYPE pr_http_requests_total counter
pr_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 1000.0
pr_http_requests_total{method="GET",route="/health",status="200"} 12.0
pr_http_requests_total{method="POST",route="/v1/chat/completions",status="499"} 7.0
pr_http_requests_total{method="POST",route="/v1/chat/completions",status="500"} 2.0
pr_http_requests_total{method="POST",route="/v1/embeddings",status="429"} 1.0
pr_http_request_duration_seconds_count{method="POST",route="/v1/embeddings",status="500"} 9.0
"""


def test_parse_sums_the_counter_by_status_class() -> None:
    assert httpstats.parse(EXPOSITION) == {"2xx": 1012, "499": 7, "5xx": 2, "4xx": 1}


@pytest.mark.parametrize(("status", "expected"), [("200", "2xx"), ("499", "499"), ("404", "4xx"), ("503", "5xx"),
                                                  ("0", "0"), ("weird", "weird")])
def test_status_class(status: str, expected: str) -> None:
    assert httpstats.status_class(status) == expected


def test_tally_adds_ok_and_non_2xx_by_class() -> None:
    seen: Counter[str] = Counter()
    httpstats.tally(seen, ok=10, statuses={"502": 1, "429": 2})
    httpstats.tally(seen, ok=5)
    assert seen == Counter({"2xx": 15, "4xx": 2, "5xx": 1})


def test_compare_counts_only_the_5xx_no_client_saw() -> None:
    assert httpstats.compare({"2xx": 10, "5xx": 3}, {"2xx": 9, "5xx": 1})["unseen_5xx"] == 2
    assert httpstats.compare({"2xx": 10, "499": 4}, {"2xx": 10})["unseen_5xx"] == 0


def test_scrape_refuses_anything_but_loopback() -> None:
    with pytest.raises(ValueError):
        httpstats.scrape("http://example.com:8000", "t" * 32)


def test_phantom_5xx_goal_sums_every_gateway() -> None:
    data = results()
    assert targets.unseen_5xx(data) is None
    data["backends"]["postgres"]["http_statuses"] = {"unseen_5xx": 2}
    data["backends"]["scaleout"]["runs"]["2"]["http_statuses"] = {"unseen_5xx": 1}
    assert targets.unseen_5xx(data) == 3
    item = next(item for item in targets.also_checked(data) if item["key"] == "phantom_5xx")
    assert item["met"] is False and item["measured"] == 3
