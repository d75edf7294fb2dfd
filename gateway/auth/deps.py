"""Who is calling an /api route: the session token's user (checked live) and the admin gate."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from gateway.accounts import Member, get_member
from gateway.auth.csrf import check_cookie_request
from gateway.auth.sessions import credential_from_request, decode_token, invalid_token
from gateway.context import context
from gateway.errors import GatewayError


def account_disabled() -> GatewayError:
    return GatewayError(403, "account_disabled", "This account is disabled; contact the operator.")


async def current_user(request: Request) -> Member:
    """The signed-in, active user and their account; 401 `invalid_token` or 403 `account_disabled` otherwise.

    The user row is read on every request (one primary-key read), so disabling a user ends their
    sessions at once even though the JWT itself stays valid until it expires; so does a logout or a
    password change, which bump the user's session version (gateway/auth/revoke.py). A session taken
    from the cookie must pass the CSRF check on unsafe methods (403 `csrf_rejected`).
    """
    credential = credential_from_request(request)
    if credential is None:
        raise invalid_token("Authentication required: send 'Authorization: Bearer <token>' or the session cookie.")
    if credential.token.startswith("sk-pr-"):
        raise invalid_token("API keys authenticate /v1 requests only; use a session token from /api/auth/login.")
    ctx = context(request)
    if credential.from_cookie:
        check_cookie_request(request, ctx.settings.trusted_proxies)
    claims = decode_token(credential.token, secret=ctx.settings.jwt_secret)
    async with ctx.sessions() as session:
        member = await get_member(session, claims.user_id)
    if member is None:
        raise invalid_token()
    if claims.session_version != member.user.session_version:
        raise invalid_token("This session has ended (logged out or password changed); log in again.")
    if member.user.status != "active":
        raise account_disabled()
    request.scope.setdefault("state", {})["user_id"] = member.user.id
    return member


def check_admin_network(request: Request) -> None:
    """403 when ADMIN_ALLOWED_CIDRS is set and the client address is outside it, whatever the token."""
    networks = context(request).settings.admin_allowed_cidrs
    if not networks:
        return
    address = request.scope.get("state", {}).get("client_ip")
    try:
        ip = ipaddress.ip_address(address) if address else None
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip is None or not any(ip in network for network in networks):
        raise GatewayError(403, "forbidden", "The admin API is not reachable from this address.")


async def require_admin(request: Request) -> Member:
    """The signed-in admin; 403 for non-admins and for any caller outside ADMIN_ALLOWED_CIDRS."""
    check_admin_network(request)
    member = await current_user(request)
    if member.user.role != "admin":
        raise GatewayError(403, "forbidden", "This endpoint requires an admin account.")
    return member
