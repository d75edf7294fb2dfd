"""The public catalogue: plans and models with their prices, from the registry in force."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.billing.money import to_pico
from gateway.capabilities import ServedModel, served_model
from gateway.context import context
from gateway.fields import usd
from gateway.http import JSONResponse
from gateway.registry import Model, Plan


def price(per_million: Decimal) -> str:
    """USD per million tokens with six decimals, as the registry states it: "0.100000"."""
    return f"{per_million:.6f}"


def model_json(model: Model, plans: list[Plan], facts: ServedModel) -> dict[str, Any]:
    """One catalogue entry; the Ollama tag stays internal. `context` and `capabilities` are as the nodes serve
    the model (`capabilities` null until a node has said)."""
    return {"name": model.name, "kind": model.kind, "family": model.family,
            "context": facts.context, "capabilities": facts.capabilities, "input_price": price(model.input_price),
            "output_price": price(model.output_price), "dimensions": model.dimensions,
            "plans": [plan.name for plan in plans if plan.allows(model.name)]}


def plan_json(plan: Plan) -> dict[str, Any]:
    return {"name": plan.name, "monthly_usd": usd(to_pico(plan.monthly_usd)),
            "included_credits_usd": usd(plan.included_credits_pico),
            "models": list(plan.models) if plan.models is not None else "all",
            "rpm": plan.rpm, "rpd": plan.rpd, "tpd": plan.tpd}


async def plans(request: Request) -> Response:
    registry = context(request).registry.current
    return JSONResponse({"items": [plan_json(plan) for plan in registry.plans.values()]})


async def models(request: Request) -> Response:
    ctx = context(request)
    registry = ctx.registry.current
    plans = list(registry.plans.values())
    return JSONResponse({"items": [model_json(model, plans, served_model(ctx.pool, model))
                                   for model in registry.models.values()],
                         "price_unit": "USD per million tokens"})


routes = [
    Route("/api/plans", plans, methods=["GET"]),
    Route("/api/models", models, methods=["GET"]),
]
