"""The SSE relay: each upstream NDJSON line reaches the client as its SSE frame at once.

Starlette's StreamingResponse neither closes its iterator nor tells us when the client leaves
(uvicorn silently drops sends after a disconnect), so this response owns the relay. It runs in the
request's own task; one helper task waits for `http.disconnect` (then cancels the relay) and, while
it waits, sends an SSE comment whenever nothing was sent for KEEPALIVE_SECONDS (a thinking model is
silent). The `finally` always closes the upstream (which makes Ollama stop generating) and settles
the call for what was relayed.

Frames need no lock: on one event loop the relay and the keep-alive can only interleave while one of
them waits inside `send` (the client's socket is full), and each checks the other's flag first.
"""

from __future__ import annotations

import asyncio
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


class Frames:
    """The body frames of one SSE answer, from the relay and the keep-alive, without a lock.

    On one event loop the two can only overlap while one of them waits inside `send` (the client's
    socket is full): a keep-alive is skipped while a frame is on its way, and a frame waits for a
    keep-alive in flight, so nothing follows the last frame.
    """

    def __init__(self, send: Send) -> None:
        self.send = send
        self.last_send = time.monotonic()
        self.complete = False
        self.relaying = False  # a frame is inside `send`
        self.keepalive_sending: asyncio.Future[None] | None = None  # a keep-alive is inside `send`

    async def frame(self, body: bytes, more: bool = True) -> None:
        """Send one frame (`more=False`: the last one; anything after it is dropped)."""
        if self.keepalive_sending is not None:
            await self.keepalive_sending  # rare: a keep-alive waits for the client's socket
        if self.complete:
            return
        self.complete = not more
        self.relaying = True
        try:
            await self.send({"type": "http.response.body", "body": body, "more_body": more})
        finally:
            self.relaying = False
        self.last_send = time.monotonic()

    async def keepalive(self) -> None:
        """Send an SSE comment, unless a frame is on its way (activity enough) or the answer is over."""
        if self.relaying or self.complete:
            return
        sending = self.keepalive_sending = asyncio.get_running_loop().create_future()
        try:
            await self.send({"type": "http.response.body", "body": KEEPALIVE_FRAME, "more_body": True})
            self.last_send = time.monotonic()
        finally:
            self.keepalive_sending = None
            if not sending.done():  # a frame waiting on it may have been cancelled (the client left)
                sending.set_result(None)


class RelayResponse(Response):
    """A Response only so route handlers stay typed; it renders nothing up front and streams in __call__."""

    def __init__(self, call: Call, stream: Any, first: dict[str, Any], stack: AsyncExitStack) -> None:
        self.call = call
        self.stream = stream
        self.first = first
        self.stack = stack
        self.encoder = stream_encoder(call.prepared, call.target, response_id=call.response_id, created=call.created)
        self.client_left = False

    async def _relay(self, frames: Frames) -> tuple[str, str | None]:
        encoder, call = self.encoder, self.call
        frame = encoder.feed(self.first)
        if frame:
            call.first_byte_at = time.perf_counter()
            await frames.frame(frame)
        next_progress = time.monotonic() + PROGRESS_SECONDS
        try:
            async for chunk in self.stream:
                frame = encoder.feed(chunk)
                if frame:
                    if call.first_byte_at is None:
                        call.first_byte_at = time.perf_counter()
                    await frames.frame(frame)
                    if frames.last_send >= next_progress:  # coarse: one journal line per stream every few s
                        call.journal_progress(encoder.usage())
                        next_progress = frames.last_send + PROGRESS_SECONDS
        except ProviderError as error:
            # The upstream's own words (Ollama's text, node names, tags) are for the logs, not the client.
            if isinstance(error, UpstreamError):
                log_upstream(error, call.model.name)
            message = stable_message(error.code, call.model.name)
            await frames.frame(encoder.fail(error.code, message), more=False)
            return "error", error.code
        await frames.frame(encoder.finish(), more=False)
        return "success", None

    async def _watch(self, receive: Receive, frames: Frames, relay: asyncio.Task[Any]) -> None:
        """Until the client leaves (then cancel `relay`, the request's task): keep-alives while it is quiet."""
        while True:
            quiet = time.monotonic() - frames.last_send
            try:
                async with asyncio.timeout(max(KEEPALIVE_SECONDS - quiet, 0.0)):
                    message = await receive()
            except TimeoutError:
                if time.monotonic() - frames.last_send >= KEEPALIVE_SECONDS:
                    await frames.keepalive()
                continue
            if message["type"] == "http.disconnect":
                self.client_left = True
                relay.cancel()
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self.call
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                   (b"x-accel-buffering", b"no")]
        headers += [(name.lower().encode(), value.encode()) for name, value in call.headers.items()]
        status: str = "error"
        code: str | None = "internal_error"
        watcher: asyncio.Task[None] | None = None
        task = asyncio.current_task()
        assert task is not None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            frames = Frames(send)
            watcher = asyncio.get_running_loop().create_task(self._watch(receive, frames, task))
            try:
                status, code = await self._relay(frames)
            except asyncio.CancelledError:
                if self.client_left and task.uncancel() == 0:
                    status, code = "cancelled", "client_disconnected"  # the watcher saw the client leave
                else:
                    status, code = "cancelled", "server_shutdown"
                    raise
        finally:
            if watcher is not None:
                watcher.cancel()
            await self.stack.aclose()  # closing the upstream response cancels generation on the node
            call.finish(self.encoder.usage(), status, code)
