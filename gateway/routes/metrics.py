"""`GET /metrics`: private by default — only on METRICS_PORT (a small server of its own), or on the
public port to callers presenting `Authorization: Bearer <METRICS_TOKEN>`. With neither set the
public port answers 404, as for any unknown path: metrics reveal traffic, models and nodes.

The separate server is a second uvicorn server inside the worker's event loop, started and stopped by
the lifespan. With several workers each binds the port with SO_REUSEPORT; any of them answers with
the merged view of all workers (see gateway.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.context import context
from gateway.errors import GatewayError, error_body, not_found
from gateway.metrics import Metrics

log = logging.getLogger("pr.metrics")
PATH = "/metrics"
START_TIMEOUT = 10.0


async def _exposition(metrics: Metrics) -> Response:
    body, content_type = await run_in_threadpool(metrics.render)  # multiprocess mode reads files
    return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})


async def metrics_endpoint(request: Request) -> Response:
    """The exposition for a caller with the METRICS_TOKEN bearer token; 401 without it; 404 when no token is
    configured or METRICS_PORT moved metrics off the public port."""
    ctx = context(request)
    token = ctx.settings.metrics_token
    if ctx.settings.metrics_port is not None or token is None:
        raise not_found(f"Nothing at {request.url.path}.")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise GatewayError(401, "invalid_token", "Metrics require 'Authorization: Bearer <METRICS_TOKEN>'.",
                           headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return await _exposition(ctx.metrics)


routes = [Route(PATH, metrics_endpoint, methods=["GET", "HEAD"])]


class _ExpositionApp:
    """The whole ASGI app of the metrics port: /metrics, and a 404 envelope for anything else."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == PATH and scope["method"] in ("GET", "HEAD"):
            response = await _exposition(self.metrics)
        else:
            body = error_body("invalid_request_error", "not_found", f"Nothing at {scope['path'][:200]}.", None)
            response = Response(body, status_code=404, media_type="application/json")
        await response(scope, receive, send)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the worker's main server owns SIGINT/SIGTERM; the lifespan stops this one


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MetricsServer:
    """The metrics port of one worker; `start()` binds (or raises OSError), `stop()` closes."""

    def __init__(self, metrics: Metrics, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self._server = _EmbeddedServer(uvicorn.Config(
            _ExpositionApp(metrics), lifespan="off", log_config=None, access_log=False, proxy_headers=False,
            server_header=False, date_header=False, timeout_graceful_shutdown=2))
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind HOST:METRICS_PORT and serve until stop()."""
        self._socket = _listen(self.host, self.port, self.reuse_port)
        self.port = self._socket.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="metrics-server")
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not self._server.started:
            if self._task.done():
                await self._task  # surfaces the start-up error
                raise RuntimeError("metrics server stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("metrics server did not start")
            await asyncio.sleep(0.01)
        log.info("serving /metrics on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
