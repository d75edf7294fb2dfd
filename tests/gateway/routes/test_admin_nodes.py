"""`/api/admin/nodes` and `/api/admin/models/*`: the CLI's node operations over HTTP, for admins only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.settings import Settings
from providers.ollama.fake.info import VERSION as EMULATED_VERSION
from tests.conftest import envelope
from tests.support.control_plane import Login, make_admin, signup, use_cheap_passwords
from tests.support.nodes import emulator_nodes


@asynccontextmanager
async def admin_on(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient, Login]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        use_cheap_passwords(app)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client, await make_admin(app, client)


def _sse(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], orjson.loads(fields["data"])))
    return events


async def test_nodes_with_in_flight_and_resident_models(gateway_settings: Callable[..., Settings],
                                                        tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 2) as found:
        httpx.post(f"{found.urls[1]}/api/chat", json={"model": "gemma4"}).raise_for_status()
        async with admin_on(gateway_settings(MODELS_FILE=str(found.models_file))) as (_, client, admin):
            response = await client.get("/api/admin/nodes", headers=admin.headers)
            user = await signup(client)
            refused = await client.get("/api/admin/nodes", headers=user.headers)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(item["name"], item["up"], item["routable"], item["in_flight"], item["max_concurrency"])
            for item in items] == [("node0", True, True, 0, 8), ("node1", True, True, 0, 8)]
    assert items[1]["resident_models"][0]["model"] == "gemma4:latest" and items[0]["resident_models"] == []
    assert items[0]["version"] == EMULATED_VERSION and items[0]["latency_ms"] >= 0
    assert refused.status_code == 403 and envelope(refused)["code"] == "forbidden"


async def test_check_pull_as_sse_and_warm(gateway_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 2) as found:
        httpx.request("DELETE", f"{found.urls[0]}/api/delete", json={"model": "nomic-embed-text"}).raise_for_status()
        async with admin_on(gateway_settings(MODELS_FILE=str(found.models_file))) as (_, client, admin):
            before = (await client.get("/api/admin/models/check", headers=admin.headers)).json()
            pulled = await client.post("/api/admin/models/pull", headers=admin.headers,
                                       json={"model": "privaterouter/embed", "node": "node0"})
            after = (await client.get("/api/admin/models/check", headers=admin.headers)).json()
            warmed = await client.post("/api/admin/models/warm", headers=admin.headers,
                                       json={"model": "privaterouter/embed", "keep_alive": "1h"})
            unknown = await client.post("/api/admin/models/pull", headers=admin.headers, json={"model": "nope"})
            bad = await client.post("/api/admin/models/warm", headers=admin.headers, json={"keep_alive": True})
        resident = httpx.get(f"{found.urls[1]}/api/ps").json()["models"]
    assert before["ok"] is False
    assert [(item["model"], item["node"]) for item in before["missing"]] == [("privaterouter/embed", "node0")]
    assert pulled.status_code == 200 and pulled.headers["content-type"].startswith("text/event-stream")
    events = _sse(pulled.text)
    assert events[0] == ("progress", {"node": "node0", "tag": "nomic-embed-text:latest", "attempt": 1,
                                      "status": "pulling manifest"})
    assert any(kind == "progress" and data.get("completed") for kind, data in events)
    assert events[-2][1]["status"] == "success" and events[-1] == ("done", {"ok": True, "failed": []})
    assert after["ok"] is True and after["missing"] == []
    assert warmed.status_code == 200 and warmed.json()["ok"] is True and len(warmed.json()["items"]) == 2
    assert [item["name"] for item in resident] == ["nomic-embed-text:latest"]
    assert unknown.status_code == 404 and envelope(unknown)["code"] == "model_not_found"
    assert bad.status_code == 400 and envelope(bad)["param"] == "keep_alive"


async def test_readiness_can_require_the_models(gateway_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 1) as found:
        httpx.request("DELETE", f"{found.urls[0]}/api/delete", json={"model": "gemma4"}).raise_for_status()
        async with admin_on(gateway_settings(MODELS_FILE=str(found.models_file))) as (_, client, _admin):
            relaxed = await client.get("/health/readiness")
        async with admin_on(gateway_settings(MODELS_FILE=str(found.models_file),
                                             READINESS_REQUIRE_MODELS="true")) as (_, client, _admin):
            strict = await client.get("/health/readiness")
            httpx.post(f"{found.urls[0]}/api/pull", json={"model": "gemma4", "stream": False}).raise_for_status()
            ready = await client.get("/health/readiness")
    # Without READINESS_REQUIRE_MODELS the missing tag is not probed: `models` is only the capability summary.
    assert relaxed.status_code == 200 and "confirmed by their nodes" in relaxed.json()["checks"]["models"]
    assert "placements missing" not in relaxed.text
    assert strict.status_code == 503 and envelope(strict)["code"] == "not_ready"
    assert strict.json()["checks"]["models"].startswith("error: LookupError: 1 of 6 model placements missing")
    assert "gemma4" not in strict.text and "node0" not in strict.text
    assert ready.status_code == 200 and ready.json()["checks"]["models"] == "ok"
