from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from providers.errors import (
    NodeConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnconfigured,
)
from providers.ollama.fake import create_fake_app
from providers.ollama.transport import FastTransport
from providers.pool import NodeConfig, NodePool
from tests.support.servers import aserve_app

CHUNK = b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":false}\n'
DONE = b'{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}\n'
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Body(httpx.AsyncByteStream):
    def __init__(self, *steps: bytes | BaseException) -> None:
        self.steps = steps

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for step in self.steps:
            if isinstance(step, BaseException):
                raise step
            yield step


class Cluster:
    """A MockTransport handler playing several Ollama nodes, told apart by host name."""

    def __init__(self) -> None:
        self.mode: dict[str, str] = {}  # host -> ok | connect | hang | 503 | 404 | drop
        self.sick: set[str] = set()  # hosts whose health endpoints fail
        self.loaded: dict[str, list[str]] = {}
        self.calls: list[str] = []  # hosts that received an inference request

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host, path = request.url.host, request.url.path
        if path in ("/api/version", "/api/ps"):
            if host in self.sick:
                raise httpx.ConnectError("connection refused", request=request)
            if path == "/api/version":
                return httpx.Response(200, json={"version": "0.12.10"})
            return httpx.Response(200, json={"models": [{"name": m, "model": m} for m in self.loaded.get(host, [])]})
        self.calls.append(host)
        mode = self.mode.get(host, "ok")
        if mode == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if mode == "hang":
            await asyncio.sleep(5)
        if mode == "503":
            return httpx.Response(
                503, json={"error": "server busy, please try again.  maximum pending requests exceeded"}
            )
        if mode == "404":
            return httpx.Response(404, json={"error": "model 'm' not found"})
        if path == "/api/embed":
            return httpx.Response(200, json={"node": host})
        if mode == "drop":
            return httpx.Response(200, stream=Body(CHUNK, httpx.RemoteProtocolError("peer closed", request=request)))
        return httpx.Response(200, stream=Body(CHUNK, DONE))


def make_pool(cluster: Cluster, *nodes: NodeConfig, **options: Any) -> NodePool:
    options.setdefault("first_byte_timeout", 0.05)
    options.setdefault("idle_timeout", 1.0)
    options.setdefault("acquire_timeout", 0.05)
    pool = NodePool(httpx.AsyncClient(transport=httpx.MockTransport(cluster)), **options)
    pool.configure(nodes or [node("a"), node("b")])
    return pool


def node(name: str, max_concurrency: int = 4, weight: int = 1) -> NodeConfig:
    return NodeConfig(name=name, url=f"http://{name}:11434", max_concurrency=max_concurrency, weight=weight)


async def served_by(pool: NodePool, model_tag: str = "m", nodes: list[str] | None = None) -> str:
    async with pool.open_stream("/api/chat", CHAT, model_tag=model_tag, nodes=nodes) as stream:
        items = [item async for item in stream]
        assert items[-1]["done"]
        return stream.node


def in_flight(pool: NodePool) -> dict[str, int]:
    return {snap.name: snap.in_flight for snap in pool.snapshot()}


# --- choice of node ------------------------------------------------------------------------------


async def test_prefers_a_node_that_has_the_model_loaded() -> None:
    cluster = Cluster()
    cluster.loaded["b"] = ["qwen3:latest"]
    pool = make_pool(cluster)
    assert await served_by(pool, "qwen3:latest") == "a"  # nothing known yet: configuration order
    await pool.check_now()
    assert await served_by(pool, "qwen3:latest") == "b"
    assert await served_by(pool, "qwen3") == "b"  # an untagged name means :latest
    assert await served_by(pool, "gemma3:4b") == "a"


async def test_a_loaded_node_wins_even_when_busier() -> None:
    cluster = Cluster()
    cluster.loaded["b"] = ["m:latest"]
    pool = make_pool(cluster)
    await pool.check_now()
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None):
        assert await served_by(pool) == "b"


async def test_a_successful_request_marks_the_model_loaded_on_its_node() -> None:
    pool = make_pool(Cluster())
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=["b"]):
        pass
    assert [snap.loaded_models for snap in pool.snapshot()] == [(), ("m:latest",)]
    assert await served_by(pool) == "b"


async def test_a_busy_loaded_node_spills_over_to_another() -> None:
    pool = make_pool(Cluster(), node("a", max_concurrency=1), node("b"))
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None) as first:
        assert first.node == "a"
        assert await served_by(pool) == "b"


def both_loaded() -> Cluster:
    cluster = Cluster()
    cluster.loaded.update(a=["m:latest"], b=["m:latest"])
    return cluster


async def test_least_busy_node_is_chosen() -> None:
    pool = make_pool(both_loaded())
    await pool.check_now()
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None) as first:
        async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None) as second:
            assert (first.node, second.node) == ("a", "b")
            assert in_flight(pool) == {"a": 1, "b": 1}
    assert in_flight(pool) == {"a": 0, "b": 0}


async def test_busyness_is_weighed() -> None:
    pool = make_pool(both_loaded(), node("a", weight=2), node("b", weight=1))
    await pool.check_now()
    async with (
        pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None) as s1,
        pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None) as s2,
        pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None) as s3,
    ):
        # a 0/2 -> a; then a 1/2 > b 0/1 -> b; then a 1/2 < b 1/1 -> a
        assert [s1.node, s2.node, s3.node] == ["a", "b", "a"]


async def test_only_the_models_nodes_are_used() -> None:
    pool = make_pool(Cluster())
    assert await served_by(pool, nodes=["b"]) == "b"


async def test_model_without_configured_node_is_unconfigured() -> None:
    pool = make_pool(Cluster())
    with pytest.raises(UpstreamUnconfigured) as info:
        await served_by(pool, nodes=["gone"])
    assert info.value.code == "upstream_unconfigured"
    pool.configure([])
    with pytest.raises(UpstreamUnconfigured):
        await served_by(pool)


# --- concurrency ---------------------------------------------------------------------------------


async def test_all_slots_busy_waits_then_gives_up() -> None:
    pool = make_pool(Cluster(), node("a", max_concurrency=1))
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamUnavailable, match="all nodes busy"):
            await served_by(pool)
        assert loop.time() - started >= 0.04
    assert in_flight(pool) == {"a": 0}


async def test_a_waiter_gets_the_slot_as_soon_as_it_is_freed() -> None:
    pool = make_pool(Cluster(), node("a", max_concurrency=1), acquire_timeout=2.0)
    holder = pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None)
    await holder.__aenter__()
    waiting = asyncio.create_task(served_by(pool))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await holder.__aexit__(None, None, None)
    assert await asyncio.wait_for(waiting, 0.5) == "a"
    assert in_flight(pool) == {"a": 0}


async def test_waiters_are_served_in_arrival_order() -> None:
    pool = make_pool(Cluster(), node("a", max_concurrency=1), acquire_timeout=2.0)
    order: list[int] = []

    async def request(i: int) -> None:
        async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None):
            order.append(i)
            await asyncio.sleep(0)

    holder = pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None)
    await holder.__aenter__()
    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(request(i)))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    await holder.__aexit__(None, None, None)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


@pytest.mark.parametrize("release_first", [False, True])
async def test_a_cancelled_waiter_leaks_no_slot(release_first: bool) -> None:
    pool = make_pool(Cluster(), node("a", max_concurrency=1), acquire_timeout=2.0)
    holder = pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None)
    await holder.__aenter__()
    waiting = asyncio.create_task(served_by(pool))
    await asyncio.sleep(0.01)
    # Both in the same tick: with `release_first` the slot is handed to the waiter just before
    # it is cancelled, so the waiter must hand it back.
    if release_first:
        await holder.__aexit__(None, None, None)
        waiting.cancel()
    else:
        waiting.cancel()
        await holder.__aexit__(None, None, None)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert in_flight(pool) == {"a": 0}
    assert await served_by(pool) == "a"


async def test_lowering_max_concurrency_applies_to_new_requests() -> None:
    pool = make_pool(Cluster(), node("a", max_concurrency=2))
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None):
        pool.configure([node("a", max_concurrency=1)])
        assert in_flight(pool) == {"a": 1}
        with pytest.raises(UpstreamUnavailable, match="busy"):
            await served_by(pool)
    assert await served_by(pool) == "a"


# --- failover ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["connect", "hang", "503"])
async def test_fails_over_when_a_node_fails_before_the_first_byte(mode: str) -> None:
    cluster = Cluster()
    cluster.mode["a"] = mode
    pool = make_pool(cluster)
    assert await served_by(pool) == "b"
    assert cluster.calls == ["a", "b"]
    assert in_flight(pool) == {"a": 0, "b": 0}


async def test_connect_error_marks_the_node_suspect() -> None:
    cluster = Cluster()
    cluster.mode["a"] = "connect"
    pool = make_pool(cluster)
    await served_by(pool)
    snaps = {snap.name: snap for snap in pool.snapshot()}
    assert snaps["a"].consecutive_failures == 1 and snaps["a"].up
    cluster.mode["a"] = "ok"
    cluster.calls.clear()
    assert await served_by(pool) == "b"  # suspect nodes come last
    assert cluster.calls == ["b"]


async def test_passive_failures_reaching_the_threshold_mark_the_node_down() -> None:
    cluster = Cluster()
    cluster.mode["a"] = "connect"
    pool = make_pool(cluster, fail_threshold=1)
    await served_by(pool)
    assert [snap.up for snap in pool.snapshot()] == [False, True]


async def test_client_errors_are_not_failed_over() -> None:
    cluster = Cluster()
    cluster.mode["a"] = "404"
    pool = make_pool(cluster)
    with pytest.raises(UpstreamStatusError, match="not found") as info:
        await served_by(pool)
    assert info.value.upstream_status == 404
    assert cluster.calls == ["a"]
    assert in_flight(pool) == {"a": 0, "b": 0}


async def test_no_retry_once_the_stream_is_handed_out() -> None:
    cluster = Cluster()
    cluster.mode["a"] = "drop"
    pool = make_pool(cluster)
    with pytest.raises(UpstreamProtocolError, match="ended early"):
        await served_by(pool)
    assert cluster.calls == ["a"]
    assert in_flight(pool) == {"a": 0, "b": 0}


async def test_when_every_node_fails_the_last_error_is_raised() -> None:
    cluster = Cluster()
    cluster.mode.update(a="connect", b="hang")
    pool = make_pool(cluster)
    with pytest.raises(UpstreamTimeout) as info:
        await served_by(pool)
    assert info.value.node == "b"
    assert cluster.calls == ["a", "b"]


async def test_non_streaming_request_fails_over_and_names_the_node() -> None:
    cluster = Cluster()
    cluster.mode["a"] = "connect"
    pool = make_pool(cluster)
    answer, name = await pool.request("/api/embed", {"model": "e", "input": "x"}, model_tag="e", nodes=None)
    assert (answer, name) == ({"node": "b"}, "b")
    assert in_flight(pool) == {"a": 0, "b": 0}


async def test_non_streaming_request_raises_client_errors() -> None:
    cluster = Cluster()
    cluster.mode["a"] = "404"
    pool = make_pool(cluster)
    with pytest.raises(UpstreamStatusError):
        await pool.request("/api/embed", {"model": "e", "input": "x"}, model_tag="e", nodes=["a", "b"])
    assert cluster.calls == ["a"]


# --- health --------------------------------------------------------------------------------------


async def test_health_marks_down_after_threshold_and_up_after_one_success() -> None:
    cluster = Cluster()
    cluster.sick.add("a")
    pool = make_pool(cluster, fail_threshold=3)
    for expected_up in (True, True, False):
        await pool.check_now()
        assert pool.snapshot()[0].up is expected_up
    assert pool.snapshot()[0].consecutive_failures == 3
    assert await served_by(pool) == "b"
    cluster.sick.clear()
    await pool.check_now()
    snap = pool.snapshot()[0]
    assert snap.up and snap.consecutive_failures == 0


async def test_no_healthy_node_is_unavailable_at_once() -> None:
    cluster = Cluster()
    cluster.sick.add("a")
    pool = make_pool(cluster, node("a"), fail_threshold=1, acquire_timeout=5.0)
    await pool.check_now()
    with pytest.raises(UpstreamUnavailable, match="no healthy node") as info:
        await asyncio.wait_for(served_by(pool), 0.5)
    assert info.value.code == "upstream_unavailable"


async def test_a_waiter_fails_fast_when_its_last_node_goes_down() -> None:
    cluster = Cluster()
    pool = make_pool(cluster, node("a", max_concurrency=1), fail_threshold=1, acquire_timeout=5.0)
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None):
        waiting = asyncio.create_task(served_by(pool))
        await asyncio.sleep(0.01)
        cluster.sick.add("a")
        await pool.check_now()
        with pytest.raises(UpstreamUnavailable, match="no healthy node"):
            await asyncio.wait_for(waiting, 0.5)


async def test_a_node_coming_up_serves_a_waiter() -> None:
    cluster = Cluster()
    cluster.sick.add("b")
    pool = make_pool(cluster, node("a", max_concurrency=1), node("b"), fail_threshold=1, acquire_timeout=2.0)
    await pool.check_now()
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None):
        waiting = asyncio.create_task(served_by(pool))
        await asyncio.sleep(0.01)
        cluster.sick.clear()
        await pool.check_now()
        assert await asyncio.wait_for(waiting, 0.5) == "b"


async def test_background_checker_runs_and_stops() -> None:
    cluster = Cluster()
    cluster.loaded["a"] = ["m:latest"]
    pool = make_pool(cluster, health_interval=0.01)
    await pool.start()
    for _ in range(50):
        if pool.snapshot()[0].loaded_models:
            break
        await asyncio.sleep(0.01)
    assert pool.snapshot()[0].loaded_models == ("m:latest",)
    await pool.aclose()
    with pytest.raises(UpstreamUnavailable, match="closed"):
        await served_by(pool)


async def test_closing_fails_queued_waiters() -> None:
    pool = make_pool(Cluster(), node("a", max_concurrency=1), acquire_timeout=2.0)
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None):
        waiting = asyncio.create_task(served_by(pool))
        await asyncio.sleep(0.01)
        await pool.aclose()
        with pytest.raises(UpstreamUnavailable, match="closed"):
            await asyncio.wait_for(waiting, 0.5)


# --- reconfiguration and snapshot ------------------------------------------------------------


async def test_a_stream_in_flight_on_a_removed_node_finishes() -> None:
    pool = make_pool(Cluster())
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None) as stream:
        assert stream.node == "a"
        pool.configure([node("b"), node("c")])
        assert [snap.name for snap in pool.snapshot()] == ["b", "c"]
        items = [item async for item in stream]
        assert items[-1]["done"]
    assert in_flight(pool) == {"b": 0, "c": 0}
    assert await served_by(pool) == "b"


async def test_a_node_whose_url_changes_is_a_fresh_node() -> None:
    cluster = Cluster()
    cluster.sick.add("a")
    pool = make_pool(cluster, node("a"), fail_threshold=1)
    await pool.check_now()
    assert not pool.snapshot()[0].up
    pool.configure([NodeConfig(name="a", url="http://a2:11434")])
    snap = pool.snapshot()[0]
    assert snap.up and snap.url == "http://a2:11434" and snap.consecutive_failures == 0


async def test_duplicate_node_names_are_refused() -> None:
    pool = make_pool(Cluster())
    with pytest.raises(ValueError, match="duplicate"):
        pool.configure([node("a"), node("a")])
    assert [snap.name for snap in pool.snapshot()] == ["a", "b"]


def test_node_config_is_validated() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        NodeConfig(name="a", url="http://a", max_concurrency=0)
    with pytest.raises(ValueError, match="weight"):
        NodeConfig(name="a", url="http://a", weight=0)


async def test_snapshot_reports_utilization_and_loaded_models() -> None:
    cluster = Cluster()
    cluster.loaded["a"] = ["qwen3:8b", "nomic-embed-text:latest"]
    pool = make_pool(cluster, node("a", max_concurrency=4))
    await pool.check_now()
    async with pool.open_stream("/api/chat", CHAT, model_tag="m", nodes=None):
        snap = pool.snapshot()[0]
        assert (snap.name, snap.url, snap.up) == ("a", "http://a:11434", True)
        assert (snap.in_flight, snap.max_concurrency, snap.utilization) == (1, 4, 0.25)
        assert snap.loaded_models == ("m:latest", "nomic-embed-text:latest", "qwen3:8b")
    assert pool.snapshot()[0].utilization == 0.0


async def test_a_failed_open_does_not_leak_slots_on_cancel() -> None:
    cluster = Cluster()
    cluster.mode["a"] = "hang"
    pool = make_pool(cluster, first_byte_timeout=5.0)
    task = asyncio.create_task(served_by(pool))
    await asyncio.sleep(0.01)
    assert in_flight(pool) == {"a": 1, "b": 0}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_flight(pool) == {"a": 0, "b": 0}


async def test_connect_error_alone_is_reported_as_node_connect_error() -> None:
    cluster = Cluster()
    cluster.mode["a"] = "connect"
    pool = make_pool(cluster, node("a"))
    with pytest.raises(NodeConnectError):
        await served_by(pool)


# --- over real loopback HTTP, against the Ollama emulator ------------------------------------------


@pytest.mark.parametrize("direct", [False, True], ids=["httpx", "direct"])
async def test_pool_over_http_fails_over_from_a_dead_node_and_learns_residency(direct: bool) -> None:
    fake = create_fake_app()
    transport = FastTransport()
    asked: list[str] = []

    def route(url: str) -> FastTransport | None:
        asked.append(url)
        return transport if direct else None

    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
        async with aserve_app(fake) as url, httpx.AsyncClient(transport=transport) as http:
            pool = NodePool(http, first_byte_timeout=2, idle_timeout=2, fail_threshold=2, direct=route)
            pool.configure([NodeConfig("dead", dead_url), NodeConfig("fake", url)])
            ask = {"model": "qwen3", "messages": [{"role": "user", "content": "hello"}]}
            async with pool.open_stream("/api/chat", ask, model_tag="qwen3", nodes=None) as stream:
                items = [item async for item in stream]
            assert stream.node == "fake" and items[-1]["done"]
            await pool.check_now()
            dead_snap, fake_snap = pool.snapshot()
            assert (dead_snap.up, dead_snap.consecutive_failures) == (False, 2)  # one passive + one active failure
            assert fake_snap.up and "qwen3:latest" in fake_snap.loaded_models
            answer, name = await pool.request(
                "/api/embed", {"model": "nomic-embed-text", "input": "x"}, model_tag="nomic-embed-text", nodes=None
            )
            assert name == "fake" and len(answer["embeddings"]) == 1
            await pool.aclose()
    assert asked == [dead_url, url]  # decided once per configured node
