"""Per-client-IP request limit (`IP_RPM`) on `/v1`, `/api` and `/ws` handshakes, before any authentication
(enforced by `gateway.middleware.edge`).

It counts in the app's own limiter (Redis when configured, so all replicas share the budget) with
the same GCRA arithmetic as the plan limits, and a refusal is the same 429 `rate_limit_exceeded`
with the same headers. The client's address honours TRUSTED_PROXIES (`gateway.clientip`). The
limit stops one address from hammering sign-up, login or key guessing; seed 002 uses 120/min.
"""

from __future__ import annotations

from starlette.responses import Response

from gateway.errors import GatewayError, error_response
from gateway.ratelimit.base import Decision, Limit
from gateway.ratelimit.headers import rate_limit_headers

PREFIXES = ("/v1/", "/api/", "/ws")
WINDOW = 60.0  # seconds


def ip_limit(address: str, rpm: int) -> Limit:
    """The budget of one client address: `rpm` requests per minute (the key holds the address, no secret)."""
    return Limit(name="ip_rpm", key=f"ip:{address}:rpm", limit=rpm, window=WINDOW)


def ip_limit_error(decision: Decision, rpm: int) -> Response:
    """The 429 for an address over `rpm`, with the plan limits' headers (Retry-After included)."""
    headers = {name.decode(): value.decode() for name, value in rate_limit_headers(decision)}
    error = GatewayError(429, "rate_limit_exceeded",
                         f"Rate limit exceeded (ip_rpm: {rpm} requests per minute from one address). "
                         f"Retry after {headers['Retry-After']}s.", type="rate_limit_error", headers=headers)
    return error_response(error)
