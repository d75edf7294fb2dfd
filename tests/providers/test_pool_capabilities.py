"""The pool keeps each node's /api/version and /api/show facts for the watched models."""

from __future__ import annotations

import httpx

from providers.ollama.capabilities import ModelInfo
from providers.pool import NodeConfig, NodePool

SHOWS = {
    "a": {"capabilities": ["completion", "tools", "thinking"],
          "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960}},
    "b": {"capabilities": ["completion", "tools"],
          "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 8192}},
}


class Nodes:
    def __init__(self) -> None:
        self.versions = {"a": "0.12.11", "b": "0.12.3"}
        self.shows: list[tuple[str, str]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host, path = request.url.host, request.url.path
        if path == "/api/version":
            return httpx.Response(200, json={"version": self.versions[host]})
        if path == "/api/ps":
            return httpx.Response(200, json={"models": []})
        if path == "/api/show":
            tag = httpx.Response(200, content=request.content).json()["model"]
            self.shows.append((host, tag))
            if tag != "qwen3:latest":
                return httpx.Response(404, json={"error": f"model '{tag}' not found"})
            return httpx.Response(200, json=SHOWS[host])
        return httpx.Response(404)


def make_pool(nodes: Nodes) -> NodePool:
    pool = NodePool(httpx.AsyncClient(transport=httpx.MockTransport(nodes)), first_byte_timeout=1, idle_timeout=1)
    pool.configure([NodeConfig("a", "http://a:11434"), NodeConfig("b", "http://b:11434")])
    return pool


async def test_health_checks_read_the_watched_models_once_and_combine_the_nodes() -> None:
    nodes = Nodes()
    pool = make_pool(nodes)
    pool.watch(["qwen3", "gone:latest"])
    assert pool.cached_model_info("qwen3:latest", None) is None
    await pool.check_now()
    await pool.check_now()  # nothing changed: no second read
    assert sorted(nodes.shows) == [("a", "gone:latest"), ("a", "qwen3:latest"), ("b", "gone:latest"),
                                   ("b", "qwen3:latest")]
    assert pool.cached_model_info("qwen3:latest", None) == ModelInfo(frozenset({"completion", "tools"}), 8192,
                                                                     (0, 12, 3))
    assert pool.cached_model_info("qwen3:latest", ["a"]) == ModelInfo(
        frozenset({"completion", "tools", "thinking"}), 40960, (0, 12, 11))
    assert pool.cached_model_info("gone:latest", None) is None  # on no node
    [a, b] = pool.snapshot()
    assert a.version == "0.12.11" and a.models["gone:latest"] is None


async def test_an_upgrade_rereads_the_models() -> None:
    nodes = Nodes()
    pool = make_pool(nodes)
    pool.watch(["qwen3:latest"])
    await pool.check_now()
    nodes.versions["b"] = "0.12.11"
    await pool.check_now()
    assert nodes.shows.count(("b", "qwen3:latest")) == 2 and nodes.shows.count(("a", "qwen3:latest")) == 1
    info = pool.cached_model_info("qwen3:latest", None)
    assert info is not None and info.version == (0, 12, 11)


async def test_model_info_asks_on_first_use() -> None:
    nodes = Nodes()
    pool = make_pool(nodes)
    assert pool.would_ask("qwen3", ["a"])
    info = await pool.model_info("qwen3", ["a"])
    assert info is not None and info.can("thinking") and nodes.shows == [("a", "qwen3:latest")]
    assert not pool.would_ask("qwen3", ["a"]) and pool.would_ask("qwen3", None)  # b was not asked yet
    await pool.model_info("qwen3", ["a"])
    assert len(nodes.shows) == 1


async def test_a_failing_show_is_not_retried_on_every_request() -> None:
    nodes = Nodes()
    calls: list[str] = []

    async def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/show":
            calls.append(request.url.host)
            return httpx.Response(500, json={"error": "busy"})
        return await nodes(request)

    pool = NodePool(httpx.AsyncClient(transport=httpx.MockTransport(broken)), first_byte_timeout=1, idle_timeout=1,
                    health_interval=60)
    pool.configure([NodeConfig("a", "http://a:11434")])
    assert await pool.model_info("qwen3", None) is None
    assert await pool.model_info("qwen3", None) is None
    assert calls == ["a"]
