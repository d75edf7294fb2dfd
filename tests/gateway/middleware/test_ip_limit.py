"""IP_RPM: per-client-address limit on /v1 and /api, with TRUSTED_PROXIES, on both limiter backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import envelope


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        def from_peer(address: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)),
                                     base_url="http://testserver")
        yield from_peer


@pytest.fixture(params=["memory", "redis"])
def limiter_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "memory":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_url")}


async def test_over_the_limit_is_the_plan_limits_429(gateway_settings: Callable[..., Settings],
                                                     limiter_env: dict[str, str]) -> None:
    async with client_for(gateway_settings(IP_RPM="3", **limiter_env)) as peer:
        async with peer("203.0.113.7") as client:
            answers = [await client.get("/v1/models") for _ in range(3)]
            answers.append(await client.get("/api/plans"))
            health = await client.get("/health")
        async with peer("203.0.113.8") as other:
            fresh = await other.get("/api/plans")
    assert [answer.status_code for answer in answers] == [401, 401, 401, 429]
    limited = answers[-1]
    error = envelope(limited)
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "ip_rpm" in error["message"]
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["x-ratelimit-limit-requests"] == "3" and limited.headers["X-RateLimit-Remaining"] == "0"
    assert health.status_code == 200 and fresh.status_code == 200


async def test_trusted_proxies_decide_whose_address_counts(gateway_settings: Callable[..., Settings]) -> None:
    settings = gateway_settings(IP_RPM="1", TRUSTED_PROXIES="10.0.0.0/8")
    async with client_for(settings) as peer:
        async with peer("10.1.2.3") as proxy:
            first = await proxy.get("/api/plans", headers={"X-Forwarded-For": "198.51.100.1"})
            second = await proxy.get("/api/plans", headers={"X-Forwarded-For": "198.51.100.2"})
            again = await proxy.get("/api/plans", headers={"X-Forwarded-For": "198.51.100.1"})
        async with peer("192.0.2.50") as untrusted:  # its X-Forwarded-For is not believed
            own = await untrusted.get("/api/plans", headers={"X-Forwarded-For": "198.51.100.9"})
            spoofed = await untrusted.get("/api/plans", headers={"X-Forwarded-For": "198.51.100.10"})
    assert [first.status_code, second.status_code, again.status_code] == [200, 200, 429]
    assert [own.status_code, spoofed.status_code] == [200, 429]


async def test_off_by_default(gateway_settings: Callable[..., Settings]) -> None:
    settings = gateway_settings()
    assert settings.ip_rpm is None
    async with client_for(settings) as peer, peer("203.0.113.7") as client:
        statuses = {(await client.get("/api/plans")).status_code for _ in range(30)}
    assert statuses == {200}


async def test_websocket_handshakes_count_and_are_refused_with_403(gateway_settings: Callable[..., Settings]) -> None:
    import websockets
    from websockets.asyncio.client import connect

    from tests.support.servers import serve_app

    with serve_app(create_app(gateway_settings(IP_RPM="1"))) as url:
        async with connect(url.replace("http://", "ws://") + "/ws"):
            pass
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(url.replace("http://", "ws://") + "/ws"):
                pass
    assert refused.value.response.status_code == 403
