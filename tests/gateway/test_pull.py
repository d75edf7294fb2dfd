"""`privaterouter models pull` (gateway.nodes.pull): each node is asked with its own `headers:`."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.nodes import pull, pull_targets
from gateway.registry import Registry, parse
from tests.conftest import MODELS_FILE


def _two_nodes(monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("PULL_TOKEN", "t0k")
    text = MODELS_FILE.read_text()
    start, end = text.index("nodes:\n"), text.index("models:\n")
    nodes = ("nodes:\n  - name: a\n    url: http://a:11434\n    headers:\n      Authorization: Bearer ${PULL_TOKEN}\n"
             "  - name: b\n    url: http://b:11434\n")
    return parse(text[:start] + nodes + "\n" + text[end:])


def test_every_tag_on_every_node_once(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _two_nodes(monkeypatch)
    pairs = [(node.name, tag) for node, tag in pull_targets(registry, None, None)]
    tags = {model.tag for model in registry.models.values()}
    assert set(pairs) == {(node, tag) for node in ("a", "b") for tag in tags}
    assert len(pairs) == len(set(pairs))


async def test_pulls_carry_each_nodes_headers_and_failures_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _two_nodes(monkeypatch)
    seen: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.host, body["model"], request.headers.get("authorization")))
        assert request.url.path == "/api/pull"
        if request.url.host == "b" and body["model"] == "qwen3:latest":
            return httpx.Response(200, content=b'{"error":"disk full"}\n')
        return httpx.Response(200, content=b'{"status":"pulling manifest"}\n{"status":"success"}\n')

    targets = pull_targets(registry, None, None)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        events = [event async for event in pull(http, targets, retry_delay=0)]
    failed = [(event.node, event.tag) for event in events if event.error is not None]
    assert failed == [("b", "qwen3:latest")]
    assert all(auth == "Bearer t0k" for host, _, auth in seen if host == "a")
    assert all(auth is None for host, _, auth in seen if host == "b")
    assert len(seen) == len(targets)
