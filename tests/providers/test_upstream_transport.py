"""Nodes over https (a CA generated here with trustme), nodes behind an authenticating proxy (per-node
headers), and nodes reached through an HTTP proxy; plain http keeps the FastTransport path."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from providers.ollama.client import OllamaClient
from providers.ollama.fake import create_fake_app
from providers.ollama.transport import FastTransport
from providers.ollama.upstream_transport import UpstreamTransport, environment_proxy, origin_of
from tests.support.servers import serve_app


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_node(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The Ollama emulator over https with a certificate of our own CA; yields its URL and the CA's PEM."""
    cert, ca_pem = tmp_path / "node.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_pem))
    with serve_app(create_fake_app(), ssl_certfile=str(cert), ssl_keyfile=str(cert)) as url:
        yield url.replace("http://", "https://"), ca_pem


def _client(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=10)


async def test_https_node_verified_with_its_ca_file(tls_node: tuple[str, Path]) -> None:
    url, ca_pem = tls_node
    transport = UpstreamTransport(FastTransport(), proxy_for=lambda _: None)
    transport.set_ca_files({origin_of(url): str(ca_pem)})
    async with _client(transport) as http:
        client = OllamaClient(http, url, node="tls", first_byte_timeout=10, idle_timeout=10)
        assert (await client.post("/api/chat", {"model": "gemma4:latest", "stream": False,
                                                "messages": [{"role": "user", "content": "hi"}]}))["done"] is True


async def test_https_node_with_an_unknown_ca_is_refused(tls_node: tuple[str, Path]) -> None:
    url, _ = tls_node
    transport = UpstreamTransport(FastTransport(), proxy_for=lambda _: None)  # system CAs only
    async with _client(transport) as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(f"{url}/api/version")
    assert isinstance(caught.value.__context__, ssl.SSLCertVerificationError) or "CERTIFICATE" in str(caught.value)


async def test_node_headers_reach_the_node() -> None:
    seen: list[dict[str, str]] = []
    fake = create_fake_app()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:  # an authenticating reverse proxy
        if scope["type"] == "http":
            headers = {key.decode(): value.decode() for key, value in scope["headers"]}
            seen.append(headers)
            if headers.get("authorization") != "Bearer node-token":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"{}"})
                return
        await fake(scope, receive, send)

    with serve_app(guarded) as url:
        async with _client(UpstreamTransport(FastTransport(), proxy_for=lambda _: None)) as http:
            client = OllamaClient(http, url, node="n", first_byte_timeout=10, idle_timeout=10,
                                  headers=(("Authorization", "Bearer node-token"),))
            assert (await client.version())
            await client.post("/api/embed", {"model": "nomic-embed-text:latest", "input": "x"})
    assert len(seen) == 2 and all(headers["authorization"] == "Bearer node-token" for headers in seen)


@pytest.fixture
async def http_proxy() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A minimal forward proxy that answers Ollama's /api/version itself, recording each request line."""
    lines: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines.append(head.split(b"\r\n", 1)[0])
        body = b'{"version":"0.12.3"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", lines


async def test_plain_http_node_goes_through_a_configured_proxy(http_proxy: tuple[str, list[bytes]],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, lines = http_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "exempt.example")
    assert environment_proxy(httpx.URL("http://exempt.example:11434/api/version")) is None
    async with _client(UpstreamTransport(FastTransport())) as http:
        response = await http.get("http://gpu.internal:11434/api/version")
    assert response.json() == {"version": "0.12.3"}
    assert lines == [b"GET http://gpu.internal:11434/api/version HTTP/1.1"]


async def test_plain_http_without_a_proxy_uses_the_fast_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    used: list[str] = []

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            used.append(str(request.url))
            return httpx.Response(200, json={"version": "0.12.3"})

    async with _client(UpstreamTransport(Recording())) as http:
        await http.get("http://127.0.0.1:11434/api/version")
    assert used == ["http://127.0.0.1:11434/api/version"]


def test_direct_calls_only_for_plain_http_without_a_proxy() -> None:
    fast = FastTransport()
    proxied = {"http://via-proxy:11434"}
    transport = UpstreamTransport(fast, proxy_for=lambda url: "http://proxy:3128" if
                                  f"{url.scheme}://{url.netloc.decode()}" in proxied else None)
    assert transport.direct_for("http://gpu-1:11434") is fast
    assert transport.direct_for("https://gpu-2.example.com") is None  # TLS stays with httpx
    assert transport.direct_for("http://via-proxy:11434") is None
    assert UpstreamTransport(httpx.MockTransport(lambda request: httpx.Response(200)),
                             proxy_for=lambda _: None).direct_for("http://gpu-1:11434") is None


async def test_https_node_keeps_working_when_the_pool_offers_direct_calls(tls_node: tuple[str, Path]) -> None:
    url, ca_pem = tls_node
    transport = UpstreamTransport(FastTransport(), proxy_for=lambda _: None)
    transport.set_ca_files({origin_of(url): str(ca_pem)})
    async with _client(transport) as http:
        client = OllamaClient(http, url, node="tls", first_byte_timeout=10, idle_timeout=10,
                              direct=transport.direct_for(url))
        assert (await client.version())["version"]
        async with client.open_stream("/api/chat", {"model": "gemma4:latest",
                                                    "messages": [{"role": "user", "content": "hi"}]}) as stream:
            assert [item async for item in stream][-1]["done"] is True
