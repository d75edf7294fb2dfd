"""The Metrics API (seed 004's names and labels), /metrics on either port, and several workers."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import prometheus_client
import pytest

from gateway.app import create_app
from gateway.context import AppContext
from gateway.metrics import Metrics, forget_dead_workers, prepare_multiprocess_dir
from gateway.settings import Settings
from tests.conftest import MODELS_FILE, REPO, envelope
from tests.support.metrics import METRICS_AUTH, METRICS_TOKEN, Scrape
from tests.support.servers import serve_app

# Every metric and its exact label names (seed 004, then the operators' additions).
EXPECTED_LABELS = {
    "pr_http_requests_total": {"method", "route", "status"},
    "pr_http_request_duration_seconds_count": {"method", "route", "status"},
    "pr_http_requests_in_flight": {"method", "route"},
    "pr_http_exceptions_total": {"method", "route", "exception_type"},
    "pr_llm_calls_total": {"model", "endpoint", "status"},
    "pr_llm_tokens_total": {"model", "direction"},
    "pr_llm_cost_usd_total": {"model"},
    "pr_chat_conversations_created_total": set(),
    "pr_credit_transactions_total": {"kind"},
    "pr_gpu_node_up": {"node_id", "name"},
    "pr_gpu_node_utilization_pct": {"node_id", "name"},
    "pr_gateway_overhead_seconds_count": {"endpoint"},
    "pr_llm_time_to_first_token_seconds_count": {"model"},
    "pr_rate_limit_rejections_total": {"limit"},
    "pr_rate_limiter_errors_total": set(),
    "pr_credit_hold_rejections_total": set(),
    "pr_usage_events_queue_depth": set(),
    "pr_usage_events_flush_failures_total": set(),
    "pr_usage_events_written_total": set(),
    "pr_registry_reloads_total": {"outcome"},
    "pr_registry_info": {"version"},
}
FORBIDDEN_LABELS = {"user", "user_id", "account", "account_id", "email", "key", "key_id", "api_key", "token"}
MODEL = "privaterouter/fast"


def exercise_everything(metrics: Metrics) -> None:
    """Call every recording method once, so every series exists (used by the config tests too)."""
    metrics.http_requests.labels("GET", "/v1/models", "200").inc()
    metrics.http_duration.labels("GET", "/v1/models", "200").observe(0.01)
    metrics.http_in_flight.labels("GET", "/v1/models").set(0)
    metrics.http_exceptions.labels("GET", "/v1/models", "RuntimeError").inc()
    metrics.llm_call(model=MODEL, endpoint="chat.completions", status="ok", input_tokens=12, output_tokens=30,
                     cost_pico=4_200_000)
    metrics.conversation_created()
    metrics.credit_transaction("usage")
    metrics.set_nodes([("gpu-1", "gpu-1", True, 0.5)])
    metrics.observe_overhead("chat.completions", 0.0004)
    metrics.observe_ttft(MODEL, 0.2)
    metrics.rate_limited("rpm")
    metrics.rate_limiter_error()
    metrics.hold_rejected()
    metrics.set_usage_queue_depth(3)
    metrics.usage_flush_failed()
    metrics.usage_events_written(5)
    metrics.usage_cost_capped(MODEL, 2_000_000)
    metrics.registry_reload("ok", "abc123")


def scrape(metrics: Metrics) -> Scrape:
    body, _ = metrics.render()
    return Scrape.parse(body)



# --- the API -----------------------------------------------------------------------------------


def test_every_metric_has_exactly_the_seed_labels() -> None:
    metrics = Metrics()
    exercise_everything(metrics)
    result = scrape(metrics)
    for name, labels in EXPECTED_LABELS.items():
        series = result.series(name)
        assert series, f"{name} not exported"
        assert all(set(s) == labels for s in series), (name, series)


def test_no_label_can_identify_a_user() -> None:
    metrics = Metrics()
    exercise_everything(metrics)
    assert not scrape(metrics).label_names() & FORBIDDEN_LABELS


def test_llm_call_counts_call_tokens_by_direction_and_cost_in_usd() -> None:
    metrics = Metrics()
    metrics.llm_call(model=MODEL, endpoint="chat.completions", status="ok", input_tokens=12, output_tokens=30,
                     cost_pico=4_200_000)
    metrics.llm_call(model=MODEL, endpoint="chat.completions", status="ok", input_tokens=3, output_tokens=0,
                     cost_pico=1_000_000_000_000)
    result = scrape(metrics)
    assert result.value("pr_llm_calls_total", model=MODEL, endpoint="chat.completions", status="ok") == 2
    assert result.value("pr_llm_tokens_total", model=MODEL, direction="input") == 15
    assert result.value("pr_llm_tokens_total", model=MODEL, direction="output") == 30
    assert result.value("pr_llm_cost_usd_total", model=MODEL) == pytest.approx(1.0000042, rel=1e-12)


def test_failed_llm_call_is_counted_under_its_status() -> None:
    metrics = Metrics()
    metrics.llm_call(model=MODEL, endpoint="embeddings", status="error", input_tokens=0, output_tokens=0, cost_pico=0)
    result = scrape(metrics)
    assert result.value("pr_llm_calls_total", model=MODEL, endpoint="embeddings", status="error") == 1
    assert result.value("pr_llm_cost_usd_total", model=MODEL) == 0


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "cost_pico"])
def test_negative_llm_figures_are_refused(field: str) -> None:
    values = {"input_tokens": 1, "output_tokens": 1, "cost_pico": 1, field: -1}
    with pytest.raises(ValueError):
        Metrics().llm_call(model=MODEL, endpoint="chat.completions", status="ok", **values)


def test_domain_counters() -> None:
    metrics = Metrics()
    metrics.conversation_created()
    metrics.conversation_created()
    for kind in ("topup", "usage", "usage", "admin_adjust", "refund"):
        metrics.credit_transaction(kind)
    result = scrape(metrics)
    assert result.value("pr_chat_conversations_created_total") == 2
    assert result.value("pr_credit_transactions_total", kind="usage") == 2
    assert result.value("pr_credit_transactions_total", kind="refund") == 1


def test_node_gauges_are_up_and_utilization_percent() -> None:
    metrics = Metrics()
    metrics.set_nodes([("gpu-1", "gpu-1", True, 0.75), ("gpu-2", "gpu-2", False, 0.0)])
    result = scrape(metrics)
    assert result.value("pr_gpu_node_up", node_id="gpu-1", name="gpu-1") == 1
    assert result.value("pr_gpu_node_up", node_id="gpu-2", name="gpu-2") == 0
    assert result.value("pr_gpu_node_utilization_pct", node_id="gpu-1", name="gpu-1") == 75
    assert result.value("pr_gpu_node_utilization_pct", node_id="gpu-2", name="gpu-2") == 0


def test_nodes_that_disappear_are_removed() -> None:
    metrics = Metrics()
    metrics.set_nodes([("gpu-1", "gpu-1", True, 0.5), ("gpu-2", "gpu-2", True, 0.5)])
    metrics.set_nodes([("gpu-2", "gpu-2", True, 0.25)])
    result = scrape(metrics)
    assert result.series("pr_gpu_node_up") == [{"node_id": "gpu-2", "name": "gpu-2"}]
    assert result.series("pr_gpu_node_utilization_pct") == [{"node_id": "gpu-2", "name": "gpu-2"}]
    assert result.value("pr_gpu_node_utilization_pct", node_id="gpu-2", name="gpu-2") == 25


def test_operator_counters_and_histograms() -> None:
    metrics = Metrics()
    metrics.observe_overhead("chat.completions", 0.0003)
    metrics.observe_ttft(MODEL, 0.7)
    for limit in ("rpm", "rpm", "tpd"):
        metrics.rate_limited(limit)
    metrics.rate_limiter_error()
    metrics.hold_rejected()
    metrics.set_usage_queue_depth(9)
    metrics.set_usage_queue_depth(4)
    metrics.usage_flush_failed()
    metrics.usage_events_written(7)
    metrics.usage_events_written(0)
    result = scrape(metrics)
    assert result.value("pr_gateway_overhead_seconds_bucket", endpoint="chat.completions", le="0.00025") == 0
    assert result.value("pr_gateway_overhead_seconds_bucket", endpoint="chat.completions", le="0.0005") == 1
    assert result.value("pr_gateway_overhead_seconds_bucket", endpoint="chat.completions", le="0.0001") == 0
    assert result.value("pr_llm_time_to_first_token_seconds_count", model=MODEL) == 1
    assert result.value("pr_llm_time_to_first_token_seconds_bucket", model=MODEL, le="1.0") == 1
    assert result.value("pr_llm_time_to_first_token_seconds_bucket", model=MODEL, le="0.5") == 0
    assert result.value("pr_rate_limit_rejections_total", limit="rpm") == 2
    assert result.value("pr_rate_limit_rejections_total", limit="tpd") == 1
    assert result.value("pr_rate_limiter_errors_total") == 1
    assert result.value("pr_credit_hold_rejections_total") == 1
    assert result.value("pr_usage_events_queue_depth") == 4
    assert result.value("pr_usage_events_flush_failures_total") == 1
    assert result.value("pr_usage_events_written_total") == 7


def test_registry_info_shows_only_the_version_in_force() -> None:
    metrics = Metrics()
    metrics.set_registry_version("v1")
    metrics.registry_reload("ok", "v2")
    metrics.registry_reload("invalid", "v2")
    result = scrape(metrics)
    assert result.series("pr_registry_info") == [{"version": "v2"}]
    assert result.value("pr_registry_info", version="v2") == 1
    assert result.value("pr_registry_reloads_total", outcome="ok") == 1
    assert result.value("pr_registry_reloads_total", outcome="invalid") == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.conversation_created()
    assert scrape(first).value("pr_chat_conversations_created_total") == 1
    assert scrape(second).value("pr_chat_conversations_created_total") == 0
    global_names = {name for name in prometheus_client.REGISTRY._names_to_collectors}  # noqa: SLF001
    assert not {name for name in global_names if name.startswith("pr_")}


def test_importing_the_module_creates_no_metric() -> None:
    code = ("import prometheus_client, gateway.metrics, gateway.app; "
            "print(sorted(n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith('pr_')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_render_is_the_classic_text_format() -> None:
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE pr_http_requests_total counter" in body
    assert not re.search(rb"_created[{ ]", body)  # no doubled series


# --- /metrics on the public port, or on its own port ------------------------------------------


async def test_public_port_serves_metrics_only_with_the_token(gateway_settings: Callable[..., Settings]) -> None:
    app = create_app(gateway_settings(METRICS_TOKEN=METRICS_TOKEN))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/nope")
            anonymous = await client.get("/metrics")
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
            response = await client.get("/metrics", headers=METRICS_AUTH)
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    result = Scrape.parse(response.text)
    assert result.value("pr_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    version = app.state.ctx.registry.current.version
    assert result.value("pr_registry_info", version=version) == 1


async def test_metrics_are_private_by_default(gateway_settings: Callable[..., Settings]) -> None:
    app = create_app(gateway_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 404 and "pr_http" not in response.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_port_separation(gateway_settings: Callable[..., Settings]) -> None:
    port = _free_port()
    app = create_app(gateway_settings(METRICS_PORT=str(port)))
    with serve_app(app) as base_url, httpx.Client() as client:
        public = client.get(f"{base_url}/metrics")
        assert public.status_code == 404
        assert envelope(public)["code"] == "not_found"
        assert "x-request-id" in public.headers
        client.get(f"{base_url}/nope")
        private = client.get(f"http://127.0.0.1:{port}/metrics")
        assert private.status_code == 200
        result = Scrape.parse(private.text)
        assert result.value("pr_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
        assert result.value("pr_http_requests_total", method="GET", route="/metrics", status="404") is None
        other = client.get(f"http://127.0.0.1:{port}/v1/models")
        assert other.status_code == 404
        assert envelope(other)["code"] == "not_found"
    with pytest.raises(httpx.ConnectError):  # the lifespan closed the metrics port
        httpx.get(f"http://127.0.0.1:{port}/metrics")


async def test_metrics_port_in_use_fails_the_start(gateway_settings: Callable[..., Settings]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        app = create_app(gateway_settings(METRICS_PORT=str(taken.getsockname()[1])))
        with pytest.raises(OSError):
            async with app.router.lifespan_context(app):
                pass


# --- registry reloads --------------------------------------------------------------------------


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(MODELS_FILE.read_text())
    return path


async def test_good_reload_counts_ok_and_moves_the_version(gateway_settings: Callable[..., Settings],
                                                           models_copy: Path) -> None:
    app = create_app(gateway_settings(MODELS_FILE=str(models_copy)))
    async with app.router.lifespan_context(app):
        ctx: AppContext = app.state.ctx
        old = ctx.registry.current.version
        models_copy.write_text(models_copy.read_text() + "\n# edited\n")
        ctx.registry.reload()
        new = ctx.registry.current.version
        result = scrape(ctx.metrics)
    assert new != old
    assert result.value("pr_registry_reloads_total", outcome="ok") == 1
    assert result.series("pr_registry_info") == [{"version": new}]


async def test_invalid_reload_by_sighup_counts_invalid(gateway_settings: Callable[..., Settings],
                                                       models_copy: Path) -> None:
    app = create_app(gateway_settings(MODELS_FILE=str(models_copy)))
    async with app.router.lifespan_context(app):
        ctx: AppContext = app.state.ctx
        version = ctx.registry.current.version
        # The loop's handler must be installed, or SIGHUP would end the test run.
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        models_copy.write_text("nodes: [\n")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if scrape(ctx.metrics).value("pr_registry_reloads_total", outcome="invalid"):
                break
        result = scrape(ctx.metrics)
    assert result.value("pr_registry_reloads_total", outcome="invalid") == 1
    assert result.series("pr_registry_info") == [{"version": version}]


# --- several workers: prometheus_client's multiprocess mode ------------------------------------

_WORKER = textwrap.dedent("""
    import sys
    from gateway.metrics import Metrics
    m = Metrics()
    share = float(sys.argv[1])
    m.llm_call(model="privaterouter/fast", endpoint="chat.completions", status="ok",
               input_tokens=int(sys.argv[2]), output_tokens=int(sys.argv[3]), cost_pico=1_000_000_000)
    m.set_usage_queue_depth(int(sys.argv[4]))
    m.set_nodes([("gpu-1", "gpu-1", True, share), ("gpu-2", "gpu-2", True, share)])
    m.set_nodes([("gpu-1", "gpu-1", True, share)])
    m.registry_reload("ok", "v2")
    assert m.multiprocess_dir is not None
""")
_RENDER = "import sys; from gateway.metrics import Metrics; sys.stdout.buffer.write(Metrics().render()[0])"


def _run(code: str, multiproc: Path, *args: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def multiproc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # setenv (not delenv) so the variable prepare_multiprocess_dir sets is removed again afterwards:
    # left behind, it turns every later test's prometheus_client into multiprocess mode.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    path = prepare_multiprocess_dir(tmp_path / "data", workers=2)
    assert path is not None and os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(path)
    yield path


def test_multiprocess_view_merges_every_worker(multiproc: Path) -> None:
    _run(_WORKER, multiproc, "0.25", "10", "5", "3")
    _run(_WORKER, multiproc, "0.5", "20", "7", "4")
    result = Scrape.parse(_run(_RENDER, multiproc))
    assert result.value("pr_llm_calls_total", model=MODEL, endpoint="chat.completions", status="ok") == 2
    assert result.value("pr_llm_tokens_total", model=MODEL, direction="input") == 30
    assert result.value("pr_llm_tokens_total", model=MODEL, direction="output") == 12
    assert result.value("pr_llm_cost_usd_total", model=MODEL) == pytest.approx(0.002)
    assert result.value("pr_usage_events_queue_depth") == 7  # summed over workers
    assert result.value("pr_gpu_node_utilization_pct", node_id="gpu-1", name="gpu-1") == 75
    assert result.value("pr_gpu_node_up", node_id="gpu-1", name="gpu-1") == 1
    assert result.series("pr_gpu_node_up") == [{"node_id": "gpu-1", "name": "gpu-1"}]  # gpu-2 was removed
    assert result.series("pr_registry_info") == [{"version": "v2"}]
    assert not result.label_names() & {"pid"}


def test_dead_workers_leave_counters_but_not_live_gauges(multiproc: Path) -> None:
    _run(_WORKER, multiproc, "0.25", "10", "5", "3")  # exits without a clean shutdown
    forget_dead_workers(str(multiproc))
    result = Scrape.parse(_run(_RENDER, multiproc))
    assert result.value("pr_llm_tokens_total", model=MODEL, direction="input") == 10
    assert result.value("pr_usage_events_queue_depth") in (None, 0)
    assert result.series("pr_gpu_node_utilization_pct") == []


def test_prepare_multiprocess_dir_empties_a_previous_run(multiproc: Path) -> None:
    _run(_WORKER, multiproc, "0.25", "10", "5", "3")
    assert list(multiproc.glob("*.db"))
    prepare_multiprocess_dir(multiproc.parent, workers=2)
    assert not list(multiproc.glob("*.db"))


def test_single_worker_stays_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert prepare_multiprocess_dir(tmp_path, workers=1) is None
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert Metrics().multiprocess_dir is None


_SERVE = textwrap.dedent("""
    import sys
    import uvicorn
    from pathlib import Path
    from gateway.metrics import prepare_multiprocess_dir
    prepare_multiprocess_dir(Path(sys.argv[1]), workers=2)
    uvicorn.run("gateway.app:app_from_env", factory=True, host="127.0.0.1", port=int(sys.argv[2]), workers=2,
                log_config=None, access_log=False)
""")


def _wait_for(url: str, deadline: float) -> None:
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up")
        time.sleep(0.1)


def _check_two_workers(data: Path, port: int, metrics_port: int) -> None:
    """Requests spread over both workers; every scrape, whoever answers it, counts them all."""
    deadline = time.monotonic() + 30
    _wait_for(f"http://127.0.0.1:{port}/health", deadline)
    _wait_for(f"http://127.0.0.1:{metrics_port}/metrics", deadline)
    while len(list((data / "metrics").glob("counter_*.db"))) < 2:  # both workers are up
        assert time.monotonic() < deadline, "second worker did not start"
        time.sleep(0.1)
    for _ in range(20):  # a new connection each time, so the kernel spreads them over the workers
        assert httpx.get(f"http://127.0.0.1:{port}/nope").status_code == 404
    for _ in range(6):  # whichever worker answers, it reports all of them
        with httpx.Client() as client:
            text = client.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        result = Scrape.parse(text)
        assert result.value("pr_http_requests_total", method="GET", route="<unmatched>", status="404") == 20
        assert result.value("pr_http_requests_in_flight", method="GET", route="<unmatched>") == 0
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404


def test_two_workers_share_the_metrics_port_and_the_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           sqlite_template: Path) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    port, metrics_port = _free_port(), _free_port()
    data = tmp_path / "data"
    shutil.copyfile(sqlite_template, tmp_path / "gateway.db")
    env = {**os.environ, "DATA_DIR": str(data), "MODELS_FILE": str(MODELS_FILE), "METRICS_PORT": str(metrics_port),
           "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
           "WORKERS": "2", "HOST": "127.0.0.1", "LOG_LEVEL": "warning", "PYTHONPATH": str(REPO)}
    with (tmp_path / "server.log").open("wb") as log, subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(data), str(port)], cwd=tmp_path, env=env, stdout=log,
            stderr=subprocess.STDOUT) as server:
        try:
            _check_two_workers(data, port, metrics_port)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


# --- the data plane through a real gateway ----------------------------------------------------


async def test_scrape_after_a_streamed_chat(make_settings: Callable[..., Settings], database_url: str,
                                            tmp_path: Path) -> None:
    """The call, tokens by direction, cost, node gauges, overhead and TTFT, and the HTTP series."""
    from openai import AsyncOpenAI

    from tests.support.stack import run_stack

    with run_stack(make_settings, database_url, tmp_path, METRICS_TOKEN=METRICS_TOKEN) as stack:
        try:
            tenant = await stack.tenant(credits_usd="1.00")
            async with AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, max_retries=0, timeout=20) as client:
                chunks = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Count to five."}], stream=True,
                    stream_options={"include_usage": True})
                usage = [chunk.usage async for chunk in chunks if chunk.usage is not None][-1]
            [event] = await stack.settled(tenant.account_id, 1)
            async with httpx.AsyncClient(base_url=stack.base_url) as http:
                for _ in range(50):  # node gauges are published every second
                    result = Scrape.parse((await http.get("/metrics", headers=METRICS_AUTH)).text)
                    if result.series("pr_gpu_node_up"):
                        break
                    await asyncio.sleep(0.1)
        finally:
            await stack.engine.dispose()
    call = {"model": MODEL, "endpoint": "chat.completions"}
    assert result.value("pr_llm_calls_total", status=event.status, **call) == 1
    assert result.value("pr_llm_tokens_total", model=MODEL, direction="input") == usage.prompt_tokens > 0
    assert result.value("pr_llm_tokens_total", model=MODEL, direction="output") == usage.completion_tokens > 0
    assert result.value("pr_llm_cost_usd_total", model=MODEL) == pytest.approx(event.cost_pico / 10**12)
    assert event.cost_pico > 0
    [node] = result.series("pr_gpu_node_up")
    assert node["node_id"] == "node0"
    assert result.value("pr_gpu_node_up", **node) == 1
    assert result.value("pr_gpu_node_utilization_pct", **node) == 0  # nothing in flight any more
    assert result.value("pr_gateway_overhead_seconds_count", endpoint="chat.completions") == 1
    assert result.value("pr_llm_time_to_first_token_seconds_count", model=MODEL) == 1
    assert result.value("pr_http_requests_total", method="POST", route="/v1/chat/completions", status="200") == 1
    assert result.value("pr_credit_transactions_total", kind="usage") == 1
    assert result.value("pr_usage_events_written_total") == 1
    assert result.value("pr_chat_conversations_created_total") == 1  # a history with no assistant turn yet
    assert not result.label_names() & FORBIDDEN_LABELS
    assert tenant.user_id not in str(result.samples) and tenant.api_key not in str(result.samples)
