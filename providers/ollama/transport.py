"""A lean HTTP/1.1 keep-alive transport for httpx on plain asyncio, for `http://` upstreams on a LAN.

httpx's default transport (httpcore + anyio) scans its whole connection pool on every request; this one
keeps, per origin, a LIFO stack of idle connections and pays O(1) per request. Invariants:

- A connection goes back to the pool only when its response was read to the end, nothing extra arrived
  and neither side said `Connection: close`. Any other ending (early `aclose`, an error, a cancellation)
  closes the socket: that is how Ollama learns to stop generating.
- Idle connections older than `idle_expiry` (kept below the server's keep-alive) are dropped at checkout.
- A reused connection found closed before the request was written is replaced by a fresh one. One that dies
  after the write but before any byte of the answer (the server closed it while idle, or crashed while
  working on the request) is retried once on a fresh connection only for a safe method (GET, HEAD,
  OPTIONS): a POST may have started a generation, and must not be sent twice. Nothing else is retried:
  not a fresh connection, not after a byte arrived.
- Body bytes reach the consumer as they arrive; a slow consumer pauses the socket, not the server's memory.

Two ways in: as an httpx transport (`handle_async_request`), and `send(origin, payload)`, which takes the
request's bytes as the caller pre-built them and returns a `Reply` (status, headers, body chunks) without
any httpx object: `providers.ollama.client` uses it for plain-http nodes, skipping httpx's client layers
(cookies, redirects, auth and event hooks, Request/Response objects), which cost more than this transport.

Failures are raised as the httpx exceptions httpcore would raise, so `providers.ollama.client` maps them
unchanged: ConnectError, ConnectTimeout, WriteError, WriteTimeout, ReadError, ReadTimeout, RemoteProtocolError.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple, cast

import httpx

_MAX_HEAD = 64 * 1024  # status line + headers, and chunked trailers
_MAX_CHUNK_LINE = 1024
_READ_HIGH_WATER = 256 * 1024  # buffered, unconsumed bytes before the socket is paused
_NO_TIMEOUTS: dict[str, float | None] = {}

_STATUS = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_FIELDS = re.compile(rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*)*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Body framings and chunked-decoder states.
_LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2
_SIZE, _DATA, _DATA_END, _TRAILER = 0, 1, 2, 3


class Origin(NamedTuple):
    """Where a request goes: `key` names the origin's idle pool (httpx's `URL.netloc`, e.g. b"10.0.0.5:11434")."""

    key: bytes
    host: str
    port: int

    @classmethod
    def of(cls, url: str | httpx.URL) -> Origin:
        """The origin of an `http://` URL."""
        parsed = httpx.URL(url)
        return cls(parsed.netloc, parsed.host, parsed.port or 80)


class _Stale(Exception):
    """A reused connection died before any byte of the answer: the request may be sent again."""


# Requests that may be sent again once written (RFC 9110 §9.2.1 safe methods), by their request line.
_SAFE = (b"GET ", b"HEAD ", b"OPTIONS ")


class _Connection(asyncio.Protocol):
    """One TCP connection: bytes received so far, end-of-stream state and a single reader's wake-up."""

    __slots__ = ("transport", "buffer", "eof", "error", "closed", "idle", "idle_since", "_loop", "_owner",
                 "_waiter", "_read_paused", "_write_paused", "_drained")

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: set[_Connection]) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False  # nothing more will arrive: the server closed its side, or the socket is gone
        self.error: Exception | None = None  # why the socket was lost, if not a clean close
        self.closed = False
        self.idle = False
        self.idle_since = 0.0
        self._loop = loop
        self._owner = owner
        self._waiter: asyncio.Future[bool] | None = None
        self._read_paused = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None

    # --- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._owner.add(self)

    def data_received(self, data: bytes) -> None:
        if self.idle:  # a server must not speak unasked; whatever it means, the connection is unusable
            self.close()
            return
        buffer = self.buffer
        buffer += data
        if len(buffer) > _READ_HIGH_WATER and not self._read_paused:
            self._read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake(True)

    def eof_received(self) -> None:
        self.eof = True
        self._wake(True)  # returning None lets the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._owner.discard(self)
        self._wake(True)
        self._wake_drain()

    @property
    def write_paused(self) -> bool:
        """The transport's write buffer is above its high-water mark."""
        return self._write_paused

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # --- used by the transport -----------------------------------------------------------------

    def usable(self) -> bool:
        """Still open and not told by the server that it is going away."""
        return not self.eof and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        """Drop the socket at once (unread data makes the kernel reset it, which servers notice)."""
        if not self.closed:
            self.closed = self.eof = True
            if self.transport is not None:
                self.transport.abort()

    async def wait(self, timeout: float | None) -> bool:
        """Wait for more bytes or end-of-stream; False when `timeout` passed first."""
        if self._read_paused:
            self._read_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        if timeout is None:
            return await waiter
        timer = self._loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def drain(self, timeout: float | None) -> bool:
        """Wait until the kernel accepted most of what was written; False when `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout):
                while self._write_paused and not self.closed:
                    drained = self._drained = self._loop.create_future()
                    await drained
        except TimeoutError:
            return False
        return True

    def _wake(self, value: bool) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(value)

    def _wake_drain(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio for plain-http upstreams: O(1) LIFO keep-alive pool per origin, no TLS."""

    def __init__(self, *, max_idle_per_origin: int = 256, idle_expiry: float = 4.0) -> None:
        self._max_idle = max_idle_per_origin
        self._idle_expiry = idle_expiry
        self._idle: dict[bytes, deque[_Connection]] = {}
        self._open: set[_Connection] = set()  # every live connection, idle or busy, for `aclose`
        self._closed = False
        self._methods: dict[str, bytes] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; return once the status and headers arrived. The body streams: the caller closes it."""
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"FastTransport speaks plain http only, not {url.scheme!r}",
                                            request=request)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await _read_streamed_body(request)
        payload, keep = self._encode(request, body)
        timeouts = request.extensions.get("timeout") or _NO_TIMEOUTS
        origin = Origin(url.netloc, url.host, url.port or 80)
        reply = await self.send(origin, payload, keep=keep, head=request.method == "HEAD",
                                connect_timeout=timeouts.get("connect"), write_timeout=timeouts.get("write"),
                                read_timeout=timeouts.get("read"), request=request)
        return httpx.Response(reply.status, headers=reply.headers, stream=reply,
                              extensions={"http_version": reply.version, "reason_phrase": reply.reason})

    async def send(self, origin: Origin, payload: bytes, *, keep: bool = True, head: bool = False,
                   connect_timeout: float | None = None, write_timeout: float | None = None,
                   read_timeout: float | None = None, request: httpx.Request | None = None) -> Reply:
        """Send `payload` (a whole HTTP/1.1 request, head and body, as the caller built it) to `origin`; return
        once the final status and headers arrived. The body streams from the `Reply`, which the caller closes.

        `keep`: the request allows keeping the connection afterwards (no `Connection: close` in it); `head`: a
        HEAD request (no body follows the answer's head). `read_timeout` bounds each wait for bytes (seconds,
        None: none). Failures raise the httpx exceptions listed in the module docstring, carrying `request`.
        """
        if self._closed:
            raise RuntimeError("the transport is closed")
        key = origin.key
        conn = self._checkout(key)
        if conn is not None:
            try:
                return await self._exchange(conn, key, request, payload, keep, head, write_timeout, read_timeout,
                                            True)
            except _Stale:
                pass
        conn = await self._connect(origin, request, connect_timeout)
        return await self._exchange(conn, key, request, payload, keep, head, write_timeout, read_timeout, False)

    async def aclose(self) -> None:
        """Close every connection, idle or busy; later requests are refused."""
        self._closed = True
        self._idle.clear()
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        await asyncio.sleep(0)  # let the loop run the sockets' close callbacks

    # --- the pool ---------------------------------------------------------------------------------

    def _checkout(self, key: bytes) -> _Connection | None:
        stack = self._idle.get(key)
        if not stack:
            return None
        now = time.monotonic()
        while stack:
            conn = stack.pop()
            conn.idle = False
            if not conn.usable():
                conn.close()
                continue
            if now - conn.idle_since > self._idle_expiry:
                # The stack is ordered by release time: everything below is older still.
                conn.close()
                while stack:
                    stack.pop().close()
                return None
            return conn
        return None

    def _release(self, key: bytes, conn: _Connection) -> None:
        if self._closed or conn.buffer or not conn.usable():
            conn.close()
            return
        conn.idle = True
        conn.idle_since = time.monotonic()
        stack = self._idle.get(key)
        if stack is None:
            stack = self._idle[key] = deque()
        stack.append(conn)
        if len(stack) > self._max_idle:
            oldest = stack.popleft()
            oldest.idle = False
            oldest.close()

    async def _connect(self, origin: Origin, request: httpx.Request | None, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port = origin.host, origin.port
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop, self._open), host, port)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout:g}s", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return conn

    # --- one exchange -----------------------------------------------------------------------------

    def _encode(self, request: httpx.Request, body: bytes) -> tuple[bytes, bool]:
        """The request's bytes on the wire, and whether the connection may be kept afterwards."""
        method = self._methods.get(request.method)
        if method is None:
            if _METHOD.fullmatch(request.method) is None:
                raise httpx.LocalProtocolError(f"invalid method {request.method!r}", request=request)
            method = self._methods[request.method] = request.method.encode("ascii")
        raw = request.headers.raw
        keep = True
        parts = [method, b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in raw:
            parts += (name, b": ", value, b"\r\n")
            if len(name) == 10 and name.lower() == b"connection" and b"close" in value.lower():
                keep = False
        parts += (b"\r\n", body)
        payload = b"".join(parts)
        # Neither the target nor a header may smuggle a line break into the head.
        lines, head_end = len(raw) + 2, len(payload) - len(body)
        if payload.count(b"\n", 0, head_end) != lines or payload.count(b"\r", 0, head_end) != lines:
            raise httpx.LocalProtocolError("a header contains a line break", request=request)
        return payload, keep

    async def _exchange(self, conn: _Connection, key: bytes, request: httpx.Request | None, payload: bytes,
                        keep: bool, head_only: bool, write_timeout: float | None, read_timeout: float | None,
                        reused: bool) -> Reply:
        try:
            if not conn.usable():
                if reused:
                    raise _Stale
                raise httpx.WriteError("the connection closed before the request was sent", request=request)
            assert conn.transport is not None
            conn.transport.write(payload)
            if conn.write_paused and not await conn.drain(write_timeout):
                raise httpx.WriteTimeout("timed out sending the request", request=request)
            timeout = read_timeout
            buffer = conn.buffer
            answered = False  # a byte of the answer arrived (an interim 1xx counts)
            start = 0
            while True:
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    if len(buffer) > _MAX_HEAD:
                        raise httpx.RemoteProtocolError("the response head is too large", request=request)
                    if conn.eof:
                        if buffer or answered:
                            raise _lost(conn, request, "the server disconnected in the middle of the response head")
                        if reused and payload.startswith(_SAFE):
                            raise _Stale
                        if conn.error is not None:
                            raise httpx.ReadError(str(conn.error) or type(conn.error).__name__, request=request)
                        raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                                        request=request)
                    start = max(len(buffer) - 3, 0)
                    if not await conn.wait(timeout):
                        raise httpx.ReadTimeout("timed out waiting for the response", request=request)
                    continue
                head = _parse_head(bytes(buffer[:end]), request)
                del buffer[: end + 4]
                status = head[0]
                if status >= 200:
                    break
                if status == 101:
                    raise httpx.RemoteProtocolError("unexpected protocol switch (101)", request=request)
                answered = True  # an interim answer (100 Continue, 103 Early Hints): the final one follows
                start = 0
            status, version, reason, headers, length, chunked, close = head
            reply = Reply(self, conn, key, request, timeout, keep and not close)
            reply.status, reply.version, reply.reason, reply.headers = status, version, reason, headers
            reply.frame(head_only, length, chunked)
            return reply
        except BaseException:
            conn.close()
            raise


async def _read_streamed_body(request: httpx.Request) -> bytes:
    # Read whole so that a stale connection can be retried with it; framed as httpx announced it.
    body = await request.aread()
    if "chunked" not in request.headers.get("transfer-encoding", "").lower():
        return body
    return (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"


def _lost(conn: _Connection, request: httpx.Request | None, message: str) -> httpx.TransportError:
    if conn.error is not None:
        return httpx.ReadError(f"{message}: {conn.error}", request=request)
    return httpx.RemoteProtocolError(message, request=request)


_Head = tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bytes | None, bool, bool]


def _parse_head(head: bytes, request: httpx.Request | None) -> _Head:
    """Status, version, reason, headers, Content-Length, chunked?, close?, from a head without its blank line."""
    first = head.find(b"\r\n")
    status = _STATUS.fullmatch(head, 0, len(head) if first < 0 else first)
    if status is None:
        raise httpx.RemoteProtocolError(f"malformed status line {head[:100]!r}", request=request)
    headers: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    chunked = False
    close = status[1] != b"1"  # HTTP/1.0: one exchange per connection
    if first >= 0:
        if _FIELDS.fullmatch(head, first) is None:
            raise httpx.RemoteProtocolError(f"malformed response headers {head[first:first + 200]!r}", request=request)
        for line in head[first + 2 :].split(b"\r\n"):
            name, _, value = line.partition(b":")
            value = value.strip(b" \t")
            headers.append((name, value))
            lower = name.lower()
            if lower == b"content-length":
                if length is not None and value != length:
                    raise httpx.RemoteProtocolError("conflicting content-length headers", request=request)
                length = value
            elif lower == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    raise httpx.RemoteProtocolError(f"unsupported transfer-encoding {value!r}", request=request)
                chunked = True
            elif lower == b"connection" and b"close" in value.lower():
                close = True
    version = b"HTTP/1.1" if status[1] == b"1" else b"HTTP/1.0"
    return int(status[2]), version, status[3] or b"", headers, length, chunked, close


class Reply(httpx.AsyncByteStream):
    """One answer: its status and headers, then its body as it arrives (Content-Length, chunked, or until the
    server closes), as an async iterator of byte chunks. `aclose()` before the end closes the socket."""

    __slots__ = ("status", "version", "reason", "headers", "read_timeout", "_owner", "_conn", "_key", "_request",
                 "_mode", "_left", "_state", "_keep")

    def __init__(self, owner: FastTransport, conn: _Connection, key: bytes, request: httpx.Request | None,
                 timeout: float | None, keep: bool) -> None:
        self.status = 0
        self.version = b"HTTP/1.1"
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.read_timeout = timeout  # seconds each wait for body bytes may take (None: no limit); settable
        self._owner = owner
        self._conn: _Connection | None = conn
        self._key = key
        self._request = request
        self._keep = keep
        self._mode = _LENGTH
        self._left = 0
        self._state = _SIZE

    def frame(self, head_only: bool, length: bytes | None, chunked: bool) -> None:
        """Decide how the body ends (RFC 9112 §6.3)."""
        if head_only or self.status in (204, 304):
            self._complete()
        elif chunked:
            self._mode = _CHUNKED
            if length is not None:
                self._keep = False  # both framings given: a smuggling hint, do not trust the connection
        elif length is not None:
            if not (length.isdigit() and len(length) <= 18):
                raise httpx.RemoteProtocolError(f"invalid content-length {length!r}", request=self._request)
            self._left = int(length)
            if self._left == 0:
                self._complete()
        else:
            self._mode = _UNTIL_CLOSE
            self._keep = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        try:
            while True:
                data = self._take(conn.buffer)
                if self._conn is None or data:
                    break
                if conn.eof:
                    if self._mode != _UNTIL_CLOSE:
                        raise _lost(conn, self._request, "the server closed the connection in the middle of the body")
                    if conn.error is not None:
                        raise httpx.ReadError(str(conn.error), request=self._request)
                    self._complete()
                    break
                if not await conn.wait(self.read_timeout):
                    raise httpx.ReadTimeout("timed out reading the response body", request=self._request)
        except BaseException:
            self._abandon()
            raise
        if not data:
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        """Closing before the end closes the socket; after the end it is a no-op."""
        self._abandon()

    def _take(self, buffer: bytearray) -> bytes:
        if not buffer:
            return b""
        mode = self._mode
        if mode == _CHUNKED:
            return self._take_chunked(buffer)
        if mode == _UNTIL_CLOSE:
            data = bytes(buffer)
            buffer.clear()
            return data
        left = self._left
        if len(buffer) <= left:
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:left])
            del buffer[:left]
        self._left = left - len(data)
        if self._left == 0:
            self._complete()
        return data

    def _take_chunked(self, buffer: bytearray) -> bytes:
        # Joins every chunk already received: the consumer gets all that arrived in one piece.
        out: list[bytearray] = []
        pos, end = 0, len(buffer)
        state, left = self._state, self._left
        while pos < end:
            if state == _DATA:
                take = min(left, end - pos)
                out.append(buffer[pos : pos + take])
                pos += take
                left -= take
                if left:
                    break
                state = _DATA_END
            elif state == _DATA_END:
                if end - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    raise httpx.RemoteProtocolError("chunk data not followed by CRLF", request=self._request)
                pos += 2
                state = _SIZE
            else:
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    limit = _MAX_CHUNK_LINE if state == _SIZE else _MAX_HEAD
                    if end - pos > limit:
                        raise httpx.RemoteProtocolError("chunk size line or trailer too long", request=self._request)
                    break
                if state == _SIZE:
                    size = _CHUNK_SIZE.fullmatch(buffer, pos, line_end)
                    if size is None:
                        raise httpx.RemoteProtocolError(
                            f"malformed chunk size line {bytes(buffer[pos:line_end][:100])!r}", request=self._request
                        )
                    left = int(size[1], 16)
                    state = _DATA if left else _TRAILER
                elif line_end == pos:  # the empty line after the last chunk (and any trailers)
                    del buffer[: pos + 2]
                    self._complete()
                    return b"".join(out)
                else:
                    left += line_end + 2 - pos  # trailer fields are skipped, but their total is bounded
                    if left > _MAX_HEAD:
                        raise httpx.RemoteProtocolError("chunked trailers too long", request=self._request)
                pos = line_end + 2
        del buffer[:pos]
        self._state, self._left = state, left
        return b"".join(out)

    def _complete(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._keep:
                self._owner._release(self._key, conn)
            else:
                conn.close()

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
