"""ROOT_PATH: serve under a path prefix behind a reverse proxy (e.g. `/api/litellm`, as seed 003 does).

Whether the proxy strips the prefix (`proxy_pass http://gateway/;`) or forwards it as is, the
routes, middleware and handlers inside see the path without it, and `scope["root_path"]` holds
the prefix, so `request.url_for(...)` builds prefixed URLs. Redirects are fixed on the way out:
a `Location` on this host without the prefix gets it (what nginx's `proxy_redirect` would do),
so a page's `RedirectResponse("/login")` and Starlette's trailing-slash redirects stay behind the
proxy.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.settings import SettingsError


def check_root_path(root_path: str, route_paths: Iterable[str]) -> None:
    """Refuse a ROOT_PATH that is, or begins, one of the gateway's own routes (stripping it would be ambiguous)."""
    for path in route_paths:
        if root_path and (path == root_path or path.startswith(root_path + "/")):
            raise SettingsError(f"ROOT_PATH={root_path!r}: shadows the gateway's own route {path}; "
                                "choose a prefix of your own, e.g. /llm or /api/litellm")


def with_prefix(location: str, root_path: str) -> str:
    """`location` with `root_path` in front of its path when it is a path on this host and lacks it."""
    parts = urlsplit(location)
    if parts.path == root_path or parts.path.startswith(root_path + "/") or not parts.path.startswith("/"):
        return location
    if location.startswith("//"):
        return location  # a protocol-relative URL to another host
    return urlunsplit(parts._replace(path=root_path + parts.path))


class RootPathMiddleware:
    """Strips `root_path` from incoming paths (when present), records it, and prefixes outgoing redirects."""

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = self.root_path
        if not root or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == root or path.startswith(root + "/"):
            scope["path"] = path[len(root):] or "/"
            raw = scope.get("raw_path")
            if isinstance(raw, bytes) and raw.startswith(root.encode()):
                scope["raw_path"] = raw[len(root):] or b"/"
        scope["root_path"] = root
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), "")

        async def send_prefixed(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = []
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        location = value.decode("latin-1")
                        target = urlsplit(location)
                        if not target.netloc or target.netloc == host:
                            value = with_prefix(location, root).encode("latin-1")
                    headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_prefixed)
