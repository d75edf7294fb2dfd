"""gateway.streaming.Frames: the relay's frames and the keep-alives share `send` without a lock, and
nothing is sent after the last frame, also when the client's socket is full (`send` waits)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.streaming import KEEPALIVE_FRAME, Frames


class SlowSocket:
    """An ASGI `send` that records bodies and, while `blocked`, waits like uvicorn does on a full socket."""

    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, bool]] = []
        self.blocked = asyncio.Event()
        self.blocked.set()
        self.waiting = asyncio.Event()

    async def __call__(self, message: dict[str, Any]) -> None:
        if not self.blocked.is_set():
            self.waiting.set()
            await self.blocked.wait()
        self.bodies.append((message["body"], message["more_body"]))

    def block(self) -> None:
        self.blocked.clear()
        self.waiting.clear()


async def test_frames_go_out_in_order_and_the_last_one_ends_the_answer() -> None:
    socket = SlowSocket()
    frames = Frames(socket)
    await frames.frame(b"a")
    await frames.frame(b"b", more=False)
    await frames.frame(b"late")
    await frames.keepalive()
    assert socket.bodies == [(b"a", True), (b"b", False)]
    assert frames.complete


async def test_a_keepalive_is_skipped_while_a_frame_waits_on_the_socket() -> None:
    socket = SlowSocket()
    frames = Frames(socket)
    socket.block()
    relay = asyncio.create_task(frames.frame(b"a"))
    await socket.waiting.wait()
    await frames.keepalive()  # the frame on its way is activity enough
    socket.blocked.set()
    await relay
    assert socket.bodies == [(b"a", True)]


async def test_a_frame_waits_for_a_keepalive_on_the_socket_and_nothing_follows_the_last() -> None:
    socket = SlowSocket()
    frames = Frames(socket)
    socket.block()
    keepalive = asyncio.create_task(frames.keepalive())
    await socket.waiting.wait()
    last = asyncio.create_task(frames.frame(b"end", more=False))
    await asyncio.sleep(0)
    assert socket.bodies == []  # the last frame has not overtaken the keep-alive
    socket.blocked.set()
    await asyncio.gather(keepalive, last)
    assert socket.bodies == [(KEEPALIVE_FRAME, True), (b"end", False)]
    await frames.keepalive()
    assert len(socket.bodies) == 2


async def test_a_frame_cancelled_while_waiting_for_a_keepalive_leaves_the_keepalive_whole() -> None:
    socket = SlowSocket()
    frames = Frames(socket)
    socket.block()
    keepalive = asyncio.create_task(frames.keepalive())
    await socket.waiting.wait()
    relay = asyncio.create_task(frames.frame(b"a"))
    await asyncio.sleep(0)
    relay.cancel()  # the client left while the relay waited
    await asyncio.gather(relay, return_exceptions=True)
    socket.blocked.set()
    await keepalive  # no InvalidStateError from the cancelled waiter
    assert socket.bodies == [(KEEPALIVE_FRAME, True)]
    assert frames.keepalive_sending is None
