"""The emulator as one raw-ASGI callable: a dict from (method, path) to handler, no router."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import uvicorn

from . import embed, inference, info, pull
from .asgi import TEXT_TYPE, ClientGone, FakeError, Receive, Scope, Send, read_body, send_bytes, send_error
from .config import FakeConfig
from .emit import Abort
from .runtime import Runtime
from .state import FakeStats, RecordedRequest

Handler = Callable[[Runtime, bytes, Send, Receive], Awaitable[None]]

_ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/"): info.root,
    ("HEAD", "/"): info.root,
    ("GET", "/api/version"): info.version,
    ("HEAD", "/api/version"): info.version,
    ("GET", "/api/tags"): info.tags,
    ("HEAD", "/api/tags"): info.tags,
    ("GET", "/api/ps"): info.ps,
    ("POST", "/api/show"): info.show,
    ("POST", "/api/chat"): inference.chat,
    ("POST", "/api/generate"): inference.generate_handler,
    ("POST", "/api/embed"): embed.embed,
    ("POST", "/api/embeddings"): embed.embeddings,
    ("POST", "/api/pull"): pull.pull,
    ("DELETE", "/api/delete"): pull.delete,
}
_PATHS = frozenset(path for _, path in _ROUTES)
_INCOMPLETE = "ASGI callable returned without completing response"
# Set in the request's own task when a -drop model leaves its response unfinished on purpose; the
# server logs from that same task right after, so only those deliberate drops are kept quiet.
_DROPPING: ContextVar[bool] = ContextVar("fake_ollama_dropping", default=False)


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_DROPPING.get() and record.getMessage().startswith(_INCOMPLETE))


def _quiet_deliberate_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _QuietDrops) for existing in logger.filters):
        logger.addFilter(_QuietDrops())


class FakeOllamaApp:
    """An ASGI app that answers like Ollama's native API; `stats` counts what happened."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.stats = FakeStats()
        self.runtime = Runtime(config, self.stats)
        _quiet_deliberate_drops()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        method: str = scope["method"]
        path: str = scope["path"]
        stats.requests += 1
        stats.paths[path] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            handler = _ROUTES.get((method, path))
            if handler is None:
                if path in _PATHS:
                    await send_bytes(send, 405, TEXT_TYPE, b"405 method not allowed")
                else:
                    await send_bytes(send, 404, TEXT_TYPE, b"404 page not found")
                return
            body = await read_body(receive)
            stats.recent.append(RecordedRequest(method, path, body))
            await handler(self.runtime, body, send, receive)
        except FakeError as error:
            await send_error(send, error.status, error.message)
        except Abort:
            _DROPPING.set(True)  # returning with the response unfinished makes the server drop the connection
        except ClientGone:
            pass
        finally:
            stats.in_flight -= 1


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_fake_app(config: FakeConfig | None = None) -> FakeOllamaApp:
    """A fresh emulator (its own counters and residency) as an ASGI app."""
    return FakeOllamaApp(config or FakeConfig())


def run_fake(host: str, port: int, config: FakeConfig) -> None:
    """Serve the emulator with uvicorn until interrupted (`privaterouter fake-ollama`)."""
    uvicorn.run(create_fake_app(config), host=host, port=port, log_level="warning", access_log=False,
                lifespan="on")
