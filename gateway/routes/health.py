"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.capabilities import claim_problems
from gateway.context import AppContext, context
from gateway.http import JSONResponse

CHECK_TIMEOUT = 2.0


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _database(ctx: AppContext) -> None:
    async with ctx.engine.connect() as connection:
        await connection.execute(sa.text("SELECT 1"))


async def _redis(ctx: AppContext) -> None:
    if ctx.redis is not None:
        await ctx.redis.ping()


async def _check(name: str, probe: asyncio.Future[None] | object) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT)  # type: ignore[arg-type]
    except Exception as exc:  # a probe's failure is the answer, never a 500
        return name, f"error: {type(exc).__name__}: {exc}"[:200]
    return name, "ok"


def _models(ctx: AppContext) -> str:
    """How many models their nodes have confirmed (/api/show), and where models.yaml claims more.

    Informational: a model not yet confirmed still gets its requests (the node answers for itself).
    """
    registry = ctx.registry.current
    known = sum(1 for m in registry.models.values() if ctx.pool.cached_model_info(m.tag, m.nodes) is not None)
    problems = claim_problems(registry, ctx.pool)
    summary = f"{known} of {len(registry.models)} confirmed by their nodes"
    return f"warning: {summary}; " + "; ".join(problems) if problems else f"ok ({summary})"


async def readiness(request: Request) -> Response:
    """200 when the database, Redis (if configured) and the registry are usable; 503 naming what is not."""
    ctx = context(request)
    checks = dict(await asyncio.gather(_check("database", _database(ctx)), _check("redis", _redis(ctx))))
    if ctx.redis is None:
        checks["redis"] = "not configured (in-process limiter)"
    checks["registry"] = f"ok (version {ctx.registry.current.version})"
    checks["models"] = _models(ctx)
    failing = [name for name, result in checks.items() if result.startswith("error")]
    if failing:
        message = f"Not ready: {', '.join(failing)} failing."
        return JSONResponse({"error": {"message": message, "type": "service_unavailable", "code": "not_ready",
                                       "param": None}, "status": "unavailable", "checks": checks}, status_code=503)
    return JSONResponse({"status": "ok", "checks": checks})


routes = [
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/health/readiness", readiness, methods=["GET", "HEAD"]),
]
