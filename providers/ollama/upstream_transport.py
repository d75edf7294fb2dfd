"""Which transport carries a request to a node: our FastTransport, or httpx's own.

`FastTransport` is a hand-written HTTP/1.1 client for plain-http nodes on a trusted network (the
fast path; see bench/RESULTS.md). Everything it does not do is left to httpx's own
`AsyncHTTPTransport` (httpcore), a well-kept library, rather than to new code of ours:
- `https://` nodes: TLS through Python's `ssl`, verified against the system's CAs
  (`ssl.create_default_context()`), or against the node's `ca_file` from models.yaml;
- nodes that the environment routes through a proxy (`HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`,
  honouring `NO_PROXY`, read with the standard library's `urllib.request` rules).
One library transport is kept per (origin, CA file, proxy) and closed with this transport.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Callable, Mapping

import httpx

from providers.ollama.transport import FastTransport

ProxyLookup = Callable[[httpx.URL], str | None]


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment sets for `url` (None when there is none or NO_PROXY exempts the host)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy


class UpstreamTransport(httpx.AsyncBaseTransport):
    """Plain http without a proxy -> `fast`; https or proxied -> httpx's AsyncHTTPTransport."""

    def __init__(self, fast: httpx.AsyncBaseTransport, *, proxy_for: ProxyLookup = environment_proxy,
                 max_connections: int = 512) -> None:
        self._fast = fast
        self._proxy_for = proxy_for
        self._max_connections = max_connections
        self._ca_files: Mapping[str, str] = {}
        self._library: dict[tuple[str, str | None, str | None], httpx.AsyncHTTPTransport] = {}

    def set_ca_files(self, ca_files: Mapping[str, str]) -> None:
        """Origins (`https://host:port`) whose certificates are verified against a PEM file instead of the
        system's CAs; replaced as a whole on every registry reload."""
        self._ca_files = dict(ca_files)

    def direct_for(self, url: str) -> FastTransport | None:
        """The FastTransport to call without httpx for requests to `url` (a node's base URL): plain http
        without a proxy, when the fast transport is ours; None otherwise (the request goes through httpx).
        Decided when a node is configured: the environment's proxies are read once per node, not per request."""
        parsed = httpx.URL(url)
        if parsed.scheme != "http" or not isinstance(self._fast, FastTransport) or self._proxy_for(parsed) is not None:
            return None
        return self._fast

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        proxy = self._proxy_for(url)
        if url.scheme == "http" and proxy is None:
            return await self._fast.handle_async_request(request)
        return await self._library_transport(url, proxy).handle_async_request(request)

    def _library_transport(self, url: httpx.URL, proxy: str | None) -> httpx.AsyncHTTPTransport:
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        ca_file = self._ca_files.get(origin) if url.scheme == "https" else None
        key = (origin, ca_file, proxy)
        transport = self._library.get(key)
        if transport is None:
            verify = ssl.create_default_context(cafile=ca_file)  # system CAs unless a ca_file is given
            transport = httpx.AsyncHTTPTransport(
                verify=verify, proxy=proxy, retries=0,
                limits=httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=64))
            self._library[key] = transport
        return transport

    async def aclose(self) -> None:
        await self._fast.aclose()
        for transport in self._library.values():
            await transport.aclose()
        self._library.clear()


def origin_of(url: str) -> str:
    """`scheme://host:port` of a node URL as httpx sees it (the key of `set_ca_files`)."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
