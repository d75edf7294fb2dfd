"""The gateway's own count of answers by status (`pr_http_requests_total`) against what the clients saw.

A 5xx in the gateway's metrics that no client received is a phantom error: the 5xx alert would fire
for it. Issue #16 found 83 in one run, disconnects counted as 500; a client that leaves is to be
counted as 499 (nginx's "client closed request"). wrk stopping at the end of each run and the stream
client's cut connections make such disconnects in every run, so every run checks it.
"""

from __future__ import annotations

import re
import urllib.request
from collections import Counter
from typing import Any

METRIC = "pr_http_requests_total"
_SAMPLE = re.compile(rf'^{METRIC}{{(?P<labels>[^}}]*)}} (?P<value>[0-9.e+]+)$')
_STATUS = re.compile(r'status="(?P<status>[^"]*)"')


def status_class(status: str) -> str:
    """"2xx", "4xx", "5xx" ... for a numeric status; 499 (client closed) stays itself; anything else as is."""
    if status == "499" or not status.isdigit() or len(status) != 3:
        return status
    return f"{status[0]}xx"


def parse(exposition: str) -> dict[str, int]:
    """`pr_http_requests_total` summed by status class over every route and method."""
    found: Counter[str] = Counter()
    for line in exposition.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        status = _STATUS.search(match["labels"])
        if status is not None:
            found[status_class(status["status"])] += int(float(match["value"]))
    return dict(found)


def scrape(base_url: str, token: str, timeout: float = 10.0) -> dict[str, int]:
    """GET /metrics on the public port with the metrics bearer token (loopback only); by status class.

    Raises OSError (urllib.error.URLError) when the gateway does not answer.
    """
    if not base_url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing to scrape anything but 127.0.0.1: {base_url}")
    request = urllib.request.Request(base_url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (loopback, checked above)
        return parse(answer.read().decode())


def tally(counter: Counter[str], *, ok: int = 0, statuses: dict[str, int] | None = None) -> None:
    """Add a client run's answers: `ok` 2xx, and non-2xx counts by status (wrk's, or the stream client's)."""
    counter["2xx"] += ok
    for status, count in (statuses or {}).items():
        counter[status_class(str(status))] += count


def compare(gateway: dict[str, int], clients: dict[str, int]) -> dict[str, Any]:
    """Both counts by class, and the 5xx the gateway counted that no client saw (`unseen_5xx`, 0 is right)."""
    return {"gateway": dict(sorted(gateway.items())), "clients": dict(sorted(clients.items())),
            "unseen_5xx": max(0, gateway.get("5xx", 0) - clients.get("5xx", 0))}
