"""Serve an ASGI app on a real loopback socket (uvicorn in a thread, port 0)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot install signal handlers
        pass


def _bound_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextmanager
def serve_app(app: Any, host: str = "127.0.0.1", **config: Any) -> Iterator[str]:
    """Run `app` under uvicorn on an ephemeral loopback port; yield its base URL."""
    sock = _bound_socket(host)
    port = sock.getsockname()[1]
    server = _ThreadServer(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@asynccontextmanager
async def aserve_app(app: Any, host: str = "127.0.0.1", **config: Any) -> AsyncIterator[str]:
    """Async-friendly wrapper of `serve_app` (the server still runs in its own thread)."""
    with serve_app(app, host, **config) as url:
        yield url
