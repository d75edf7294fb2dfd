"""ROOT_PATH behind a real nginx on loopback, using the sample config in config/proxy/nginx.conf."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from websockets.asyncio.client import connect

from gateway.app import create_app
from gateway.billing.money import to_pico
from gateway.db.engine import create_engine, session_factory
from gateway.settings import Settings, SettingsError
from gateway.tenants import create_tenant
from tests.support.nginx import private_nginx
from tests.support.nodes import emulator_nodes
from tests.support.servers import serve_app

REPO = Path(__file__).resolve().parent.parent.parent
PREFIX = "/api/litellm"


def sample_block(gateway_url: str) -> str:
    text = (REPO / "config" / "proxy" / "nginx.conf").read_text()
    assert "server 127.0.0.1:8000;" in text and "listen 80;" in text
    return text.replace("server 127.0.0.1:8000;", f"server {gateway_url.removeprefix('http://')};")


async def _key(settings: Settings) -> str:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            tenant = await create_tenant(session, secret=settings.app_secret_key, plan="developer",
                                         credits_pico=to_pico("5"))
    finally:
        await engine.dispose()
    return tenant.api_key


async def test_the_api_through_nginx_under_a_prefix(gateway_settings: Callable[..., Settings],
                                                    tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 1) as found:
        settings = gateway_settings(MODELS_FILE=str(found.models_file), ROOT_PATH=PREFIX,
                                    TRUSTED_PROXIES="127.0.0.1/32")
        api_key = await _key(settings)
        with serve_app(create_app(settings)) as gateway_url, private_nginx(tmp_path, sample_block(gateway_url)) as port:
            base = f"http://127.0.0.1:{port}{PREFIX}"
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0)
            # reasoning_effort none: five tokens of a thinking model's reasoning would leave no answer text.
            answer = await client.chat.completions.create(model="privaterouter/fast", max_tokens=5,
                                                          reasoning_effort="none",
                                                          messages=[{"role": "user", "content": "hi"}])
            stream = await client.chat.completions.create(model="privaterouter/fast", max_tokens=5, stream=True,
                                                          reasoning_effort="none",
                                                          messages=[{"role": "user", "content": "hi"}])
            pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
            models = await client.models.list()
            await client.close()
            async with httpx.AsyncClient() as http:
                health = await http.get(f"{base}/health")
                unknown = await http.get(f"{base}/v1/nope", headers={"Authorization": f"Bearer {api_key}"})
                redirect = await http.get(f"{base}/api/plans/")
                followed = await http.get(f"{base}/api/plans/", follow_redirects=True)
                outside = await http.get(f"http://127.0.0.1:{port}/v1/models")
            async with connect(f"ws://127.0.0.1:{port}{PREFIX}/ws") as ws:
                await ws.send(orjson.dumps({"type": "authenticate", "apiKey": api_key}).decode())
                authenticated = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            direct = httpx.get(f"{gateway_url}{PREFIX}/health")  # a proxy that keeps the prefix works too
    assert answer.choices[0].message.content and len(pieces) > 1
    assert "privaterouter/fast" in {model.id for model in models.data}
    assert health.json() == {"status": "ok"}
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "endpoint_not_supported"
    assert redirect.status_code == 307 and redirect.headers["location"] == f"{base}/api/plans"
    assert followed.status_code == 200 and followed.json()["items"]
    assert outside.status_code in (403, 404) and "model" not in outside.text  # only the prefix reaches us
    assert authenticated["type"] == "authenticated"
    assert direct.status_code == 200


@pytest.mark.parametrize("value", ["api/litellm", "/a?b", "/a//b"])
def test_malformed_root_paths_are_refused(make_settings: Callable[..., Settings], value: str) -> None:
    with pytest.raises(SettingsError, match="ROOT_PATH"):
        make_settings(ROOT_PATH=value)


@pytest.mark.parametrize("value", ["/v1", "/api", "/api/auth", "/health"])
def test_root_paths_shadowing_a_route_are_refused(make_settings: Callable[..., Settings], value: str) -> None:
    with pytest.raises(SettingsError, match="shadows the gateway's own route"):
        create_app(make_settings(ROOT_PATH=value))


def test_root_path_normalised(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(ROOT_PATH="/api/litellm/").root_path == "/api/litellm"
    assert make_settings().root_path == ""


def test_caddy_sample_strips_the_same_prefix() -> None:
    text = (REPO / "config" / "proxy" / "Caddyfile").read_text()
    assert f"handle_path {PREFIX}/*" in text and "reverse_proxy 127.0.0.1:8000" in text
    assert "flush_interval -1" in text
