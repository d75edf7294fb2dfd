"""The SSE relay: each upstream NDJSON line reaches the client as its SSE frame at once.

Starlette's StreamingResponse neither closes its iterator nor tells us when the client leaves
(uvicorn silently drops sends after a disconnect), so this response owns the relay: a watcher task
waits for `http.disconnect` and cancels the relay, a keep-alive task sends SSE comments while a
thinking model is silent, and the `finally` always closes the upstream (which makes Ollama stop
generating) and settles the call for what was relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AsyncExitStack
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.billing.journal import PROGRESS_SECONDS
from gateway.errors import log_upstream
from gateway.inference import Call
from providers.base import stream_encoder
from providers.errors import ProviderError, UpstreamError
from providers.openai.upstream_errors import stable_message

KEEPALIVE_SECONDS = 10.0
KEEPALIVE_FRAME = b": keep-alive\n\n"


class RelayResponse(Response):
    """A Response only so route handlers stay typed; it renders nothing up front and streams in __call__."""

    def __init__(self, call: Call, stream: Any, first: dict[str, Any], stack: AsyncExitStack) -> None:
        self.call = call
        self.stream = stream
        self.first = first
        self.stack = stack
        self.encoder = stream_encoder(call.prepared, call.target, response_id=call.response_id, created=call.created)
        self.last_send = time.monotonic()
        self.lock = asyncio.Lock()
        self.complete = False

    async def _send_frame(self, send: Send, frame: bytes, more: bool = True) -> None:
        async with self.lock:
            if self.complete:
                return  # a keep-alive that woke after the last frame
            self.complete = not more
            await send({"type": "http.response.body", "body": frame, "more_body": more})
            self.last_send = time.monotonic()

    async def _relay(self, send: Send) -> tuple[str, str | None]:
        encoder, call = self.encoder, self.call
        frame = encoder.feed(self.first)
        if frame:
            call.first_byte_at = time.perf_counter()
            await self._send_frame(send, frame)
        next_progress = time.monotonic() + PROGRESS_SECONDS
        try:
            async for chunk in self.stream:
                frame = encoder.feed(chunk)
                if frame:
                    if call.first_byte_at is None:
                        call.first_byte_at = time.perf_counter()
                    await self._send_frame(send, frame)
                    if self.last_send >= next_progress:  # coarse: one journal line per stream every few s
                        call.journal_progress(encoder.usage())
                        next_progress = self.last_send + PROGRESS_SECONDS
        except ProviderError as error:
            # The upstream's own words (Ollama's text, node names, tags) are for the logs, not the client.
            if isinstance(error, UpstreamError):
                log_upstream(error, call.model.name)
            message = stable_message(error.code, call.model.name)
            await self._send_frame(send, encoder.fail(error.code, message), more=False)
            return "error", error.code
        await self._send_frame(send, encoder.finish(), more=False)
        return "success", None

    async def _keepalive(self, send: Send) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            if time.monotonic() - self.last_send >= KEEPALIVE_SECONDS:
                await self._send_frame(send, KEEPALIVE_FRAME)

    @staticmethod
    async def _watch_disconnect(receive: Receive, relay: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        relay.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self.call
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                   (b"x-accel-buffering", b"no")]
        headers += [(name.lower().encode(), value.encode()) for name, value in call.headers.items()]
        status: str = "error"
        code: str | None = "internal_error"
        relay: asyncio.Task[tuple[str, str | None]] | None = None
        helpers: list[asyncio.Task[None]] = []
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            relay = asyncio.get_running_loop().create_task(self._relay(send))
            helpers = [asyncio.get_running_loop().create_task(self._watch_disconnect(receive, relay)),
                       asyncio.get_running_loop().create_task(self._keepalive(send))]
            try:
                status, code = await relay
            except asyncio.CancelledError:
                if relay.cancelled() and not _current_task_cancelling():
                    status, code = "cancelled", "client_disconnected"  # the watcher saw the client leave
                else:
                    status, code = "cancelled", "server_shutdown"
                    raise
        finally:
            for task in helpers:
                task.cancel()
            if relay is not None and not relay.done():
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await relay
            await self.stack.aclose()  # closing the upstream response cancels generation on the node
            call.finish(self.encoder.usage(), status, code)


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
