"""bench/targets.py: each goal of issue #16 judged from results.json's data (no timing here)."""

from __future__ import annotations

import pytest

from bench import targets
from tests.bench.results_fixture import results


def _by_key() -> dict[str, dict]:
    return {item["key"]: item for item in targets.evaluate(results())}


def test_every_goal_of_the_issue_is_judged_once_with_its_baseline() -> None:
    found = targets.evaluate(results())
    assert [item["key"] for item in found] == [goal.key for goal in targets.GOALS]
    assert all(item["baseline"] for item in found)
    assert _by_key()["chat_cpu"]["baseline"] == "2.85 ms"


def test_cpu_goals_read_the_gateway_cpu_at_c16() -> None:
    found = _by_key()
    assert found["chat_cpu"]["measured"] == 0.9 and found["chat_cpu"]["met"] is True
    assert found["stream_cpu"]["measured"] == 2.5 and found["stream_cpu"]["met"] is False
    assert found["embed_cpu"]["met"] is True


def test_the_upstream_ratio_divides_by_the_emulators_own_cpu() -> None:
    item = _by_key()["chat_cpu_ratio"]
    assert item["measured"] == pytest.approx(9.0)
    assert item["met"] is True
    assert "0.100 ms" in item["detail"]


def test_added_latency_is_gateway_p50_minus_direct_p50_at_c1() -> None:
    found = _by_key()
    assert found["chat_added"]["measured"] == pytest.approx(0.8)
    assert found["stream_added"]["measured"] == pytest.approx(2.0)
    assert found["stream_added"]["met"] is False
    assert found["ttft_added"]["measured"] == pytest.approx(0.8)


def test_sqlite_goals_use_the_p99_over_p50_and_the_slowest_request() -> None:
    found = _by_key()
    assert found["sqlite_tail"]["measured"] == pytest.approx(3.0) and found["sqlite_tail"]["met"] is True
    assert found["sqlite_stall"]["measured"] == 300.0 and found["sqlite_stall"]["met"] is False
    assert "missed by 200.00 ms" in found["sqlite_stall"]["gap"]


def test_idle_rss_reads_mib_and_the_older_mb_key() -> None:
    assert _by_key()["idle_rss"]["measured"] == 58.0
    old = results()
    old["backends"]["postgres"] = {"idle_rss_mb_at_start": 81.2}
    assert targets.idle_rss(old) == 81.2


def test_scaleout_is_judged_on_the_throughput_ratio() -> None:
    item = _by_key()["scaleout"]
    assert item["measured"] == 1.8 and item["met"] is True
    assert "two dedicated cores" in item["detail"]


def test_missing_measurements_are_not_measured_not_failures() -> None:
    empty = {"scenarios": [], "backends": {}}
    assert all(item["met"] is None and item["gap"] == "not measured" for item in targets.evaluate(empty))
    assert targets.also_checked(empty) == []


def test_worst_stall_falls_back_to_the_samples_of_older_results() -> None:
    data = results()
    data["scenarios"][-1].pop("max_ms")
    data["scenarios"][-1]["samples"][0]["max_ms"] = 250.0
    assert targets.worst_stall(data, "sqlite", "chat", 16) == 250.0
    data["scenarios"][-1]["samples"][0].pop("max_ms")
    assert targets.worst_stall(data, "sqlite", "chat", 16) is None


@pytest.mark.parametrize(("rate", "cpu", "expected"), [(1000, 1.0, 2), (700, 1.0, 1), (701, 1.0, 2), (1, 5.0, 1),
                                                       (10_000, 0.7, 10)])
def test_replicas_needed_rounds_up_at_70_percent(rate: float, cpu: float, expected: int) -> None:
    assert targets.replicas_needed(rate, cpu) == expected


def test_replicas_needed_refuses_a_non_positive_cost() -> None:
    with pytest.raises(ValueError):
        targets.replicas_needed(100, 0)
    with pytest.raises(ValueError):
        targets.replicas_needed(100, 1.0, utilisation=0)
