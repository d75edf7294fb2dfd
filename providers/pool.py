"""GPU-node pool: which node serves a request, its concurrency slots, failover and health.

Invariants:
- A slot is taken (`in_flight += 1`) when a node is chosen and given back exactly once, when the
  request's context exits, to the very `_Node` it was taken from, even if a reload has since
  removed or replaced that node; so a reload never disturbs a request in flight.
- A freed slot is handed straight to the oldest waiter that may use it, so waiters are served in
  order and a newcomer cannot overtake them.
- Failover happens only while opening (before the first byte). Once a stream is handed to the
  caller it is never retried: the client may already have part of the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import TracebackType
from typing import Any, TypeVar

import httpx

from providers.errors import (
    NodeConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnconfigured,
)
from providers.ollama.capabilities import ModelInfo, combine, read_models, read_version
from providers.ollama.client import OllamaClient, StreamContext, UpstreamStream
from providers.ollama.transport import FastTransport

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MODELS_REFRESH = 60.0  # seconds between full re-reads of each node's /api/show facts


@dataclass(frozen=True)
class NodeConfig:
    """One Ollama node as the registry describes it."""

    name: str
    url: str
    max_concurrency: int = 4
    weight: int = 1
    headers: tuple[tuple[str, str], ...] = ()  # e.g. the bearer token of an authenticating reverse proxy
    ca_file: str | None = None  # see providers.ollama.upstream_transport

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"node {self.name}: max_concurrency must be at least 1")
        if self.weight < 1:
            raise ValueError(f"node {self.name}: weight must be at least 1")


@dataclass(frozen=True)
class NodeSnapshot:
    """A node's state at one moment, for readiness and metrics."""

    name: str
    url: str
    up: bool
    in_flight: int
    max_concurrency: int
    utilization: float  # in_flight / max_concurrency
    loaded_models: tuple[str, ...]
    consecutive_failures: int
    version: str | None = None  # the node's Ollama version, "0.12.11", once a health check read it
    models: Mapping[str, ModelInfo | None] = field(default_factory=dict)  # watched tag -> info (None: absent)


class _Node:
    __slots__ = ("config", "client", "probe", "in_flight", "up", "failures", "loaded", "active", "version",
                 "models", "models_read_at", "show_failed")

    def __init__(self, config: NodeConfig, client: OllamaClient, probe: OllamaClient) -> None:
        self.config = config
        self.client = client
        self.probe = probe  # same node, health-check timeouts
        self.in_flight = 0
        self.up = True  # optimistic: the first request need not wait for a health check
        self.failures = 0
        self.loaded: set[str] = set()  # normalised tags from the last /api/ps
        self.active = True  # False once a reload removed or replaced this node
        self.version: tuple[int, int, int] | None = None  # from /api/version
        self.models: dict[str, ModelInfo | None] = {}  # normalised tag -> /api/show facts; None = not on the node
        self.models_read_at = float("-inf")  # loop time of the last full /api/show round
        self.show_failed: dict[str, float] = {}  # tag -> loop time /api/show last failed (not a 404)


class _Waiter:
    __slots__ = ("model_tag", "allowed", "exclude", "future")

    def __init__(
        self,
        model_tag: str,
        allowed: frozenset[str] | None,
        exclude: set[str],
        future: asyncio.Future[_Node],
    ) -> None:
        self.model_tag = model_tag
        self.allowed = allowed
        self.exclude = exclude
        self.future = future


class NodePool:
    """The configured Ollama nodes; hands out one node slot per upstream request."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        first_byte_timeout: float,
        idle_timeout: float,
        acquire_timeout: float = 5.0,
        health_interval: float = 5.0,
        fail_threshold: int = 3,
        health_timeout: float = 5.0,
        direct: Callable[[str], FastTransport | None] | None = None,
    ) -> None:
        """`direct(url)`: the FastTransport that carries a node's requests without httpx's client layers
        (plain-http nodes; see `UpstreamTransport.direct_for`), or None for httpx."""
        self._http = http
        self._direct = direct
        self._first_byte_timeout = first_byte_timeout
        self._idle_timeout = idle_timeout
        self._acquire_timeout = acquire_timeout
        self._health_interval = health_interval
        self._fail_threshold = fail_threshold
        self._health_timeout = min(health_timeout, first_byte_timeout)
        self._nodes: dict[str, _Node] = {}
        self._watched: frozenset[str] = frozenset()
        self._waiters: deque[_Waiter] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- configuration and health ---------------------------------------------------------

    def configure(self, nodes: Sequence[NodeConfig]) -> None:
        """Install the node set (initially and on every reload); requests in flight are untouched."""
        names = [config.name for config in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in {names}")
        current: dict[str, _Node] = {}
        for config in nodes:
            node = self._nodes.get(config.name)
            if node is not None and (node.config.url, node.config.headers) == (config.url, config.headers):
                node.config = config  # new limits apply to the next acquisitions
            else:
                node = self._new_node(config)
            current[config.name] = node
        for name, node in self._nodes.items():
            if current.get(name) is not node:
                node.active = False
        self._nodes = current
        self._dispatch(revalidate=True)

    def watch(self, tags: Iterable[str]) -> None:
        """The model tags whose `/api/show` facts each health check keeps (the registry's models)."""
        self._watched = frozenset(_normalise(tag) for tag in tags)

    def cached_model_info(self, model_tag: str, nodes: Sequence[str] | None) -> ModelInfo | None:
        """What the nodes that may serve `model_tag` last said about it, combined; None when none said yet.

        Only nodes that are up and have the model count; see `capabilities.combine` for how they merge.
        """
        tag, allowed = _normalise(model_tag), _allowed(nodes)
        infos = [info for node in self._nodes.values()
                 if node.up and (allowed is None or node.config.name in allowed)
                 and (info := node.models.get(tag)) is not None]
        return combine(infos)

    async def model_info(self, model_tag: str, nodes: Sequence[str] | None) -> ModelInfo | None:
        """Like `cached_model_info`, but first asks the nodes that have not been asked about the tag yet.

        Failures to ask are not errors here: the request goes on, and the node's own answer decides.
        """
        tag = _normalise(model_tag)
        unread = self._unread(tag, _allowed(nodes))
        if unread:
            await asyncio.gather(*(self._read_models(node, (tag,)) for node in unread))
        return self.cached_model_info(model_tag, nodes)

    def would_ask(self, model_tag: str, nodes: Sequence[str] | None) -> bool:
        """Whether `model_info` would ask a node now (rather than answer from what it knows)."""
        return bool(self._unread(_normalise(model_tag), _allowed(nodes)))

    def _unread(self, tag: str, allowed: frozenset[str] | None) -> list[_Node]:
        # A node whose /api/show just failed is not asked again before the next health check, so a
        # struggling node does not add its timeout to every request.
        retry_before = asyncio.get_running_loop().time() - self._health_interval
        return [node for node in self._nodes.values()
                if node.up and (allowed is None or node.config.name in allowed) and tag not in node.models
                and node.show_failed.get(tag, float("-inf")) < retry_before]

    async def _read_models(self, node: _Node, tags: Iterable[str]) -> None:
        tags = list(tags)
        try:
            if node.version is None:  # first use before any health check: the version decides features too
                node.version = await read_version(node.probe)
            found = await read_models(node.probe, tags, node.version)
        except UpstreamError:
            found = {}
        node.models.update(found)
        now = asyncio.get_running_loop().time()
        for tag in tags:
            if tag in found:
                node.show_failed.pop(tag, None)
            else:
                node.show_failed[tag] = now

    async def start(self) -> None:
        """Start the background health checker (a first check runs at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._health_loop(), name="node-pool-health")

    async def aclose(self) -> None:
        """Stop health checks and fail queued waiters; the injected httpx client stays open."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self._dispatch(revalidate=True)

    async def check_now(self) -> None:
        """Run one round of active health checks on every node (GET /api/version and /api/ps)."""
        await asyncio.gather(*(self._check(node) for node in list(self._nodes.values())))

    def snapshot(self) -> list[NodeSnapshot]:
        """The state of every configured node, in configuration order."""
        return [
            NodeSnapshot(
                name=node.config.name,
                url=node.config.url,
                up=node.up,
                in_flight=node.in_flight,
                max_concurrency=node.config.max_concurrency,
                utilization=node.in_flight / node.config.max_concurrency,
                loaded_models=tuple(sorted(node.loaded)),
                consecutive_failures=node.failures,
                version=".".join(map(str, node.version)) if node.version is not None else None,
                models=dict(node.models),
            )
            for node in self._nodes.values()
        ]

    # --- requests --------------------------------------------------------------------------

    def open_stream(
        self, path: str, body: dict[str, Any], *, model_tag: str, nodes: Sequence[str] | None
    ) -> PooledStream:
        """Context manager: a streaming POST on the best node, failing over until the first byte."""
        return PooledStream(self, path, body, _normalise(model_tag), _allowed(nodes))

    async def request(
        self, path: str, body: dict[str, Any], *, model_tag: str, nodes: Sequence[str] | None
    ) -> tuple[dict[str, Any], str]:
        """Non-streaming POST with failover; returns the JSON answer and the node's name."""

        def post(node: _Node) -> Awaitable[dict[str, Any]]:
            return node.client.post(path, body)

        answer, node = await self._with_failover(_normalise(model_tag), _allowed(nodes), post)
        self._release(node)
        return answer, node.config.name

    async def _with_failover(
        self, model_tag: str, allowed: frozenset[str] | None, call: Callable[[_Node], Awaitable[T]]
    ) -> tuple[T, _Node]:
        # On success the node's slot is still held; the caller releases it.
        tried: set[str] = set()
        last: UpstreamError | None = None
        while True:
            try:
                node = await self._acquire(model_tag, allowed, tried)
            except UpstreamUnavailable:
                if last is not None:
                    raise last from None
                raise
            try:
                result = await call(node)
            except (NodeConnectError, UpstreamTimeout) as exc:
                self._release(node)
                self._failed(node, exc)
                last = exc
            except UpstreamStatusError as exc:
                self._release(node)
                if exc.upstream_status < 500:
                    raise  # the request's own fault (404 unknown model, 400 no tools): same on every node
                last = exc
            except BaseException:
                self._release(node)
                raise
            else:
                self._succeeded(node)
                # Ollama loaded the model to answer: prefer this node until /api/ps says otherwise.
                node.loaded.add(model_tag)
                return result, node
            tried.add(node.config.name)
            logger.warning("node %s failed before answering, trying another: %s", node.config.name, last)

    # --- slots -----------------------------------------------------------------------------

    async def _acquire(self, model_tag: str, allowed: frozenset[str] | None, exclude: set[str]) -> _Node:
        if self._closed:
            raise UpstreamUnavailable("the node pool is closed")
        node = self._pick(model_tag, allowed, exclude)
        if node is not None:
            node.in_flight += 1
            return node
        self._raise_if_no_candidate(model_tag, allowed, exclude)
        future: asyncio.Future[_Node] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(model_tag, allowed, exclude, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._acquire_timeout):
                return await future
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result())  # a slot was handed over just as we gave up
            future.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            if isinstance(exc, TimeoutError):
                raise UpstreamUnavailable(f"all nodes busy for model {model_tag}") from None
            raise

    def _release(self, node: _Node) -> None:
        node.in_flight -= 1
        if self._waiters and node.active:
            self._dispatch()

    def _pick(self, model_tag: str, allowed: frozenset[str] | None, exclude: set[str]) -> _Node | None:
        best: _Node | None = None
        best_key: tuple[bool, bool, float] | None = None
        for node in self._nodes.values():
            config = node.config
            if not node.up or node.in_flight >= config.max_concurrency:
                continue
            if (allowed is not None and config.name not in allowed) or config.name in exclude:
                continue
            # Not suspect first, then the model already in memory, then the least busy for its weight.
            key = (node.failures > 0, model_tag not in node.loaded, node.in_flight / config.weight)
            if best_key is None or key < best_key:
                best, best_key = node, key
        return best

    def _raise_if_no_candidate(self, model_tag: str, allowed: frozenset[str] | None, exclude: set[str]) -> None:
        configured = [n for n in self._nodes.values() if allowed is None or n.config.name in allowed]
        if not configured:
            raise UpstreamUnconfigured(f"no configured node serves model {model_tag}")
        if not any(n.up and n.config.name not in exclude for n in configured):
            raise UpstreamUnavailable(f"no healthy node for model {model_tag}")

    def _dispatch(self, *, revalidate: bool = False) -> None:
        # Hand free slots to waiters, oldest first. With `revalidate` (config, health or shutdown
        # changed) also fail the waiters that no longer have any node to wait for.
        if not self._waiters or not (revalidate or self._any_free()):
            return
        kept: deque[_Waiter] = deque()
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if waiter.future.done():
                continue
            if self._closed:
                waiter.future.set_exception(UpstreamUnavailable("the node pool is closed"))
                continue
            node = self._pick(waiter.model_tag, waiter.allowed, waiter.exclude)
            if node is not None:
                node.in_flight += 1
                waiter.future.set_result(node)
                if not revalidate and not self._any_free():
                    break
                continue
            if revalidate:
                try:
                    self._raise_if_no_candidate(waiter.model_tag, waiter.allowed, waiter.exclude)
                except UpstreamUnavailable as exc:
                    waiter.future.set_exception(exc)
                    continue
            kept.append(waiter)
        kept.extend(waiters)
        self._waiters = kept

    def _any_free(self) -> bool:
        return any(n.up and n.in_flight < n.config.max_concurrency for n in self._nodes.values())

    # --- health ----------------------------------------------------------------------------

    def _new_node(self, config: NodeConfig) -> _Node:
        direct = self._direct(config.url) if self._direct is not None else None
        client = OllamaClient(
            self._http,
            config.url,
            node=config.name,
            first_byte_timeout=self._first_byte_timeout,
            idle_timeout=self._idle_timeout,
            headers=config.headers,
            direct=direct,
        )
        probe = OllamaClient(
            self._http,
            config.url,
            node=config.name,
            first_byte_timeout=self._health_timeout,
            idle_timeout=self._health_timeout,
            headers=config.headers,
            direct=direct,
        )
        return _Node(config, client, probe)

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check_now()
            except Exception:  # a bug here must not stop health checking for good
                logger.exception("node health check round failed")
            await asyncio.sleep(self._health_interval)

    async def _check(self, node: _Node) -> None:
        try:
            version = await read_version(node.probe)
            ps = await node.probe.ps()
        except UpstreamError as exc:
            self._failed(node, exc)
            return
        node.loaded = _loaded_models(ps)
        was_down = not node.up
        self._succeeded(node)
        # Model facts change only when a model is pulled again or Ollama is upgraded: read them anew
        # when the version changes, when the node comes back, for newly watched tags, and every minute.
        now = asyncio.get_running_loop().time()
        stale = (version != node.version or was_down or now - node.models_read_at >= _MODELS_REFRESH)
        node.version = version
        tags = self._watched if stale else self._watched - node.models.keys()
        if tags:
            if stale:
                node.models = {tag: info for tag, info in node.models.items() if tag in self._watched}
                node.models_read_at = now
            await self._read_models(node, tags)

    def _succeeded(self, node: _Node) -> None:
        node.failures = 0
        if not node.up:
            node.up = True
            logger.warning("node %s is up again", node.config.name)
            if node.active:
                self._dispatch()

    def _failed(self, node: _Node, exc: UpstreamError) -> None:
        node.failures += 1
        if node.up and node.failures >= self._fail_threshold:
            node.up = False
            logger.warning("node %s marked down after %d failures: %s", node.config.name, node.failures, exc)
            if node.active:
                self._dispatch(revalidate=True)


class PooledStream:
    """Async context manager returned by `NodePool.open_stream`; holds the node's slot until exit."""

    __slots__ = ("_pool", "_path", "_body", "_model_tag", "_allowed", "_node", "_context")

    def __init__(
        self, pool: NodePool, path: str, body: dict[str, Any], model_tag: str, allowed: frozenset[str] | None
    ) -> None:
        self._pool = pool
        self._path = path
        self._body = body
        self._model_tag = model_tag
        self._allowed = allowed
        self._node: _Node | None = None
        self._context: StreamContext | None = None

    async def __aenter__(self) -> UpstreamStream:
        path, body = self._path, self._body

        async def open_on(node: _Node) -> tuple[StreamContext, UpstreamStream]:
            context = node.client.open_stream(path, body)
            return context, await context.__aenter__()

        (self._context, stream), self._node = await self._pool._with_failover(self._model_tag, self._allowed, open_on)
        return stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context, node = self._context, self._node
        self._context = self._node = None
        if context is None or node is None:
            return
        try:
            await context.__aexit__(exc_type, exc, tb)
        finally:
            self._pool._release(node)


def _allowed(nodes: Sequence[str] | None) -> frozenset[str] | None:
    return None if nodes is None else frozenset(nodes)


@lru_cache(maxsize=1024)
def _normalise(tag: str) -> str:
    """Ollama's spelling of a model reference: lower case, `:latest` when no tag is given."""
    tag = tag.strip().lower()
    return tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"


def _loaded_models(ps: dict[str, Any]) -> set[str]:
    loaded: set[str] = set()
    for model in ps.get("models") or ():
        if isinstance(model, dict):
            name = model.get("model") or model.get("name")
            if isinstance(name, str) and name:
                loaded.add(_normalise(name))
    return loaded
