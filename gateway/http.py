"""Small request/response helpers shared by the route modules."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import invalid_body


class JSONResponse(Response):
    """orjson-rendered JSON (faster than the stdlib and exact for our types)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 `invalid_body` that says what is wrong."""
    body = await request.body()
    if not body:
        raise invalid_body("The request body is empty; a JSON object is required.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_body(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid_body("The request body must be a JSON object.")
    if b"\\u0000" in body:  # cheap pre-check: JSON can only carry U+0000 escaped
        _refuse_nul(data, "")
    return data


def _refuse_nul(value: Any, path: str) -> None:
    """400 naming the first field whose key or string value holds U+0000 (PostgreSQL cannot store it)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid_body(f"{path or 'The body'} contains a NUL character (U+0000).", param=path or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                raise invalid_body("A field name contains a NUL character (U+0000).", param=None)
            _refuse_nul(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{path}[{index}]")


def request_id(request: Request) -> str:
    """The id echoed in X-Request-ID (the client's own when it sent one)."""
    return str(request.scope["state"]["request_id"])


def unique_request_id(request: Request) -> str:
    """The gateway's own id of this request: equal to `request_id` unless the client chose that one."""
    return str(request.scope["state"]["unique_request_id"])
