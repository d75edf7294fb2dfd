"""Refuses request bodies over the configured size with 413 `request_too_large`.

Routes anyone may call without a credential (`/api/auth/*`: sign-up, login) get a much smaller
limit (64 KiB): their bodies are a few fields, and nobody should make us buffer 10 MB for free.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_body


class _TooLarge(Exception):
    pass


UNAUTHENTICATED_PREFIXES = ("/api/auth/",)
UNAUTHENTICATED_MAX_BYTES = 64 * 1024


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int,
                 small: tuple[tuple[str, ...], int] = (UNAUTHENTICATED_PREFIXES, UNAUTHENTICATED_MAX_BYTES)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.small_prefixes, self.small_max_bytes = small

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if scope["path"].startswith(self.small_prefixes):
            limit = min(limit, self.small_max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await self._refuse(send, limit)
                    return
                break
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = error_body("invalid_request_error", "request_too_large",
                          f"The request body is larger than the limit of {limit} bytes.", None)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
