"""The limiter's own pipelined Redis connection: framing, ordering, handshake, errors, reconnection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, InvalidResponse, NoScriptError, ResponseError

from gateway.ratelimit.channel import ScriptChannel, pack
from gateway.ratelimit.redis import create_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def channel(redis_url: str) -> AsyncIterator[ScriptChannel]:
    client = create_client(redis_url)
    found = ScriptChannel.for_client(client)
    assert found is not None
    yield found
    await found.aclose()
    await client.aclose()


async def fake_server(handle: Handler) -> tuple[asyncio.Server, int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except ConnectionResetError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def stop(server: asyncio.Server, channel: ScriptChannel) -> None:
    await channel.aclose()
    await asyncio.sleep(0.05)  # the server's handlers see the client leave
    server.close()
    await server.wait_closed()


def test_commands_are_framed_as_resp_arrays_of_bulk_strings() -> None:
    assert pack(["EVALSHA", "ab", 1, b"k\r\n", -5]) == (
        b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$3\r\nk\r\n\r\n$2\r\n-5\r\n")


async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(channel: ScriptChannel) -> None:
    replies = await asyncio.gather(*(channel.call("ECHO", f"call-{index}") if index % 10
                                     else channel.call("CLIENT", "ID") for index in range(200)))
    assert [reply for index, reply in enumerate(replies) if index % 10] == [
        f"call-{index}".encode() for index in range(200) if index % 10]
    assert len({reply for index, reply in enumerate(replies) if not index % 10}) == 1  # one connection


async def test_the_urls_database_is_selected(channel: ScriptChannel, redis_url: str) -> None:
    await channel.call("SET", "channel-db-check", "here")
    check = Redis.from_url(redis_url)
    assert await check.get("channel-db-check") == b"here"
    await check.aclose()


async def test_error_replies_are_redis_pys_errors_and_the_connection_stays_usable(channel: ScriptChannel) -> None:
    with pytest.raises(NoScriptError):
        await channel.call("EVALSHA", "0" * 40, 0)
    with pytest.raises(ResponseError, match="unknown command"):
        await channel.call("NO-SUCH-COMMAND")
    assert await channel.call("PING") == b"PONG"


async def test_auth_and_select_are_sent_first() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.append(data)
            writer.write(b"+OK\r\n" * data.count(b"*"))  # one reply per command in what arrived

    server, port = await fake_server(handle)
    channel = ScriptChannel.for_client(Redis.from_url(f"redis://user:s3cret@127.0.0.1:{port}/4"))
    assert channel is not None
    assert await channel.call("PING") == b"OK"
    await stop(server, channel)
    assert b"".join(seen) == pack(["AUTH", "user", "s3cret"]) + pack(["SELECT", 4]) + pack(["PING"])


async def test_a_refused_handshake_is_an_error_and_the_next_call_tries_again() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            writer.write(b"-WRONGPASS invalid username-password pair\r\n")

    server, port = await fake_server(handle)
    channel = ScriptChannel.for_client(Redis.from_url(f"redis://:bad@127.0.0.1:{port}/0"))
    assert channel is not None
    for _ in range(2):
        with pytest.raises(ResponseError, match="WRONGPASS"):
            await channel.call("PING")
    await stop(server, channel)


async def test_a_server_that_closes_fails_the_waiting_calls_and_the_next_call_reconnects() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await reader.read(65536)
            writer.close()  # a restart: the call in flight gets no answer
            return
        while await reader.read(65536):
            writer.write(b"+PONG\r\n")

    server, port = await fake_server(handle)
    channel = ScriptChannel("127.0.0.1", port)
    with pytest.raises(ConnectionError):
        await channel.call("PING")
    assert await channel.call("PING") == b"PONG"
    assert connections == 2
    await stop(server, channel)


async def test_garbage_from_the_server_is_invalid_response_and_closes_the_connection() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await reader.read(65536):
            writer.write(b"?garbage\r\n" if connections == 1 else b"+PONG\r\n")

    server, port = await fake_server(handle)
    channel = ScriptChannel("127.0.0.1", port)
    with pytest.raises(InvalidResponse):
        await channel.call("PING")
    assert await channel.call("PING") == b"PONG"
    await stop(server, channel)


async def test_a_reply_after_its_caller_gave_up_does_not_shift_the_others() -> None:
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffered = b""
        while data := await reader.read(65536):
            buffered += data
            if buffered.count(b"*") == 2:
                await release.wait()
                writer.write(b"+first\r\n+second\r\n")

    server, port = await fake_server(handle)
    channel = ScriptChannel("127.0.0.1", port)
    first = asyncio.create_task(channel.call("ECHO", "first"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(channel.call("ECHO", "second"))
    await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    assert await second == b"second"
    await stop(server, channel)


async def test_a_refused_connection_is_connection_error_without_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening
        channel = ScriptChannel("127.0.0.1", sock.getsockname()[1])
        with pytest.raises(ConnectionError) as caught:
            await channel.call("PING")
    assert "127.0.0.1" not in str(caught.value)


async def test_reset_drops_the_connection_and_fails_the_calls_in_flight() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    server, port = await fake_server(handle)
    channel = ScriptChannel("127.0.0.1", port)
    waiting = asyncio.create_task(channel.call("PING"))
    await asyncio.sleep(0.01)
    channel.reset()
    with pytest.raises(ConnectionError):
        await waiting
    await stop(server, channel)


@pytest.mark.parametrize("url", ["unix:///tmp/redis.sock", "rediss://127.0.0.1:6380/0",
                                 "redis://127.0.0.1:6379/0?protocol=3"])
def test_other_connection_kinds_stay_with_redis_py(url: str) -> None:
    assert ScriptChannel.for_client(Redis.from_url(url)) is None
