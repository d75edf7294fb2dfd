"""The client's address: the socket peer, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

from gateway.settings import IPNetwork


def _trusted(address: str, proxies: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(scope: Scope, trusted_proxies: Sequence[IPNetwork]) -> str | None:
    """Walk X-Forwarded-For from the right while hops are trusted proxies; the first untrusted hop wins."""
    client = scope.get("client")
    peer = client[0] if client else None
    if peer is None or not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    forwarded = b""
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded = value
    hops = [hop.strip() for hop in forwarded.decode("latin-1").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def request_scheme(scope: Scope, trusted_proxies: Sequence[IPNetwork]) -> str:
    """`http` or `https` as the client used it: the socket's, or X-Forwarded-Proto from a trusted proxy.

    With several proxies the value appended last (by the proxy nearest to us) is believed.
    """
    scheme = str(scope.get("scheme", "http"))
    client = scope.get("client")
    peer = client[0] if client else None
    if peer is None or not trusted_proxies or not _trusted(peer, trusted_proxies):
        return scheme
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            claimed = value.decode("latin-1").split(",")[-1].strip().lower()
            if claimed in ("http", "https"):
                scheme = claimed
    return scheme
