"""One JSON access-log line per request on the `pr.access` logger (seed 004's fields).

Route handlers may add `user_id`, `model`, `input_tokens` and `output_tokens` to
`scope["state"]`; they are logged when present. Secrets (keys, tokens, bodies) never are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import orjson
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.clientip import client_ip
from gateway.settings import IPNetwork

log = logging.getLogger("pr.access")
UNMATCHED_ROUTE = "<unmatched>"
_EXTRA_FIELDS = ("model", "input_tokens", "output_tokens")


def route_template(scope: Scope) -> str:
    """The matched route's template (`/api/keys/{key_id}`), never the raw path."""
    route = scope.get("route")
    return route.path if isinstance(route, Route) else UNMATCHED_ROUTE


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        self.app = app
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state["client_ip"] = client_ip(scope, self.trusted_proxies)
        status = 500
        sent = 0

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info(self._line(scope, state, status, sent, start))

    @staticmethod
    def _line(scope: Scope, state: dict[str, object], status: int, sent: int, start: float) -> str:
        user_agent = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")[:256]
                break
        record: dict[str, object] = {
            "ts": round(time.time(), 3),
            "request_id": state.get("request_id"),
            "method": scope["method"],
            "route": route_template(scope),
            "raw_path": scope["path"][:512],
            "status": status,
            "latency_ms": round((time.perf_counter() - start) * 1000, 2),
            "user_id": state.get("user_id"),
            "ip": state.get("client_ip"),
            "user_agent": user_agent,
            "bytes": sent,
        }
        if state.get("unique_request_id") != state.get("request_id"):
            record["gateway_request_id"] = state.get("unique_request_id")  # the usage event's request_id
        for key in _EXTRA_FIELDS:
            if key in state:
                record[key] = state[key]
        return orjson.dumps(record).decode()
