"""Dashboard sign-up, login, logout and the current user (`/api/auth/*`)."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import email_flows
from gateway.auth import revoke
from gateway.auth.csrf import check_cookie_request
from gateway.auth.deps import current_user
from gateway.auth.login import log_in
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
from gateway.fields import iso
from gateway.http import JSONResponse, read_json
from gateway.mail import Mailer, email_disabled
from gateway.signup import sign_up


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name, "role": user.role, "status": user.status,
            "email_verified": user.email_verified_at is not None, "created_at": iso(user.created_at)}


def _session_response(request: Request, ctx: AppContext, user: User, *, status_code: int) -> Response:
    token = issue_session(user, ctx.settings)
    response = JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": ctx.settings.jwt_ttl_seconds,
                             "user": user_json(user)}, status_code=status_code)
    set_session_cookie(response, token, ctx.settings, request=request)
    return response


async def signup(request: Request) -> Response:
    """Create a user on the free plan with its starter credits (as SIGNUP_MODE allows), and sign them in;
    throttled per client address."""
    body = await read_json(request)
    ctx = context(request)
    await ctx.login_throttle.signup(ip=request.scope["state"].get("client_ip"))
    async with ctx.sessions() as session:
        member = await sign_up(session, ctx.registry.current, ctx.passwords, ctx.settings, email=body.get("email"),
                               password=body.get("password"), name=body.get("name"), invite=body.get("invite"))
        await session.commit()
    request.scope["state"]["user_id"] = member.user.id
    response = _session_response(request, ctx, member.user, status_code=201)
    response.background = email_flows.verification_task(ctx.sessions, ctx.settings, member.user.id)
    return response


def _mailer(ctx: AppContext, what: str) -> Mailer:
    mailer = Mailer.from_settings(ctx.settings)
    if mailer is None:
        raise email_disabled(what)
    return mailer


async def password_reset(request: Request) -> Response:
    """`{"email"}` -> 202, the same answer at once whether or not the address has an account; 429 after 5
    requests an hour for one email (known or not) or 30 from one address."""
    ctx = context(request)
    mailer = _mailer(ctx, "Password reset")
    task = await email_flows.accept_reset_request(ctx.sessions, ctx.settings, ctx.reset_throttle, mailer,
                                                  email=(await read_json(request)).get("email"),
                                                  ip=request.scope["state"].get("client_ip"))
    return JSONResponse({"status": "accepted", "message": email_flows.RESET_ACCEPTED}, status_code=202,
                        background=task)


async def password_reset_confirm(request: Request) -> Response:
    """`{"token", "password"}` -> 200; 400 `invalid_token` for an unknown, used or expired link."""
    body = await read_json(request)
    ctx = context(request)
    async with ctx.sessions() as session:
        user_id = await email_flows.reset_and_end_sessions(session, ctx.passwords,
                                                           secret=ctx.settings.app_secret_key,
                                                           token=body.get("token"), password=body.get("password"))
        await session.commit()
    ctx.key_resolver.forget_user(user_id)
    return JSONResponse({"status": "password_changed"})


async def verify_email(request: Request) -> Response:
    """`{"token"}` from the verification mail -> the user, now verified (starter credits granted once)."""
    body = await read_json(request)
    ctx = context(request)
    async with ctx.sessions() as session:
        member = await email_flows.verify_email(session, ctx.registry.current, secret=ctx.settings.app_secret_key,
                                                token=body.get("token"))
        await session.commit()
    return JSONResponse(user_json(member.user))


async def resend_verification(request: Request) -> Response:
    """Mail a new verification link to the signed-in user (202), or say the address is verified (200)."""
    member = await current_user(request)
    ctx = context(request)
    mailer = _mailer(ctx, "Email verification")
    if member.user.email_verified_at is not None:
        return JSONResponse({"status": "already_verified"})
    return JSONResponse({"status": "sent"}, status_code=202,
                        background=BackgroundTask(email_flows.send_verification, ctx.sessions, ctx.settings, mailer,
                                                  member.user.id))


async def login(request: Request) -> Response:
    """Exchange email and password for a session; throttled per (email, client address) before verifying."""
    body = await read_json(request)
    ctx = context(request)
    user = await log_in(ctx, ip=request.scope["state"].get("client_ip"), email=body.get("email"),
                        password=body.get("password"))
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
    Route("/api/auth/password-reset", password_reset, methods=["POST"]),
    Route("/api/auth/password-reset/confirm", password_reset_confirm, methods=["POST"]),
    Route("/api/auth/verify-email", verify_email, methods=["POST"]),
    Route("/api/auth/verify-email/resend", resend_verification, methods=["POST"]),
    Route("/api/auth/password", change_password, methods=["POST"]),
]
