"""Ask the nodes' Ollama what every chat model's Modelfile adds to a prompt (`/api/show`), so the
first request of a model with a hidden SYSTEM prompt is already held in full.

Runs in the background at start and after each registry reload, straight to the node URLs (not
through the pool: an informational call takes no slot and must not look like a model load). The
first node that answers for a model is believed; when none does, the bound learns from the first
answer instead (gateway/billing/bound.py).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from gateway.billing.bound import show_overhead
from gateway.context import AppContext

log = logging.getLogger("pr.billing")
SHOW_TIMEOUT = 10.0


async def learn_overheads(ctx: AppContext) -> int:
    """Seed the prompt bound of every chat model from `/api/show`; returns how many were seeded."""
    registry = ctx.registry.current
    learned = 0
    for model in list(registry.models.values()):
        if model.kind != "chat":
            continue
        names = model.nodes if model.nodes is not None else list(registry.nodes)
        for name in names:
            node = registry.nodes.get(name)
            show = None if node is None else await _show(ctx.http, node.url, dict(node.headers), model.tag)
            if show is not None:
                ctx.prompt_bounds.seed(model.tag, show_overhead(show))
                learned += 1
                break
    return learned


async def _show(http: httpx.AsyncClient, url: str, headers: dict[str, str], tag: str) -> dict[str, Any] | None:
    try:  # the node's own headers (e.g. an authenticating proxy's bearer token), as every upstream call
        response = await http.post(f"{url.rstrip('/')}/api/show", json={"model": tag}, headers=headers,
                                   timeout=SHOW_TIMEOUT)
        answer = response.json() if response.is_success else None
    except (httpx.HTTPError, ValueError) as error:
        log.info("no /api/show for %s at a node (%s)", tag, type(error).__name__)  # no URL: it may hold credentials
        return None
    return answer if isinstance(answer, dict) else None
