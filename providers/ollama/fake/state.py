"""Per-app mutable state: counters tests read, the recent-request log, and which models are "loaded"."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from .catalogue import Resolved
from .clock import local_time

DEFAULT_KEEP_ALIVE = 300.0
_FOREVER_NS = 292 * 365 * 86_400 * 10**9  # Go's longest time.Duration, roughly


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received (body bytes untouched)."""

    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class FakeStats:
    """Counters of an emulator instance (`create_fake_app(...).stats`).

    "Streams" are inference responses (chat, generate, embed), whether NDJSON or a single JSON object.
    """

    requests: int = 0  # every HTTP request, whatever its outcome
    in_flight: int = 0  # HTTP requests being handled right now
    max_in_flight: int = 0  # high-water mark of in_flight
    completed_streams: int = 0  # inference responses written to the end (a mid-stream error line counts)
    cancelled_streams: int = 0  # inference responses abandoned because the client disconnected (also -hang)
    dropped_connections: int = 0  # connections aborted on purpose by a -drop model
    paths: Counter[str] = field(default_factory=Counter)  # requests per path
    recent: deque[RecordedRequest] = field(default_factory=lambda: deque(maxlen=256))

    def reset(self) -> None:
        """Zero every counter and forget recent requests (in_flight stays true to what is running)."""
        fresh = FakeStats()
        for item in fields(self):
            if item.name != "in_flight":
                setattr(self, item.name, getattr(fresh, item.name))

    def bodies(self, path: str) -> list[Any]:
        """Decoded JSON bodies of the recent requests to `path`, oldest first."""
        return [item.json() for item in self.recent if item.path == path]


class Residency:
    """Which models count as loaded, and until when (what /api/ps reports)."""

    def __init__(self) -> None:
        self._loaded: dict[str, tuple[Resolved, int, int]] = {}  # canonical -> (model, expires ns, num_ctx)

    def touch(self, model: Resolved, keep_alive: float | None, num_ctx: int) -> None:
        """Record a use of `model`; keep_alive 0 unloads it, inf keeps it forever."""
        seconds = DEFAULT_KEEP_ALIVE if keep_alive is None else keep_alive
        if seconds == 0:
            self._loaded.pop(model.canonical, None)
            return
        span = _FOREVER_NS if seconds == float("inf") else int(seconds * 1e9)
        self._loaded[model.canonical] = (model, time.time_ns() + span, num_ctx)

    def unload(self, model: Resolved) -> None:
        self._loaded.pop(model.canonical, None)

    def listing(self) -> list[dict[str, Any]]:
        """The /api/ps entries, longest remaining first; expired models are dropped."""
        now = time.time_ns()
        for name in [name for name, (_, expires, _) in self._loaded.items() if expires <= now]:
            del self._loaded[name]
        entries = sorted(self._loaded.values(), key=lambda item: item[1], reverse=True)
        return [
            {
                "name": model.canonical,
                "model": model.canonical,
                "size": model.spec.size,
                "digest": model.spec.digest,
                "details": model.spec.details(),
                "expires_at": local_time(expires),
                "size_vram": model.spec.size,
                "context_length": num_ctx,
            }
            for model, expires, num_ctx in entries
        ]
