"""Prometheus metrics (seed 004's names and labels, plus a few for operators), one registry per app.

Nothing is created at import time: `create_app` builds one `Metrics`, the middleware and the data
plane record into it, and `/metrics` renders it.

Several uvicorn workers: `privaterouter serve` with WORKERS > 1 calls `prepare_multiprocess_dir`
before the workers start, which sets `PROMETHEUS_MULTIPROC_DIR`. prometheus_client then keeps every
value in a per-process memory-mapped file in that directory, and `render()` in any worker merges
all the files, so every scrape (whichever worker answers it) shows the whole server: counters and
histograms are summed over workers (dead ones included, so they never go backwards), in-flight and
queue gauges are summed over live workers, and node health is the most recent observation of any
live worker.

Labels never carry a user id, key or email: per-user questions are answered by the access log.
Model labels are public model names from the registry, so their number is bounded.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PICO_PER_USD = 10**12

# HTTP requests include whole LLM streams, so the top buckets reach minutes.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# What the gateway adds on top of the upstream call: sub-millisecond resolution matters here.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)

# Any other method collapses to one value so a client cannot mint new series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"

TOKEN_DIRECTIONS = ("input", "output")
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def method_label(method: str) -> str:
    """The request method as a bounded label value."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus_client writes values to files in this process, else None."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and getattr(prometheus_values.ValueClass, "_multiprocess", False):
        return path
    return None


class Metrics:
    """Every metric the gateway exports, registered in its own `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `_created` series would double the series count for no dashboard use (and multiprocess mode lacks them).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir is None:
            ProcessCollector(registry=self.registry)  # per-process figures mean nothing once merged
        reg = self.registry

        # seed 004: HTTP
        self.http_requests = Counter("pr_http_requests_total", "HTTP requests answered.",
                                     ("method", "route", "status"), registry=reg)
        self.http_duration = Histogram("pr_http_request_duration_seconds", "HTTP request duration, to the last byte.",
                                       ("method", "route", "status"), buckets=HTTP_BUCKETS, registry=reg)
        self.http_in_flight = Gauge("pr_http_requests_in_flight", "HTTP requests being served.",
                                    ("method", "route"), multiprocess_mode="livesum", registry=reg)
        self.http_exceptions = Counter("pr_http_exceptions_total", "Requests that ended in an unhandled exception.",
                                       ("method", "route", "exception_type"), registry=reg)
        # seed 004: LLM
        self.llm_calls = Counter("pr_llm_calls_total", "Upstream LLM calls.", ("model", "endpoint", "status"),
                                 registry=reg)
        self.llm_tokens = Counter("pr_llm_tokens_total", "LLM tokens, by direction (input or output).",
                                  ("model", "direction"), registry=reg)
        self.llm_cost = Counter("pr_llm_cost_usd_total", "Running sum of the usage cost charged, in USD.",
                                ("model",), registry=reg)
        # seed 004: domain
        self.conversations = Counter("pr_chat_conversations_created_total", "Chat conversations created.",
                                     registry=reg)
        self.credit_transactions = Counter("pr_credit_transactions_total", "Ledger rows written, by kind.",
                                           ("kind",), registry=reg)
        # seed 004: GPU nodes
        self.node_up = Gauge("pr_gpu_node_up", "1 if the node passed its last health check, else 0.",
                             ("node_id", "name"), multiprocess_mode="livemostrecent", registry=reg)
        self.node_utilization = Gauge("pr_gpu_node_utilization_pct",
                                      "In-flight requests / max_concurrency x 100 (summed over workers).",
                                      ("node_id", "name"), multiprocess_mode="livesum", registry=reg)
        # beyond the seed, for operators
        self.overhead = Histogram("pr_gateway_overhead_seconds", "Request time minus upstream time.",
                                  ("endpoint",), buckets=OVERHEAD_BUCKETS, registry=reg)
        self.ttft = Histogram("pr_llm_time_to_first_token_seconds", "Time from request to the first token relayed.",
                              ("model",), buckets=TTFT_BUCKETS, registry=reg)
        self.rate_limit_rejections = Counter("pr_rate_limit_rejections_total", "Requests refused with 429, by limit.",
                                             ("limit",), registry=reg)
        self.rate_limiter_errors = Counter("pr_rate_limiter_errors_total",
                                           "Rate-limiter backend failures (the request was let through).", registry=reg)
        self.hold_rejections = Counter("pr_credit_hold_rejections_total",
                                       "Requests refused with 402 (balance cannot cover a hold).", registry=reg)
        self.usage_queue_depth = Gauge("pr_usage_events_queue_depth", "Usage events waiting to be written.",
                                       multiprocess_mode="livesum", registry=reg)
        self.usage_flush_failures = Counter("pr_usage_events_flush_failures_total",
                                            "Failed attempts to write a batch of usage events.", registry=reg)
        self.usage_written = Counter("pr_usage_events_written_total", "Usage events written to the database.",
                                     registry=reg)
        self.cost_capped = Counter("pr_usage_cost_capped_total",
                                   "Requests whose counted cost exceeded their hold (charged the hold only).",
                                   ("model",), registry=reg)
        self.cost_capped_usd = Counter("pr_usage_cost_capped_usd_total",
                                       "Cost above the holds that was not charged, in USD.", ("model",), registry=reg)
        self.registry_reloads = Counter("pr_registry_reloads_total", "Registry reloads, by outcome (ok or invalid).",
                                        ("outcome",), registry=reg)
        self.registry_info = Gauge("pr_registry_info", "1 for the version of models.yaml in force.", ("version",),
                                   multiprocess_mode="livemostrecent", registry=reg)

        self._nodes: set[tuple[str, str]] = set()
        self._registry_version: str | None = None
        # Label children by their values: `labels()` validates and locks on every call; these series
        # are never removed, and their label values are bounded (methods, route templates, statuses).
        self._in_flight_children: dict[tuple[str, str], Any] = {}
        self._done_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    # --- HTTP -----------------------------------------------------------------------------------

    def http_in_flight_child(self, method: str, route: str) -> Any:
        """The in-flight gauge of (method, route), to `inc()` when a request starts and `dec()` when it ends."""
        child = self._in_flight_children.get((method, route))
        if child is None:
            child = self._in_flight_children[(method, route)] = self.http_in_flight.labels(method, route)
        return child

    def http_request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration (`seconds`, to the last byte)."""
        children = self._done_children.get((method, route, status))
        if children is None:
            labels = (method, route, str(status))
            children = self._done_children[(method, route, status)] = (
                self.http_requests.labels(*labels), self.http_duration.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    # --- LLM and domain -------------------------------------------------------------------------

    def llm_call(self, *, model: str, endpoint: str, status: str, input_tokens: int, output_tokens: int,
                 cost_pico: int) -> None:
        """Count one upstream call, its tokens by direction and its cost (pico-USD, converted here only)."""
        if input_tokens < 0 or output_tokens < 0 or cost_pico < 0:
            raise ValueError("tokens and cost must not be negative")
        self.llm_calls.labels(model, endpoint, status).inc()
        if input_tokens:
            self.llm_tokens.labels(model, "input").inc(input_tokens)
        if output_tokens:
            self.llm_tokens.labels(model, "output").inc(output_tokens)
        self.llm_cost.labels(model).inc(cost_pico / PICO_PER_USD)

    def conversation_created(self) -> None:
        """Count one new chat conversation."""
        self.conversations.inc()

    def credit_transaction(self, kind: str) -> None:
        """Count one ledger row (topup, usage, admin_adjust, refund...)."""
        self.credit_transactions.labels(kind).inc()

    # --- GPU nodes ------------------------------------------------------------------------------

    def set_nodes(self, nodes: Iterable[tuple[str, str, bool, float]]) -> None:
        """Publish (node_id, name, up, utilization 0..1) for every node; nodes not listed disappear."""
        seen: set[tuple[str, str]] = set()
        for node_id, name, up, utilization in nodes:
            key = (node_id, name)
            seen.add(key)
            self.node_up.labels(*key).set(1 if up else 0)
            self.node_utilization.labels(*key).set(max(utilization, 0.0) * 100)
        for key in self._nodes - seen:
            self._drop(self.node_up, key)
            self._drop(self.node_utilization, key)
        self._nodes = seen

    # --- operators ------------------------------------------------------------------------------

    def observe_overhead(self, endpoint: str, seconds: float) -> None:
        """Record what the gateway added to one call (request time minus upstream time)."""
        self.overhead.labels(endpoint).observe(max(seconds, 0.0))

    def observe_ttft(self, model: str, seconds: float) -> None:
        """Record the time to the first token of one call."""
        self.ttft.labels(model).observe(max(seconds, 0.0))

    def rate_limited(self, limit: str) -> None:
        """Count one 429, by the limit that refused it (rpm, rpd, tpd, key_rpm)."""
        self.rate_limit_rejections.labels(limit).inc()

    def rate_limiter_error(self) -> None:
        """Count one rate-limiter backend failure (the request was let through)."""
        self.rate_limiter_errors.inc()

    def hold_rejected(self) -> None:
        """Count one 402 (the balance could not cover a hold)."""
        self.hold_rejections.inc()

    def set_usage_queue_depth(self, depth: int) -> None:
        """Publish how many usage events wait to be written by this process."""
        self.usage_queue_depth.set(depth)

    def usage_flush_failed(self) -> None:
        """Count one failed batch write of usage events."""
        self.usage_flush_failures.inc()

    def usage_events_written(self, n: int) -> None:
        """Count usage events written to the database."""
        if n:
            self.usage_written.inc(n)

    def usage_cost_capped(self, model: str, uncharged_pico: int) -> None:
        """Count one request whose counted cost exceeded its hold by `uncharged_pico` (pico-USD)."""
        self.cost_capped.labels(model).inc()
        self.cost_capped_usd.labels(model).inc(uncharged_pico / PICO_PER_USD)

    def set_registry_version(self, version: str) -> None:
        """Mark `version` as the registry in force (1), forgetting the previous one."""
        if version == self._registry_version:
            return
        if self._registry_version is not None:
            self._drop(self.registry_info, (self._registry_version,))
        self.registry_info.labels(version).set(1)
        self._registry_version = version

    def registry_reload(self, outcome: str, version: str) -> None:
        """Count one reload (ok or invalid); `version` is the registry in force afterwards."""
        self.registry_reloads.labels(outcome).inc()
        self.set_registry_version(version)

    # --- exposition -----------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition (of all workers in multiprocess mode) and its content type."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_LiveSeries(self.multiprocess_dir))
        return generate_latest(merged), CONTENT_TYPE_PLAIN_0_0_4

    def forget_process(self) -> None:
        """On worker shutdown: drop this process's live gauges from the merged view."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]

    def _drop(self, gauge: Gauge, labels: tuple[str, ...]) -> None:
        if self.multiprocess_dir is None:
            gauge.remove(*labels)
        else:
            # Files cannot forget a series: NaN marks it removed and render() leaves it out.
            gauge.labels(*labels).set(math.nan)


class _LiveSeries:
    """All workers' files merged, without the gauge series marked removed (NaN)."""

    def __init__(self, path: str) -> None:
        self._merged = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        for family in self._merged.collect():  # type: ignore[no-untyped-call]
            if family.type == "gauge":
                family.samples = [s for s in family.samples if not math.isnan(s.value)]
            yield family


def prepare_multiprocess_dir(data_dir: Path, workers: int) -> Path | None:
    """Before starting WORKERS > 1: set PROMETHEUS_MULTIPROC_DIR (default DATA_DIR/metrics) and empty it.

    Must run in the parent process before any worker (and so before any metric value) exists.
    Returns the directory, or None with a single worker (plain in-process metrics).
    """
    if workers <= 1 and not os.environ.get(MULTIPROC_ENV):
        return None
    path = Path(os.environ.get(MULTIPROC_ENV) or data_dir / "metrics")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # counters of a previous run must not leak into this one
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def forget_dead_workers(path: str) -> None:
    """Drop live gauges left by workers that died without a clean shutdown (uvicorn restarts them)."""
    for file in glob.glob(os.path.join(path, "gauge_live*.db")):
        match = _LIVE_GAUGE_FILE.match(os.path.basename(file))
        if match is None:
            continue
        pid = int(match.group(1))
        if not _alive(pid):
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
