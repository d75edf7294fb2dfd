"""NUL characters (U+0000) in a request's path or query: a 400 before any route runs (`edge.py`)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from gateway.errors import error_body


def has_nul(scope: Scope) -> str | None:
    """`"path"` or `"query"` when that part of the request holds U+0000 (raw or as `%00`), else None.

    A plain substring test: `%00` is the only spelling of U+0000 in a percent-encoded URL, and this
    runs on every request.
    """
    if "\x00" in scope["path"] or b"%00" in (scope.get("raw_path") or b""):
        return "path"
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return "query"
    return None


def nul_refusal(where: str) -> Response:
    """The 400 `invalid_body` naming the part (`path` or `query`) that holds U+0000."""
    body = error_body("invalid_request_error", "invalid_body",
                      f"The request {where} contains a NUL character (U+0000), which is never valid here.", None)
    return Response(body, status_code=400, media_type="application/json")
