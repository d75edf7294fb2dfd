"""Capabilities come from the nodes: /v1/models, the catalogue, readiness, and what requests may ask."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.support.stack import Stack, registry_text, run_stack

WIDE_EMBED = """  - name: privaterouter/test-embed-wide
    tag: nomic-embed-text:latest
    family: embedding
    kind: embedding
    context: 8192
    input_price: "0.050000"
    output_price: "0.000000"
"""


async def _models(stack: Stack, key: str) -> dict[str, dict[str, Any]]:
    """/v1/models once every model's node has been read (the health checks run every 0.2 s here)."""
    async with httpx.AsyncClient(base_url=stack.v1, headers={"Authorization": f"Bearer {key}"}) as http:
        for _ in range(100):
            data = (await http.get("/models")).json()["data"]
            if all("capabilities" in entry for entry in data):
                return {entry["id"]: entry for entry in data}
            await asyncio.sleep(0.05)
    raise AssertionError("capabilities never appeared in /v1/models")


async def test_v1_models_and_the_catalogue_show_the_nodes_capabilities(stack: Stack) -> None:
    tenant = await stack.tenant()
    models = await _models(stack, tenant.api_key)
    assert models["privaterouter/fast"]["capabilities"] == ["completion", "thinking", "tools", "vision"]
    assert models["privaterouter/deepseek-reason"]["capabilities"] == ["completion", "thinking"]
    assert models["privaterouter/embed"]["capabilities"] == ["embedding"]
    assert models["privaterouter/embed"]["context_length"] == 2048
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        catalogue = {item["name"]: item for item in (await http.get("/api/models")).json()["items"]}
        ready = (await http.get("/health/readiness")).json()
    assert catalogue["privaterouter/qwen-fast"]["capabilities"] == ["completion", "thinking", "tools"]
    assert "upstream" not in catalogue["privaterouter/qwen-fast"]
    assert "qwen3" not in str(catalogue)  # no Ollama tag anywhere in the public catalogue
    assert ready["checks"]["models"].startswith("ok (")


async def test_what_a_model_cannot_do_is_a_400_naming_the_parameter(stack: Stack) -> None:
    tenant = await stack.tenant()
    await _models(stack, tenant.api_key)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    async with openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:  # deepseek-r1 has no tools on its node
            await client.chat.completions.create(model="privaterouter/deepseek-reason", tools=[tool],  # type: ignore[list-item]
                                                 messages=[{"role": "user", "content": "hi"}])
        thinking = await client.chat.completions.create(model="privaterouter/fast", reasoning_effort="high",
                                                        messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "invalid_body" and refused.value.param == "tools"
    assert "privaterouter/deepseek-reason" in refused.value.message and "deepseek-r1" not in refused.value.message
    assert (thinking.choices[0].message.model_extra or {}).get("reasoning")


async def test_models_yaml_claiming_more_context_than_the_node_is_narrowed_and_logged(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.capabilities")
    with run_stack(make_settings, database_url, tmp_path) as stack:
        stack.models_file.write_text(registry_text(stack.ollama_urls, extra=WIDE_EMBED))
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            admin = await stack.admin_token()
            reloaded = await http.post("/api/admin/reload", headers={"Authorization": f"Bearer {admin}"})
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["warnings"] == ["privaterouter/test-embed-wide: models.yaml says context 8192, "
                                                   "its nodes serve 2048; 2048 is used"]
            tenant = await stack.tenant()
            models = await _models(stack, tenant.api_key)
            for _ in range(100):
                ready = (await http.get("/health/readiness")).json()["checks"]["models"]
                if "test-embed-wide" in ready and any("test-embed-wide" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
        await stack.engine.dispose()
    assert models["privaterouter/test-embed-wide"]["context_length"] == 2048
    assert ready.startswith("warning:") and "context 8192" in ready
    [line] = [r.getMessage() for r in caplog.records if "test-embed-wide" in r.getMessage()]
    assert "models.yaml says context 8192, its nodes serve 2048" in line
