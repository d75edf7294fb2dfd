"""Dashboard sign-up, login, logout and the current user (`/api/auth/*`)."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import accounts
from gateway.auth import revoke
from gateway.auth.csrf import check_cookie_request
from gateway.auth.deps import account_disabled, current_user
from gateway.auth.passwords import MAX_PASSWORD_LENGTH
from gateway.auth.sessions import (
    clear_session_cookie,
    credential_from_request,
    decode_token,
    issue_session,
    set_session_cookie,
)
from gateway.context import AppContext, context
from gateway.db.models import User
from gateway.errors import GatewayError
from gateway.fields import FieldError, iso
from gateway.http import JSONResponse, read_json


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name, "role": user.role, "status": user.status,
            "created_at": iso(user.created_at)}


def _session_response(request: Request, ctx: AppContext, user: User, *, status_code: int) -> Response:
    token = issue_session(user, ctx.settings)
    response = JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": ctx.settings.jwt_ttl_seconds,
                             "user": user_json(user)}, status_code=status_code)
    set_session_cookie(response, token, ctx.settings, request=request)
    return response


async def signup(request: Request) -> Response:
    """Create a user on the free plan with its starter credits, and sign them in; throttled per client address."""
    body = await read_json(request)
    ctx = context(request)
    await ctx.login_throttle.signup(ip=request.scope["state"].get("client_ip"))
    async with ctx.sessions() as session:
        member = await accounts.create_user(session, ctx.registry.current, ctx.passwords, email=body.get("email"),
                                            password=body.get("password"), name=body.get("name"))
        await session.commit()
    request.scope["state"]["user_id"] = member.user.id
    return _session_response(request, ctx, member.user, status_code=201)


def _invalid_credentials() -> GatewayError:
    return GatewayError(401, "invalid_credentials", "Incorrect email or password.")


async def login(request: Request) -> Response:
    """Exchange email and password for a session; throttled per (email, client address) before verifying."""
    body = await read_json(request)
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not email.strip():
        raise FieldError("email is required and must be a string.", param="email")
    if not isinstance(password, str) or not password:
        raise FieldError("password is required and must be a string.", param="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise FieldError(f"password must be at most {MAX_PASSWORD_LENGTH} characters.", param="password")
    ctx = context(request)
    ip = request.scope["state"].get("client_ip")
    async with ctx.login_throttle.attempt(ip=ip, email=email) as attempt:
        async with ctx.sessions() as session:
            user = await accounts.authenticate(session, ctx.passwords, email=email, password=password)
            if user is None:
                raise _invalid_credentials()
            await session.commit()  # keeps an upgraded password hash
        attempt.succeeded()
    # Status is checked only after the password: a guesser learns nothing about disabled accounts.
    if user.status != "active":
        raise account_disabled()
    request.scope["state"]["user_id"] = user.id
    return _session_response(request, ctx, user, status_code=200)


async def logout(request: Request) -> Response:
    """End the caller's sessions server-side (every token of this user stops at once) and clear the cookie.

    Answers 200 even without a valid session: logging out is idempotent.
    """
    ctx = context(request)
    credential = credential_from_request(request)
    if credential is not None:
        if credential.from_cookie:
            check_cookie_request(request, ctx.settings.trusted_proxies)
        with contextlib.suppress(GatewayError):  # an expired or foreign token has nothing left to end
            claims = decode_token(credential.token, secret=ctx.settings.jwt_secret)
            async with ctx.sessions() as session:
                await revoke.end_sessions(session, user_id=claims.user_id)
                await session.commit()
    response = JSONResponse({"status": "logged_out"})
    clear_session_cookie(response, ctx.settings, request=request)
    return response


async def change_password(request: Request) -> Response:
    """Change the signed-in user's password (`current_password`, `new_password`): every existing session
    ends, and the answer is a fresh session for this client. Throttled like a login."""
    member = await current_user(request)
    body = await read_json(request)
    ctx = context(request)
    async with ctx.login_throttle.attempt(ip=request.scope["state"].get("client_ip"),
                                          email=member.user.email) as attempt:
        async with ctx.sessions() as session:
            user = await session.get(User, member.user.id)
            assert user is not None
            user = await revoke.change_password(session, ctx.passwords, user=user,
                                                current=body.get("current_password"), new=body.get("new_password"))
            await session.commit()
        attempt.succeeded()
    return _session_response(request, ctx, user, status_code=200)


async def me(request: Request) -> Response:
    member = await current_user(request)
    return JSONResponse({**user_json(member.user), "plan_name": member.account.plan_name})


routes = [
    Route("/api/auth/signup", signup, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
    Route("/api/auth/password", change_password, methods=["POST"]),
]
