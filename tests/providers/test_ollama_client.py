from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

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
from tests.support.servers import aserve_app

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]

CHUNK = b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":false}\n'
DONE = b'{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":1}\n'


class ScriptedStream(httpx.AsyncByteStream):
    """A response body played step by step: bytes are sent, floats are pauses, exceptions are raised."""

    def __init__(self, *steps: bytes | float | BaseException) -> None:
        self.steps = steps
        self.closed = False
        self.exhausted = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for step in self.steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            elif isinstance(step, BaseException):
                raise step
            else:
                yield step
        self.exhausted = True

    async def aclose(self) -> None:
        self.closed = True


def make_client(handler: Handler, *, first_byte: float = 1.0, idle: float = 1.0) -> OllamaClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OllamaClient(http, "http://gpu-a:11434/", node="gpu-a", first_byte_timeout=first_byte, idle_timeout=idle)


def streaming(stream: httpx.AsyncByteStream, status: int = 200) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, stream=stream, headers={"content-type": "application/x-ndjson"})

    return handler


async def collect(client: OllamaClient, stream_body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    async with client.open_stream("/api/chat", stream_body or {"model": "m"}) as stream:
        return [item async for item in stream]


# --- non-streaming ---------------------------------------------------------------------------


async def test_chat_posts_json_with_stream_false_and_returns_the_answer() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"model": "m", "done": True})

    answer = await make_client(handler).chat({"model": "m", "messages": [], "stream": True})
    assert answer == {"model": "m", "done": True}
    assert seen[0].method == "POST"
    assert str(seen[0].url) == "http://gpu-a:11434/api/chat"
    assert seen[0].headers["content-type"] == "application/json"
    assert orjson.loads(seen[0].content) == {"model": "m", "messages": [], "stream": False}


async def test_client_default_headers_are_sent() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), headers={"x-trace": "t1"})
    client = OllamaClient(http, "http://gpu-a:11434", node="gpu-a", first_byte_timeout=1, idle_timeout=1)
    await client.version()
    await client.embed({"model": "e", "input": "x"})
    assert [request.headers["x-trace"] for request in seen] == ["t1", "t1"]


async def test_reads_are_left_to_the_clients_own_deadlines_but_connect_limits_are_kept() -> None:
    seen: list[dict[str, float | None]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=httpx.Timeout(5.0, connect=1.5))
    client = OllamaClient(http, "http://gpu-a:11434", node="gpu-a", first_byte_timeout=30, idle_timeout=30)
    await client.version()
    assert seen == [{"connect": 1.5, "read": None, "write": 5.0, "pool": 5.0}]


async def test_generate_forces_stream_false_and_embed_sends_the_body_unchanged() -> None:
    bodies: dict[str, Any] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies[request.url.path] = orjson.loads(request.content)
        return httpx.Response(200, json={})

    client = make_client(handler)
    await client.generate({"model": "m", "prompt": "x"})
    await client.embed({"model": "e", "input": ["a"]})
    assert bodies == {
        "/api/generate": {"model": "m", "prompt": "x", "stream": False},
        "/api/embed": {"model": "e", "input": ["a"]},
    }


async def test_info_endpoints_use_ollamas_methods_and_paths() -> None:
    seen: list[tuple[str, str, bytes]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.content))
        return httpx.Response(200, json={"path": request.url.path})

    client = make_client(handler)
    assert await client.tags() == {"path": "/api/tags"}
    assert await client.ps() == {"path": "/api/ps"}
    assert await client.version() == {"path": "/api/version"}
    assert await client.show("llama3.2") == {"path": "/api/show"}
    assert seen == [
        ("GET", "/api/tags", b""),
        ("GET", "/api/ps", b""),
        ("GET", "/api/version", b""),
        ("POST", "/api/show", b'{"model":"llama3.2"}'),
    ]


async def test_connect_error_is_node_connect_error_naming_the_node() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(NodeConnectError) as info:
        await make_client(handler).chat({"model": "m"})
    assert info.value.node == "gpu-a"
    assert info.value.code == "upstream_unavailable"


async def test_no_answer_within_first_byte_timeout_is_upstream_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        raise AssertionError("unreachable")

    with pytest.raises(UpstreamTimeout) as info:
        await make_client(handler, first_byte=0.05).chat({"model": "m"})
    assert info.value.node == "gpu-a"
    assert info.value.status == 504


async def test_transport_read_timeout_before_answer_is_upstream_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(UpstreamTimeout):
        await make_client(handler).version()


async def test_error_status_carries_ollamas_message_and_status() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "model 'nope' not found"})

    with pytest.raises(UpstreamStatusError) as info:
        await make_client(handler).chat({"model": "nope"})
    assert info.value.message == "model 'nope' not found"
    assert info.value.upstream_status == 404
    assert info.value.node == "gpu-a"


async def test_error_status_with_plain_text_or_empty_body() -> None:
    bodies = iter([b"404 page not found", b""])

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404 if request.url.path == "/api/tags" else 500, content=next(bodies))

    client = make_client(handler)
    with pytest.raises(UpstreamStatusError, match="404 page not found"):
        await client.tags()
    with pytest.raises(UpstreamStatusError, match="HTTP 500") as info:
        await client.ps()
    assert info.value.upstream_status == 500


async def test_garbage_body_is_protocol_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>proxy error</html>")

    with pytest.raises(UpstreamProtocolError, match="invalid JSON"):
        await make_client(handler).chat({"model": "m"})


async def test_json_that_is_not_an_object_is_protocol_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[1, 2]")

    with pytest.raises(UpstreamProtocolError, match="not a JSON object"):
        await make_client(handler).tags()


async def test_body_stalling_after_the_status_is_idle_timeout_and_closes() -> None:
    body = ScriptedStream(b'{"model":', 5.0, b"}")

    with pytest.raises(UpstreamIdleTimeout):
        await make_client(streaming(body), idle=0.05).embed({"model": "e", "input": "x"})
    assert body.closed


async def test_body_dropped_midway_is_protocol_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        body = ScriptedStream(b'{"model":', httpx.RemoteProtocolError("peer closed connection", request=request))
        return httpx.Response(200, stream=body)

    with pytest.raises(UpstreamProtocolError, match="ended early"):
        await make_client(handler).chat({"model": "m"})


# --- streaming -------------------------------------------------------------------------------


async def test_stream_yields_parsed_lines_then_stops_and_closes() -> None:
    body = ScriptedStream(CHUNK + CHUNK[:10], CHUNK[10:], DONE)
    seen: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, stream=body)

    client = make_client(handler)
    async with client.open_stream("/api/chat", {"model": "m", "messages": []}) as stream:
        assert stream.node == "gpu-a"
        items = [item async for item in stream]
        assert stream.done
    assert [item["done"] for item in items] == [False, False, True]
    assert items[0]["message"]["content"] == "hi"
    assert orjson.loads(seen[0]) == {"model": "m", "messages": [], "stream": True}
    assert body.closed and body.exhausted


async def test_stream_error_status_raises_on_enter_with_message() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "registry.ollama.ai/library/gemma2:latest does not support tools"})

    with pytest.raises(UpstreamStatusError, match="does not support tools") as info:
        await collect(make_client(handler))
    assert info.value.upstream_status == 400


async def test_stream_connect_error_raises_on_enter() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(NodeConnectError):
        await collect(make_client(handler))


async def test_stream_connection_dropped_before_any_response_is_node_connect_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    with pytest.raises(NodeConnectError, match="before answering"):
        await collect(make_client(handler))


async def test_stream_without_first_byte_in_time_is_upstream_timeout_and_closes() -> None:
    body = ScriptedStream(5.0, DONE)

    with pytest.raises(UpstreamTimeout):
        await collect(make_client(streaming(body), first_byte=0.05))
    assert body.closed


async def test_garbage_first_line_raises_on_enter_and_closes() -> None:
    body = ScriptedStream(b"<html>oops</html>\n", DONE)
    with pytest.raises(UpstreamProtocolError, match="invalid JSON"):
        await collect(make_client(streaming(body)))
    assert body.closed and not body.exhausted


async def test_stream_with_empty_body_is_protocol_error_on_enter() -> None:
    body = ScriptedStream()
    with pytest.raises(UpstreamProtocolError, match="empty"):
        await collect(make_client(streaming(body)))
    assert body.closed


async def test_mid_stream_error_line_raises_stream_error_and_closes() -> None:
    body = ScriptedStream(CHUNK, b'{"error":"model runner has unexpectedly stopped"}\n', 5.0)
    client = make_client(streaming(body))
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamStreamError, match="unexpectedly stopped") as info:
        async with client.open_stream("/api/chat", {"model": "m"}) as stream:
            async for item in stream:
                got.append(item)
    assert len(got) == 1
    assert info.value.node == "gpu-a"
    assert body.closed


async def test_silence_mid_stream_is_idle_timeout_and_closes() -> None:
    body = ScriptedStream(CHUNK, 5.0, DONE)
    client = make_client(streaming(body), idle=0.05)
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamIdleTimeout) as info:
        async with client.open_stream("/api/chat", {"model": "m"}) as stream:
            async for item in stream:
                got.append(item)
    assert len(got) == 1
    assert info.value.node == "gpu-a"
    assert body.closed
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the timeout's own cancellation was absorbed


async def test_idle_timeout_holds_when_the_transport_turns_the_cancellation_into_an_error() -> None:
    class Converting(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield CHUNK
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                raise httpx.ReadError("connection reset") from None
            yield DONE

    with pytest.raises(UpstreamIdleTimeout):
        await collect(make_client(streaming(Converting()), idle=0.05))
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_idle_timeout_in_a_task_group_child_like_starlettes_streaming_response() -> None:
    body = ScriptedStream(CHUNK, 5.0, DONE)
    client = make_client(streaming(body), idle=0.05)
    errors: list[Exception] = []

    async def relay() -> None:
        try:
            await collect(client)
        except UpstreamIdleTimeout as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(relay)
    assert len(errors) == 1 and body.closed


async def test_slow_stream_with_gaps_under_the_idle_timeout_completes() -> None:
    # Total time well past the idle timeout, but no single gap reaches it.
    body = ScriptedStream(CHUNK, 0.03, CHUNK, 0.03, CHUNK, 0.03, CHUNK, 0.03, DONE)
    items = await collect(make_client(streaming(body), idle=0.1))
    assert len(items) == 5


async def test_slow_consumer_is_not_an_idle_upstream() -> None:
    body = ScriptedStream(CHUNK, CHUNK, DONE)
    client = make_client(streaming(body), idle=0.03)
    async with client.open_stream("/api/chat", {"model": "m"}) as stream:
        items = []
        async for item in stream:
            items.append(item)
            await asyncio.sleep(0.06)
    assert len(items) == 3


async def test_transport_read_timeout_mid_stream_is_idle_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=ScriptedStream(CHUNK, httpx.ReadTimeout("timed out", request=request)))

    with pytest.raises(UpstreamIdleTimeout):
        await collect(make_client(handler))


async def test_garbage_line_mid_stream_is_protocol_error() -> None:
    body = ScriptedStream(CHUNK, b"<html>502 Bad Gateway</html>\n")
    with pytest.raises(UpstreamProtocolError, match="invalid JSON") as info:
        await collect(make_client(streaming(body)))
    assert info.value.node == "gpu-a"
    assert body.closed


async def test_stream_ending_without_done_line_is_protocol_error() -> None:
    body = ScriptedStream(CHUNK, CHUNK)
    with pytest.raises(UpstreamProtocolError, match="ended early"):
        await collect(make_client(streaming(body)))
    assert body.closed


async def test_stream_ending_mid_line_is_protocol_error() -> None:
    body = ScriptedStream(CHUNK, DONE[:20])
    with pytest.raises(UpstreamProtocolError):
        await collect(make_client(streaming(body)))


async def test_connection_dropped_mid_stream_is_protocol_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        body = ScriptedStream(CHUNK, httpx.RemoteProtocolError("incomplete chunked read", request=request))
        return httpx.Response(200, stream=body)

    with pytest.raises(UpstreamProtocolError, match="ended early"):
        await collect(make_client(handler))


async def test_consumer_stopping_early_closes_the_response() -> None:
    body = ScriptedStream(CHUNK, CHUNK, CHUNK, DONE)
    client = make_client(streaming(body))
    async with client.open_stream("/api/chat", {"model": "m"}) as stream:
        async for _ in stream:
            break
    assert body.closed
    assert not body.exhausted


async def test_exception_in_consumer_closes_the_response() -> None:
    body = ScriptedStream(CHUNK, DONE)
    client = make_client(streaming(body))
    with pytest.raises(RuntimeError, match="client went away"):
        async with client.open_stream("/api/chat", {"model": "m"}):
            raise RuntimeError("client went away")
    assert body.closed


async def test_cancelling_the_consumer_propagates_and_closes_the_response() -> None:
    body = ScriptedStream(CHUNK, 5.0, DONE)
    client = make_client(streaming(body), idle=10.0)
    started = asyncio.Event()

    async def consume() -> None:
        async with client.open_stream("/api/chat", {"model": "m"}) as stream:
            async for _ in stream:
                started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.closed


async def test_reading_past_done_is_finished_for_the_consumer_who_stops_at_done() -> None:
    # A consumer that leaves right after the done line: the terminator is still read so the
    # connection can be reused.
    body = ScriptedStream(CHUNK, DONE, b"")
    client = make_client(streaming(body))
    async with client.open_stream("/api/chat", {"model": "m"}) as stream:
        async for item in stream:
            if item["done"]:
                break
    assert body.exhausted and body.closed


async def test_all_translated_errors_are_upstream_errors() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'", request=request)

    with pytest.raises(UpstreamError, match="UnsupportedProtocol"):
        await make_client(handler).version()


# --- contract tests over real loopback HTTP -----------------------------------------------------


def loopback_app(disconnected: threading.Event) -> Starlette:
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body["model"] == "missing":
            return JSONResponse({"error": "model 'missing' not found"}, status_code=404)
        if body.get("stream") is False:
            return JSONResponse(
                {"model": body["model"], "message": {"role": "assistant", "content": "hi"}, "done": True}
            )

        async def lines() -> AsyncIterator[bytes]:
            try:
                if body["model"] == "endless":
                    while True:
                        yield CHUNK
                        await asyncio.sleep(0.01)
                if body["model"] == "stall":
                    yield CHUNK
                    await asyncio.sleep(2)
                yield CHUNK
                yield DONE
            finally:
                disconnected.set()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])


async def test_loopback_stream_and_non_stream() -> None:
    async with aserve_app(loopback_app(threading.Event())) as url, httpx.AsyncClient() as http:
        client = OllamaClient(http, url, node="local", first_byte_timeout=2, idle_timeout=2)
        assert (await client.chat({"model": "m"}))["message"]["content"] == "hi"
        async with client.open_stream("/api/chat", {"model": "m"}) as stream:
            items = [item async for item in stream]
        assert [item["done"] for item in items] == [False, True]


async def test_loopback_error_status() -> None:
    async with aserve_app(loopback_app(threading.Event())) as url, httpx.AsyncClient() as http:
        client = OllamaClient(http, url, node="local", first_byte_timeout=2, idle_timeout=2)
        with pytest.raises(UpstreamStatusError, match="model 'missing' not found"):
            async with client.open_stream("/api/chat", {"model": "missing"}):
                pass


async def test_loopback_idle_timeout() -> None:
    async with aserve_app(loopback_app(threading.Event())) as url, httpx.AsyncClient() as http:
        client = OllamaClient(http, url, node="local", first_byte_timeout=2, idle_timeout=0.1)
        with pytest.raises(UpstreamIdleTimeout):
            await collect(client, {"model": "stall"})
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        assert (await client.chat({"model": "m"}))["done"]  # the task and the client remain usable


async def test_loopback_leaving_early_closes_the_connection_so_the_server_stops() -> None:
    disconnected = threading.Event()
    async with aserve_app(loopback_app(disconnected)) as url, httpx.AsyncClient() as http:
        client = OllamaClient(http, url, node="local", first_byte_timeout=2, idle_timeout=2)
        async with client.open_stream("/api/chat", {"model": "endless"}) as stream:
            async for _ in stream:
                break
        for _ in range(100):
            if disconnected.is_set():
                break
            await asyncio.sleep(0.02)
        assert disconnected.is_set()


async def test_loopback_refused_connection_is_node_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        async with httpx.AsyncClient() as http:
            client = OllamaClient(http, f"http://127.0.0.1:{port}", node="dead", first_byte_timeout=2, idle_timeout=2)
            with pytest.raises(NodeConnectError):
                await client.version()
            with pytest.raises(NodeConnectError):
                await collect(client)


# --- contract tests against the Ollama emulator over real loopback HTTP --------------------------

ASK = {"model": "qwen3", "messages": [{"role": "user", "content": "hello"}]}


async def wait_until(condition: Callable[[], bool]) -> bool:
    for _ in range(100):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def test_fake_ollama_answers_every_call_shape() -> None:
    fake = create_fake_app()
    async with aserve_app(fake) as url, httpx.AsyncClient() as http:
        client = OllamaClient(http, url, node="fake", first_byte_timeout=2, idle_timeout=2)
        assert "version" in await client.version()
        async with client.open_stream("/api/chat", ASK) as stream:
            items = [item async for item in stream]
        assert items[-1]["done"] and items[-1]["eval_count"] > 0
        assert all(not item["done"] for item in items[:-1])
        answer = await client.chat(ASK)
        assert answer["done"] and answer["message"]["content"]
        embedded = await client.embed({"model": "nomic-embed-text", "input": ["a", "b"]})
        assert len(embedded["embeddings"]) == 2
        loaded = {model["model"] for model in (await client.ps())["models"]}
        assert {"qwen3:latest", "nomic-embed-text:latest"} <= loaded
        assert fake.stats.bodies("/api/chat")[0]["stream"] is True


async def test_fake_ollama_failures_map_to_the_error_tree() -> None:
    fake = create_fake_app()
    async with aserve_app(fake) as url, httpx.AsyncClient() as http:
        client = OllamaClient(http, url, node="fake", first_byte_timeout=0.3, idle_timeout=2)
        with pytest.raises(UpstreamStreamError):
            await collect(client, {**ASK, "model": "qwen3-midstream-error"})
        with pytest.raises(UpstreamProtocolError, match="ended early"):
            await collect(client, {**ASK, "model": "qwen3-drop"})
        with pytest.raises(UpstreamStatusError, match="not found") as info:
            await collect(client, {**ASK, "model": "no-such-model"})
        assert info.value.upstream_status == 404
        with pytest.raises(UpstreamTimeout):
            await client.chat({**ASK, "model": "qwen3-hang"})
        with pytest.raises(UpstreamProtocolError):
            await client.chat({**ASK, "model": "qwen3-garbage"})


async def test_fake_ollama_stops_generating_when_the_consumer_leaves() -> None:
    fake = create_fake_app()
    async with aserve_app(fake) as url, httpx.AsyncClient() as http:
        client = OllamaClient(http, url, node="fake", first_byte_timeout=2, idle_timeout=2)
        async with client.open_stream("/api/chat", {**ASK, "model": "qwen3-slow"}) as stream:
            async for _ in stream:
                break
        assert await wait_until(lambda: fake.stats.cancelled_streams == 1)
        assert fake.stats.completed_streams == 0
