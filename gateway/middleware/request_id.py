"""The request id: the client's own `X-Request-ID` when it is sane, else the gateway's (`edge.py`)."""

from __future__ import annotations

import re

_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")


def client_request_id(value: bytes) -> bytes:
    """`value` when it is a usable id (1-128 of `A-Za-z0-9._:/+=-`), else b"" (the gateway makes one)."""
    return value if _CLIENT_ID.match(value) else b""
