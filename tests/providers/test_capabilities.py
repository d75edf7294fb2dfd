"""providers/ollama/capabilities.py: parsing /api/show and /api/version, combining nodes, reading over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from providers.errors import UpstreamStatusError
from providers.ollama.capabilities import (
    ModelInfo,
    combine,
    parse_show,
    parse_version,
    read_model_info,
    resident_models,
)
from providers.ollama.client import OllamaClient
from providers.ollama.fake import FakeConfig, create_fake_app
from tests.support.servers import aserve_app


def show(capabilities: Any = ("completion", "tools"), arch: str = "qwen3", context: Any = 40960) -> dict[str, Any]:
    body: dict[str, Any] = {"model_info": {"general.architecture": arch, f"{arch}.context_length": context}}
    if capabilities is not None:
        body["capabilities"] = list(capabilities)
    return body


@pytest.mark.parametrize("payload,expected", [({"version": "0.12.11"}, (0, 12, 11)), ({"version": "v0.6.4-rc1"},
                                              (0, 6, 4)), ("0.1.2", (0, 1, 2)), ({"version": "dev"}, None), ({}, None),
                                              (None, None)])
def test_version(payload: Any, expected: Any) -> None:
    assert parse_version(payload) == expected


def test_show_gives_capabilities_and_the_architectures_context_length() -> None:
    info = parse_show(show(), (0, 12, 3))
    assert info == ModelInfo(frozenset({"completion", "tools"}), 40960, (0, 12, 3))
    assert info.can("tools") is True and info.can("thinking") is False


def test_servers_without_capabilities_say_nothing_rather_than_none() -> None:
    info = parse_show(show(capabilities=None))
    assert info.capabilities is None and info.can("tools") is None


@pytest.mark.parametrize("context", [None, "big", 0, True])
def test_an_unreadable_context_is_unknown(context: Any) -> None:
    assert parse_show(show(context=context)).context_length is None


def test_context_key_named_after_another_architecture_is_still_found() -> None:
    body = {"model_info": {"general.architecture": "qwen3moe", "qwen3.context_length": 4096}}
    assert parse_show(body).context_length == 4096


def test_combining_nodes_promises_only_what_all_of_them_serve() -> None:
    a = ModelInfo(frozenset({"completion", "tools", "thinking"}), 40960, (0, 12, 11))
    b = ModelInfo(frozenset({"completion", "tools"}), 8192, (0, 12, 3))
    assert combine([a, b]) == ModelInfo(frozenset({"completion", "tools"}), 8192, (0, 12, 3))
    assert combine([a, ModelInfo(None, None, None)]) == ModelInfo(a.capabilities, 40960, None)
    assert combine([]) is None


def test_resident_models_from_ps() -> None:
    assert resident_models({"models": [{"model": "qwen3:latest"}, {"name": "x:1"}, "junk", {}]}) == \
        ["qwen3:latest", "x:1"]


@pytest.mark.parametrize("tag,capabilities,context", [
    ("gemma4:latest", {"completion", "vision", "tools", "thinking"}, 131072),
    ("qwen3:latest", {"completion", "tools", "thinking"}, 40960),
    ("deepseek-r1:latest", {"completion", "thinking"}, 131072),
    ("nomic-embed-text:latest", {"embedding"}, 2048),
])
async def test_the_emulator_reports_what_real_ollama_does(tag: str, capabilities: set[str], context: int) -> None:
    async with aserve_app(create_fake_app(FakeConfig())) as url, httpx.AsyncClient() as http:
        client = OllamaClient(http, url, node="n", first_byte_timeout=5, idle_timeout=5)
        info = await read_model_info(client, tag)
        assert await read_model_info(client, "missing-model:latest") is None
    assert info is not None and info.capabilities == capabilities and info.context_length == context


async def test_other_show_failures_are_raised() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": "boom"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = OllamaClient(http, "http://n:1", node="n", first_byte_timeout=1, idle_timeout=1)
        with pytest.raises(UpstreamStatusError):
            await read_model_info(client, "m")
