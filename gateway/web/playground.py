"""`/playground`: chat with the models the plan allows, through the same pipeline as /v1.

The page's script (static/app.js) keeps the conversation in the browser and posts the whole of it
to `/playground/chat` as a `/v1/chat/completions` body; the signed-in user is the principal
(`session_principal`: the account's plan, balance, holds and rate limits; no key). Each turn then
reads its own usage event from `/playground/turns/{request_id}` for the exact tokens and cost.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import context
from gateway.db.models import Account, UsageEvent
from gateway.errors import GatewayError
from gateway.fields import usd
from gateway.http import JSONResponse
from gateway.inference import handle, session_principal
from gateway.web.dashboard import plan_of
from gateway.web.render import page, render
from gateway.web.security import CsrfRefused, check_csrf
from gateway.web.session import WebSession, current_session, require_session


@page
async def playground(request: Request) -> Response:
    web = await require_session(request)
    registry = context(request).registry.current
    plan = plan_of(registry, web.member.account.plan_name)
    chat_models = [model for model in registry.models.values() if model.kind == "chat" and plan.allows(model.name)]
    return render(request, "playground.html", web, models=chat_models, account=web.member.account)


async def _api_session(request: Request) -> WebSession:
    """The session of a script call: 401/403 in OpenAI's envelope (the script shows the message)."""
    web = await current_session(request)
    if web is None:
        raise GatewayError(401, "invalid_token", "Your session has ended; log in again.")
    try:
        check_csrf(request, None, web.csrf)
    except CsrfRefused:
        raise GatewayError(403, "csrf_failed", "Missing or wrong CSRF token; reload the page.") from None
    return web


async def chat(request: Request) -> Response:
    """One turn: a /v1/chat/completions body, answered exactly as /v1 answers it (usually a stream)."""
    web = await _api_session(request)
    return await handle(request, "chat.completions", session_principal(web.member))


async def turn(request: Request) -> Response:
    """The settled usage of one of the user's own turns: tokens, exact cost, balance after.

    202 `{"settled": false}` until its usage event is written (settlement is batched, off the
    answer's path); another user's turn looks exactly like one that never settles.
    """
    web = await current_session(request)
    if web is None:
        raise GatewayError(401, "invalid_token", "Your session has ended; log in again.")
    account_id = web.member.account.id
    async with context(request).sessions() as session:
        event = (await session.execute(
            sa.select(UsageEvent).where(col(UsageEvent.account_id) == account_id,
                                        col(UsageEvent.request_id) == request.path_params["request_id"])
        )).scalar_one_or_none()
        account = await session.get(Account, account_id)
    if event is None or account is None:
        return JSONResponse({"settled": False}, status_code=202)
    return JSONResponse({"settled": True, "request_id": event.request_id, "model": event.model_public_name,
                         "input_tokens": event.input_tokens, "output_tokens": event.output_tokens,
                         "tokens_estimated": event.tokens_estimated, "cost_usd": usd(event.cost_pico),
                         "status": event.status, "balance_usd": usd(account.balance_pico)})


routes = [
    Route("/playground", playground, methods=["GET"]),
    Route("/playground/chat", chat, methods=["POST"]),
    Route("/playground/turns/{request_id}", turn, methods=["GET"]),
]
