"""gateway.nodes: node status, model presence, pull (with resume) and warm against real emulators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import nodes
from gateway.registry import load
from providers.ollama.fake import FakeConfig
from providers.ollama.fake.catalogue import BY_NAME
from providers.ollama.fake.info import VERSION as EMULATED_VERSION
from tests.support.nodes import closed_port_url, emulator_nodes


async def test_statuses_report_up_down_version_and_resident_models(tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 1, dead=[closed_port_url()]) as found:
        httpx.post(f"{found.urls[0]}/api/chat", json={"model": "gemma4", "keep_alive": "10m"}).raise_for_status()
        registry = load(found.models_file)
        async with httpx.AsyncClient() as http:
            statuses = await nodes.node_statuses(registry, http, timeout=2)
    up, down = statuses
    assert (up.name, up.inspection.up, up.inspection.version) == ("node0", True, EMULATED_VERSION)
    assert up.inspection.latency_ms is not None and up.inspection.latency_ms >= 0
    assert [item.name for item in up.inspection.resident] == ["gemma4:latest"]
    resident = up.as_json()["resident_models"][0]
    assert resident["size"] == BY_NAME["gemma4"].size and resident["size_vram"] > 0 and resident["expires_at"]
    assert up.in_flight is None and up.max_concurrency == 8
    assert (down.name, down.inspection.up, down.inspection.version) == ("dead0", False, None)
    assert "cannot connect" in (down.inspection.error or "")


async def test_check_names_the_missing_tag_per_node(tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 2) as found:
        httpx.request("DELETE", f"{found.urls[1]}/api/delete", json={"model": "qwen3-coder"}).raise_for_status()
        registry = load(found.models_file)
        async with httpx.AsyncClient() as http:
            presences = await nodes.check_models(registry, http)
    assert len(presences) == len(registry.models) * 2
    missing = [(item.model, item.tag, item.node) for item in presences if not item.present]
    assert missing == [("privaterouter/deepseek-code", "qwen3-coder:latest", "node1")]
    present = next(item for item in presences if item.model == "privaterouter/fast" and item.node == "node0")
    assert present.digest == BY_NAME["gemma4"].digest


def test_targets_refuse_unknown_names_and_wrong_pairs(tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 2) as found:
        registry = load(found.models_file)
    assert [(node.name, tag) for node, tag in nodes.pull_targets(registry, "privaterouter/fast", "node1")] == [
        ("node1", "gemma4:latest")]
    assert len(nodes.pull_targets(registry, None, None)) == len(registry.models) * 2
    with pytest.raises(nodes.NodeOpsError) as unknown:
        nodes.pull_targets(registry, "privaterouter/none", None)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(nodes.NodeOpsError) as no_node:
        nodes.pull_targets(registry, None, "gpu-9")
    assert no_node.value.code == "node_not_found"


class _DropFirstPull:
    """ASGI wrapper: the first /api/pull response is cut after a few lines (a lost connection)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cut = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/pull" or self.cut:
            await self.app(scope, receive, send)
            return
        self.cut = True
        sent = 0

        async def limited(message: Any) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                sent += 1
                if sent > 4:
                    raise ConnectionResetError("cut")
            await send(message)

        try:
            await self.app(scope, receive, limited)
        except ConnectionResetError:
            pass  # returning with the body unfinished makes uvicorn drop the connection


async def test_a_dropped_pull_is_resumed(tmp_path: Path) -> None:
    from providers.ollama.fake import create_fake_app
    from tests.support.nodes import shipped_registry
    from tests.support.servers import serve_app

    fake = create_fake_app(FakeConfig(token_delay=0.01))
    with serve_app(_DropFirstPull(fake)) as url:
        httpx.request("DELETE", f"{url}/api/delete", json={"model": "qwen3"}).raise_for_status()
        (tmp_path / "models.yaml").write_text(shipped_registry([url]))
        registry = load(tmp_path / "models.yaml")
        targets = nodes.pull_targets(registry, "privaterouter/qwen-fast", None)
        async with httpx.AsyncClient() as http:
            events = [event async for event in nodes.pull(http, targets, retry_delay=0.01)]
        tags = httpx.get(f"{url}/api/tags").json()["models"]
    assert [event.error for event in events if event.error] == []
    retried = [event for event in events if event.progress and event.progress.status.startswith("retrying")]
    assert len(retried) == 1
    weights = [event.progress.completed for event in events
               if event.attempt == 2 and event.progress and event.progress.completed
               and event.progress.digest == f"sha256:{BY_NAME['qwen3'].digest}"]
    step = BY_NAME["qwen3"].size // 8
    assert weights[0] > step  # attempt 2 began where attempt 1 stopped, not at the first step
    assert events[-1].progress is not None and events[-1].progress.status == "success"
    assert "qwen3:latest" in [item["name"] for item in tags]


async def test_unknown_tag_on_the_node_is_one_final_error(tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 1) as found:
        text = found.models_file.read_text().replace("tag: gemma4:latest", "tag: gemma9:latest")
        found.models_file.write_text(text)
        registry = load(found.models_file)
        async with httpx.AsyncClient() as http:
            targets = nodes.pull_targets(registry, "privaterouter/fast", None)
            events = [event async for event in nodes.pull(http, targets)]
    assert [(event.node, event.tag, event.error) for event in events] == [
        ("node0", "gemma9:latest", "pull model manifest: file does not exist")]


async def test_warm_loads_chat_and_embedding_models(tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 1) as found:
        registry = load(found.models_file)
        async with httpx.AsyncClient() as http:
            results = await nodes.warm(registry, http, None, None, keep_alive="1h")
        resident = {item["name"] for item in httpx.get(f"{found.urls[0]}/api/ps").json()["models"]}
    assert all(result.error is None for result in results) and len(results) == len(registry.models)
    assert {"gemma4:latest", "nomic-embed-text:latest"} <= resident
