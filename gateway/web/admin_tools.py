"""`/admin/invites`, `/admin/codes`, `/admin/webhooks`: sign-up invites (the token shown once), redemption-code
batches (the codes downloaded once, as CSV), and the payment providers' webhook deliveries.

The same checks and queries as `/api/admin/*` (`gateway.admin_actions`); admins only (else 404).
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import admin_actions, email_flows, invites
from gateway.context import context
from gateway.errors import GatewayError
from gateway.fields import parse_int
from gateway.mail import Mailer
from gateway.web.forms import Form, form_int, read_form
from gateway.web.render import page, render
from gateway.web.security import add_security_headers
from gateway.web.session import WebSession, check_form, require_admin_session

PAGE_SIZE = 25
INVITE_FIELDS = ("email", "days")
CODE_FIELDS = ("count", "amount_usd", "reason", "expires_at")


def _page_number(request: Request) -> int:
    return parse_int(request.query_params.get("page"), param="page", default=1, minimum=1, maximum=10**6)


async def _invites_page(request: Request, web: WebSession, form: Form, *, status: int = 200,
                        **created: object) -> Response:
    number = _page_number(request)
    async with context(request).sessions() as session:
        total, found = await admin_actions.list_invites(session, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    values = {"token": None, "link": None, "emailed": False, **created}
    return render(request, "admin/invites.html", web, invites=found, total=total, page=number,
                  pages=max(1, -(-total // PAGE_SIZE)), form=form, default_days=invites.DEFAULT_DAYS,
                  max_days=invites.MAX_DAYS, status=status, **values)


@page
async def invites_page(request: Request) -> Response:
    """GET: the invites (never their tokens) and the form. POST: create one and show its token and sign-up
    link on this answer only (mailed too when it names an address and mail is configured)."""
    web = await require_admin_session(request)
    if request.method == "GET":
        return await _invites_page(request, web, Form())
    form = await read_form(request)
    check_form(request, web, form)
    ctx = context(request)
    email = form.get("email").strip() or None
    try:
        async with ctx.sessions() as session:
            new = await admin_actions.create_invite(session, ctx.settings, email=email,
                                                    days=form_int(form.get("days") or str(invites.DEFAULT_DAYS)),
                                                    actor_user_id=web.member.user.id)
            await session.commit()
    except GatewayError as error:
        form.fail(error, INVITE_FIELDS)
        return await _invites_page(request, web, form, status=400)
    mailer = Mailer.from_settings(ctx.settings)
    response = await _invites_page(request, web, Form(), token=new.token,
                                   link=admin_actions.invite_link(ctx.settings, new.token),
                                   emailed=bool(new.invite.email and mailer))
    if new.invite.email and mailer is not None:
        response.background = BackgroundTask(email_flows.send_invite, mailer, email=new.invite.email, token=new.token)
    return response


@page
async def codes_page(request: Request) -> Response:
    """GET: the batches (counts redeemed) and the form. POST: create a batch and answer with its CSV (the
    only time the codes exist in plain text); errors are shown beside the fields."""
    web = await require_admin_session(request)
    form = Form()
    status = 200
    if request.method == "POST":
        form = await read_form(request)
        check_form(request, web, form)
        ctx = context(request)
        try:
            async with ctx.sessions() as session:
                batch = await admin_actions.create_code_batch(
                    session, ctx.settings, count=form_int(form.get("count")),
                    amount_usd=form.get("amount_usd").strip(), reason=form.get("reason"),
                    expires_at=form.get("expires_at").strip() or None, actor_user_id=web.member.user.id)
                await session.commit()
        except GatewayError as error:
            form.fail(error, CODE_FIELDS)
            status = 400
        else:
            return add_security_headers(Response(
                batch.csv(), media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="codes-{batch.batch_id}.csv"'}))
    async with context(request).sessions() as session:
        batches = await admin_actions.list_batches(session, limit=50)
    return render(request, "admin/codes.html", web, batches=batches, form=form, status=status)


@page
async def webhooks_page(request: Request) -> Response:
    """The payment providers' webhook deliveries as applied, newest first; `?provider=` filters."""
    web = await require_admin_session(request)
    number = _page_number(request)
    provider = request.query_params.get("provider") or None
    async with context(request).sessions() as session:
        total, events = await admin_actions.list_webhook_events(session, provider=provider, limit=PAGE_SIZE,
                                                                offset=(number - 1) * PAGE_SIZE)
    return render(request, "admin/webhooks.html", web, events=events, total=total, page=number,
                  pages=max(1, -(-total // PAGE_SIZE)), provider=provider or "")


routes = [
    Route("/admin/invites", invites_page, methods=["GET", "POST"]),
    Route("/admin/codes", codes_page, methods=["GET", "POST"]),
    Route("/admin/webhooks", webhooks_page, methods=["GET"]),
]
