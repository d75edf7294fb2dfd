"""AGENTS.md cannot drift: its endpoints are the routing table, its refusals are what the app refuses,
its error codes and limits are the code's."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.routing import Route, WebSocketRoute

from gateway.app import ROUTES, create_app
from gateway.billing.holds import FLOOR_PICO
from gateway.billing.money import to_pico
from gateway.billing.offers import DEFAULT_TOPUP_AMOUNTS_USD
from gateway.keys import MAX_RPM
from gateway.settings import SETTINGS, Settings
from gateway.tenants import create_tenant
from providers.openai.embeddings import MAX_INPUTS
from tests.support.control_plane import ctx

REPO = Path(__file__).resolve().parent.parent
TEXT = (REPO / "AGENTS.md").read_text()
API_PREFIXES = ("/v1", "/api", "/ws", "/health", "/metrics")  # web pages are for people, not agents


def _section(title: str) -> str:
    start = TEXT.index(f"## {title}\n")
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start:end if end != -1 else None]


def documented_endpoints() -> set[tuple[str, str]]:
    rows = re.findall(r"^\| `(GET|POST|PATCH|DELETE|PUT|WS) (/[^`]*)` \|", _section("Endpoints"), re.MULTILINE)
    return {(method, path) for method, path in rows}


def routed_endpoints() -> set[tuple[str, str]]:
    found = set()
    for route in ROUTES:
        if isinstance(route, WebSocketRoute):
            found.add(("WS", route.path))
        elif isinstance(route, Route) and route.path.startswith(API_PREFIXES):
            found.update((method, route.path) for method in (route.methods or set()) - {"HEAD"})
    return found


def test_every_route_is_documented_and_nothing_else() -> None:
    documented, routed = documented_endpoints(), routed_endpoints()
    assert routed - documented == set(), "routes missing from AGENTS.md"
    assert documented - routed == set(), "AGENTS.md documents routes that do not exist"


def refusals() -> list[tuple[str, str, object]]:
    rows = re.findall(r"^\| `(/v1/[a-z/]+)` \| `([a-z_]+)` \| `([^`]+)`", _section("Chat parameters"), re.MULTILINE)
    return [(endpoint, param, orjson.loads(example)) for endpoint, param, example in rows]


MINIMAL = {
    "/v1/chat/completions": {"model": "privaterouter/fast", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "privaterouter/fast", "prompt": "hi"},
    "/v1/embeddings": {"model": "privaterouter/embed", "input": "hi"},
    "/v1/responses": {"model": "privaterouter/fast", "input": "hi"},
}


async def test_every_documented_refusal_is_a_400_naming_the_parameter(
        gateway_settings: Callable[..., Settings]) -> None:
    cases = refusals()
    assert len(cases) >= 10 and {endpoint for endpoint, _, _ in cases} == set(MINIMAL)
    app = create_app(gateway_settings())
    async with app.router.lifespan_context(app):
        settings = ctx(app).settings
        async with ctx(app).sessions() as session:
            tenant = await create_tenant(session, secret=settings.app_secret_key, plan="team",
                                         credits_pico=to_pico("5"))
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
            for endpoint, param, value in cases:
                response = await client.post(endpoint, json={**MINIMAL[endpoint], param: value})
                assert response.status_code == 400, (endpoint, param, response.text)
                error = response.json()["error"]
                assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_body"), error
                assert (error["param"] or "").split(".")[0] == param, (endpoint, param, error)


def test_error_codes_exist_in_the_code() -> None:
    source = "\n".join(path.read_text() for folder in ("gateway", "providers")
                       for path in (REPO / folder).rglob("*.py"))
    rows = re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \| (.+) \|$", _section("Errors"), re.MULTILINE)
    codes = {code for _, _, cell in rows for code in re.findall(r"`([a-z_]+)`", cell)}
    assert len(rows) == 14 and len(codes) >= 29
    missing = {code for code in codes if f'"{code}"' not in source}
    assert missing == set()


def test_limits_match_the_code() -> None:
    limits = _section("Limits")
    assert f"at least ${FLOOR_PICO / 10**12:g}" in limits
    assert f"up to {MAX_INPUTS} inputs" in limits
    assert f"(1..{MAX_RPM})" in limits
    assert f"Top-up amounts (unless `models.yaml` sets its own): {', '.join(DEFAULT_TOPUP_AMOUNTS_USD)} USD" in limits
    default_body = next(setting.default for setting in SETTINGS if setting.name == "MAX_BODY_BYTES")
    assert f"default {default_body} bytes" in limits


@pytest.mark.parametrize("name", ["IP_RPM", "ROOT_PATH", "MAX_BODY_BYTES", "BODY_TIMEOUT", "SIGNUP_MODE"])
def test_settings_named_exist(name: str) -> None:
    assert name in TEXT and any(setting.name == name for setting in SETTINGS)
