"""The JSON access log: one line per request with seed 004's fields, the right client IP, no secrets."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.middleware.edge import EdgeMiddleware
from gateway.settings import IPNetwork, Settings
from tests.support.servers import serve_app

SEED_FIELDS = {"ts", "request_id", "method", "route", "raw_path", "status", "latency_ms", "user_id", "ip",
               "user_agent", "bytes"}
SECRET_KEY = "sk-pr-THISISASECRETKEY0123456789abcdef"
SECRET_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJlLXNlY3JldA"
SECRET_PASSWORD = "correct-horse-battery-staple-secret"



def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """Every access-log record, parsed: each must be exactly one JSON object."""
    lines = []
    for record in caplog.records:
        if record.name == "pr.access":
            message = record.getMessage()
            assert "\n" not in message
            parsed = json.loads(message)
            assert isinstance(parsed, dict)
            lines.append(parsed)
    return lines


def probe_app(trusted: Sequence[IPNetwork] = ()) -> Starlette:
    async def item(request: Request) -> Response:
        return JSONResponse({"id": request.path_params["item_id"]})

    async def chat(request: Request) -> Response:
        request.state.user_id = "user-42"
        request.state.model = "privaterouter/fast"
        request.state.input_tokens = 12
        request.state.output_tokens = 30
        return JSONResponse({"ok": True})

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    return Starlette(routes=[Route("/items/{item_id}", item), Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/boom", boom)],
                     middleware=[Middleware(EdgeMiddleware, trusted_proxies=trusted)])


def client_for(app: Starlette, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 50123)), base_url="http://t")


@pytest.fixture(autouse=True)
def capture_access(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pr.access")


def test_real_gateway_line_field_by_field(gateway_settings: Callable[..., Settings],
                                          caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(gateway_settings())
    with serve_app(app) as base_url, httpx.Client(base_url=base_url) as client:
        before = time.time()
        response = client.get("/no/such/page", headers={"User-Agent": "probe/1.0", "X-Request-ID": "req-abc-123"})
        after = time.time()
    lines = [line for line in access_lines(caplog) if line["raw_path"] == "/no/such/page"]
    assert len(lines) == 1
    line = lines[0]
    # A client-chosen id may come with the gateway's own (the one usage events are keyed by).
    assert SEED_FIELDS <= set(line) <= SEED_FIELDS | {"gateway_request_id"}
    assert before - 0.01 <= line["ts"] <= after + 0.01
    assert line["request_id"] == "req-abc-123" == response.headers["x-request-id"]
    assert line["method"] == "GET"
    assert line["route"] == "<unmatched>"
    assert line["raw_path"] == "/no/such/page"
    assert line["status"] == 404 == response.status_code
    assert isinstance(line["latency_ms"], float | int) and 0 <= line["latency_ms"] < (after - before) * 1000 + 1
    assert line["user_id"] is None
    assert line["ip"] == "127.0.0.1"
    assert line["user_agent"] == "probe/1.0"
    assert line["bytes"] == len(response.content)


async def test_generated_request_id_is_the_one_echoed(caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(probe_app()) as client:
        response = await client.get("/items/1")
    (line,) = access_lines(caplog)
    assert set(line) == SEED_FIELDS
    assert line["request_id"] == response.headers["x-request-id"]
    assert len(line["request_id"]) == 32


async def test_route_is_the_template_and_raw_path_the_path(caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(probe_app()) as client:
        await client.get("/items/abc?color=red")
    (line,) = access_lines(caplog)
    assert line["route"] == "/items/{item_id}"
    assert line["raw_path"] == "/items/abc"  # no query string: it may carry secrets


async def test_v1_line_carries_user_model_and_tokens(caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(probe_app()) as client:
        await client.post("/v1/chat/completions", json={"model": "privaterouter/fast"})
    (line,) = access_lines(caplog)
    assert set(line) == SEED_FIELDS | {"model", "input_tokens", "output_tokens"}
    assert line["user_id"] == "user-42"
    assert (line["model"], line["input_tokens"], line["output_tokens"]) == ("privaterouter/fast", 12, 30)
    assert line["status"] == 200


async def test_unhandled_error_is_logged_as_500(caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(probe_app()) as client:
        response = await client.get("/boom")
    (line,) = access_lines(caplog)
    assert response.status_code == 500
    assert line["status"] == 500
    assert line["route"] == "/boom"


async def test_one_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(probe_app()) as client:
        for number in range(25):
            await client.get(f"/items/{number}")
    lines = access_lines(caplog)
    assert [line["raw_path"] for line in lines] == [f"/items/{number}" for number in range(25)]


async def test_long_user_agent_and_path_are_truncated(caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(probe_app()) as client:
        await client.get("/items/" + "p" * 2000, headers={"User-Agent": "u" * 1000})
    (line,) = access_lines(caplog)
    assert line["user_agent"] == "u" * 256
    assert len(line["raw_path"]) == 512


# --- client IP ---------------------------------------------------------------------------------

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


@pytest.mark.parametrize(("trusted", "peer", "forwarded", "expected"), [
    ((), "198.51.100.9", "203.0.113.7", "198.51.100.9"),  # no trusted proxies: XFF ignored
    (PROXIES, "198.51.100.9", "203.0.113.7", "198.51.100.9"),  # peer is not a trusted proxy: ignored
    (PROXIES, "10.1.2.3", "203.0.113.7", "203.0.113.7"),  # trusted proxy: its client
    (PROXIES, "10.1.2.3", "203.0.113.7, 10.9.9.9", "203.0.113.7"),  # through two trusted hops
    (PROXIES, "10.1.2.3", "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # a spoofed left-most value is not believed
    (PROXIES, "10.1.2.3", None, "10.1.2.3"),  # trusted proxy without the header: the peer
])
async def test_client_ip(caplog: pytest.LogCaptureFixture, trusted: tuple[IPNetwork, ...], peer: str,
                         forwarded: str | None, expected: str) -> None:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    async with client_for(probe_app(trusted), peer=peer) as client:
        await client.get("/items/1", headers=headers)
    (line,) = access_lines(caplog)
    assert line["ip"] == expected


async def test_gateway_honours_trusted_proxies_setting(gateway_settings: Callable[..., Settings],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(gateway_settings(TRUSTED_PROXIES="10.0.0.0/8"))
    async with app.router.lifespan_context(app):
        async with client_for(app, peer="10.0.0.5") as client:
            await client.get("/nope", headers={"X-Forwarded-For": "203.0.113.7"})
        async with client_for(app, peer="192.0.2.1") as client:
            await client.get("/nope", headers={"X-Forwarded-For": "203.0.113.8"})
    assert [line["ip"] for line in access_lines(caplog)] == ["203.0.113.7", "192.0.2.1"]


# --- secrets -----------------------------------------------------------------------------------


@pytest.fixture
async def gateway(gateway_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway_settings())
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/api/auth/login"), ("GET", "/api/keys"),
    ("GET", "/nope"),
])
async def test_no_secret_ever_reaches_the_log(gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
                                              method: str, path: str) -> None:
    body = {"email": "someone@example.com", "password": SECRET_PASSWORD, "api_key": SECRET_KEY,
            "messages": [{"role": "user", "content": SECRET_PASSWORD}]}
    for headers in ({"Authorization": f"Bearer {SECRET_KEY}"}, {"X-API-Key": SECRET_KEY},
                    {"Authorization": f"Bearer {SECRET_JWT}", "Cookie": f"pr_session={SECRET_JWT}"}):
        await gateway.request(method, f"{path}?api_key={SECRET_KEY}", headers=headers,
                              json=body if method == "POST" else None)
    lines = access_lines(caplog)
    assert len(lines) == 3
    access_text = "\n".join(json.dumps(line) for line in lines)
    for secret in (SECRET_KEY, SECRET_JWT, SECRET_PASSWORD, "sk-pr-", "someone@example.com"):
        assert secret not in access_text
    every_record = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (SECRET_KEY, SECRET_JWT, SECRET_PASSWORD):
        assert secret not in every_record
