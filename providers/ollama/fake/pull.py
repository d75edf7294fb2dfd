"""`POST /api/pull` and `DELETE /api/delete`: which models are on the emulator's "disk".

Every catalogue model starts installed. `/api/delete` removes one (it disappears from `/api/tags`);
`/api/pull` puts it back, streaming progress the way Ollama's `PullHandler` does::

    {"status":"pulling manifest"}
    {"status":"pulling 6a0746a1ec1a","digest":"sha256:6a07...","total":2019377376}
    {"status":"pulling 6a0746a1ec1a","digest":"sha256:6a07...","total":2019377376,"completed":252422172}
    ...
    {"status":"verifying sha256 digest"}
    {"status":"writing manifest"}
    {"status":"success"}

A layer's status names the first 12 hex digits of its digest. Bytes received before a client
disconnects are kept (as Ollama keeps partial blob files), so the next pull resumes there.
An unknown model is an `{"error": ...}` line with status 200 when streaming, a 500 otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from dataclasses import dataclass, field

import orjson

from . import decode
from .asgi import NDJSON_TYPE, ClientWatch, FakeError, Receive, Send, chunk, send_json, start
from .catalogue import Resolved
from .runtime import Runtime

MANIFEST_UNKNOWN = "pull model manifest: file does not exist"
STEPS_PER_LAYER = 8  # progress lines per fully downloaded layer


@dataclass
class Disk:
    """Deleted models (by base name) and partial layer downloads (digest -> bytes received)."""

    removed: set[str] = field(default_factory=set)
    partial: dict[str, int] = field(default_factory=dict)


_DISKS: weakref.WeakKeyDictionary[Runtime, Disk] = weakref.WeakKeyDictionary()


def disk(rt: Runtime) -> Disk:
    """The disk state of one emulator instance."""
    found = _DISKS.get(rt)
    if found is None:
        found = _DISKS[rt] = Disk()
    return found


def _layers(model: Resolved) -> list[tuple[str, int]]:
    """(hex digest, size in bytes) of the model's blobs: weights, template, parameters, licence."""
    spec = model.spec
    small = [hashlib.sha256(f"fake-ollama/{spec.name}/{part}".encode()).hexdigest() for part in
             ("template", "params", "license")]
    return [(spec.digest, spec.size), (small[0], len(spec.template.encode()) + 1), (small[1], 96 + len(spec.name)),
            (small[2], 11_357)]


def _requested(body: bytes) -> str:
    request = decode.parse_object(body, "api.PullRequest")
    name = decode.string(request, "model", "PullRequest") or decode.string(request, "name", "PullRequest")
    decode.boolean(request, "insecure", "PullRequest")
    if not name:
        raise FakeError(400, "model is required")
    return name


async def pull(rt: Runtime, body: bytes, send: Send, receive: Receive) -> None:
    """POST /api/pull."""
    request = decode.parse_object(body, "api.PullRequest")
    streaming = decode.boolean(request, "stream", "PullRequest") is not False
    name = _requested(body)
    model = rt.lookup(name)
    if not streaming:
        if model is None:
            raise FakeError(500, MANIFEST_UNKNOWN)
        _complete(rt, model)
        await send_json(send, 200, {"status": "success"})
        return
    await send(start(200, NDJSON_TYPE))
    if model is None:
        await send(chunk(orjson.dumps({"error": MANIFEST_UNKNOWN}) + b"\n", False))
        return
    watch = ClientWatch(receive)
    state = disk(rt)
    try:
        await _line(send, {"status": "pulling manifest"})
        for digest, total in _layers(model):
            status = f"pulling {digest[:12]}"
            have = total if model.spec.name not in state.removed else state.partial.get(digest, 0)
            await _line(send, {"status": status, "digest": f"sha256:{digest}", "total": total})
            step = max(total // STEPS_PER_LAYER, 1)
            while have < total:
                await asyncio.sleep(rt.config.token_delay)
                have = min(have + step, total)
                state.partial[digest] = have
                await _line(send, {"status": status, "digest": f"sha256:{digest}", "total": total,
                                   "completed": have})
            if have == total:
                await _line(send, {"status": status, "digest": f"sha256:{digest}", "total": total,
                                   "completed": total})
        await _line(send, {"status": "verifying sha256 digest"})
        await _line(send, {"status": "writing manifest"})
        _complete(rt, model)
        watch.close()
        await send(chunk(orjson.dumps({"status": "success"}) + b"\n", False))
    except asyncio.CancelledError:
        if watch.absorb():
            rt.stats.cancelled_streams += 1
            return
        raise
    finally:
        watch.close()


def _complete(rt: Runtime, model: Resolved) -> None:
    state = disk(rt)
    state.removed.discard(model.spec.name)
    for digest, _ in _layers(model):
        state.partial.pop(digest, None)


async def _line(send: Send, payload: dict[str, object]) -> None:
    await send(chunk(orjson.dumps(payload) + b"\n", True))


async def delete(rt: Runtime, body: bytes, send: Send, receive: Receive) -> None:
    """DELETE /api/delete: 200 with an empty body, or 404 `model '<name>' not found`."""
    name = _requested(body)
    model = rt.lookup(name)
    state = disk(rt)
    if model is None or model.spec.name in state.removed:
        normalised = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
        raise FakeError(404, f"model '{normalised}' not found")
    state.removed.add(model.spec.name)
    for digest, _ in _layers(model):
        state.partial.pop(digest, None)
    await send(start(200, b"text/plain; charset=utf-8", 0))
    await send(chunk(b"", False))


def installed(rt: Runtime, name: str) -> bool:
    """Whether catalogue model `name` (base name) is on the disk."""
    return name not in disk(rt).removed
