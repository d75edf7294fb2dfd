"""The OpenAI-compatible surface. Handlers are thin: each calls the shared pipeline."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.capabilities import served_model
from gateway.context import context
from gateway.errors import GatewayError
from gateway.http import JSONResponse
from gateway.inference import authenticate, enforce_rate_limits, handle
from gateway.ratelimit.headers import rate_limit_headers
from gateway.registry import Model
from providers.pool import NodePool


async def chat_completions(request: Request) -> Response:
    return await handle(request, "chat.completions")


async def completions(request: Request) -> Response:
    return await handle(request, "completions")


async def embeddings(request: Request) -> Response:
    return await handle(request, "embeddings")


async def responses(request: Request) -> Response:
    return await handle(request, "responses")


def _model_object(model: Model, created: int, pool: NodePool) -> dict[str, object]:
    facts = served_model(pool, model)
    entry: dict[str, object] = {"id": model.name, "object": "model", "created": created, "owned_by": "privaterouter",
                                "context_length": facts.context, "kind": model.kind}
    if facts.capabilities is not None:
        entry["capabilities"] = facts.capabilities
    if model.dimensions is not None:
        entry["dimensions"] = model.dimensions
    return entry


async def _listing(request: Request) -> tuple[list[Model], dict[str, str], int]:
    ctx = context(request)
    principal = await authenticate(request)
    registry = ctx.registry.current
    decision = await enforce_rate_limits(ctx, registry, principal)
    headers = {name.decode(): value.decode() for name, value in rate_limit_headers(decision)}
    plan = registry.plans.get(principal.plan_name) or registry.plans["free"]
    allowed = [model for model in registry.models.values() if plan.allows(model.name)
               and (principal.allowed_models is None or model.name in principal.allowed_models)]
    return allowed, headers, registry.loaded_at


async def list_models(request: Request) -> Response:
    models, headers, created = await _listing(request)
    pool = context(request).pool
    return JSONResponse({"object": "list", "data": [_model_object(m, created, pool) for m in models]},
                        headers=headers)


async def retrieve_model(request: Request) -> Response:
    models, headers, created = await _listing(request)
    model_id = request.path_params["model_id"]
    for model in models:
        if model.name == model_id:
            return JSONResponse(_model_object(model, created, context(request).pool), headers=headers)
    raise GatewayError(404, "model_not_found", f"The model '{model_id}' does not exist or is not available to "
                       "this API key.", param="model", headers=headers)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
]

