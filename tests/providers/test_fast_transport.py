from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from providers.errors import (
    NodeConnectError,
    UpstreamError,
    UpstreamIdleTimeout,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeout,
)
from providers.ollama.client import OllamaClient
from providers.ollama.fake import create_fake_app
from providers.ollama.transport import FastTransport
from tests.support.servers import aserve_app

WAIT = 2.0  # generous bound on anything that should happen at once over loopback


class Peer:
    """The server's side of one accepted connection, driven by the test's `serve` function."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.requests: list[bytes] = []
        self.gone = asyncio.Event()  # the server saw the client leave (EOF or reset)
        self.closed = False

    async def request(self) -> bytes | None:
        """The next request (head and body), or None once the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            body = b""
            lowered = head.lower()
            if b"transfer-encoding: chunked" in lowered:
                body = await self.reader.readuntil(b"0\r\n\r\n")
            elif b"content-length:" in lowered:
                length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
                body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.gone.set()
            return None
        self.requests.append(head + body)
        return head + body

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def until_gone(self) -> None:
        """Read and discard until the client leaves."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.gone.set()

    def close(self) -> None:
        self.closed = True
        self.writer.close()

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), as a crashed or overloaded server does."""
        self.closed = True
        self.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Serve = Callable[[Peer], Awaitable[None]]


class RawServer:
    """A loopback HTTP/1.1 server on the test's own loop whose every byte the test writes."""

    def __init__(self, serve: Serve) -> None:
        self._serve = serve
        self.peers: list[Peer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in self.peers:
            peer.writer.close()
        await asyncio.sleep(0.01)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self._serve(peer)
            if not peer.closed:
                await peer.until_gone()
        except ConnectionError:
            peer.gone.set()


def ok(body: bytes = b"hello", *headers: bytes) -> bytes:
    fields = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), fields, body)


def chunked_head(*headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n%s\r\n" % b"".join(h + b"\r\n" for h in headers)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def answer_each(reply: Callable[[Peer, bytes], bytes]) -> Serve:
    """Keep-alive service: every request gets `reply(peer, request)`."""

    async def serve(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            peer.send(reply(peer, request))

    return serve


def by_peer(peer: Peer, request: bytes) -> bytes:
    """An answer naming the connection that carried it."""
    return ok(b"%d" % peer.index)


def client(server: RawServer, *, max_idle_per_origin: int = 256, idle_expiry: float = 4.0) -> httpx.AsyncClient:
    transport = FastTransport(max_idle_per_origin=max_idle_per_origin, idle_expiry=idle_expiry)
    return httpx.AsyncClient(transport=transport, base_url=server.url)


async def eventually(event: asyncio.Event) -> bool:
    try:
        async with asyncio.timeout(WAIT):
            await event.wait()
    except TimeoutError:
        return False
    return True


# --- bodies -------------------------------------------------------------------------------------


async def test_content_length_body_status_and_headers() -> None:
    async with RawServer(answer_each(lambda peer, request: ok(b"hello", b"x-test: a b"))) as server:
        async with client(server) as http:
            response = await http.get("/path?q=1")
    assert (response.status_code, response.content, response.headers["x-test"]) == (200, b"hello", "a b")
    assert (response.http_version, response.reason_phrase) == ("HTTP/1.1", "OK")
    assert server.peers[0].requests[0].startswith(b"GET /path?q=1 HTTP/1.1\r\n")


async def test_chunked_body_is_decoded_whatever_the_split_points() -> None:
    wire = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
    splits = iter(range(1, len(wire)))

    async def serve(peer: Peer) -> None:
        while await peer.request() is not None:
            split = next(splits)
            peer.send(chunked_head() + wire[:split])
            await peer.writer.drain()
            await asyncio.sleep(0.002)
            peer.send(wire[split:])

    async with RawServer(serve) as server, client(server) as http:
        bodies = [(await http.get("/")).content for _ in range(len(wire) - 1)]
    assert set(bodies) == {b"hello world"}
    assert len(server.peers) == 1  # each complete chunked answer left the connection reusable


async def test_body_without_length_is_read_until_the_server_closes() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
        await asyncio.sleep(0.01)
        peer.send(b"it")
        peer.close()

    async with RawServer(serve) as server, client(server) as http:
        assert (await http.get("/")).content == b"all of it"
        assert (await http.get("/")).content == b"all of it"
    assert len(server.peers) == 2


async def test_head_and_204_answers_have_no_body_and_keep_the_connection() -> None:
    def reply(peer: Peer, request: bytes) -> bytes:
        if request.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    async with RawServer(answer_each(reply)) as server, client(server) as http:
        assert (await http.head("/")).content == b""
        assert (await http.delete("/")).status_code == 204
        assert (await http.head("/")).headers["content-length"] == "5"
    assert len(server.peers) == 1


async def test_interim_100_continue_is_skipped() -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")
    async with RawServer(answer_each(lambda peer, request: reply)) as server, client(server) as http:
        response = await http.post("/", content=b"x")
    assert (response.status_code, response.content) == (200, b"final")


async def test_streamed_request_body_is_sent_chunked() -> None:
    async def content() -> AsyncIterator[bytes]:
        yield b"hello"
        yield b" world"

    async with RawServer(answer_each(lambda peer, request: ok())) as server, client(server) as http:
        await http.post("/", content=content())
    assert server.peers[0].requests[0].endswith(b"\r\n\r\nb\r\nhello world\r\n0\r\n\r\n")


# --- streaming ------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked", "until-close"])
async def test_each_piece_reaches_the_consumer_before_the_server_sends_the_next(framing: str) -> None:
    consumer_has_first = asyncio.Event()

    async def serve(peer: Peer) -> None:
        await peer.request()
        if framing == "content-length":
            head, first, rest = ok(b"first second")[: -len(b"first second")], b"first ", b"second"
        elif framing == "chunked":
            head, first, rest = chunked_head(), chunk(b"first "), chunk(b"second") + b"0\r\n\r\n"
        else:
            head, first, rest = b"HTTP/1.1 200 OK\r\n\r\n", b"first ", b"second"
        peer.send(head + first)
        if await eventually(consumer_has_first):
            peer.send(rest)
        peer.close()

    async with RawServer(serve) as server, client(server) as http:
        async with http.stream("GET", "/") as response:
            pieces = response.aiter_raw()
            async with asyncio.timeout(WAIT):
                assert await anext(pieces) == b"first "
            consumer_has_first.set()
            assert [piece async for piece in pieces] == [b"second"]


async def test_read_timeout_applies_to_each_read_not_to_the_whole_body() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.send(chunked_head())
        for _ in range(4):  # 0.4 s in all, each gap well under the read timeout
            await asyncio.sleep(0.1)
            peer.send(chunk(b"x"))
        peer.send(b"0\r\n\r\n")

    async with RawServer(serve) as server:
        async with httpx.AsyncClient(transport=FastTransport(), timeout=httpx.Timeout(5, read=0.3)) as http:
            assert (await http.get(server.url)).content == b"xxxx"


# --- the pool ---------------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection() -> None:
    async with RawServer(answer_each(by_peer)) as server, client(server) as http:
        assert [(await http.get("/")).content for _ in range(3)] == [b"0", b"0", b"0"]
    assert len(server.peers) == 1 and len(server.peers[0].requests) == 3


async def test_the_most_recently_released_connection_is_reused_first() -> None:
    async with RawServer(answer_each(by_peer)) as server, client(server) as http:
        first = await http.send(http.build_request("GET", "/"), stream=True)
        second = await http.send(http.build_request("GET", "/"), stream=True)
        assert (await first.aread(), await second.aread()) == (b"0", b"1")  # connection 1 released last
        assert [(await http.get("/")).content for _ in range(2)] == [b"1", b"1"]
    assert len(server.peers) == 2


async def test_idle_connections_beyond_the_bound_are_closed_oldest_first() -> None:
    async with RawServer(answer_each(by_peer)) as server, client(server, max_idle_per_origin=2) as http:
        responses = [await http.send(http.build_request("GET", "/"), stream=True) for _ in range(3)]
        for response in responses:
            await response.aread()
        assert await eventually(server.peers[0].gone)
        pair = await asyncio.gather(http.get("/"), http.get("/"))
        assert {response.content for response in pair} == {b"1", b"2"}
        assert len(server.peers) == 3 and not server.peers[1].gone.is_set()


async def test_a_connection_idle_longer_than_the_expiry_is_closed_and_replaced() -> None:
    async with RawServer(answer_each(by_peer)) as server, client(server, idle_expiry=0.1) as http:
        assert (await http.get("/")).content == b"0"
        await asyncio.sleep(0.2)
        assert (await http.get("/")).content == b"1"
        assert await eventually(server.peers[0].gone)


async def test_connection_close_from_the_server_is_honoured() -> None:
    reply = ok(b"bye", b"Connection: close")  # the server keeps its side open: the client must close
    async with RawServer(answer_each(lambda peer, request: reply)) as server, client(server) as http:
        await http.get("/")
        assert await eventually(server.peers[0].gone)
        await http.get("/")
    assert len(server.peers) == 2


async def test_connection_close_asked_by_the_client_is_honoured() -> None:
    async with RawServer(answer_each(by_peer)) as server, client(server) as http:
        await http.get("/", headers={"connection": "close"})
        assert await eventually(server.peers[0].gone)
        assert (await http.get("/")).content == b"1"


async def test_http_1_0_answers_are_not_reused() -> None:
    reply = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with RawServer(answer_each(lambda peer, request: reply)) as server, client(server) as http:
        assert (await http.get("/")).http_version == "HTTP/1.0"
        await http.get("/")
    assert len(server.peers) == 2


async def test_bytes_beyond_the_answer_make_the_connection_unusable() -> None:
    async with RawServer(answer_each(lambda peer, request: ok(b"0") + b"HTTP/1.1 200 OK\r\n")) as server:
        async with client(server) as http:
            assert (await http.get("/")).content == b"0"
            assert await eventually(server.peers[0].gone)
            await http.get("/")
    assert len(server.peers) == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.send(by_peer(peer, b""))
        peer.close()

    async with RawServer(serve) as server, client(server) as http:
        assert (await http.get("/")).content == b"0"
        await asyncio.sleep(0.05)  # the FIN reaches the client's loop
        assert (await http.get("/")).content == b"1"
    assert len(server.peers[0].requests) == 1


# --- early close and cancellation ------------------------------------------------------------------


def endless(ready: asyncio.Event | None = None) -> Serve:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.send(chunked_head())
        try:
            while True:
                peer.send(chunk(b"token "))
                await peer.writer.drain()
                await asyncio.sleep(0.01)
                if ready is not None:
                    ready.set()
        except ConnectionError:
            peer.gone.set()
        peer.closed = True

    return serve


async def test_closing_a_response_early_closes_the_socket_and_the_server_sees_it() -> None:
    async with RawServer(endless()) as server, client(server) as http:
        async with http.stream("GET", "/") as response:
            async for _ in response.aiter_raw():
                break
        assert await eventually(server.peers[0].gone)
        async with http.stream("GET", "/") as response:
            async for _ in response.aiter_raw():
                break
    assert len(server.peers) == 2  # the closed connection was not pooled


async def test_cancelled_while_waiting_for_the_head_closes_the_socket() -> None:
    received = asyncio.Event()

    async def serve(peer: Peer) -> None:
        await peer.request()
        received.set()

    async with RawServer(serve) as server, client(server) as http:
        task = asyncio.create_task(http.get("/"))
        assert await eventually(received)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(server.peers[0].gone)


async def test_cancelled_while_reading_the_body_closes_the_socket() -> None:
    streaming = asyncio.Event()
    async with RawServer(endless(streaming)) as server, client(server) as http:
        task = asyncio.create_task(http.get("/"))
        assert await eventually(streaming)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(server.peers[0].gone)


async def test_aclose_closes_idle_and_busy_connections_and_refuses_more_requests() -> None:
    transport = FastTransport()
    async with RawServer(endless()) as streaming, RawServer(answer_each(by_peer)) as plain:
        http = httpx.AsyncClient(transport=transport)
        await http.get(plain.url)  # leaves an idle connection
        busy = await http.send(http.build_request("GET", streaming.url), stream=True)
        await transport.aclose()
        assert await eventually(plain.peers[0].gone) and await eventually(streaming.peers[0].gone)
        with pytest.raises(RuntimeError, match="closed"):
            await transport.handle_async_request(httpx.Request("GET", plain.url))
        with pytest.raises(httpx.HTTPError):
            await busy.aread()


# --- the keep-alive race ----------------------------------------------------------------------------


def dies_on_reuse(how: str, *, partial: bytes = b"") -> Serve:
    """Connection 0 answers once, then takes the next request and dies (after `partial` bytes of answer)."""

    async def serve(peer: Peer) -> None:
        if peer.index == 0:
            await peer.request()
            peer.send(ok(b"0"))
            await peer.request()
            if partial:
                peer.send(partial)
                await peer.writer.drain()
                await asyncio.sleep(0.01)
            peer.close() if how == "close" else peer.reset()
            return
        await answer_each(by_peer)(peer)

    return serve


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_reused_connection_that_dies_before_answering_a_get_is_retried_once_on_a_fresh_one(how: str) -> None:
    async with RawServer(dies_on_reuse(how)) as server, client(server) as http:
        assert (await http.get("/")).content == b"0"
        assert (await http.get("/again")).content == b"1"
    assert [len(peer.requests) for peer in server.peers] == [2, 1]
    assert server.peers[0].requests[1] == server.peers[1].requests[0]  # the same request, sent again


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_post_is_never_sent_twice_when_a_reused_connection_dies_after_taking_it(how: str) -> None:
    # The server read the POST and died without a byte of answer: it may have started generating.
    async with RawServer(dies_on_reuse(how)) as server, client(server) as http:
        assert (await http.get("/")).content == b"0"
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await http.post("/", content=b"body")
    assert [len(peer.requests) for peer in server.peers] == [2]


async def test_no_retry_once_a_byte_of_the_answer_arrived() -> None:
    async with RawServer(dies_on_reuse("close", partial=b"HTTP/1.1 200")) as server, client(server) as http:
        await http.get("/")
        with pytest.raises(httpx.RemoteProtocolError, match="middle of the response head"):
            await http.get("/")
    assert len(server.peers) == 1


async def test_no_retry_on_a_fresh_connection() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.close()

    async with RawServer(serve) as server, client(server) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.get("/")
    assert len(server.peers) == 1


async def test_the_retry_happens_only_once() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        if peer.index == 0:
            peer.send(ok(b"0"))
            await peer.request()
        peer.close()

    async with RawServer(serve) as server, client(server) as http:
        await http.get("/")
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.get("/")
    assert len(server.peers) == 2


# --- timeouts and errors ----------------------------------------------------------------------------


async def test_refused_connection_is_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        async with httpx.AsyncClient(transport=FastTransport()) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{sock.getsockname()[1]}/")


async def test_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]  # fill the accept queue: further SYNs go unanswered
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            async with httpx.AsyncClient(transport=FastTransport(), timeout=httpx.Timeout(5, connect=0.2)) as http:
                with pytest.raises(httpx.ConnectTimeout):
                    async with asyncio.timeout(WAIT):
                        await http.get(f"http://127.0.0.1:{port}/")
        finally:
            for filler in fillers:
                filler.close()


async def never_answer(peer: Peer) -> None:
    await peer.request()


async def test_read_timeout_waiting_for_the_answer() -> None:
    async with RawServer(never_answer) as server:
        async with httpx.AsyncClient(transport=FastTransport(), timeout=httpx.Timeout(5, read=0.1)) as http:
            with pytest.raises(httpx.ReadTimeout):
                async with asyncio.timeout(WAIT):
                    await http.get(server.url)
        assert await eventually(server.peers[0].gone)


async def test_read_timeout_in_the_middle_of_the_body() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf ")

    async with RawServer(serve) as server:
        async with httpx.AsyncClient(transport=FastTransport(), timeout=httpx.Timeout(5, read=0.1)) as http:
            with pytest.raises(httpx.ReadTimeout):
                async with asyncio.timeout(WAIT):
                    await http.get(server.url)


async def test_write_timeout_when_the_server_does_not_read() -> None:
    async def serve(peer: Peer) -> None:
        await asyncio.Event().wait()

    async with RawServer(serve) as server:
        async with httpx.AsyncClient(transport=FastTransport(), timeout=httpx.Timeout(5, write=0.2)) as http:
            with pytest.raises(httpx.WriteTimeout):
                async with asyncio.timeout(WAIT):
                    await http.post(server.url, content=bytes(64 * 1024 * 1024))


async def test_reset_before_answering_is_read_error() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.reset()

    async with RawServer(serve) as server, client(server) as http:
        with pytest.raises(httpx.ReadError):
            await http.get("/")


async def test_reset_in_the_middle_of_the_body_is_read_error() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.send(chunked_head() + chunk(b"partial"))
        await peer.writer.drain()
        await asyncio.sleep(0.02)
        peer.reset()

    async with RawServer(serve) as server, client(server) as http:
        with pytest.raises(httpx.ReadError):
            await http.get("/")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "middle of the body"),
        (chunked_head() + chunk(b"partial"), "middle of the body"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1", "middle of the response head"),
        (b"HTTP/1.1 2OO OK\r\n\r\n", "malformed status line"),
        (b"HTTP/2 200 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\nx: y\n\n", "middle of the response head"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed response headers"),
        (b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n", "malformed response headers"),
        (b"HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n", "malformed response headers"),
        (b"HTTP/1.1 200 OK\r\n" + b"x: " + b"a" * 70_000, "too large"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", "conflicting content-length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "invalid content-length"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", "unsupported transfer-encoding"),
        (chunked_head() + b"zz\r\n", "malformed chunk size"),
        (chunked_head() + b"2\r\nabXX", "not followed by CRLF"),
        (chunked_head() + b"f" * 2000, "too long"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "protocol switch"),
    ],
)
async def test_malformed_or_truncated_answers_are_remote_protocol_errors(answer: bytes, message: str) -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.send(answer)
        peer.close()

    async with RawServer(serve) as server, client(server) as http:
        with pytest.raises(httpx.RemoteProtocolError, match=message):
            await http.get("/")


async def test_only_plain_http_is_spoken() -> None:
    async with httpx.AsyncClient(transport=FastTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("https://127.0.0.1:1/")


async def test_a_line_break_in_a_header_is_refused() -> None:
    async with RawServer(answer_each(by_peer)) as server, client(server) as http:
        with pytest.raises(httpx.LocalProtocolError, match="line break"):
            await http.get("/", headers={"x-a": "a\r\nInjected: 1"})
    assert server.peers == []  # refused before connecting


# --- OllamaClient over FastTransport (through httpx, and direct), against the emulator ----------------

ASK = {"model": "qwen3", "messages": [{"role": "user", "content": "hello"}]}
MODES = ["httpx", "direct"]


@asynccontextmanager
async def ollama_client(url: str, mode: str, **options: Any) -> AsyncIterator[OllamaClient]:
    """An OllamaClient over one FastTransport: through httpx.AsyncClient, or calling the transport directly."""
    transport = FastTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        yield OllamaClient(http, url, node=options.pop("node", "fake"), direct=transport if mode == "direct" else None,
                           **{"first_byte_timeout": 2, "idle_timeout": 2, **options})


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_client_call_shapes_over_fast_transport(mode: str) -> None:
    fake = create_fake_app()
    async with aserve_app(fake) as url, ollama_client(url, mode) as client:
        assert "version" in await client.version()
        async with client.open_stream("/api/chat", ASK) as stream:
            items = [item async for item in stream]
        assert items[-1]["done"] and not any(item["done"] for item in items[:-1])
        assert (await client.chat(ASK))["message"]["content"]
        assert len((await client.embed({"model": "nomic-embed-text", "input": ["a", "b"]}))["embeddings"]) == 2
        assert "models" in await client.ps()


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_client_failures_over_fast_transport_map_to_the_error_tree(mode: str) -> None:
    fake = create_fake_app()
    async with aserve_app(fake) as url, ollama_client(url, mode, first_byte_timeout=0.3) as client:
        with pytest.raises(UpstreamStreamError):
            async with client.open_stream("/api/chat", {**ASK, "model": "qwen3-midstream-error"}) as stream:
                [item async for item in stream]
        with pytest.raises(UpstreamProtocolError, match="ended early"):
            async with client.open_stream("/api/chat", {**ASK, "model": "qwen3-drop"}) as stream:
                [item async for item in stream]
        with pytest.raises(UpstreamStatusError, match="not found"):
            await client.chat({**ASK, "model": "no-such-model"})
        with pytest.raises(UpstreamStatusError, match="not found"):
            async with client.open_stream("/api/chat", {**ASK, "model": "no-such-model"}):
                pass
        with pytest.raises(UpstreamTimeout):
            await client.chat({**ASK, "model": "qwen3-hang"})
        with pytest.raises(UpstreamTimeout):
            async with client.open_stream("/api/chat", {**ASK, "model": "qwen3-hang"}):
                pass
        with pytest.raises(UpstreamProtocolError):
            await client.chat({**ASK, "model": "qwen3-garbage"})
        assert (await client.chat(ASK))["done"]  # the transport is still fine


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_client_leaving_a_stream_early_stops_the_emulator(mode: str) -> None:
    fake = create_fake_app()
    async with aserve_app(fake) as url, ollama_client(url, mode) as client:
        async with client.open_stream("/api/chat", {**ASK, "model": "qwen3-slow"}) as stream:
            async for _ in stream:
                break
        for _ in range(100):
            if fake.stats.cancelled_streams == 1:
                break
            await asyncio.sleep(0.02)
        assert (fake.stats.cancelled_streams, fake.stats.completed_streams) == (1, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_client_sees_a_node_that_drops_connections_before_answering(mode: str) -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.close()

    async with RawServer(serve) as server, ollama_client(server.url, mode, node="flaky") as client:
        with pytest.raises(NodeConnectError, match="dropped the connection before answering"):
            await client.chat(ASK)


# --- the direct path's own guarantees -----------------------------------------------------------------


async def test_direct_requests_carry_the_node_headers_and_no_content_coding() -> None:
    async with RawServer(answer_each(lambda peer, request: ok(b"{}"))) as server:
        transport = FastTransport()
        async with httpx.AsyncClient(transport=transport, headers={"x-trace": "t1"}) as http:
            client = OllamaClient(http, server.url + "/ollama/", node="n", first_byte_timeout=2, idle_timeout=2,
                                  headers=(("Authorization", "Bearer node-token"),), direct=transport)
            assert await client.embed({"model": "e", "input": "x"}) == {}
            assert await client.version() == {}
    post, get = server.peers[0].requests  # one connection, kept alive between the two
    head, body = post.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /ollama/api/embed HTTP/1.1"
    fields = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines[1:])}
    assert fields[b"host"] == server.url.removeprefix("http://").encode()
    assert fields[b"authorization"] == b"Bearer node-token" and fields[b"x-trace"] == b"t1"
    assert fields[b"accept-encoding"] == b"identity"
    assert fields[b"content-type"] == b"application/json" and int(fields[b"content-length"]) == len(body)
    assert body == b'{"model":"e","input":"x"}'
    assert get.startswith(b"GET /ollama/api/version HTTP/1.1\r\n") and get.endswith(b"\r\n\r\n")
    assert b"content-length" not in get.lower()


@pytest.mark.parametrize("mode", MODES)
async def test_a_node_header_naming_the_host_is_sent_as_the_host(mode: str) -> None:
    # e.g. a name-based virtual host in front of Ollama, reached by address
    async with RawServer(answer_each(lambda peer, request: ok(b"{}"))) as server:
        async with ollama_client(server.url, mode, headers=(("Host", "ollama.internal"),)) as client:
            await client.version()
            await client.chat(ASK)
    for request in server.peers[0].requests:
        assert [line for line in request.split(b"\r\n") if line.lower().startswith(b"host:")] == [
            b"Host: ollama.internal"]


@pytest.mark.parametrize("mode", MODES)
async def test_credentials_in_a_node_url_are_sent_as_basic_auth(mode: str) -> None:
    async with RawServer(answer_each(lambda peer, request: ok(b"{}"))) as server:
        async with ollama_client(server.url.replace("http://", "http://user:pa%40ss@"), mode) as client:
            await client.version()
            await client.chat(ASK)
    for request in server.peers[0].requests:
        assert b"\r\nAuthorization: Basic dXNlcjpwYUBzcw==\r\n" in request  # user:pa@ss
        assert b"user" not in request.split(b"\r\n")[0]  # not in the request line


async def test_direct_node_asking_connection_close_is_not_reused() -> None:
    async with RawServer(answer_each(lambda peer, request: ok(b"{}"))) as server:
        transport = FastTransport()
        async with httpx.AsyncClient(transport=transport) as http:
            client = OllamaClient(http, server.url, node="n", first_byte_timeout=2, idle_timeout=2,
                                  headers=(("Connection", "close"),), direct=transport)
            await client.version()
            await client.version()
    assert len(server.peers) == 2


async def test_direct_header_with_a_line_break_is_left_to_httpx_which_refuses_it() -> None:
    async with RawServer(answer_each(lambda peer, request: ok(b"{}"))) as server:
        transport = FastTransport()
        async with httpx.AsyncClient(transport=transport) as http:
            client = OllamaClient(http, server.url, node="n", first_byte_timeout=2, idle_timeout=2,
                                  headers=(("X-Evil", "a\r\nInjected: 1"),), direct=transport)
            with pytest.raises(UpstreamError, match="line break"):
                await client.version()
    assert server.peers == []  # refused before connecting


def dies_on_second_request(how: str) -> Serve:
    """Connection 0 answers one request, reads the next and dies without answering; others answer each."""

    def serve_json(peer: Peer, request: bytes) -> bytes:
        return ok(b'{"n":%d}' % peer.index)

    async def serve(peer: Peer) -> None:
        if peer.index == 0:
            await peer.request()
            peer.send(ok(b'{"n":0}'))
            await peer.request()
            peer.close() if how == "close" else peer.reset()
            return
        await answer_each(serve_json)(peer)

    return serve


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_direct_reused_connection_that_died_is_retried_once_for_a_get(how: str) -> None:
    async with RawServer(dies_on_second_request(how)) as server, ollama_client(server.url, "direct") as client:
        assert await client.version() == {"n": 0}
        assert await client.version() == {"n": 1}
    assert server.peers[0].requests[1] == server.peers[1].requests[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_chat_the_node_took_and_died_on_is_not_sent_twice(mode: str, how: str) -> None:
    # Ollama answers a non-streaming chat only when it is generated: dying before a byte may be mid-generation.
    async with RawServer(dies_on_second_request(how)) as server, ollama_client(server.url, mode) as client:
        assert await client.chat(ASK) == {"n": 0}
        with pytest.raises(UpstreamError):
            await client.chat(ASK)
    assert [len(peer.requests) for peer in server.peers] == [2]


async def test_direct_body_stalling_is_idle_timeout_and_closes() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")

    async with RawServer(serve) as server, ollama_client(server.url, "direct", idle_timeout=0.1) as client:
        with pytest.raises(UpstreamIdleTimeout):
            await client.chat(ASK)
        assert await eventually(server.peers[0].gone)


async def test_direct_first_byte_deadline_is_not_cut_by_the_idle_timeout() -> None:
    async def serve(peer: Peer) -> None:
        await peer.request()
        await asyncio.sleep(0.3)  # longer than the idle timeout, within the first-byte deadline
        peer.send(ok(b'{"late":true}'))

    async with RawServer(serve) as server, ollama_client(server.url, "direct", idle_timeout=0.1) as client:
        assert await client.chat(ASK) == {"late": True}


async def test_direct_cancelled_while_waiting_closes_the_socket() -> None:
    received = asyncio.Event()

    async def serve(peer: Peer) -> None:
        await peer.request()
        received.set()

    async with RawServer(serve) as server, ollama_client(server.url, "direct") as client:
        task = asyncio.create_task(client.chat(ASK))
        assert await eventually(received)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(server.peers[0].gone)


async def test_direct_refused_connection_is_node_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        async with ollama_client(url, "direct") as client:
            with pytest.raises(NodeConnectError):
                await client.version()
            with pytest.raises(NodeConnectError):
                async with client.open_stream("/api/chat", ASK):
                    pass
