"""The /v1 pipeline shared by every endpoint: authorize -> limit -> validate -> hold -> upstream ->
relay -> settle -> record.

A request is *admitted* once its hold is placed. From then on exactly one `Call.finish()` runs on
every path (success, upstream error, timeout, client disconnect, shutdown): it prices the tokens at
the registry the request started with and hands one `Settlement` (money + usage event) to the
usage writer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import idempotency
from gateway.accounts import Member
from gateway.auth.keyresolver import KeyPrincipal
from gateway.billing.bound import PromptShape, prompt_shape
from gateway.billing.holds import (
    HoldOrigin,
    HoldRefused,
    PlacedHold,
    Quote,
    place_hold,
    place_hold_sqlite,
    place_worst_case_hold,
)
from gateway.billing.leases import INSTANCE_LOST, INTERRUPTED
from gateway.billing.money import cost
from gateway.billing.settlement import Settlement
from gateway.context import AppContext, context
from gateway.db.engine import sqlite_writer
from gateway.db.models import utcnow
from gateway.errors import GatewayError, from_provider, invalid_body
from gateway.http import read_json, unique_request_id
from gateway.idempotency import Claim
from gateway.ratelimit.base import Decision, Limit
from gateway.ratelimit.headers import rate_limit_headers
from gateway.registry import Model, Registry
from providers.base import Endpoint, ModelTarget, PreparedRequest, Usage, new_response_id, prepare
from providers.errors import ProviderError
from providers.ollama.capabilities import ModelInfo

KEY_PREFIX = "sk-pr-"
INPUT_PARAM = {"chat.completions": "messages", "completions": "prompt", "responses": "input", "embeddings": "input"}
ENDPOINT_KIND = {"chat.completions": "chat", "completions": "chat", "responses": "chat", "embeddings": "embedding"}


def _api_key(request: Request) -> str:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key", "").strip()


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(401, "invalid_api_key", message, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> KeyPrincipal:
    """The key's principal, or 401 `invalid_api_key` for anything but a live `sk-pr-` key."""
    raw = _api_key(request)
    if not raw:
        raise _unauthorized("Missing API key. Send `Authorization: Bearer sk-pr-...` or `X-API-Key: sk-pr-...`.")
    if not raw.startswith(KEY_PREFIX):
        raise _unauthorized("Invalid API key: /v1 accepts only sk-pr-... API keys (not dashboard session tokens).")
    ctx = context(request)
    principal = await ctx.key_resolver.resolve(raw)
    if principal is None or principal.key_id is None:
        raise _unauthorized("Invalid API key: it is unknown, disabled, deleted or expired.")
    ctx.key_resolver.touch(principal.key_id)
    request.scope["state"]["user_id"] = principal.user_id
    return principal


def plan_limits(registry: Registry, principal: KeyPrincipal) -> list[Limit]:
    """The limits one request counts against. The first is the headline the rate-limit headers describe:
    the tighter RPM — the key's own when it is below the plan's, else the account's."""
    plan = registry.plans.get(principal.plan_name) or registry.plans["free"]
    account = f"acct:{principal.account_id}"
    limits = [Limit("rpm", f"{account}:rpm", plan.rpm, 60.0)]
    if principal.rpm is not None:
        key_limit = Limit("key_rpm", f"key:{principal.key_id}:rpm", principal.rpm, 60.0)
        if principal.rpm < plan.rpm:
            limits.insert(0, key_limit)
        else:
            limits.append(key_limit)
    if plan.rpd is not None:
        limits.append(Limit("rpd", f"{account}:rpd", plan.rpd, 86400.0))
    if plan.tpd is not None:
        limits.append(Limit("tpd", f"{account}:tpd", plan.tpd, 86400.0, cost=0))
    return limits


async def enforce_rate_limits(ctx: AppContext, registry: Registry, principal: KeyPrincipal,
                              pending: Awaitable[Decision] | None = None) -> Decision:
    """The rate limiter's decision for the request (`pending`: a hit already under way), or 429."""
    decision = await (pending if pending is not None else ctx.limiter.hit(plan_limits(registry, principal)))
    if not decision.allowed:
        ctx.metrics.rate_limited(decision.refused_by or "rpm")
        headers = {name.decode(): value.decode() for name, value in rate_limit_headers(decision)}
        raise GatewayError(429, "rate_limit_exceeded",
                           f"Rate limit exceeded ({decision.refused_by}). Retry after {headers.get('Retry-After')}s.",
                           type="rate_limit_error", headers=headers)
    return decision


def resolve_model(registry: Registry, principal: KeyPrincipal, name: Any, endpoint: Endpoint | None) -> Model:
    """The registry model the key may call, or 400/403/404."""
    if not isinstance(name, str) or not name:
        raise invalid_body("`model` is required and must be a string.", "model")
    model = registry.models.get(name)
    if model is None:
        raise GatewayError(404, "model_not_found", f"The model '{name}' does not exist.", param="model")
    plan = registry.plans.get(principal.plan_name) or registry.plans["free"]
    if not plan.allows(name) or (principal.allowed_models is not None and name not in principal.allowed_models):
        raise GatewayError(403, "model_not_allowed",
                           f"The model '{name}' is not available on your plan or to this API key.", param="model")
    if endpoint is not None and ENDPOINT_KIND[endpoint] != model.kind:
        use = "/v1/embeddings" if model.kind == "embedding" else "/v1/chat/completions"
        raise GatewayError(400, "model_not_supported",
                           f"The model '{name}' is a {model.kind} model; call it through {use}.", param="model")
    return model


def model_target(model: Model, info: ModelInfo | None = None) -> ModelTarget:
    """The translation's view of a model: the registry's entry narrowed by what its nodes report."""
    context = model.context
    if info is not None and info.context_length is not None:
        context = min(context, info.context_length)
    return ModelTarget(public_name=model.name, tag=model.tag, family=model.family, kind=model.kind,
                       context=context, dimensions=model.dimensions, options=model.options,
                       capabilities=info.capabilities if info is not None else None,
                       ollama_version=info.version if info is not None else None)


def quote_for(model: Model, prepared: PreparedRequest, prompt_bound: int) -> Quote:
    """The hold's quote: `prompt_bound` tokens (gateway/billing/bound.py) at the input price, and
    what the client asked for or the context leaves (by the estimate, which can only leave more) as
    output. The output is capped to what the hold pays for, so the bound needs no output margin."""
    if model.kind == "embedding":
        max_output = 0
    else:
        room = max(1, model.context - prepared.prompt_tokens_estimate)
        max_output = min(prepared.max_output_tokens or room, room)
    return Quote(prompt_bound * model.input_pico_per_token, model.output_pico_per_token, max_output)


@dataclass
class Call:
    """One admitted request, carried from admission to settlement."""

    ctx: AppContext
    request: Request
    principal: KeyPrincipal
    registry: Registry
    model: Model
    target: ModelTarget
    endpoint: Endpoint
    prepared: PreparedRequest
    hold: PlacedHold
    headers: dict[str, str]
    started: float
    shape: PromptShape
    response_id: str = ""
    created: int = 0
    node: str | None = None
    first_byte_at: float | None = None
    upstream_seconds: float = 0.0
    idempotency: Claim | None = None  # the request's Idempotency-Key, claimed (gateway/idempotency.py)
    finished: bool = field(default=False, init=False)
    tpd_task: asyncio.Task[None] | None = field(default=None, init=False)

    @property
    def request_id(self) -> str:
        return self.hold.request_id

    def settlement(self, usage: Usage | None, status: str, error_code: str | None) -> Settlement:
        """The settlement of this call for `usage` (None: nothing charged), priced at its registry."""
        tokens = usage or Usage(0, 0, False)
        pico = cost(tokens.input_tokens, tokens.output_tokens, self.model.input_pico_per_token,
                    self.model.output_pico_per_token) if usage is not None else 0
        ttft = None if self.first_byte_at is None else round((self.first_byte_at - self.started) * 1000)
        return Settlement(
            request_id=self.request_id, account_id=self.principal.account_id, user_id=self.principal.user_id,
            api_key_id=self.principal.key_id, model_public_name=self.model.name, ollama_tag=self.model.tag,
            node=self.node, endpoint=self.endpoint, input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens, tokens_estimated=tokens.estimated, cost_pico=pico,
            latency_ms=round((time.perf_counter() - self.started) * 1000), ttft_ms=ttft, status=status,
            error_code=error_code, registry_version=self.registry.version, created_at=utcnow())

    def journal_progress(self, relayed: Usage) -> None:
        """Journal what has been relayed so far: after a crash, the next start bills it (`interrupted`)."""
        journal = self.ctx.usage_writer.journal
        if journal is not None and not self.finished:
            journal.append_progress(self.settlement(relayed, INTERRUPTED, INSTANCE_LOST))

    def finish(self, usage: Usage | None, status: str, error_code: str | None = None) -> None:
        """Settle exactly once: price the tokens and queue the settlement with its usage event."""
        if self.finished:
            return
        self.finished = True
        now = time.perf_counter()
        tokens = usage or Usage(0, 0, False)
        if usage is not None and not usage.estimated and usage.input_tokens:
            self.ctx.prompt_bounds.observe(self.model.tag, self.shape, usage.input_tokens)
        settlement = self.settlement(usage, status, error_code)
        pico = settlement.cost_pico
        self.ctx.usage_writer.submit(settlement)
        metrics = self.ctx.metrics
        metrics.llm_call(model=self.model.name, endpoint=self.endpoint, status=status,
                         input_tokens=tokens.input_tokens, output_tokens=tokens.output_tokens, cost_pico=pico)
        if status == "success" and _opens_conversation(self.prepared):
            metrics.conversation_created()
        if self.first_byte_at is not None:
            metrics.observe_ttft(self.model.name, self.first_byte_at - self.started)
        # Overhead: time to our first byte minus the upstream's share of it (streams: its first chunk).
        first_byte = self.first_byte_at if self.first_byte_at is not None else now
        metrics.observe_overhead(self.endpoint, max(0.0, first_byte - self.started - self.upstream_seconds))
        state = self.request.scope["state"]
        state.update(model=self.model.name, input_tokens=tokens.input_tokens, output_tokens=tokens.output_tokens)
        tpd = next((limit for limit in plan_limits(self.registry, self.principal) if limit.name == "tpd"), None)
        if tpd is not None and tokens.input_tokens + tokens.output_tokens:
            # Not awaited: finish() runs in `finally` blocks; the call keeps the task referenced.
            self.tpd_task = asyncio.get_running_loop().create_task(
                self.ctx.limiter.consume(tpd, tokens.input_tokens + tokens.output_tokens))


async def _hold(ctx: AppContext, request_id: str, principal: KeyPrincipal, quote: Quote,
                origin: HoldOrigin) -> PlacedHold:
    key_has_limit = principal.monthly_limit_pico is not None
    writer = sqlite_writer(ctx.engine) if ctx.settings.is_sqlite else None
    if writer is not None:
        return await place_hold_sqlite(writer, request_id=request_id, account_id=principal.account_id,
                                       key_id=principal.key_id, key_has_limit=key_has_limit, quote=quote,
                                       origin=origin)
    if not ctx.settings.is_sqlite and (principal.key_id is not None or not key_has_limit):
        placed = await place_worst_case_hold(ctx.engine, request_id=request_id, account_id=principal.account_id,
                                             quote=quote, origin=origin,
                                             limited_key_id=principal.key_id if key_has_limit else None)
        if placed is not None:
            return placed
    async with ctx.sessions() as session:
        return await place_hold(session, request_id=request_id, account_id=principal.account_id,
                                key_id=principal.key_id, key_has_limit=key_has_limit, quote=quote, origin=origin)


def _opens_conversation(prepared: PreparedRequest) -> bool:
    """A chat whose history has no assistant turn yet starts a conversation."""
    messages = prepared.body.get("messages")
    return isinstance(messages, list) and not any(m.get("role") == "assistant" for m in messages)


def session_principal(member: Member) -> KeyPrincipal:
    """The principal of a signed-in user calling from the playground: no key, so no key limits;
    the account's plan, balance and rate limits apply exactly as for their API keys."""
    return KeyPrincipal(key_id=None, user_id=member.user.id, account_id=member.account.id,
                        plan_name=member.account.plan_name, allowed_models=None, monthly_limit_pico=None, rpm=None,
                        expires_at=None)


async def admit(request: Request, endpoint: Endpoint, principal: KeyPrincipal | None = None) -> Call:
    """Authorize, limit, validate and place the hold. Raises GatewayError/ProviderError (not admitted).

    `principal` is given by callers that authenticated the request themselves (the playground's
    session); otherwise the request's API key is resolved here.
    """
    started = time.perf_counter()
    ctx = context(request)
    if principal is None:
        principal = await authenticate(request)
    registry = ctx.registry.current  # read once: prices and plans stay those of the request's start
    # The limiter's round trip (Redis) runs while the body is read and validated. Its decision is awaited
    # before anything else is answered or written (a validation error, the idempotency claim, the hold),
    # so a limited request still gets its 429 first and is never admitted.
    pending = ctx.limiter.hit_soon(plan_limits(registry, principal))
    try:
        checked = await _validate(ctx, request, registry, principal, endpoint, pending)
    except BaseException:
        pending.cancel()
        raise
    decision = await enforce_rate_limits(ctx, registry, principal, pending)
    headers = {name.decode(): value.decode() for name, value in rate_limit_headers(decision)}
    try:
        assert checked is not None  # None only for a request the limiter refused, answered just above
        if isinstance(checked, Exception):
            raise checked
        model, target, prepared, shape, quote = checked
        origin = HoldOrigin(ctx.lease.instance_id, principal.key_id, model.name, endpoint)
        key_claim = await idempotency.claim(ctx.sessions, request, principal.account_id, unique_request_id(request))
        try:
            hold = await _hold(ctx, unique_request_id(request), principal, quote, origin)
        except BaseException:
            if key_claim is not None:
                await key_claim.release()
            raise
    except HoldRefused as refused:
        ctx.metrics.hold_rejected()
        raise GatewayError(402, "insufficient_credits", refused.reason, type="insufficient_quota",
                           headers=headers) from None
    except GatewayError as error:
        error.headers = {**headers, **error.headers}
        raise
    except ProviderError as error:
        mapped = from_provider(error)
        mapped.headers = headers
        raise mapped from None
    if model.kind == "chat":
        prepared.limit_output(max(1, hold.output_tokens))  # never generate more than the hold pays for
    return Call(ctx=ctx, request=request, principal=principal, registry=registry, model=model, target=target,
                endpoint=endpoint, prepared=prepared, hold=hold, headers=headers, started=started, shape=shape,
                response_id=new_response_id(endpoint), created=int(time.time()), idempotency=key_claim)


_Checked = tuple[Model, ModelTarget, PreparedRequest, PromptShape, Quote]


async def _validate(ctx: AppContext, request: Request, registry: Registry, principal: KeyPrincipal,
                    endpoint: Endpoint, pending: asyncio.Future[Decision]
                    ) -> _Checked | GatewayError | ProviderError | None:
    """Read and check the body, and quote its hold; a refusal is returned, not raised, so that `admit`
    can answer the rate limit's 429 before it. With a rate-limit call `pending`, no node is asked about
    the model before the limiter answered, and not at all when it refused (then None is returned)."""
    try:
        body = await read_json(request)
        model = resolve_model(registry, principal, body.get("model"), endpoint)
        if not pending.done() and ctx.pool.would_ask(model.tag, model.nodes):
            await asyncio.wait((pending,))
        if pending.done() and not pending.result().allowed:
            return None
        target = model_target(model, await ctx.pool.model_info(model.tag, model.nodes))
        prepared = prepare(endpoint, body, target)
        shape = prompt_shape(prepared.body)
        return model, target, prepared, shape, quote_for(model, prepared, ctx.prompt_bounds.bound(model.tag, shape))
    except (GatewayError, ProviderError) as refused:
        return refused


def upstream_error(call: Call, error: ProviderError) -> GatewayError:
    """The client's error for a failed upstream call (a stable message naming the public model only),
    with the request's rate-limit headers."""
    mapped = from_provider(error, call.model.name, INPUT_PARAM[call.endpoint])
    mapped.headers = {**call.headers, **mapped.headers}
    return mapped


async def open_stream(call: Call) -> Response:
    """Open the upstream stream and read its first chunk, so failures up to here are plain HTTP errors."""
    from gateway.streaming import RelayResponse

    stack = AsyncExitStack()
    try:
        before = time.perf_counter()
        stream = await stack.enter_async_context(call.ctx.pool.open_stream(
            call.prepared.ollama_path, call.prepared.body, model_tag=call.model.tag, nodes=call.model.nodes))
        call.node = stream.node
        first = await anext(stream)
        call.upstream_seconds = time.perf_counter() - before
        if call.idempotency is not None:
            await call.idempotency.streamed()  # from here the answer is charged: the key is spent
    except BaseException as error:
        await stack.aclose()
        if call.idempotency is not None:
            await call.idempotency.release()
        if isinstance(error, ProviderError):
            call.finish(None, "error", error.code)
            raise upstream_error(call, error) from None
        if isinstance(error, StopAsyncIteration):
            call.finish(None, "error", "upstream_error")
            raise GatewayError(502, "upstream_error", "The upstream closed the stream without an answer.",
                               type="upstream_error", headers=call.headers) from None
        call.finish(None, "cancelled" if isinstance(error, asyncio.CancelledError) else "error",
                    "client_disconnected" if isinstance(error, asyncio.CancelledError) else "internal_error")
        raise
    return RelayResponse(call, stream, first, stack)


async def handle(request: Request, endpoint: Endpoint, principal: KeyPrincipal | None = None) -> Response:
    """The whole pipeline for one inference request (what each /v1 route and the playground call)."""
    from gateway.completion import complete

    try:
        call = await admit(request, endpoint, principal)
    except idempotency.Replayed as replayed:
        return replayed.response
    if call.prepared.stream:
        return await open_stream(call)
    return await complete(call)
