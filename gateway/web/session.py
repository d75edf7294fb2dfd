"""Who is looking at a page: the `pr_session` cookie's user (checked live, as for /api) and their CSRF token.

Only the cookie counts here (never an Authorization header): pages are for browsers.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request

from gateway.accounts import Member, get_member
from gateway.auth.deps import check_admin_network
from gateway.auth.sessions import COOKIE_NAME, decode_token
from gateway.context import context
from gateway.errors import GatewayError
from gateway.web.forms import Form
from gateway.web.security import CSRF_FIELD, check_csrf, csrf_token


@dataclass(frozen=True)
class WebSession:
    """A signed-in, active user with their account and the CSRF token of this session."""

    member: Member
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.member.user.role == "admin"


class LoginRequired(Exception):
    """No valid session: the page answers 303 to `/login?next=<this page>`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageNotFound(Exception):
    """The page does not exist for this user (another user's object, or /admin for a non-admin): 404."""


async def current_session(request: Request) -> WebSession | None:
    """The cookie's session if it is valid and its user active, else None."""
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    ctx = context(request)
    try:
        claims = decode_token(token, secret=ctx.settings.jwt_secret)
    except GatewayError:
        return None
    async with ctx.sessions() as session:
        member = await get_member(session, claims.user_id)
    # Ended sessions (logout, password change or reset bump the version) are refused as on /api.
    if member is None or member.user.status != "active" or claims.session_version != member.user.session_version:
        return None
    request.scope.setdefault("state", {})["user_id"] = member.user.id
    return WebSession(member=member, csrf=csrf_token(claims.token_id, ctx.settings.app_secret_key))


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


async def require_session(request: Request) -> WebSession:
    """The signed-in user, or LoginRequired carrying this page's path (and query) as `next`."""
    found = await current_session(request)
    if found is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path if request.method == "GET" else "/dashboard")
    return found


async def require_admin_session(request: Request) -> WebSession:
    """The signed-in admin; PageNotFound for anyone else and for any address outside ADMIN_ALLOWED_CIDRS."""
    try:
        check_admin_network(request)
    except GatewayError:
        raise PageNotFound() from None
    found = await require_session(request)
    if not found.is_admin:
        raise PageNotFound()
    return found


def check_form(request: Request, web: WebSession, form: Form) -> None:
    """CsrfRefused unless the form (or the X-CSRF-Token header) carries this session's token."""
    check_csrf(request, form.get(CSRF_FIELD) or None, web.csrf)
