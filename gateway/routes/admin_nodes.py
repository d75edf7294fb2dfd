"""Node operations for operators (`/api/admin/nodes`, `/api/admin/models/*`): the CLI's code, over HTTP.

Each handler calls one function of `gateway.nodes` (the same one `privaterouter nodes|models`
calls) and starts with `require_admin`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import nodes
from gateway.auth.deps import require_admin
from gateway.context import context
from gateway.fields import FieldError
from gateway.http import JSONResponse, read_json
from gateway.registry import Node


async def node_list(request: Request) -> Response:
    """Every registry node: up/down, latency, Ollama version, resident models, in flight vs max_concurrency."""
    await require_admin(request)
    ctx = context(request)
    statuses = await nodes.node_statuses(ctx.registry.current, ctx.http, ctx.pool)
    return JSONResponse({"items": [status.as_json() for status in statuses]})


async def models_check(request: Request) -> Response:
    """Every (model, node) pair the registry asks for, with the tag's digest or `present: false`."""
    await require_admin(request)
    ctx = context(request)
    presences = await nodes.check_models(ctx.registry.current, ctx.http)
    missing = [item.as_json() for item in presences if not item.present]
    return JSONResponse({"ok": not missing, "missing": missing, "items": [item.as_json() for item in presences]})


async def _choice(request: Request) -> tuple[str | None, str | None, dict[str, Any]]:
    body = await read_json(request) if await request.body() else {}
    chosen: list[str | None] = []
    for name in ("model", "node"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise FieldError(f"{name} must be a non-empty string when given.", param=name)
        chosen.append(value)
    return chosen[0], chosen[1], body


def _targets(request: Request, model: str | None, node: str | None) -> list[tuple[Node, str]]:
    try:
        return nodes.pull_targets(context(request).registry.current, model, node)
    except nodes.NodeOpsError as exc:
        raise FieldError(str(exc), param=exc.param, code=exc.code,
                         status=404 if exc.code.endswith("_not_found") else 400) from None


async def models_pull(request: Request) -> Response:
    """Pull `model` (default all) on `node` (default each serving node); Ollama's progress as SSE events.

    Events: `progress` (one per Ollama line: node, tag, status, digest, total, completed, attempt),
    `error` (a target that failed for good) and a last `done` with `{"ok", "failed"}`.
    """
    await require_admin(request)
    model, node, _ = await _choice(request)
    targets = _targets(request, model, node)
    http = context(request).http

    async def events() -> AsyncIterator[bytes]:
        failed = []
        async for event in nodes.pull(http, targets):
            kind = "error" if event.error is not None else "progress"
            if event.error is not None:
                failed.append({"node": event.node, "tag": event.tag})
            yield b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event.as_json()) + b"\n\n"
        yield b"event: done\ndata: " + orjson.dumps({"ok": not failed, "failed": failed}) + b"\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def models_warm(request: Request) -> Response:
    """Load `model` (default all) into memory on its nodes for `keep_alive` (default 30m)."""
    await require_admin(request)
    model, node, body = await _choice(request)
    keep_alive = body.get("keep_alive", nodes.DEFAULT_KEEP_ALIVE)
    if isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int):
        raise FieldError("keep_alive must be an Ollama duration string (e.g. \"30m\") or seconds.", param="keep_alive")
    _targets(request, model, node)  # unknown names are a 400 before any node is called
    ctx = context(request)
    results = await nodes.warm(ctx.registry.current, ctx.http, model, node, keep_alive=keep_alive)
    return JSONResponse({"ok": all(item.error is None for item in results),
                         "items": [item.as_json() for item in results]})


routes = [
    Route("/api/admin/nodes", node_list, methods=["GET"]),
    Route("/api/admin/models/check", models_check, methods=["GET"]),
    Route("/api/admin/models/pull", models_pull, methods=["POST"]),
    Route("/api/admin/models/warm", models_warm, methods=["POST"]),
]
