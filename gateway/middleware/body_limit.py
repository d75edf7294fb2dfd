"""The request-body limit (413 `request_too_large`) and deadline (408 `request_timeout`), enforced by
`gateway.middleware.edge`.

Routes anyone may call without a credential (`/api/auth/*`: sign-up, login) get a much smaller
limit (64 KiB): their bodies are a few fields, and nobody should make us buffer 10 MB for free.
A body must also arrive within BODY_TIMEOUT seconds of the first read (408 after), so a client
trickling its body cannot hold a connection and a task forever.
"""

from __future__ import annotations

from starlette.responses import Response

from gateway.errors import error_body

UNAUTHENTICATED_PREFIXES = ("/api/auth/",)
UNAUTHENTICATED_MAX_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """Raised from `receive` when the body read so far exceeds `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class BodyTooSlow(Exception):
    """Raised from `receive` when the body has not arrived by its deadline."""


def refusal(limit: int, *, status: int = 413, code: str = "request_too_large",
            message: str | None = None) -> Response:
    """The answer refusing a body (the connection is closed after it: the rest of the body is unread)."""
    body = error_body("invalid_request_error", code,
                      message or f"The request body is larger than the limit of {limit} bytes.", None)
    return Response(body, status_code=status, media_type="application/json", headers={"connection": "close"})
