"""Native Ollama HTTP client over an injected `httpx.AsyncClient`, or straight over `FastTransport`.

Given `direct` (the gateway's `FastTransport`) and a plain `http://` node, requests skip httpx's client
layers: the request head is pre-built once per path as bytes (the client's default headers and the node's
own, `Accept-Encoding: identity`), and the answer is read from the transport's `Reply`. Timeouts, errors,
the retry of a stale reused connection and closing on cancellation are the same on both paths (the
transport raises httpx's exceptions, translated below). Without `direct` (https or proxied nodes, tests
with a mock transport) every request goes through the `httpx.AsyncClient`.

Every httpx exception is translated into the `providers.errors` tree here and nowhere else
(`map_errors`). Which error a failure becomes depends on whether the upstream had started
answering: before the first byte a failure is the node's (connect error, `UpstreamTimeout`,
error status) and the pool may fail over; after it the stream belongs to the caller and a
failure is `UpstreamIdleTimeout` or `UpstreamProtocolError`.

A stream is opened with `async with client.open_stream(path, body) as stream:`. Leaving the
block always closes the HTTP response; closing the connection is how Ollama learns to stop
generating, so an abandoned stream costs the GPU nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol, cast

import httpx
import orjson

from providers.errors import (
    NodeConnectError,
    UpstreamError,
    UpstreamIdleTimeout,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeout,
)
from providers.ollama.ndjson import NDJSONDecoder
from providers.ollama.transport import FastTransport, Origin

# Endpoints whose `stream` defaults to true on the server; the non-streaming methods force it off.
_STREAMING_PATHS = frozenset({"/api/chat", "/api/generate"})
_ERROR_BODY_LIMIT = 64 * 1024
# After the `done` line only the chunked-encoding terminator is due; reading it keeps the connection reusable.
_DRAIN_TIMEOUT = 0.05


class _Answer(Protocol):
    """An upstream answer after its head: the status, then the body's byte chunks; `aclose` frees it."""

    status: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class _HttpxAnswer:
    """An `httpx.Response` seen as an `_Answer`."""

    __slots__ = ("status", "_response", "_chunks")

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self._response = response
        self._chunks = _raw_chunks(response)

    def __aiter__(self) -> _HttpxAnswer:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()
        finally:
            await self._response.aclose()


class OllamaClient:
    """One Ollama node's native API (`/api/*`)."""

    __slots__ = (
        "_http",
        "_base",
        "node",
        "first_byte_timeout",
        "idle_timeout",
        "_extensions",
        "_get_headers",
        "_post_headers",
        "_urls",
        "_direct",
        "_origin",
        "_heads",
        "_head_lines",
        "_keep",
        "_connect_timeout",
        "_write_timeout",
    )

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        node: str,
        first_byte_timeout: float,
        idle_timeout: float,
        headers: Sequence[tuple[str, str]] = (),
        direct: FastTransport | None = None,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self.node = node
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        # Reads are timed by this module (first byte, then idle gaps), not by httpx's per-read timeout;
        # the client's connect/write/pool timeouts still apply, all within the first-byte deadline.
        timeout = http.timeout
        self._extensions = {
            "timeout": httpx.Timeout(
                connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool
            ).as_dict()
        }
        # Requests are built here rather than with `build_request`, which re-parses and re-merges the
        # URL and the client's default headers on every call; the client's defaults are merged once.
        self._get_headers = httpx.Headers(http.headers)
        for name, value in headers:  # the node's own (models.yaml `headers:`), e.g. a proxy's bearer token
            self._get_headers[name] = value
        self._post_headers = httpx.Headers(self._get_headers)
        self._post_headers["content-type"] = "application/json"
        self._urls: dict[str, httpx.URL] = {}
        self._direct: FastTransport | None = None
        self._origin = Origin(b"", "", 0)
        self._heads: dict[tuple[str, str], bytes] = {}
        self._head_lines = b""
        self._keep = True
        self._connect_timeout, self._write_timeout = timeout.connect, timeout.write
        # Credentials in the URL (http://user:pass@host) are sent by httpx as Basic auth: left to it.
        if direct is not None and self._base.startswith("http://") and not httpx.URL(self._base).userinfo:
            self._use_direct(direct)

    def _use_direct(self, direct: FastTransport) -> None:
        """Pre-build what every direct request repeats: the header lines, as httpx would encode them."""
        origin = Origin.of(self._base)
        # The node's own Host (models.yaml `headers:`, e.g. a name-based virtual host behind a proxy) wins
        # over the URL's, as httpx sends it.
        host = self._get_headers.get("host")
        lines = [b"Host: " + (origin.key if host is None else host.encode("latin-1")) + b"\r\n"]
        keep = True
        for name, value in self._get_headers.raw:
            lower = name.lower()
            if lower == b"host":
                continue
            if lower == b"accept-encoding":
                value = b"identity"  # bodies are read as sent: no decoder on this path
            elif lower == b"connection" and b"close" in value.lower():
                keep = False
            lines.append(name + b": " + value + b"\r\n")
        head_lines = b"".join(lines)
        if head_lines.count(b"\n") != len(lines) or head_lines.count(b"\r") != len(lines):
            return  # a line break in a header: left to httpx, which refuses the request with a clear error
        self._direct, self._origin, self._head_lines, self._keep = direct, origin, head_lines, keep

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/chat without streaming."""
        return await self.post("/api/chat", body)

    async def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/generate without streaming."""
        return await self.post("/api/generate", body)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/embed."""
        return await self.post("/api/embed", body)

    async def show(self, model: str) -> dict[str, Any]:
        """POST /api/show for one model."""
        return await self.post("/api/show", {"model": model})

    async def tags(self) -> dict[str, Any]:
        """GET /api/tags: the models on the node's disk."""
        return await self._request("GET", "/api/tags", None)

    async def ps(self) -> dict[str, Any]:
        """GET /api/ps: the models loaded in memory."""
        return await self._request("GET", "/api/ps", None)

    async def version(self) -> dict[str, Any]:
        """GET /api/version."""
        return await self._request("GET", "/api/version", None)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON body and return the JSON answer; streaming endpoints get `"stream": false`."""
        if path in _STREAMING_PATHS and body.get("stream") is not False:
            body = {**body, "stream": False}
        return await self._request("POST", path, body)

    def open_stream(self, path: str, body: dict[str, Any]) -> StreamContext:
        """Context manager: POST with `"stream": true`; entering waits for the status and the first byte."""
        if body.get("stream") is not True:
            body = {**body, "stream": True}
        return StreamContext(self, path, orjson.dumps(body))

    async def _open(self, method: str, path: str, content: bytes | None, read_timeout: float | None) -> _Answer:
        """Send one request; return once the answer's head arrived. `read_timeout` bounds each wait for body
        bytes on the direct path (the httpx path times body reads in the callers). Raises httpx exceptions."""
        direct = self._direct
        if direct is None:
            return _HttpxAnswer(await self._http.send(self._build(method, path, content), stream=True))
        head = self._heads.get((method, path))
        if head is None:
            head = self._head(method, path)
        payload = head + b"\r\n" if content is None else b"%s%d\r\n\r\n%s" % (head, len(content), content)
        reply = await direct.send(self._origin, payload, keep=self._keep, connect_timeout=self._connect_timeout,
                                  write_timeout=self._write_timeout)
        reply.read_timeout = read_timeout
        return reply

    def _head(self, method: str, path: str) -> bytes:
        # A POST's head ends with "Content-Length: " (the length and the body follow); a GET's, with its
        # last header line (the blank line follows).
        line = f"{method} {httpx.URL(self._base + path).raw_path.decode('ascii')} HTTP/1.1\r\n".encode("ascii")
        head = line + self._head_lines
        if method == "POST":
            head += b"Content-Type: application/json\r\nContent-Length: "
        self._heads[(method, path)] = head
        return head

    def _build(self, method: str, path: str, content: bytes | None) -> httpx.Request:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base + path)
        if content is None:
            return httpx.Request(method, url, headers=self._get_headers, extensions=self._extensions)
        return httpx.Request(method, url, content=content, headers=self._post_headers, extensions=self._extensions)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        content = None if body is None else orjson.dumps(body)
        answer: _Answer | None = None
        try:
            with map_errors(self.node, started=False):
                async with asyncio.timeout(self.first_byte_timeout):
                    answer = await self._open(method, path, content, self.idle_timeout)
                    if not 200 <= answer.status < 300:
                        raise await _status_error(answer, self.node)
            content = await self._read_body(answer)
        finally:
            if answer is not None:
                await answer.aclose()
        try:
            value = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"invalid JSON from upstream: {_preview(content)}", self.node) from None
        if type(value) is not dict:
            raise UpstreamProtocolError(f"upstream answer is not a JSON object: {_preview(content)}", self.node)
        return value

    async def _read_body(self, answer: _Answer) -> bytes:
        parts: list[bytes] = []
        with map_errors(self.node, started=True):
            if self._direct is not None:  # the transport times each wait (the answer's read_timeout)
                async for part in answer:
                    parts.append(part)
                return b"".join(parts)
            while True:
                async with asyncio.timeout(self.idle_timeout):
                    try:
                        parts.append(await answer.__anext__())
                    except StopAsyncIteration:
                        return b"".join(parts)


class StreamContext:
    """Async context manager returned by `OllamaClient.open_stream`; yields an `UpstreamStream`."""

    __slots__ = ("_client", "_path", "_content", "_answer", "_stream")

    def __init__(self, client: OllamaClient, path: str, content: bytes) -> None:
        self._client = client
        self._path = path
        self._content = content
        self._answer: _Answer | None = None
        self._stream: UpstreamStream | None = None

    async def __aenter__(self) -> UpstreamStream:
        client = self._client
        try:
            with map_errors(client.node, started=False):
                async with asyncio.timeout(client.first_byte_timeout):
                    # No read timeout below: the stream's own idle timer covers the waits (UpstreamStream).
                    answer = self._answer = await client._open("POST", self._path, self._content, None)
                    if not 200 <= answer.status < 300:
                        raise await _status_error(answer, client.node)
                    try:
                        first = await answer.__anext__()
                    except StopAsyncIteration:
                        raise UpstreamProtocolError("upstream sent an empty stream", client.node) from None
            self._stream = UpstreamStream(client.node, answer, first, client.idle_timeout)
        except BaseException:
            await self._close()
            raise
        return self._stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            stream = self._stream
            if stream is not None:
                stream._stop_timer()
                if exc_type is None and stream.done and not stream._eof:
                    await stream._drain()
        finally:
            await self._close()

    async def _close(self) -> None:
        answer, self._answer = self._answer, None
        if answer is not None:
            await answer.aclose()


class UpstreamStream:
    """Async iterator of the parsed NDJSON objects of one Ollama stream; `node` names the node."""

    __slots__ = (
        "node",
        "done",
        "_chunks",
        "_decoder",
        "_items",
        "_pos",
        "_eof",
        "_idle",
        "_loop",
        "_timer",
        "_task",
        "_cancelling",
        "_read_started",
        "_reading",
        "_expired",
    )

    def __init__(self, node: str, chunks: _Answer, first: bytes, idle_timeout: float) -> None:
        self.node = node
        self.done = False  # a `"done": true` line has been yielded
        self._chunks = chunks
        self._decoder = NDJSONDecoder()
        self._items: list[dict[str, Any]] = []
        self._pos = 0
        self._eof = False
        self._idle = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._read_started = 0.0
        self._reading = False
        self._expired = False
        self._items = self._decode(first)

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        items = self._items
        pos = self._pos
        if pos < len(items):
            self._pos = pos + 1
            item = items[pos]
        else:
            item = await self._next_item()
        if "error" in item:
            raise UpstreamStreamError(_error_text(item["error"]), self.node)
        if item.get("done") is True:
            self.done = True
        return item

    async def _next_item(self) -> dict[str, Any]:
        while True:
            if self._eof:
                if not self.done:
                    raise UpstreamProtocolError("upstream stream ended early, before its final line", self.node)
                raise StopAsyncIteration
            chunk = await self._read()
            if chunk is None:
                self._eof = True
                items = self._flush()
            else:
                items = self._decode(chunk)
            if items:
                self._items = items
                self._pos = 1
                return items[0]

    async def _read(self) -> bytes | None:
        # The idle timer is armed lazily and re-armed once per idle period, not per chunk:
        # a chunk costs a clock read instead of a timer handle (see `_on_timer`).
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._read_started = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._read_started + self._idle, self._on_timer)
        self._reading = True
        try:
            chunk: bytes | None = await self._chunks.__anext__()
        except StopAsyncIteration:
            chunk = None
        except BaseException as exc:
            if self._expired:
                self._expired = False
                if task.uncancel() <= self._cancelling:
                    raise self._idle_error() from None
                raise  # cancelled from outside as well: that cancellation wins
            if isinstance(exc, httpx.HTTPError):
                raise translate(exc, self.node, started=True) from exc
            raise
        finally:
            self._reading = False
        if self._expired:
            # Some layer below swallowed our cancellation; the deadline still passed.
            self._expired = False
            task.uncancel()
            raise self._idle_error()
        return chunk

    def _idle_error(self) -> UpstreamIdleTimeout:
        return UpstreamIdleTimeout(f"upstream sent nothing for {self._idle:g}s mid-stream", self.node)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._reading or self._task is None:
            return  # the consumer is busy elsewhere; the next read arms a fresh timer
        deadline = self._read_started + self._idle
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._expired = True
        self._task.cancel()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _decode(self, chunk: bytes) -> list[dict[str, Any]]:
        try:
            return self._decoder.decode(chunk)
        except UpstreamProtocolError as exc:
            exc.node = self.node
            raise

    def _flush(self) -> list[dict[str, Any]]:
        try:
            return self._decoder.flush()
        except UpstreamProtocolError as exc:
            exc.node = self.node
            raise

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(_DRAIN_TIMEOUT):
                async for _ in self._chunks:
                    pass
            self._eof = True
        except (TimeoutError, httpx.HTTPError):
            pass


@contextmanager
def map_errors(node: str, *, started: bool) -> Iterator[None]:
    """Translate httpx exceptions and our own timeouts raised inside the block."""
    try:
        yield
    except (httpx.HTTPError, TimeoutError) as exc:
        raise translate(exc, node, started=started) from exc


def translate(exc: Exception, node: str, *, started: bool) -> UpstreamError:
    """The one mapping from a transport failure to the `providers.errors` tree."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return NodeConnectError(f"cannot connect to node {node}: {detail}", node)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        if started:
            return UpstreamIdleTimeout(f"node {node} went silent mid-answer: {detail}", node)
        return UpstreamTimeout(f"node {node} did not answer in time", node)
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        if started:
            return UpstreamProtocolError(f"upstream stream ended early: {detail}", node)
        return NodeConnectError(f"node {node} dropped the connection before answering: {detail}", node)
    if isinstance(exc, httpx.DecodingError):
        return UpstreamProtocolError(f"cannot decode the upstream answer: {detail}", node)
    return UpstreamError(f"request to node {node} failed: {type(exc).__name__}: {detail}", node)


async def _status_error(answer: _Answer, node: str) -> UpstreamStatusError:
    # The caller closes the answer.
    parts: list[bytes] = []
    size = 0
    async for part in answer:
        parts.append(part)
        size += len(part)
        if size >= _ERROR_BODY_LIMIT:
            break
    body = b"".join(parts)[:_ERROR_BODY_LIMIT]
    message = _error_message(body) or f"HTTP {answer.status}"
    return UpstreamStatusError(message, answer.status, node)


def _raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    # `aiter_bytes` (not `aiter_raw`) so a compressing proxy or an already-read body still works.
    # httpx types it as an iterator, but it is an async generator and we must be able to `aclose` it.
    return cast(AsyncGenerator[bytes, None], response.aiter_bytes())


def _error_message(body: bytes) -> str:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:1000]
    if isinstance(value, dict) and "error" in value:
        return _error_text(value["error"])
    return body.decode("utf-8", "replace").strip()[:1000]


def _error_text(error: Any) -> str:
    return error if isinstance(error, str) else orjson.dumps(error).decode()


def _preview(content: bytes, limit: int = 200) -> str:
    text = content[:limit].decode("utf-8", "replace").strip()
    return text + ("..." if len(content) > limit else "")
