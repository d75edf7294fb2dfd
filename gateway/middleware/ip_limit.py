"""Per-client-IP request limit (`IP_RPM`) on `/v1`, `/api` and `/ws` handshakes, before any authentication.

It counts in the app's own limiter (Redis when configured, so all replicas share the budget) with
the same GCRA arithmetic as the plan limits, and a refusal is the same 429 `rate_limit_exceeded`
with the same headers. The client's address honours TRUSTED_PROXIES (`gateway.clientip`). The
limit stops one address from hammering sign-up, login or key guessing; seed 002 uses 120/min.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.clientip import client_ip
from gateway.errors import GatewayError, error_response
from gateway.ratelimit.base import Limit
from gateway.ratelimit.headers import rate_limit_headers
from gateway.settings import IPNetwork

PREFIXES = ("/v1/", "/api/", "/ws")
WINDOW = 60.0  # seconds


def ip_limit(address: str, rpm: int) -> Limit:
    """The budget of one client address: `rpm` requests per minute (the key holds the address, no secret)."""
    return Limit(name="ip_rpm", key=f"ip:{address}:rpm", limit=rpm, window=WINDOW)


class IpLimitMiddleware:
    """Refuses a client address's request over `rpm` per minute with 429; other paths pass untouched."""

    def __init__(self, app: ASGIApp, rpm: int | None, trusted_proxies: Sequence[IPNetwork]) -> None:
        self.app = app
        self.rpm = rpm
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.rpm is None or scope["type"] not in ("http", "websocket") or not scope["path"].startswith(PREFIXES):
            await self.app(scope, receive, send)
            return
        address = client_ip(scope, self.trusted_proxies)
        ctx = getattr(scope["app"].state, "ctx", None)
        if address is None or ctx is None:
            await self.app(scope, receive, send)
            return
        decision = await ctx.limiter.hit([ip_limit(address, self.rpm)])
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        ctx.metrics.rate_limited("ip_rpm")
        if scope["type"] == "websocket":  # closing before the accept is an HTTP 403 for the handshake
            await send({"type": "websocket.close", "code": 1008, "reason": "rate limit exceeded"})
            return
        headers = {name.decode(): value.decode() for name, value in rate_limit_headers(decision)}
        error = GatewayError(429, "rate_limit_exceeded",
                             f"Rate limit exceeded (ip_rpm: {self.rpm} requests per minute from one address). "
                             f"Retry after {headers['Retry-After']}s.", type="rate_limit_error", headers=headers)
        await error_response(error)(scope, receive, send)
