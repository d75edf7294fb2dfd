"""`GET /ws`: chat over a WebSocket (protocol and guarantees in `gateway.ws`)."""

from __future__ import annotations

from starlette.routing import WebSocketRoute

from gateway.ws import serve_socket

routes = [WebSocketRoute("/ws", serve_socket)]
