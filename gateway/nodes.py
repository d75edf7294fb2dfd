"""Node operations over the registry: status of every node, model presence, pulls and warm-ups.

One implementation for `privaterouter nodes` / `models check|pull|warm` and for the admin API
(`GET /api/admin/nodes`, `GET /api/admin/models/check`, `POST /api/admin/models/pull`,
`POST /api/admin/models/warm`). The CLI passes no pool (it is not the server, so it cannot know
the requests in flight); the server passes its `NodePool` for in-flight counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.registry import Model, Node, Registry
from providers.errors import UpstreamError, UpstreamStreamError
from providers.ollama import nodeops
from providers.ollama.client import OllamaClient
from providers.ollama.nodeops import NodeInspection, PullProgress, ResidentModel, normalise_tag
from providers.pool import NodePool

INSPECT_TIMEOUT = 5.0  # seconds per call to a node
PULL_ATTEMPTS = 3  # a dropped pull is resumed this many times in all
PULL_RETRY_DELAY = 1.0  # seconds before resuming
DEFAULT_KEEP_ALIVE = "30m"


class NodeOpsError(ValueError):
    """The operator named a model or node the registry does not have (or a pair that does not go together)."""

    def __init__(self, message: str, param: str, code: str = "invalid_body") -> None:
        super().__init__(message)
        self.param = param
        self.code = code  # model_not_found / node_not_found for an unknown name


@dataclass(frozen=True)
class NodeStatus:
    """One node as `privaterouter nodes` shows it.

    `in_flight` and `routable` (the pool's health-check verdict: whether requests go there) are
    None outside the server.
    """

    name: str
    host: str
    inspection: NodeInspection
    in_flight: int | None
    max_concurrency: int
    routable: bool | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON shape of `GET /api/admin/nodes` items (sizes in bytes, latency in milliseconds)."""
        found = self.inspection
        return {
            "name": self.name, "host": self.host, "up": found.up, "latency_ms": found.latency_ms,
            "version": found.version, "error": found.error, "in_flight": self.in_flight,
            "max_concurrency": self.max_concurrency, "routable": self.routable,
            "resident_models": [{"model": item.name, "size": item.size, "size_vram": item.size_vram,
                                 "expires_at": item.expires_at, "context_length": item.context_length}
                                for item in found.resident],
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> NodeStatus:
        """The inverse of `as_json` (for rendering a server's answer in the CLI)."""
        resident = tuple(ResidentModel(name=model["model"], digest="", size=model["size"], size_vram=model["size_vram"],
                                       expires_at=model["expires_at"], context_length=model["context_length"])
                         for model in item["resident_models"])
        inspection = NodeInspection(up=item["up"], latency_ms=item["latency_ms"], version=item["version"],
                                    resident=resident, installed=(), error=item["error"])
        return cls(name=item["name"], host=item["host"], inspection=inspection, in_flight=item["in_flight"],
                   max_concurrency=item["max_concurrency"], routable=item.get("routable"))


@dataclass(frozen=True)
class Presence:
    """Whether `tag` (of public model `model`) is on `node`'s disk; `digest` is bare hex when present."""

    model: str
    tag: str
    node: str
    node_up: bool
    present: bool
    digest: str | None

    def as_json(self) -> dict[str, Any]:
        """JSON shape of `GET /api/admin/models/check` items."""
        return {"model": self.model, "tag": self.tag, "node": self.node, "node_up": self.node_up,
                "present": self.present, "digest": self.digest}


@dataclass(frozen=True)
class PullEvent:
    """One step of a pull: Ollama's progress line for (`node`, `tag`), or the `error` that ended it."""

    node: str
    tag: str
    progress: PullProgress | None = None
    error: str | None = None
    attempt: int = 1

    def as_json(self) -> dict[str, Any]:
        """The SSE `data` of `POST /api/admin/models/pull`: Ollama's line plus node, tag and attempt."""
        body: dict[str, Any] = {"node": self.node, "tag": self.tag, "attempt": self.attempt}
        if self.progress is not None:
            body.update(self.progress.as_json())
        if self.error is not None:
            body["error"] = self.error
        return body


def host_of(url: str) -> str:
    """host:port of a node URL, never its credentials or path."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _client(http: httpx.AsyncClient, node: Node, timeout: float) -> OllamaClient:
    return OllamaClient(http, node.url, node=node.name, first_byte_timeout=timeout, idle_timeout=timeout,
                        headers=node.headers)


async def _inspect_all(registry: Registry, http: httpx.AsyncClient, timeout: float) -> dict[str, NodeInspection]:
    nodes = list(registry.nodes.values())
    found = await asyncio.gather(*(nodeops.inspect(_client(http, node, timeout)) for node in nodes))
    return {node.name: inspection for node, inspection in zip(nodes, found, strict=True)}


async def node_statuses(registry: Registry, http: httpx.AsyncClient, pool: NodePool | None = None,
                        timeout: float = INSPECT_TIMEOUT) -> list[NodeStatus]:
    """Every registry node, inspected in parallel, in registry order."""
    inspections = await _inspect_all(registry, http, timeout)
    pooled = {snap.name: snap for snap in pool.snapshot()} if pool is not None else {}
    statuses = []
    for node in registry.nodes.values():
        snap = pooled.get(node.name)
        statuses.append(NodeStatus(name=node.name, host=host_of(node.url), inspection=inspections[node.name],
                                   in_flight=snap.in_flight if snap else None, max_concurrency=node.max_concurrency,
                                   routable=snap.up if snap else None))
    return statuses


def serving_nodes(registry: Registry, model: Model) -> list[Node]:
    """The nodes that should hold `model` (its `nodes`, or all)."""
    names = model.nodes if model.nodes is not None else tuple(registry.nodes)
    return [registry.nodes[name] for name in names]


async def check_models(registry: Registry, http: httpx.AsyncClient,
                       timeout: float = INSPECT_TIMEOUT) -> list[Presence]:
    """For every registry model and every node that should serve it: is its tag in the node's `/api/tags`?"""
    inspections = await _inspect_all(registry, http, timeout)
    installed = {name: {normalise_tag(item.name): item.digest for item in found.installed}
                 for name, found in inspections.items()}
    result = []
    for model in registry.models.values():
        tag = normalise_tag(model.tag)
        for node in serving_nodes(registry, model):
            digest = installed[node.name].get(tag)
            result.append(Presence(model=model.name, tag=model.tag, node=node.name,
                                   node_up=inspections[node.name].up, present=digest is not None,
                                   digest=digest or None))
    return result


def pull_targets(registry: Registry, model_name: str | None, node_name: str | None) -> list[tuple[Node, str]]:
    """(node, tag) pairs to pull, one per distinct tag and node; raises NodeOpsError for unknown names."""
    if model_name is not None and model_name not in registry.models:
        raise NodeOpsError(f"Unknown model '{model_name}'; the registry has {', '.join(registry.models)}.", "model",
                           "model_not_found")
    if node_name is not None and node_name not in registry.nodes:
        raise NodeOpsError(f"Unknown node '{node_name}'; the registry has {', '.join(registry.nodes)}.", "node",
                           "node_not_found")
    models = [registry.models[model_name]] if model_name is not None else list(registry.models.values())
    targets: list[tuple[Node, str]] = []
    seen: set[tuple[str, str]] = set()
    for model in models:
        nodes = serving_nodes(registry, model)
        if node_name is not None:
            if node_name not in {node.name for node in nodes}:
                raise NodeOpsError(f"Model '{model.name}' is not served by node '{node_name}' (see its `nodes`).",
                                   "node")
            nodes = [registry.nodes[node_name]]
        for node in nodes:
            key = (node.name, normalise_tag(model.tag))
            if key not in seen:
                seen.add(key)
                targets.append((node, model.tag))
    return targets


async def pull(http: httpx.AsyncClient, targets: Sequence[tuple[Node, str]], *, attempts: int = PULL_ATTEMPTS,
               retry_delay: float = PULL_RETRY_DELAY, timeout: float = 60.0) -> AsyncIterator[PullEvent]:
    """Pull each (node, tag) in turn, yielding Ollama's progress; a dropped pull is resumed.

    A transport failure (connection lost, silence over `timeout` seconds) retries up to `attempts`
    times in all; Ollama keeps the bytes already received, so a retry resumes. An `{"error": ...}`
    line from Ollama (unknown model, registry refused) is final. Either way the failure is one
    event with `error` set, and the next target still runs.
    """
    for node, tag in targets:
        for attempt in range(1, attempts + 1):
            try:
                async for progress in nodeops.pull(http, node.url, tag, node=node.name, timeout=timeout,
                                                   headers=node.headers):
                    yield PullEvent(node=node.name, tag=tag, progress=progress, attempt=attempt)
                break
            except UpstreamStreamError as exc:
                yield PullEvent(node=node.name, tag=tag, error=exc.message, attempt=attempt)
                break
            except UpstreamError as exc:
                if attempt == attempts:
                    yield PullEvent(node=node.name, tag=tag, error=exc.message, attempt=attempt)
                else:
                    yield PullEvent(node=node.name, tag=tag, attempt=attempt,
                                    progress=PullProgress(status=f"retrying after: {exc.message}"))
                    await asyncio.sleep(retry_delay)


@dataclass(frozen=True)
class WarmResult:
    """Whether loading `model` on `node` worked; `error` says why not."""

    model: str
    node: str
    error: str | None

    def as_json(self) -> dict[str, Any]:
        """JSON shape of `POST /api/admin/models/warm` items."""
        return {"model": self.model, "node": self.node, "ok": self.error is None, "error": self.error}


async def warm(registry: Registry, http: httpx.AsyncClient, model_name: str | None, node_name: str | None, *,
               keep_alive: str | int = DEFAULT_KEEP_ALIVE, timeout: float = 300.0) -> list[WarmResult]:
    """Load each chosen model into memory on each chosen node (in parallel) for `keep_alive`."""
    targets = pull_targets(registry, model_name, node_name)  # same choice rules as a pull
    models = [registry.models[model_name]] if model_name is not None else list(registry.models.values())
    by_tag = {normalise_tag(model.tag): model for model in models}

    async def one(node: Node, tag: str) -> WarmResult:
        model = by_tag[normalise_tag(tag)]
        try:
            await nodeops.warm(_client(http, node, timeout), tag, kind=model.kind, keep_alive=keep_alive)
        except UpstreamError as exc:
            return WarmResult(model=model.name, node=node.name, error=exc.message)
        return WarmResult(model=model.name, node=node.name, error=None)

    return list(await asyncio.gather(*(one(node, tag) for node, tag in targets)))
