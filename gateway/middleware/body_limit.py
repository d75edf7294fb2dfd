"""Refuses request bodies over the configured size with 413 `request_too_large`.

Routes anyone may call without a credential (`/api/auth/*`: sign-up, login) get a much smaller
limit (64 KiB): their bodies are a few fields, and nobody should make us buffer 10 MB for free.
A body must also arrive within `timeout` seconds of the first read (408 `request_timeout` after),
so a client trickling its body cannot hold a connection and a task forever.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_body


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


UNAUTHENTICATED_PREFIXES = ("/api/auth/",)
UNAUTHENTICATED_MAX_BYTES = 64 * 1024


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int,
                 small: tuple[tuple[str, ...], int] = (UNAUTHENTICATED_PREFIXES, UNAUTHENTICATED_MAX_BYTES),
                 timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
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
        complete = False
        deadline: float | None = None

        async def counted_receive() -> Message:
            nonlocal received, complete, deadline
            if complete or self.timeout is None:
                message = await receive()  # after the body: the disconnect listener may wait for ever
            else:
                deadline = deadline or asyncio.get_running_loop().time() + self.timeout
                try:
                    async with asyncio.timeout_at(deadline):  # no extra task per read, unlike wait_for
                        message = await receive()
                except TimeoutError:
                    raise _TooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
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
        except _TooSlow:
            if not started:
                await self._refuse(send, limit, status=408, code="request_timeout",
                                   message=f"The request body did not arrive within {self.timeout:g} seconds.")

    async def _refuse(self, send: Send, limit: int, *, status: int = 413, code: str = "request_too_large",
                      message: str | None = None) -> None:
        body = error_body("invalid_request_error", code,
                          message or f"The request body is larger than the limit of {limit} bytes.", None)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
