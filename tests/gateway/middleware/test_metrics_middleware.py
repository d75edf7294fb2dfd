"""HTTP metrics: route templates, bounded labels, exceptions, in-flight, and what is not counted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.middleware.edge import EdgeMiddleware
from gateway.middleware.metrics import match_template
from gateway.settings import Settings
from tests.support.metrics import METRICS_AUTH, METRICS_TOKEN, Scrape
from tests.support.servers import serve_app


class Probe:
    """A small app behind the edge middleware, with hooks to hold requests open."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

        async def item(request: Request) -> Response:
            return JSONResponse({"id": request.path_params["item_id"]})

        async def boom(request: Request) -> Response:
            raise KeyError("internal")

        async def slow(request: Request) -> Response:
            self.entered.set()
            await self.release.wait()
            return JSONResponse({})

        async def stream(request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                yield b"first"
                self.entered.set()
                await self.release.wait()
                yield b"last"

            return StreamingResponse(chunks())

        async def health(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def echo(request: Request) -> Response:
            return Response(await request.body())

        self.app = Starlette(
            routes=[Route("/items/{item_id}", item, methods=["GET"]), Route("/boom", boom), Route("/slow", slow),
                    Route("/stream", stream), Route("/echo", echo, methods=["POST"]),
                    Route("/health", health), Route("/health/readiness", health),
                    Route("/metrics", health),
                    Mount("/v9", routes=[Route("/things/{thing_id}", health, methods=["GET"])])],
            middleware=[Middleware(EdgeMiddleware, metrics=self.metrics)],
        )
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t")

    def scrape(self) -> Scrape:
        return Scrape.parse(self.metrics.render()[0])


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    probe = Probe()
    async with probe.client:
        yield probe


async def test_route_label_is_the_template(probe: Probe) -> None:
    for item_id in ("1", "2", "abc"):
        assert (await probe.client.get(f"/items/{item_id}")).status_code == 200
    result = probe.scrape()
    assert result.value("pr_http_requests_total", method="GET", route="/items/{item_id}", status="200") == 3
    assert result.value("pr_http_request_duration_seconds_count", method="GET", route="/items/{item_id}",
                        status="200") == 3
    assert [s["route"] for s in result.series("pr_http_requests_total")] == ["/items/{item_id}"]


async def test_mounted_routes_get_the_full_template(probe: Probe) -> None:
    await probe.client.get("/v9/things/7")
    assert probe.scrape().value("pr_http_requests_total", method="GET", route="/v9/things/{thing_id}",
                                status="200") == 1


async def test_method_mismatch_counts_under_the_route_with_405(probe: Probe) -> None:
    assert (await probe.client.delete("/items/1")).status_code == 405
    assert probe.scrape().value("pr_http_requests_total", method="DELETE", route="/items/{item_id}",
                                status="405") == 1


async def test_unknown_methods_collapse_to_one_value(probe: Probe) -> None:
    for method in ("BREW", "PROPFIND", "X-ANYTHING"):
        await probe.client.request(method, "/items/1")
    result = probe.scrape()
    methods = {s["method"] for s in result.series("pr_http_requests_total")}
    assert methods == {"OTHER"}
    assert result.value("pr_http_requests_total", method="OTHER", route="/items/{item_id}", status="405") == 3


async def test_unhandled_exception_is_counted_with_its_type_and_a_500(probe: Probe) -> None:
    response = await probe.client.get("/boom")
    assert response.status_code == 500
    result = probe.scrape()
    assert result.value("pr_http_exceptions_total", method="GET", route="/boom", exception_type="KeyError") == 1
    assert result.value("pr_http_requests_total", method="GET", route="/boom", status="500") == 1
    assert result.value("pr_http_requests_in_flight", method="GET", route="/boom") == 0


async def test_answered_errors_are_not_exceptions(probe: Probe) -> None:
    await probe.client.get("/nope")
    await probe.client.delete("/items/1")
    assert probe.scrape().series("pr_http_exceptions_total") == []


async def test_a_client_that_leaves_before_its_answer_is_499_not_500(probe: Probe,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    # What wrk's closing connections did in the benchmark: the client is gone when the handler reads
    # the body (uvicorn then says `http.disconnect`), nothing is answered, and the 5xx alert must not see it.
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "raw_path": b"/echo", "query_string": b"",
             "headers": [(b"content-length", b"2")], "http_version": "1.1", "scheme": "http",
             "server": ("t", 80), "client": ("127.0.0.1", 1), "root_path": ""}
    with caplog.at_level(logging.INFO):
        await probe.app(scope, receive, send)
    assert sent == []
    result = probe.scrape()
    assert result.value("pr_http_requests_total", method="POST", route="/echo", status="499") == 1
    assert result.value("pr_http_requests_total", method="POST", route="/echo", status="500") is None
    assert result.series("pr_http_exceptions_total") == []
    assert result.value("pr_http_requests_in_flight", method="POST", route="/echo") == 0
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pr.access"]
    assert line["status"] == 499
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_in_flight_covers_the_whole_request(probe: Probe) -> None:
    pending = asyncio.create_task(probe.client.get("/slow"))
    await asyncio.wait_for(probe.entered.wait(), 5)
    assert probe.scrape().value("pr_http_requests_in_flight", method="GET", route="/slow") == 1
    probe.release.set()
    assert (await pending).status_code == 200
    assert probe.scrape().value("pr_http_requests_in_flight", method="GET", route="/slow") == 0


async def test_stream_is_in_flight_until_its_last_byte(probe: Probe) -> None:
    pending = asyncio.create_task(probe.client.get("/stream"))
    await asyncio.wait_for(probe.entered.wait(), 5)
    during = probe.scrape()
    assert during.value("pr_http_requests_in_flight", method="GET", route="/stream") == 1
    assert during.value("pr_http_requests_total", method="GET", route="/stream", status="200") is None
    await asyncio.sleep(0.06)
    probe.release.set()
    assert (await pending).content == b"firstlast"
    after = probe.scrape()
    assert after.value("pr_http_requests_in_flight", method="GET", route="/stream") == 0
    assert after.value("pr_http_requests_total", method="GET", route="/stream", status="200") == 1
    # the duration runs to the last byte: the stream was held open for more than 50 ms
    assert after.value("pr_http_request_duration_seconds_bucket", method="GET", route="/stream", status="200",
                       le="0.05") == 0
    assert after.value("pr_http_request_duration_seconds_bucket", method="GET", route="/stream", status="200",
                       le="+Inf") == 1


@pytest.mark.parametrize("path", ["/metrics", "/health", "/health/readiness"])
async def test_scrapes_and_probes_are_not_counted(probe: Probe, path: str) -> None:
    assert (await probe.client.get(path)).status_code == 200
    result = probe.scrape()
    assert result.series("pr_http_requests_total") == []
    assert result.series("pr_http_requests_in_flight") == []


async def test_a_thousand_unknown_paths_make_one_route_value(gateway_settings: Callable[..., Settings]) -> None:
    app = create_app(gateway_settings(METRICS_TOKEN=METRICS_TOKEN))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for number in range(1000):
                response = await client.get(f"/scan/{number}/x{number * 7919}")
                assert response.status_code == 404
            text = (await client.get("/metrics", headers=METRICS_AUTH)).text
    result = Scrape.parse(text)
    routes = {s["route"] for name in ("pr_http_requests_total", "pr_http_request_duration_seconds_count",
                                      "pr_http_requests_in_flight") for s in result.series(name)}
    assert routes == {"<unmatched>"}
    assert result.value("pr_http_requests_total", method="GET", route="<unmatched>", status="404") == 1000
    assert "/scan/" not in text


def test_real_gateway_counts_requests_by_template_and_status(gateway_settings: Callable[..., Settings]) -> None:
    app = create_app(gateway_settings(METRICS_TOKEN=METRICS_TOKEN))
    with serve_app(app) as base_url, httpx.Client(base_url=base_url) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/nope").status_code == 404
        assert client.post("/nope").status_code == 404
        assert client.post("/metrics").status_code == 405  # not counted either: it is the scrape path
        text = client.get("/metrics", headers=METRICS_AUTH).text
    result = Scrape.parse(text)
    assert result.value("pr_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert result.value("pr_http_requests_total", method="POST", route="<unmatched>", status="404") == 1
    assert {s["route"] for s in result.series("pr_http_requests_total")} == {"<unmatched>"}
    histogram_count = result.value("pr_http_request_duration_seconds_count", method="GET", route="<unmatched>",
                                   status="404")
    assert histogram_count == 1
    assert result.value("pr_http_requests_in_flight", method="GET", route="<unmatched>") == 0


def test_match_template_without_a_match_is_unmatched() -> None:
    scope = {"type": "http", "path": "/x", "method": "GET", "root_path": "", "headers": []}
    assert match_template([], scope) == "<unmatched>"


async def test_template_cache_stays_bounded_under_a_path_scan() -> None:
    from gateway.middleware import metrics as module

    async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    app = Starlette(routes=[Route("/items/{item_id}", answer)])
    middleware = EdgeMiddleware(answer, metrics=Metrics())
    for number in range(module.TEMPLATE_CACHE_SIZE + 500):
        scope = {"type": "http", "path": f"/scan/{number}", "method": "GET", "root_path": "", "headers": [],
                 "app": app}
        await middleware(scope, receive, send)
        assert len(middleware.templates.templates) <= module.TEMPLATE_CACHE_SIZE
    item = {"type": "http", "path": "/items/9", "method": "GET", "root_path": "", "headers": [], "app": app}
    await middleware(item, receive, send)
    await middleware(dict(item), receive, send)  # from the cache this time
    assert middleware.metrics is not None
    result = Scrape.parse(middleware.metrics.render()[0])
    assert result.value("pr_http_requests_total", method="GET", route="/items/{item_id}", status="404") == 2
    assert result.value("pr_http_requests_total", method="GET", route="<unmatched>", status="404") == \
        module.TEMPLATE_CACHE_SIZE + 500
