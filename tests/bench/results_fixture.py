"""A small results.json-shaped dict for the report tests (numbers chosen to hit each verdict)."""

from __future__ import annotations

from typing import Any


def scenario(target: str, kind: str, concurrency: int, *, cpu: float | None, p50: float = 2.0, p99: float = 8.0,
             rps: float = 500.0, max_ms: float | None = 20.0, pg_cpu: float | None = None) -> dict[str, Any]:
    median = {"rps": rps, "p50": p50, "p90": p50 * 2, "p99": p99, "p99_9": p99 * 1.5, "max_ms": max_ms,
              "cpu_ms_per_request": cpu, "pg_cpu_ms_per_request": pg_cpu, "peak_rss_mib": 50.0,
              "foreign_core_pct": 3.0, "capacity": 1000 / cpu if cpu else None, "load1": 1.0}
    sample = {**median, "requests": 1000, "ok": 1000, "errors": 0,
              "other_cpu_ms_per_request": {"wrk": 0.05, "emulator": 0.1}, "worker_cpu_split": None}
    return {"target": target, "kind": kind, "label": kind, "concurrency": concurrency, "median": median,
            "max_ms": max_ms, "errors": 0, "requests": 1000, "samples": [sample], "db": {}}


def correctness(passed: bool = True) -> dict[str, Any]:
    return {"passed": passed, "client_2xx": 10, "client_2xx_repeated_ids": 0, "usage_events": 10,
            "client_2xx_without_event": 0 if passed else 1, "client_2xx_event_not_success": 0,
            "duplicate_events": 0, "events_not_seen_by_client": {}, "accounts_checked": 1,
            "accounts_unbalanced": [], "open_holds": 0, "usage_cost_pico": 5, "usage_ledger_debits_pico": 5,
            "examples_missing": []}


def results() -> dict[str, Any]:
    """Chat CPU 0.9 ms (met), 9x the upstream (met), stream 2.5 ms (missed), SQLite with a 300 ms stall."""
    scenarios = [
        scenario("direct", "chat", 1, cpu=0.1, p50=0.2), scenario("direct", "chat", 16, cpu=0.1),
        scenario("direct", "stream", 1, cpu=0.1, p50=0.3), scenario("direct", "stream", 16, cpu=0.1),
        scenario("direct", "embed", 16, cpu=0.1),
        scenario("postgres", "chat", 1, cpu=2.0, p50=1.0), scenario("postgres", "chat", 16, cpu=0.9, pg_cpu=0.4),
        scenario("postgres", "stream", 1, cpu=2.0, p50=2.3), scenario("postgres", "stream", 16, cpu=2.5),
        scenario("postgres", "embed", 16, cpu=0.5),
        scenario("sqlite", "chat", 16, cpu=1.5, p50=4.0, p99=12.0, max_ms=300.0),
    ]
    two = scenario("scaleout", "chat", 32, cpu=1.0, rps=1800.0)
    two["samples"][0]["worker_cpu_split"] = [0.5, 0.5]
    one = scenario("scaleout", "chat", 32, cpu=0.9, rps=1000.0)
    return {
        "command": "python -m bench --quick", "started": "2026-11-30 13:00:00 UTC", "finished": "later",
        "options": {"gateway_core": 1, "load_core": 0, "redis_url": "redis://127.0.0.1:6379/13", "warmup": 0,
                    "reps": 1, "duration": 1, "scenarios": ["chat", "stream", "embed"], "skip": []},
        "source": {"commit": "abc1234", "uncommitted": ""},
        "scenarios": scenarios,
        "ttft_direct": {"streams": 30, "complete": 30, "ttft_ms": {"p50": 0.4, "p90": 0.5, "p99": 0.6}},
        "backends": {
            "postgres": {"idle_rss_mib_at_start": 58.0, "correctness": correctness(),
                         "ttft": {"streams": 30, "complete": 30, "ttft_ms": {"p50": 1.2, "p90": 2.0, "p99": 3.0}}},
            "sqlite": {"idle_rss_mib_at_start": 57.0, "correctness": correctness()},
            "scaleout": {"kind": "chat", "connections": 32, "correctness": correctness(),
                         "runs": {"1": {"workers": 1, "cores": [1], "idle_rss_mib": [55.0], **one},
                                  "2": {"workers": 2, "cores": [0, 1], "idle_rss_mib": [55.0, 56.0], **two}},
                         "ratio": {"throughput": 1.8, "cpu_per_request": 1.11, "capacity": 1.8}},
        },
    }
