"""Assemble the OpenAPI 3.1 document from `operations.OPERATIONS` and `schemas.COMPONENTS`."""

from __future__ import annotations

from functools import cache
from typing import Any

from gateway import __version__
from gateway.openapi.operations import OPERATIONS
from gateway.openapi.schemas import COMPONENTS


@cache
def document() -> dict[str, Any]:
    """The whole document (built once; it depends on code only, not on the registry)."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, route_path), operation in sorted(OPERATIONS.items(), key=lambda item: (item[0][1], item[0][0])):
        paths.setdefault(route_path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "PrivateRouter", "version": __version__,
                 "description": "OpenAI-compatible, metered gateway in front of Ollama nodes. Every error is "
                                "OpenAI's envelope `{\"error\": {\"message\", \"type\", \"code\", \"param\"}}`. "
                                "Chat over a WebSocket (`/ws`, an API key in the first message) has no "
                                "OpenAPI form: see AGENTS.md."},
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "api_key": {"type": "http", "scheme": "bearer", "description": "An `sk-pr-...` key (/v1 only)."},
                "session": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                            "description": "A session token from /api/auth/login (/api only)."},
                "session_cookie": {"type": "apiKey", "in": "cookie", "name": "pr_session",
                                   "description": "The session cookie; unsafe methods must be same-origin JSON."},
            },
        },
    }
