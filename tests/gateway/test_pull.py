"""`privaterouter pull-models`: each model's tag is pulled on each node that serves it, with the node's headers."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.pull import pull_models, pulls
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
    pairs = pulls(registry)
    tags = {model.tag for model in registry.models.values()}
    assert set(pairs) == {(node, tag) for node in ("a", "b") for tag in tags}
    assert len(pairs) == len(set(pairs))


def test_pulls_are_posted_with_the_node_headers_and_failures_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _two_nodes(monkeypatch)
    seen: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.host, body["model"], request.headers.get("authorization")))
        assert request.url.path == "/api/pull" and body["stream"] is False
        if request.url.host == "b" and body["model"] == "qwen3:latest":
            return httpx.Response(500, json={"error": "disk full"})
        return httpx.Response(200, json={"status": "success"})

    lines: list[str] = []
    failures = pull_models(registry, report=lines.append, transport=httpx.MockTransport(handler))
    assert failures == 1 and "b: qwen3:latest failed: HTTP 500" in "\n".join(lines)
    assert all(auth == "Bearer t0k" for host, _, auth in seen if host == "a")
    assert all(auth is None for host, _, auth in seen if host == "b")
    assert len(seen) == len(pulls(registry))
