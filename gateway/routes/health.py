"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.capabilities import claim_problems
from gateway.context import AppContext, context
from gateway.db.availability import RETRY_AFTER_SECONDS
from gateway.http import JSONResponse
from gateway.nodes import check_models

CHECK_TIMEOUT = 2.0


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _database(ctx: AppContext) -> None:
    async with ctx.engine.connect() as connection:
        await connection.execute(sa.text("SELECT 1"))


async def _redis(ctx: AppContext) -> None:
    if ctx.redis is not None:
        await ctx.redis.ping()


async def _models_pulled(ctx: AppContext) -> None:
    """READINESS_REQUIRE_MODELS: every registry model is on every node that should serve it."""
    presences = await check_models(ctx.registry.current, ctx.http, timeout=CHECK_TIMEOUT)
    missing = sum(1 for item in presences if not item.present)
    if missing:  # counts only: readiness is unauthenticated, node names and tags stay private
        raise LookupError(f"{missing} of {len(presences)} model placements missing (see `privaterouter models check`)")


async def _check(name: str, probe: asyncio.Future[None] | object) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT)  # type: ignore[arg-type]
    except Exception as exc:  # a probe's failure is the answer, never a 500
        return name, f"error: {type(exc).__name__}: {exc}"[:200]
    return name, "ok"


def _models_confirmed(ctx: AppContext) -> str:
    """How many models their nodes have confirmed (/api/show), and where models.yaml claims more.

    Informational: a model not yet confirmed still gets its requests (the node answers for itself).
    """
    registry = ctx.registry.current
    known = sum(1 for m in registry.models.values() if ctx.pool.cached_model_info(m.tag, m.nodes) is not None)
    problems = claim_problems(registry, ctx.pool)
    summary = f"{known} of {len(registry.models)} confirmed by their nodes"
    return f"warning: {summary}; " + "; ".join(problems) if problems else f"ok ({summary})"


async def readiness(request: Request) -> Response:
    """200 when the database and the registry are usable; 503 naming what is not.

    Redis is reported but never fails readiness: without it rate limits fail open and the login
    throttle counts in process, so every replica can still serve; failing here would make an
    orchestrator remove all of them at once.
    """
    ctx = context(request)
    probes = [_check("database", _database(ctx)), _check("redis", _redis(ctx))]
    if ctx.settings.readiness_require_models:
        probes.append(_check("models", _models_pulled(ctx)))
    checks = dict(await asyncio.gather(*probes))
    if ctx.redis is None:
        checks["redis"] = "not configured (in-process limiter)"
    elif checks["redis"].startswith("error"):
        checks["redis"] = "degraded (rate limits fail open, login throttle in process): " + checks["redis"][7:]
    checks["registry"] = f"ok (version {ctx.registry.current.version})"
    if "models" not in checks:  # informational unless READINESS_REQUIRE_MODELS asked for the tags
        checks["models"] = _models_confirmed(ctx)
    failing = [name for name, result in checks.items() if result.startswith("error")]
    if failing:
        message = f"Not ready: {', '.join(failing)} failing."
        return JSONResponse({"error": {"message": message, "type": "service_unavailable", "code": "not_ready",
                                       "param": None}, "status": "unavailable", "checks": checks}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    degraded = any(result.startswith("degraded") for result in checks.values())
    return JSONResponse({"status": "degraded" if degraded else "ok", "checks": checks})


routes = [
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/health/readiness", readiness, methods=["GET", "HEAD"]),
]
