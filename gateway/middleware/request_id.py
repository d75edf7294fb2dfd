"""Outermost middleware: a request id for every request, and the last line of error handling."""

from __future__ import annotations

import logging
import re
import uuid

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.db.availability import database_unavailable, is_database_unavailable
from gateway.errors import GatewayError, error_body

log = logging.getLogger("pr.errors")
_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")


class RequestIdMiddleware:
    """Keeps the client's `X-Request-ID` (if sane) or makes one, echoes it, and turns any
    unhandled exception into a 500 in the OpenAI envelope that still carries the id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value if _CLIENT_ID.match(value) else b""
                break
        unique = uuid.uuid4().hex
        if not rid:
            rid = unique.encode()
        state = scope.setdefault("state", {})
        state["request_id"] = rid.decode()
        # Clients may reuse their own ids (retries); what keys money and usage must be ours alone.
        state["unique_request_id"] = unique
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            log.info("client disconnected before its request was read (request_id=%s)", rid.decode())
        except Exception as exc:
            if is_database_unavailable(exc):
                # An outage, not a bug: one line (the log filter strips messages), and 503 + Retry-After.
                log.warning("database unavailable (request_id=%s)", rid.decode(), exc_info=exc)
                error = database_unavailable()
            else:
                log.exception("unhandled error (request_id=%s)", rid.decode())
                error = GatewayError(500, "internal_error", "The server had an error while processing your request.",
                                     type="api_error")
            if started:
                return  # the client sees a cut-off response; nothing else can be sent now
            body = error_body(error.type, error.code, error.message, None)
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       *((name.lower().encode(), value.encode()) for name, value in error.headers.items())]
            await send_with_id({"type": "http.response.start", "status": error.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
