"""A gateway whose models.yaml names an https node (own CA) behind an authenticating proxy: a chat
completion goes through (failing before: the https node failed every request)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from gateway.app import create_app
from gateway.billing.money import to_pico
from gateway.settings import Settings
from gateway.tenants import create_tenant
from providers.ollama.fake import create_fake_app
from tests.support.control_plane import ctx
from tests.support.servers import serve_app
from tests.support.stack import registry_text


async def test_chat_through_an_https_node_with_headers(gateway_settings: Callable[..., Settings], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    cert, ca_pem = tmp_path / "node.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_pem))
    fake = create_fake_app()
    authorized: list[bool] = []

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            ok = (b"authorization", b"Bearer from-env") in scope["headers"]
            authorized.append(ok)
            if not ok:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"{}"})
                return
        await fake(scope, receive, send)

    monkeypatch.setenv("GPU_TOKEN", "from-env")
    with serve_app(guarded, ssl_certfile=str(cert), ssl_keyfile=str(cert)) as url:
        node_url = url.replace("http://", "https://")
        text = registry_text([node_url]).replace(
            f"    url: {node_url}\n",
            f"    url: {node_url}\n    ca_file: {ca_pem}\n    headers:\n      Authorization: Bearer ${{GPU_TOKEN}}\n")
        models = tmp_path / "models.yaml"
        models.write_text(text)
        app = create_app(gateway_settings(MODELS_FILE=str(models)))
        async with app.router.lifespan_context(app):
            async with ctx(app).sessions() as session:
                tenant = await create_tenant(session, secret=ctx(app).settings.app_secret_key, plan="developer",
                                             credits_pico=to_pico("5"))
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client:
                answer = await client.post("/v1/chat/completions",
                                           headers={"Authorization": f"Bearer {tenant.api_key}"},
                                           json={"model": "privaterouter/fast",
                                                 "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    assert authorized and all(authorized)
