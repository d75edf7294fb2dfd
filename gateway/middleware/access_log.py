"""One JSON access-log line per request on the `pr.access` logger (seed 004's fields).

Written by `gateway.middleware.edge`. Route handlers may add `user_id`, `model`, `input_tokens` and
`output_tokens` to `scope["state"]`; they are logged when present. Secrets (keys, tokens, bodies,
query strings) never are.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.types import Scope

log = logging.getLogger("pr.access")
_EXTRA_FIELDS = ("model", "input_tokens", "output_tokens")


def access_line(scope: Scope, state: dict[str, Any], route: str, status: int, sent: int, elapsed: float) -> str:
    """The line of one request: `route` is its template, `sent` the body bytes answered, `elapsed` seconds."""
    user_agent = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value.decode("latin-1")[:256]
            break
    record: dict[str, object] = {
        "ts": round(time.time(), 3),
        "request_id": state.get("request_id"),
        "method": scope["method"],
        "route": route,
        "raw_path": scope["path"][:512],
        "status": status,
        "latency_ms": round(elapsed * 1000, 2),
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
