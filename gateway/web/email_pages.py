"""The pages behind the mailed links and their forms: `/forgot-password`, `/reset-password?token=`,
`/verify-email?token=` and the signed-in user's "send the verification link again".

Each form calls what its `/api/auth/*` twin calls (`email_flows.accept_reset_request`,
`reset_and_end_sessions`, `verify_email`, `send_verification`). Links only show a form: mail scanners
that fetch links must not use a one-time token, so the token is spent by the POST.
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import email_flows
from gateway.auth.sessions import clear_session_cookie
from gateway.context import context
from gateway.errors import GatewayError
from gateway.mail import Mailer, email_disabled
from gateway.web.forms import Form, read_form
from gateway.web.render import page, redirect, render
from gateway.web.security import check_same_site, safe_next
from gateway.web.session import WebSession, check_form, current_session, require_session

NO_MAIL = "Password reset by email is not available on this server (no email is configured). Ask its operator."


@page
async def forgot_password(request: Request) -> Response:
    """GET: the email form. POST: the same answer whether or not the address has an account (the mail, if
    any, is sent after the answer); 429 beside the field when this address or email asked too often."""
    ctx = context(request)
    mailer = Mailer.from_settings(ctx.settings)
    form, sent = Form(), False
    if request.method == "POST" and mailer is not None:
        check_same_site(request)
        form = await read_form(request)
        try:
            task = await email_flows.accept_reset_request(ctx.sessions, ctx.settings, ctx.reset_throttle, mailer,
                                                          email=form.get("email"),
                                                          ip=request.scope["state"].get("client_ip"))
        except GatewayError as error:
            form.errors["email"] = error.message  # a malformed address or 429: beside the one field
            return render(request, "forgot_password.html", None, form=form, sent=False, enabled=True,
                          accepted=email_flows.RESET_ACCEPTED, status=error.status)
        response = render(request, "forgot_password.html", None, form=form, sent=True, enabled=True,
                          accepted=email_flows.RESET_ACCEPTED)
        response.background = task
        return response
    return render(request, "forgot_password.html", None, form=form, sent=sent, enabled=mailer is not None,
                  accepted=email_flows.RESET_ACCEPTED, no_mail=NO_MAIL, status=200 if mailer else 503)


@page
async def reset_password(request: Request) -> Response:
    """GET: the new-password form for the link's token. POST: set it, end every session of the user (this
    browser's too), and go to /login with a notice; a bad token or password is shown on the form (400)."""
    ctx = context(request)
    form = Form({"token": [request.query_params.get("token", "")]})
    if request.method == "POST":
        check_same_site(request)
        form = await read_form(request)
        try:
            async with ctx.sessions() as session:
                user_id = await email_flows.reset_and_end_sessions(
                    session, ctx.passwords, secret=ctx.settings.app_secret_key, token=form.get("token"),
                    password=form.get("password"))
                await session.commit()
        except GatewayError as error:
            form.fail(error, ("password",))
            return render(request, "reset_password.html", None, form=form, status=error.status)
        ctx.key_resolver.forget_user(user_id)
        response = redirect(request, "/login?reset=1")
        clear_session_cookie(response, ctx.settings, request=request)
        return response
    return render(request, "reset_password.html", None, form=form)


@page
async def verify_email(request: Request) -> Response:
    """GET: a "Verify my address" button for the link's token. POST: verify (starter and trial credits
    granted once), then the dashboard (or /login) with a notice; a bad link is shown (400)."""
    ctx = context(request)
    web = await current_session(request)
    form = Form({"token": [request.query_params.get("token", "")]})
    if request.method == "POST":
        check_same_site(request)
        form = await read_form(request)
        try:
            async with ctx.sessions() as session:
                await email_flows.verify_email(session, ctx.registry.current, secret=ctx.settings.app_secret_key,
                                               token=form.get("token"))
                await session.commit()
        except GatewayError as error:
            form.fail(error, ())
            return render(request, "verify_email.html", web, form=form, status=error.status)
        return redirect(request, "/dashboard?verified=1" if web else "/login?verified=1")
    return render(request, "verify_email.html", web, form=form)


@page
async def resend_verification(request: Request) -> Response:
    """Mail the signed-in user a new verification link (as POST /api/auth/verify-email/resend), then back
    to the page the button was on (`next`, same site only) with a notice."""
    web = await require_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    ctx = context(request)
    mailer = Mailer.from_settings(ctx.settings)
    target = safe_next(form.get("next"))
    if web.member.user.email_verified_at is not None:
        return redirect(request, target)
    if mailer is None:
        raise email_disabled("Email verification")
    response = redirect(request, target + ("&" if "?" in target else "?") + "resent=1")
    response.background = BackgroundTask(email_flows.send_verification, ctx.sessions, ctx.settings, mailer,
                                         web.member.user.id)
    return response


routes = [
    Route("/forgot-password", forgot_password, methods=["GET", "POST"]),
    Route("/reset-password", reset_password, methods=["GET", "POST"]),
    Route("/verify-email", verify_email, methods=["GET", "POST"]),
    Route("/verify-email/resend", resend_verification, methods=["POST"]),
]


def verification_notice(request: Request, web: WebSession) -> dict[str, bool]:
    """The template values of the "verify your email" notice (dashboard, keys): `unverified` while
    REQUIRE_EMAIL_VERIFICATION holds the account back, `resent` after the button was used."""
    try:
        email_flows.require_verified(context(request).settings, web.member.user)
    except GatewayError:
        return {"unverified": True, "resent": request.query_params.get("resent") == "1"}
    return {"unverified": False, "resent": False}
