"""Cross-site request forgery defence for cookie-authenticated `/api` state changes.

A browser attaches the `pr_session` cookie to any request to our host, including a form or
`text/plain` POST that a foreign page submits. So when the session comes from the cookie (not an
`Authorization` header, which a foreign page cannot set), an unsafe request must be
(a) JSON — `application/json` cannot be sent cross-origin without a CORS preflight, which we never
grant — and (b) demonstrably same-origin: its `Origin` equals our own origin, or the browser's
`Sec-Fetch-Site` says `same-origin` (or `none`: typed by the user). A request carrying neither
header is refused: every browser that sends cookies sends at least one of them on a POST.
Rules after the OWASP CSRF Prevention Cheat Sheet ("Verifying Origin with standard headers").
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request

from gateway.clientip import request_scheme
from gateway.errors import GatewayError
from gateway.settings import IPNetwork

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The JSON API. The server-rendered pages (gateway/web/) post HTML forms and carry their own
# per-form CSRF token instead, so this check leaves their paths alone.
API_PREFIX = "/api/"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def csrf_refused(reason: str) -> GatewayError:
    """403 `csrf_rejected`: the message says how to call correctly."""
    return GatewayError(403, "csrf_rejected", f"Cross-site request refused: {reason} Requests authenticated by the "
                        "session cookie must be same-origin JSON; scripts and servers should send "
                        "'Authorization: Bearer <token>' instead.")


def _normalise(origin: str) -> str | None:
    """`scheme://host:port` lower-cased with the default port made explicit, or None if it is not one."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or not rest or "/" in rest:
        return None
    host, port = rest, _DEFAULT_PORTS[scheme]
    if rest.rsplit(":", 1)[-1].isdigit() and not rest.endswith("]"):
        host, port = rest.rsplit(":", 1)
    return f"{scheme}://{host}:{port}"


def own_origin(request: Request, trusted_proxies: Sequence[IPNetwork]) -> str | None:
    """Our origin as the browser sees it: the (proxy-reported) scheme and the Host header."""
    host = request.headers.get("host")
    if not host:
        return None
    return _normalise(f"{request_scheme(request.scope, trusted_proxies)}://{host}")


def check_cookie_request(request: Request, trusted_proxies: Sequence[IPNetwork]) -> None:
    """Raise 403 `csrf_rejected` unless an unsafe cookie-authenticated request is same-origin JSON.

    Safe methods (GET, HEAD, OPTIONS) pass: they change nothing, and so do paths outside `/api/` (the
    HTML pages check their own form token). Call this only when the session came from the cookie; a
    Bearer header is not sent by browsers on their own.
    """
    if request.method in SAFE_METHODS or not request.url.path.startswith(API_PREFIX):
        return
    content_type = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in request.headers
    if (content_type is not None or has_body) and (
            content_type is None or content_type.split(";")[0].strip().lower() != "application/json"):
        raise csrf_refused("the body must be sent as Content-Type: application/json.")
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        raise csrf_refused(f"the browser reports Sec-Fetch-Site: {fetch_site[:32]}.")
    if origin is not None:
        expected = own_origin(request, trusted_proxies)
        if expected is None or _normalise(origin) != expected:
            raise csrf_refused("the Origin header is not this site.")
    elif fetch_site is None:
        raise csrf_refused("neither an Origin nor a Sec-Fetch-Site header was sent.")
