"""ROOT_PATH: serve under a path prefix behind a reverse proxy (e.g. `/api/litellm`, as seed 003 does).

Whether the proxy strips the prefix (`proxy_pass http://gateway/;`) or forwards it as is, the
routes and handlers inside see the path without it, and `scope["root_path"]` holds
the prefix, so `request.url_for(...)` builds prefixed URLs. Redirects are fixed on the way out:
a `Location` on this host without the prefix gets it (what nginx's `proxy_redirect` would do),
so a page's `RedirectResponse("/login")` and Starlette's trailing-slash redirects stay behind the
proxy. `gateway.middleware.edge` does both; this module holds the rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

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


def prefix_redirect(headers: list[tuple[bytes, bytes]], root_path: str, host: str) -> list[tuple[bytes, bytes]]:
    """A redirect's headers with its `Location` prefixed when it points to this host (`host`) without it."""
    fixed = []
    for name, value in headers:
        if name.lower() == b"location":
            location = value.decode("latin-1")
            target = urlsplit(location)
            if not target.netloc or target.netloc == host:
                value = with_prefix(location, root_path).encode("latin-1")
        fixed.append((name, value))
    return fixed
