"""Refuses a request whose path or query string holds U+0000, before any route sees it.

PostgreSQL cannot store or compare U+0000 in text (SQLSTATE 22021), so an id, a filter or a search
term carrying it would fail inside the database — a 500 — instead of being a bad request. Bodies are
checked where they are parsed (`gateway.http.read_json`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

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


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (where := has_nul(scope)) is not None:
            body = error_body("invalid_request_error", "invalid_body",
                              f"The request {where} contains a NUL character (U+0000), which is never valid here.",
                              None)
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
