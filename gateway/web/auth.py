"""`/`, `/signup`, `/login`, `/logout`: the same sign-up and login rules as `/api/auth/*`, as forms."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import email_flows
from gateway.auth import revoke
from gateway.auth.login import log_in
from gateway.auth.sessions import clear_session_cookie, issue_session, set_session_cookie
from gateway.context import context
from gateway.db.models import User
from gateway.errors import GatewayError
from gateway.signup import sign_up
from gateway.web.forms import Form, read_form
from gateway.web.render import page, redirect, render
from gateway.web.security import check_same_site, safe_next
from gateway.web.session import check_form, current_session, require_session

FIELDS = ("email", "password", "name")
# What /reset-password and /verify-email send a signed-out browser back to /login to read.
LOGIN_NOTICES = {"reset": "Your password is changed, and every session has ended: log in with the new one.",
                 "verified": "Your email address is verified: log in to continue."}


def _signed_in(request: Request, user: User, target: str) -> Response:
    settings = context(request).settings
    response = redirect(request, target)
    set_session_cookie(response, issue_session(user, settings), settings, request=request)
    request.scope["state"]["user_id"] = user.id
    return response


@page
async def home(request: Request) -> Response:
    return redirect(request, "/dashboard" if await current_session(request) else "/login")


@page
async def signup(request: Request) -> Response:
    """GET: the form (`?invite=` carries an invite into it). POST: sign up by SIGNUP_MODE's rules (free
    plan, its credits), sign in, land on /dashboard."""
    ctx = context(request)
    form = Form()
    invite = request.query_params.get("invite", "")
    if request.method == "POST":
        check_same_site(request)
        form = await read_form(request)
        invite = form.get("invite")
        try:
            async with ctx.sessions() as session:
                member = await sign_up(session, ctx.registry.current, ctx.passwords, ctx.settings,
                                       email=form.get("email"), password=form.get("password"),
                                       name=form.get("name"), invite=invite or None)
                await session.commit()
        except GatewayError as error:
            form.fail(error, FIELDS)
        else:
            response = _signed_in(request, member.user, "/dashboard")
            response.background = email_flows.verification_task(ctx.sessions, ctx.settings, member.user.id)
            return response
    return render(request, "signup.html", None, form=form, invite=invite, mode=ctx.settings.signup_mode,
                  status=400 if form.errors else 200)


@page
async def login(request: Request) -> Response:
    """GET: the form. POST: check the credentials (throttled), sign in, go to `next` (same site only)."""
    form = Form()
    target = safe_next(request.query_params.get("next"))
    if request.method == "POST":
        check_same_site(request)
        form = await read_form(request)
        target = safe_next(form.get("next") or request.query_params.get("next"))
        ctx = context(request)
        try:
            user = await log_in(ctx, ip=request.scope["state"].get("client_ip"), email=form.get("email"),
                                password=form.get("password"))
        except GatewayError as error:
            form.fail(error, FIELDS)
            status = error.status if error.status in (403, 429) else 400
            return render(request, "login.html", None, form=form, next=target, notice=None, status=status)
        return _signed_in(request, user, target)
    if await current_session(request) is not None:
        return redirect(request, target)
    return render(request, "login.html", None, form=form, next=target, notice=LOGIN_NOTICES.get(
        next((name for name in LOGIN_NOTICES if request.query_params.get(name) == "1"), "")))


@page
async def logout(request: Request) -> Response:
    """GET: a confirmation button. POST (with the CSRF token): clear the cookie, back to /login."""
    web = await require_session(request)
    if request.method == "GET":
        return render(request, "logout.html", web)
    check_form(request, web, await read_form(request))
    ctx = context(request)
    async with ctx.sessions() as session:  # the same server-side end as POST /api/auth/logout
        await revoke.end_sessions(session, user_id=web.member.user.id)
        await session.commit()
    response = redirect(request, "/login")
    clear_session_cookie(response, ctx.settings, request=request)
    return response


routes = [
    Route("/", home, methods=["GET"]),
    Route("/signup", signup, methods=["GET", "POST"]),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["GET", "POST"]),
]
