"""The one pure-ASGI middleware in front of every request (issue #16, item 4).

It does, in one place and with one `send` wrapper, what seven stacked middlewares did:

- ROOT_PATH: strips the prefix from incoming paths and prefixes redirects on the way out (`root_path.py`);
- the request id (the client's `X-Request-ID` if sane, else ours), echoed on every answer (`request_id.py`);
- the client's address, honouring TRUSTED_PROXIES (`gateway.clientip`), for the log and IP_RPM;
- IP_RPM on `/v1`, `/api` and WebSocket handshakes (`ip_limit.py`);
- the body limit (413, 64 KiB on `/api/auth/`) and the body deadline (408) (`body_limit.py`);
- NUL characters in the path or query (400, `input_guard.py`);
- HTTP metrics by route template and status (`metrics.py`), and one JSON access-log line (`access_log.py`);
- the last line of error handling: an unhandled exception is a 500 (or 503 when the database is down) in the
  OpenAI envelope, still carrying the request id.

Per message it costs one type test (and a length added for body messages); the request body is only
watched when there is one, and only until it is complete. POSTs to the `/v1` inference routes are
dispatched by a dict lookup straight to their handlers, skipping Starlette's exception middleware and
router (what those would do for these routes, the error mapping, is done here). Every other request goes
on to the wrapped app (Starlette's exception middleware and router: 404/405, web pages, docs, `/api`).

A client that leaves before its answer started is counted and logged as 499 (nginx's "client closed
request"), never as a 500: it is no server error, and the 5xx alert must not see it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.clientip import client_ip
from gateway.db.availability import database_unavailable, is_database_unavailable
from gateway.errors import GatewayError, error_body
from gateway.metrics import Metrics, method_label
from gateway.middleware.access_log import access_line
from gateway.middleware.access_log import log as access_log
from gateway.middleware.body_limit import (
    UNAUTHENTICATED_MAX_BYTES,
    UNAUTHENTICATED_PREFIXES,
    BodyTooLarge,
    BodyTooSlow,
    refusal,
)
from gateway.middleware.input_guard import has_nul, nul_refusal
from gateway.middleware.ip_limit import PREFIXES as IP_LIMITED_PREFIXES
from gateway.middleware.ip_limit import ip_limit, ip_limit_error
from gateway.middleware.metrics import TemplateCache, is_excluded
from gateway.middleware.request_id import client_request_id
from gateway.middleware.root_path import prefix_redirect
from gateway.settings import IPNetwork

log = logging.getLogger("pr.errors")

CLIENT_CLOSED = 499  # nginx's "client closed request": the client left before its answer started
Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class EdgeMiddleware:
    """See the module docstring. `direct` maps `/v1` POST paths to their handlers; `exception_handlers`
    (the app's, by exception class) turn what those handlers raise into answers."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None, root_path: str = "",
                 trusted_proxies: Sequence[IPNetwork] = (), ip_rpm: int | None = None,
                 max_bytes: int = 10 * 1024 * 1024, body_timeout: float | None = None,
                 small_body: tuple[tuple[str, ...], int] = (UNAUTHENTICATED_PREFIXES, UNAUTHENTICATED_MAX_BYTES),
                 direct: Mapping[str, Endpoint] | None = None,
                 exception_handlers: Mapping[type[Exception], ExceptionHandler] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.root_path = root_path.rstrip("/")
        self.trusted_proxies = tuple(trusted_proxies)
        self.ip_rpm = ip_rpm
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.small_prefixes, self.small_max_bytes = small_body
        self.direct = dict(direct or {})
        self.exception_handlers = dict(exception_handlers or {})
        self.templates = TemplateCache()

    # --- entry ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:  # lifespan
            await self.app(scope, receive, send)

    def _strip_root(self, scope: Scope) -> None:
        root = self.root_path
        path: str = scope["path"]
        if path == root or path.startswith(root + "/"):
            scope["path"] = path[len(root):] or "/"
            raw = scope.get("raw_path")
            if isinstance(raw, bytes) and raw.startswith(root.encode()):
                scope["raw_path"] = raw[len(root):] or b"/"
        scope["root_path"] = root

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.root_path:
            self._strip_root(scope)
        if self.ip_rpm is not None and scope["path"].startswith(IP_LIMITED_PREFIXES):
            address = client_ip(scope, self.trusted_proxies)
            ctx = getattr(scope["app"].state, "ctx", None)
            if address is not None and ctx is not None:
                decision = await ctx.limiter.hit([ip_limit(address, self.ip_rpm)])
                if not decision.allowed:
                    ctx.metrics.rate_limited("ip_rpm")
                    # Closing before the accept is an HTTP 403 for the handshake.
                    await send({"type": "websocket.close", "code": 1008, "reason": "rate limit exceeded"})
                    return
        await self.app(scope, receive, send)

    # --- HTTP -----------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        root = self.root_path
        if root:
            self._strip_root(scope)
        rid = b""
        length: bytes | None = None
        chunked = False
        host = b""
        for name, value in scope["headers"]:  # one pass for everything this middleware reads
            if name == b"x-request-id":
                rid = client_request_id(value)
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"host":
                host = value
        unique = os.urandom(16).hex()
        if not rid:
            rid = unique.encode()
        request_id = rid.decode()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        # Clients may reuse their own ids (retries); what keys money and usage must be ours alone.
        state["unique_request_id"] = unique
        state["client_ip"] = address = client_ip(scope, self.trusted_proxies)
        path: str = scope["path"]
        method: str = scope["method"]
        endpoint = self.direct.get(path) if method == "POST" else None
        metrics = self.metrics if not is_excluded(path) else None
        if endpoint is not None:
            route = path
        else:
            route = self.templates.template(scope)
        label = method_label(method)
        if metrics is not None:
            in_flight = metrics.http_in_flight_child(label, route)
            in_flight.inc()
        status = 0
        sent = 0
        extra_header = (b"x-request-id", rid)

        async def edge_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), extra_header]
                if root and 300 <= status < 400:
                    headers = prefix_redirect(headers, root, host.decode("latin-1"))
                message["headers"] = headers
            await send(message)

        try:
            try:
                if self.ip_rpm is not None and path.startswith(IP_LIMITED_PREFIXES) and address is not None:
                    refused = await self._ip_refusal(scope, address)
                    if refused is not None:
                        await refused(scope, receive, edge_send)
                        return
                limit = self.max_bytes
                if path.startswith(self.small_prefixes):
                    limit = min(limit, self.small_max_bytes)
                if length is not None and length.isdigit() and int(length) > limit:
                    await refusal(limit)(scope, receive, edge_send)
                    return
                if (where := has_nul(scope)) is not None:
                    await nul_refusal(where)(scope, receive, edge_send)
                    return
                if chunked or (length is not None and length not in (b"0", b"")):
                    receive = self._body_receive(receive, limit)
                if endpoint is not None:
                    await self._direct(endpoint, scope, receive, edge_send)
                else:
                    await self.app(scope, receive, edge_send)
            except BodyTooLarge as too_large:
                if not status:
                    await refusal(too_large.limit)(scope, receive, edge_send)
            except BodyTooSlow:
                if not status:
                    await refusal(0, status=408, code="request_timeout", message=(
                        f"The request body did not arrive within {self.body_timeout:g} seconds."))(
                        scope, receive, edge_send)
        except ClientDisconnect:
            log.info("client disconnected before its request was read (request_id=%s)", request_id)
            if not status:
                status = CLIENT_CLOSED
        except Exception as exc:
            if metrics is not None:
                metrics.http_exceptions.labels(label, route, type(exc).__name__).inc()
            await self._unhandled(exc, request_id, status, edge_send)
            if not status:
                status = 500  # nothing could be sent: the server's error all the same
        finally:
            elapsed = time.perf_counter() - start
            if not status:
                # Returned without an answer: uvicorn sends a 500 unless the client has gone.
                status = 500
            if metrics is not None:
                in_flight.dec()
                metrics.http_request_done(label, route, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(access_line(scope, state, route, status, sent, elapsed))

    async def _ip_refusal(self, scope: Scope, address: str) -> Response | None:
        """The 429 for a client address over IP_RPM, or None (also before the lifespan has started)."""
        ctx = getattr(scope["app"].state, "ctx", None)
        if ctx is None or self.ip_rpm is None:
            return None
        decision = await ctx.limiter.hit([ip_limit(address, self.ip_rpm)])
        if decision.allowed:
            return None
        ctx.metrics.rate_limited("ip_rpm")
        return ip_limit_error(decision, self.ip_rpm)

    def _body_receive(self, receive: Receive, limit: int) -> Receive:
        """`receive` that counts the body against `limit` and holds it to the body deadline; once the body
        is complete (or when there is no deadline and no more to count) it is the plain `receive`."""
        timeout = self.body_timeout
        received = 0
        complete = False
        deadline: float | None = None

        async def body_receive() -> Message:
            nonlocal received, complete, deadline
            if complete:
                return await receive()  # after the body: the disconnect listener may wait for ever
            if timeout is None:
                message = await receive()
            else:
                if deadline is None:
                    deadline = asyncio.get_running_loop().time() + timeout
                try:
                    async with asyncio.timeout_at(deadline):  # one timer per read while the body is incomplete
                        message = await receive()
                except TimeoutError:
                    raise BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return body_receive

    async def _direct(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a `/v1` POST handler without the router; its GatewayError/ProviderError become answers."""
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None

    async def _unhandled(self, exc: Exception, request_id: str, status: int, send: Send) -> None:
        """Log an exception nothing handled and, when no answer has started, answer 500 (503 when the
        database is down) in the envelope."""
        if is_database_unavailable(exc):
            # An outage, not a bug: one line (the log filter strips messages), and 503 + Retry-After.
            log.warning("database unavailable (request_id=%s)", request_id, exc_info=exc)
            error = database_unavailable()
        else:
            log.exception("unhandled error (request_id=%s)", request_id)
            error = GatewayError(500, "internal_error", "The server had an error while processing your request.",
                                 type="api_error")
        if status:
            return  # the client sees a cut-off response; nothing else can be sent now
        body = error_body(error.type, error.code, error.message, None)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *((name.lower().encode(), value.encode()) for name, value in error.headers.items())]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
