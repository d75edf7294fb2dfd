"""Raw-ASGI plumbing: reading a body, writing JSON or text, and noticing a client that went away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = b"application/json; charset=utf-8"
NDJSON_TYPE = b"application/x-ndjson"
TEXT_TYPE = b"text/plain; charset=utf-8"


class FakeError(Exception):
    """An Ollama error reply: `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client disconnected before the request body was read."""


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def start(status: int, content_type: bytes, length: int | None = None) -> Message:
    """An `http.response.start` message; without `length` the server streams (chunked)."""
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    return {"type": "http.response.start", "status": status, "headers": headers}


def chunk(body: bytes, more: bool) -> Message:
    """An `http.response.body` message."""
    return {"type": "http.response.body", "body": body, "more_body": more}


async def send_bytes(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    """A complete response with a known length."""
    await send(start(status, content_type, len(body)))
    await send(chunk(body, False))


async def send_json(send: Send, status: int, payload: Any) -> None:
    """A complete JSON response, as gin's `c.JSON` writes it."""
    await send_bytes(send, status, JSON_TYPE, orjson.dumps(payload))


async def send_error(send: Send, status: int, message: str) -> None:
    """Ollama's error body."""
    await send_json(send, status, {"error": message})


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone (the request body must already be read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientWatch:
    """Cancels the current task if the client disconnects before the response is finished.

    Only a server-side cancellation can stop a sleeping generator promptly: uvicorn silently drops
    writes to a closed connection, so the disconnect has to be read from `receive`.
    """

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.gone = False
        self.finished = False
        self._watcher = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        await wait_for_disconnect(receive)
        if not self.finished:
            self.gone = True
            self._task.cancel()

    def absorb(self) -> bool:
        """After a CancelledError: True (and the cancellation undone) if it came from the client leaving."""
        if not self.gone:
            return False
        self._task.uncancel()
        return True

    def close(self) -> None:
        """Stop watching; call before the last write so a normal end is not taken for a departure."""
        self.finished = True
        self._watcher.cancel()
