"""Every error on every route answers in the OpenAI envelope, with a request id."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.app import create_app
from gateway.http import read_json
from gateway.settings import Settings
from tests.conftest import envelope


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_reports_each_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/readiness")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["registry"].startswith("ok")


async def test_readiness_reports_redis_degraded_but_stays_ready(make_settings: Callable[..., Settings],
                                                                database_url: str) -> None:
    app = create_app(make_settings(DATABASE_URL=database_url, REDIS_URL="redis://127.0.0.1:1/0"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/health/readiness")
    assert response.status_code == 200  # Redis down must not take every replica out of rotation
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("degraded")


async def test_unknown_v1_route_is_endpoint_not_supported(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/images/generations", json={})
    assert response.status_code == 404
    assert envelope(response)["code"] == "endpoint_not_supported"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"])
async def test_inference_routes_answer_other_methods_with_405(client: httpx.AsyncClient, path: str) -> None:
    # POSTs to these skip the router (a dict lookup in the edge middleware); other methods still get its 405.
    response = await client.get(path)
    assert response.status_code == 405
    assert envelope(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]
    assert len(response.headers["x-request-id"]) == 32


async def test_inference_post_without_a_key_is_401_with_request_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={}, headers={"X-Request-ID": "direct-1"})
    assert response.status_code == 401
    assert envelope(response)["code"] == "invalid_api_key"
    assert response.headers["x-request-id"] == "direct-1"
    assert response.headers["www-authenticate"] == "Bearer"


def test_only_the_inference_posts_skip_the_router() -> None:
    from gateway.app import direct_routes
    from gateway.routes import v1

    assert set(direct_routes(v1.routes)) == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                                             "/v1/responses"}


async def test_unknown_route_is_not_found_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert envelope(response)["code"] == "not_found"


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient) -> None:
    response = await client.post("/health")
    assert response.status_code == 405
    assert envelope(response)["code"] == "method_not_allowed"


async def test_request_id_is_kept_or_generated(client: httpx.AsyncClient) -> None:
    kept = await client.get("/health", headers={"X-Request-ID": "client-abc-123"})
    assert kept.headers["x-request-id"] == "client-abc-123"
    made = await client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32


def _probe_app(max_body: int = 64) -> Starlette:
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from gateway.app import _gateway_error, _http_exception
    from gateway.errors import GatewayError
    from gateway.middleware.edge import EdgeMiddleware

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(await read_json(request))

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("secret internals")

    return Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/boom", boom)],
                     middleware=[Middleware(EdgeMiddleware, max_bytes=max_body)],
                     exception_handlers={HTTPException: _http_exception, GatewayError: _gateway_error})


@pytest.fixture
async def probe() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_probe_app())
    return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]"])
async def test_malformed_json_is_invalid_body(probe: httpx.AsyncClient, body: bytes) -> None:
    response = await probe.post("/echo", content=body)
    assert response.status_code == 400
    assert envelope(response)["code"] == "invalid_body"


async def test_oversized_body_is_413(probe: httpx.AsyncClient) -> None:
    response = await probe.post("/echo", content=json.dumps({"x": "y" * 100}))
    assert response.status_code == 413
    assert envelope(response)["code"] == "request_too_large"


async def test_oversized_chunked_body_is_413(probe: httpx.AsyncClient) -> None:
    async def chunks():  # no content-length: the limit is enforced while reading
        for _ in range(10):
            yield b"x" * 20

    response = await probe.post("/echo", content=chunks())
    assert response.status_code == 413


async def test_unhandled_error_is_500_envelope_without_internals(probe: httpx.AsyncClient,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="pr.errors"):
        response = await probe.get("/boom", headers={"X-Request-ID": "r-1"})
    assert response.status_code == 500
    error = envelope(response)
    assert error["code"] == "internal_error"
    assert "secret" not in response.text
    assert response.headers["x-request-id"] == "r-1"
    assert "r-1" in caplog.text


async def test_client_leaving_before_its_body_is_read_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "raw_path": b"/echo", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("t", 80), "client": ("127.0.0.1", 1), "root_path": "", "app": None}
    with caplog.at_level(logging.INFO, logger="pr.errors"):
        await _probe_app()(scope, receive, send)  # type: ignore[arg-type]
    assert sent == [] and "client disconnected" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
