"""A registry model as its nodes serve it: effective context and capabilities, and where models.yaml
claims more than the nodes have.

The facts come from the pool's cache of each node's `/api/show` (providers/ollama/capabilities.py);
`models.yaml` may only narrow them (a smaller `context`). Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from gateway.registry import Model, Registry
from providers.ollama.capabilities import COMPLETION, EMBEDDING, ModelInfo
from providers.pool import NodePool

log = logging.getLogger(__name__)

# The capability a registry kind needs from the node.
_KIND_NEEDS = {"chat": COMPLETION, "embedding": EMBEDDING}


@dataclass(frozen=True)
class ServedModel:
    """`context` in tokens (the registry's, narrowed by the node's); `capabilities` sorted, None if unknown."""

    context: int
    capabilities: list[str] | None


def served(model: Model, info: ModelInfo | None) -> ServedModel:
    """The registry entry narrowed by what the nodes report (`info` from `NodePool.cached_model_info`)."""
    context = model.context
    if info is not None and info.context_length is not None:
        context = min(context, info.context_length)
    capabilities = sorted(info.capabilities) if info is not None and info.capabilities is not None else None
    return ServedModel(context, capabilities)


def served_model(pool: NodePool, model: Model) -> ServedModel:
    """`served` with the pool's cached facts."""
    return served(model, pool.cached_model_info(model.tag, model.nodes))


def claim_problems(registry: Registry, pool: NodePool) -> list[str]:
    """Where models.yaml claims what the nodes lack, one sentence each (empty when all is well or unknown)."""
    problems = []
    for model in registry.models.values():
        info = pool.cached_model_info(model.tag, model.nodes)
        if info is None:
            continue
        if info.context_length is not None and model.context > info.context_length:
            problems.append(f"{model.name}: models.yaml says context {model.context}, its nodes serve "
                            f"{info.context_length}; {info.context_length} is used")
        needed = _KIND_NEEDS.get(model.kind)
        if needed is not None and info.can(needed) is False:
            problems.append(f"{model.name}: models.yaml says kind {model.kind}, but its nodes do not list "
                            f"the '{needed}' capability")
    return problems


async def confirm_claims(registry: Registry, pool: NodePool, *, timeout: float = 3.0) -> list[str]:
    """`claim_problems` after asking the nodes about every model not asked yet (at most `timeout` seconds).

    For an operator's reload: the answer can say at once where the new file claims what the nodes lack.
    """
    models = list(registry.models.values())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(pool.model_info(m.tag, m.nodes) for m in models))
    return claim_problems(registry, pool)


class ClaimLog:
    """Logs each models.yaml-versus-node disagreement once (again only after it went away and came back)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def check(self, registry: Registry, pool: NodePool) -> list[str]:
        problems = claim_problems(registry, pool)
        for problem in problems:
            if problem not in self._seen:
                log.warning("models.yaml disagrees with the nodes: %s", problem)
        self._seen = set(problems)
        return problems
