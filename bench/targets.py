"""The goals of issue #16, its fixed "now" baseline, and each goal's verdict from one run's results.

The verdicts read only results.json's data (medians of the measured runs), so `--report-only`
re-renders them. CPU per request, not req/s, decides the throughput goals: on a shared machine
req/s follows whatever else runs, the gateway's own CPU per request does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("chat", "stream", "embed")
KIND_LABEL = {"chat": "chat, non-stream", "stream": "chat, stream (32 tokens)", "embed": "embeddings"}

# The "now" column, kept as the fixed point the new numbers are shown beside.
BASELINE_SOURCE = ("issue #16's \"now\" column: one side-by-side run with the LiteLLM proxy on the reference "
                   "machine (2 shared cores, gateway alone on one core, fake Ollama on the other, PostgreSQL + "
                   "Redis, one worker, medians of 3 × 10 s) in the week the issue was filed (to 2026-11-30), "
                   "before its changes; quoted from the issue, not re-measured")

SCALEOUT_RATIO = 1.8  # "close to twice": what the goal "≈ 2x" is judged against
SQLITE_P99_OVER_P50 = 5.0
SQLITE_STALL_MS = 100.0


@dataclass(frozen=True)
class Goal:
    key: str
    label: str  # what is measured
    goal: str  # the wording
    limit: float
    unit: str
    at_least: bool
    baseline: str  # the "now"


GOALS: tuple[Goal, ...] = (
    Goal("chat_cpu", "gateway CPU per non-streaming chat (c=16)", "≤ 1 ms (≥ 1,000 req/s per core)", 1.0, "ms",
         False, "2.85 ms"),
    Goal("chat_cpu_ratio", "the same ÷ the upstream's (emulator's) CPU per request", "≤ 10x", 10.0, "x", False,
         "26x"),
    Goal("stream_cpu", "gateway CPU per stream, 32 tokens (c=16)", "≤ 2 ms (≥ 500 streams/s per core)", 2.0, "ms",
         False, "4.09 ms"),
    Goal("embed_cpu", "gateway CPU per embeddings request (c=16)", "≤ 0.7 ms (≥ 1,500 req/s per core)", 0.7, "ms",
         False, "2.63 ms"),
    Goal("chat_added", "added p50 at c=1, chat", "≤ 1 ms", 1.0, "ms", False, "8.1 ms"),
    Goal("stream_added", "added p50 at c=1, stream to its end", "≤ 1.5 ms", 1.5, "ms", False, "10.1 ms"),
    Goal("ttft_added", "added time to first token (p50, c=1)", "≤ 1 ms", 1.0, "ms", False, "4–7 ms"),
    Goal("sqlite_tail", "embedded default (SQLite), chat c=16: p99 ÷ p50", f"≤ {SQLITE_P99_OVER_P50:g}x",
         SQLITE_P99_OVER_P50, "x", False, "p99 2.2 s (5.55 ms CPU)"),
    Goal("sqlite_stall", "embedded default (SQLite), chat c=16: slowest request", f"≤ {SQLITE_STALL_MS:g} ms",
         SQLITE_STALL_MS, "ms", False, "stalls of 1.5–5.2 s"),
    Goal("idle_rss", "idle RSS (one worker, after start)", "≤ 60 MiB", 60.0, "MiB", False, "81 MiB"),
    Goal("scaleout", "2 workers on 2 cores ÷ 1 worker on 1 core, throughput", f"≈ 2x (≥ {SCALEOUT_RATIO:g}x)",
         SCALEOUT_RATIO, "x", True, "not measured"),
)


def find(results: dict[str, Any], target: str, kind: str, concurrency: int) -> dict[str, Any] | None:
    """The scenario of results.json for (target, kind, concurrency), or None."""
    for scenario in results.get("scenarios", []):
        if (scenario["target"], scenario["kind"], scenario["concurrency"]) == (target, kind, concurrency):
            return dict(scenario)
    return None


def median(results: dict[str, Any], target: str, kind: str, concurrency: int, name: str) -> float | None:
    scenario = find(results, target, kind, concurrency)
    return None if scenario is None else scenario["median"].get(name)


def worst_stall(results: dict[str, Any], target: str, kind: str, concurrency: int) -> float | None:
    """The slowest request over the measured runs (older results only kept medians: None)."""
    scenario = find(results, target, kind, concurrency)
    if scenario is None:
        return None
    if scenario.get("max_ms") is not None:
        return float(scenario["max_ms"])
    stalls = [sample["max_ms"] for sample in scenario.get("samples", []) if sample.get("max_ms") is not None]
    return max(stalls, default=None)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def added(results: dict[str, Any], kind: str) -> float | None:
    """Gateway (PostgreSQL + Redis) p50 at c=1 minus the direct path's."""
    gateway, direct = median(results, "postgres", kind, 1, "p50"), median(results, "direct", kind, 1, "p50")
    return None if gateway is None or direct is None else gateway - direct


def idle_rss(results: dict[str, Any]) -> float | None:
    backend = results.get("backends", {}).get("postgres", {})
    value = backend.get("idle_rss_mib_at_start", backend.get("idle_rss_mb_at_start"))
    return None if value is None else float(value)


def _measure(results: dict[str, Any], key: str) -> tuple[float | None, str]:
    """One goal's measured value and the context shown beside it."""
    if key in ("chat_cpu", "stream_cpu", "embed_cpu"):
        kind = key.removesuffix("_cpu")
        value = median(results, "postgres", kind, 16, "cpu_ms_per_request")
        rps = median(results, "postgres", kind, 16, "rps")
        detail = "" if value is None else f"≈ {1000 / value:,.0f} req/s per core; {_num(rps, 1)} req/s measured"
        return value, detail
    if key == "chat_cpu_ratio":
        upstream = median(results, "direct", "chat", 16, "cpu_ms_per_request")
        value = ratio(median(results, "postgres", "chat", 16, "cpu_ms_per_request"), upstream)
        return value, "" if upstream is None else f"upstream {upstream:.3f} ms per request"
    if key in ("chat_added", "stream_added"):
        return added(results, key.removesuffix("_added")), ""
    if key == "ttft_added":
        gateway = results.get("backends", {}).get("postgres", {}).get("ttft", {}).get("ttft_ms", {}).get("p50")
        direct = results.get("ttft_direct", {}).get("ttft_ms", {}).get("p50")
        return (None if gateway is None or direct is None else gateway - direct), ""
    if key == "sqlite_tail":
        p50, p99 = median(results, "sqlite", "chat", 16, "p50"), median(results, "sqlite", "chat", 16, "p99")
        cpu = median(results, "sqlite", "chat", 16, "cpu_ms_per_request")
        detail = "" if p99 is None else f"p50 {_num(p50, 2)} ms, p99 {_num(p99, 2)} ms; {_num(cpu, 3)} ms CPU"
        return ratio(p99, p50), detail
    if key == "sqlite_stall":
        return worst_stall(results, "sqlite", "chat", 16), "slowest request of the measured runs (wrk's max)"
    if key == "idle_rss":
        return idle_rss(results), ""
    if key == "scaleout":
        found = results.get("backends", {}).get("scaleout", {}).get("ratio", {})
        detail = ""
        if found.get("cpu_per_request") is not None:
            detail = (f"CPU per request ×{found['cpu_per_request']:.2f} with 2 workers: {found['capacity']:.2f}x "
                      "on two dedicated cores")
        return found.get("throughput"), detail
    raise KeyError(key)


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def verdict(goal: Goal, value: float | None, detail: str = "") -> dict[str, Any]:
    """Met or missed, and by how much (in the goal's unit and as a share of the limit)."""
    base = {"key": goal.key, "target": goal.label, "goal": goal.goal, "baseline": goal.baseline,
            "unit": goal.unit, "detail": detail}
    if value is None:
        return {**base, "measured": None, "met": None, "gap": "not measured"}
    met = value >= goal.limit if goal.at_least else value <= goal.limit
    unit = goal.unit if goal.unit == "x" else " " + goal.unit
    if met:
        gap = f"met with {abs(value - goal.limit):,.2f}{unit} to spare"
    else:
        miss = goal.limit - value if goal.at_least else value - goal.limit
        share = f" ({100 * miss / goal.limit:.0f}% of the goal)" if goal.limit else ""
        gap = f"missed by {miss:,.2f}{unit}{share}"
    return {**base, "measured": round(value, 3), "met": met, "gap": gap}


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #16's goals, each with the baseline, this run's value and the verdict."""
    return [verdict(goal, *_measure(results, goal.key)) for goal in GOALS]


def also_checked(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier bench targets that still hold: slow streams' memory and completion, round trips."""
    pg = results.get("backends", {}).get("postgres", {})
    found = []
    slow = pg.get("slow_streams", {})
    if slow:
        added_mib = slow.get("rss_added_mib", slow.get("rss_added_mb"))
        found.append(verdict(Goal("slow_rss", f"{slow['streams']:,} concurrent slow streams: added RSS",
                                  "≤ +150 MiB", 150, "MiB", False, "+22 MiB (2026-11-23)"), added_mib))
        complete = slow["gateway"]["complete"]
        found.append({"key": "slow_complete", "target": f"{slow['streams']:,} concurrent slow streams complete",
                      "goal": "all", "baseline": "all (2026-11-23)", "unit": "streams", "detail": "",
                      "measured": complete, "met": complete == slow["streams"],
                      "gap": "all complete" if complete == slow["streams"]
                      else f"{slow['streams'] - complete} did not complete"})
    unseen = unseen_5xx(results)
    if unseen is not None:
        found.append(verdict(Goal("phantom_5xx", "5xx in pr_http_requests_total that no client received "
                                  "(disconnects counted as errors), all gateways", "0", 0, "answers", False,
                                  "83 in one run (issue #16)"), unseen))
    trips = pg.get("round_trips", {})
    worst = max((trips[kind]["pg_critical_median"] for kind in KINDS if kind in trips
                 and trips[kind].get("pg_critical_median") is not None), default=None)
    if trips:
        found.append(verdict(Goal("round_trips", "database round trips on a request's critical path (median)",
                                  "≤ 2", 2, "round trips", False, "1 (2026-11-23)"), worst))
    return found


def per_core_capacity(cpu_ms: float | None) -> float | None:
    """Requests per second one fully busy core serves at `cpu_ms` of CPU per request."""
    return 1000.0 / cpu_ms if cpu_ms else None


def replicas_needed(rate: float, cpu_ms: float, utilisation: float = 0.7) -> int:
    """One-worker replicas (one core each) for `rate` req/s at `cpu_ms` per request, each kept at `utilisation`.

    Raises ValueError for a non-positive CPU cost or utilisation.
    """
    if cpu_ms <= 0 or not 0 < utilisation <= 1:
        raise ValueError("cpu_ms and utilisation must be positive (utilisation at most 1)")
    needed = rate * cpu_ms / 1000.0 / utilisation
    whole = int(needed)
    return max(1, whole if needed - whole < 1e-9 else whole + 1)


def unseen_5xx(results: dict[str, Any]) -> int | None:
    """5xx the gateways counted that no client saw, summed over every gateway scraped (None: none was)."""
    counts: list[int] = []
    for backend in results.get("backends", {}).values():
        stats = [backend.get("http_statuses")] + [run.get("http_statuses") for run in backend.get("runs", {}).values()]
        counts += [item["unseen_5xx"] for item in stats if item and "unseen_5xx" in item]
    return sum(counts) if counts else None
