"""Browser-facing security for the HTML pages: response headers, CSRF tokens and safe redirects.

CSRF (OWASP's "synchronizer token" pattern, stateless): the token of a signed-in session is the
HMAC-SHA256 of the session token's id (`jti`) under APP_SECRET_KEY. It sits in a hidden field of
every state-changing form and htmx sends it as `X-CSRF-Token`; a POST without the right one is
refused with 403 before anything changes. A cross-site page can make the browser send the cookie
but cannot read our pages, so it cannot know the token. The forms used before signing in (login,
sign-up) have no session to bind to; they are protected by the Origin / Sec-Fetch-Site check that
every web POST also passes (the browser sets those headers and a page cannot forge them).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

# No inline script or style anywhere: everything comes from /static. htmx is configured (a meta tag)
# not to inject its indicator <style> and not to eval, so this policy holds with JavaScript on.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show balances and, once, a secret: never from a cache
}


class CsrfRefused(Exception):
    """A state-changing web request without a valid CSRF token or from another site (403)."""


def allow_form_targets(response: Response, origins: list[str]) -> Response:
    """Widen `form-action` to `origins` (e.g. https://checkout.stripe.com): Chromium applies the directive to
    the redirect that follows a form post too, so a form answered by a 303 to a payment page needs it."""
    if origins:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
            "form-action 'self'", "form-action 'self' " + " ".join(origins))
    return response


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def csrf_token(token_id: str, secret: str) -> str:
    """The CSRF token of one session (hex HMAC-SHA256 of its `jti`)."""
    return hmac.new(secret.encode(), b"csrf:" + token_id.encode(), hashlib.sha256).hexdigest()


def check_same_site(request: Request) -> None:
    """CsrfRefused when the browser says the request comes from another site.

    `Sec-Fetch-Site` (sent by every current browser, and not settable by a page) decides when
    present: same-origin or none only. Without it, an `Origin` header must name this host (a proxy
    must then pass the Host header through). A request with neither (curl, very old browsers)
    passes this check; the session's token check still applies to it.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise CsrfRefused("cross-site request")
        return
    origin = request.headers.get("origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host")):
        raise CsrfRefused("foreign origin")


def check_csrf(request: Request, submitted: str | None, expected: str) -> None:
    """CsrfRefused unless the request is same-site and carries `expected` (form field or header)."""
    check_same_site(request)
    given = submitted or request.headers.get(CSRF_HEADER) or ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfRefused("missing or wrong CSRF token")


def safe_next(target: str | None, default: str = "/dashboard") -> str:
    """`target` if it is a path on this site (`/x?y`), else `default`: no open redirect via `?next=`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(char) < 32 for char in target) or "\\" in target:
        return default
    return target
