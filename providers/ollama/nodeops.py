"""Operator calls on one Ollama node: inspect it, pull a model with progress, load a model into memory.

These are the native calls behind `privaterouter nodes`, `models check|pull|warm` and their admin
API twins (`research/ollama-api.md` §4; `/api/pull` as Ollama's `PullHandler` streams it). Nothing
here knows the registry: callers pass a node's name and base URL.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from providers.errors import UpstreamError, UpstreamProtocolError, UpstreamStreamError
from providers.ollama.client import OllamaClient, map_errors


@dataclass(frozen=True)
class ResidentModel:
    """A model loaded in a node's memory (one `/api/ps` entry): sizes in bytes, `expires_at` as Ollama wrote it."""

    name: str
    digest: str
    size: int
    size_vram: int
    expires_at: str | None
    context_length: int | None


@dataclass(frozen=True)
class InstalledModel:
    """A model on a node's disk (one `/api/tags` entry): `digest` is bare hex, `size` in bytes."""

    name: str
    digest: str
    size: int


@dataclass(frozen=True)
class NodeInspection:
    """What one round of `/api/version`, `/api/ps` and `/api/tags` found; `error` is set when the node is down.

    `latency_ms` is the round-trip time of `GET /api/version` in milliseconds.
    """

    up: bool
    latency_ms: float | None
    version: str | None
    resident: tuple[ResidentModel, ...]
    installed: tuple[InstalledModel, ...]
    error: str | None = None


@dataclass(frozen=True)
class PullProgress:
    """One line of Ollama's `/api/pull` stream: `status`, plus `digest`/`total`/`completed` (bytes) for a layer."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The line as Ollama sends it (absent fields left out)."""
        line: dict[str, Any] = {"status": self.status}
        for key in ("digest", "total", "completed"):
            value = getattr(self, key)
            if value is not None:
                line[key] = value
        return line


def normalise_tag(tag: str) -> str:
    """Ollama's spelling of a model reference: lower case, `:latest` when no tag is given."""
    tag = tag.strip().lower()
    return tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _resident(ps: dict[str, Any]) -> tuple[ResidentModel, ...]:
    found = []
    for item in ps.get("models") or ():
        if not isinstance(item, dict):
            continue
        name = item.get("model") or item.get("name")
        if not isinstance(name, str) or not name:
            continue
        context = item.get("context_length")
        found.append(ResidentModel(
            name=name, digest=str(item.get("digest") or ""), size=_int(item.get("size")),
            size_vram=_int(item.get("size_vram")), expires_at=item.get("expires_at") or None,
            context_length=context if isinstance(context, int) and not isinstance(context, bool) else None))
    return tuple(found)


def _installed(tags: dict[str, Any]) -> tuple[InstalledModel, ...]:
    found = []
    for item in tags.get("models") or ():
        if not isinstance(item, dict):
            continue
        name = item.get("model") or item.get("name")
        if isinstance(name, str) and name:
            found.append(InstalledModel(name=name, digest=str(item.get("digest") or ""), size=_int(item.get("size"))))
    return tuple(found)


async def inspect(client: OllamaClient) -> NodeInspection:
    """Version (timed), resident and installed models of one node; a failure is reported, never raised."""
    started = time.perf_counter()
    try:
        version = await client.version()
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        ps = await client.ps()
        tags = await client.tags()
    except UpstreamError as exc:
        return NodeInspection(up=False, latency_ms=None, version=None, resident=(), installed=(), error=exc.message)
    text = version.get("version")
    return NodeInspection(up=True, latency_ms=latency_ms, version=text if isinstance(text, str) else None,
                          resident=_resident(ps), installed=_installed(tags))


async def pull(http: httpx.AsyncClient, base_url: str, tag: str, *, node: str, timeout: float = 60.0,
               headers: Sequence[tuple[str, str]] = ()) -> AsyncIterator[PullProgress]:
    """`POST /api/pull` (streaming) for `tag`; yields each progress line, ending with `status: success`.

    Raises `UpstreamStreamError` for an `{"error": ...}` line (e.g. an unknown model), and the usual
    `UpstreamError`s for connection failures and silences longer than `timeout` seconds. Ollama keeps
    partly downloaded layers, so pulling again after a failure resumes where it stopped. `headers`
    are the node's own (models.yaml `headers:`, e.g. an authenticating proxy's token).
    """
    url = base_url.rstrip("/") + "/api/pull"
    request_timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
    with map_errors(node, started=False):
        async with http.stream("POST", url, json={"model": tag, "stream": True}, timeout=request_timeout,
                               headers=list(headers)) as response:
            if not response.is_success:
                body = await response.aread()
                raise UpstreamStreamError(_error_of(body) or f"HTTP {response.status_code}", node)
            finished = False
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    item = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError(f"invalid progress line from upstream: {line[:200]}", node) from None
                if not isinstance(item, dict):
                    raise UpstreamProtocolError("progress line is not a JSON object", node)
                if "error" in item:
                    raise UpstreamStreamError(str(item["error"]), node)
                progress = PullProgress(status=str(item.get("status") or ""),
                                        digest=item.get("digest") if isinstance(item.get("digest"), str) else None,
                                        total=item.get("total") if isinstance(item.get("total"), int) else None,
                                        completed=item.get("completed")
                                        if isinstance(item.get("completed"), int) else None)
                finished = progress.status == "success"
                yield progress
            if not finished:
                raise UpstreamProtocolError("the pull stream ended before `success`", node)


def _error_of(body: bytes) -> str | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace") or None
    return str(value["error"]) if isinstance(value, dict) and "error" in value else None


async def warm(client: OllamaClient, tag: str, *, kind: str, keep_alive: str | int) -> None:
    """Load `tag` into the node's memory for `keep_alive` (Ollama duration or seconds; -1 = forever).

    Chat models get a `/api/chat` without messages (Ollama's "load" reply, §2.4); embedding models
    an `/api/embed` with no input. Raises `UpstreamError` when the node refuses.
    """
    if kind == "embedding":
        await client.embed({"model": tag, "input": [], "keep_alive": keep_alive})
    else:
        await client.chat({"model": tag, "keep_alive": keep_alive})
