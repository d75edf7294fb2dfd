"""Route templates for HTTP metrics and the access log, and which paths are not counted (`edge.py`).

`route` is the route template (`/api/keys/{key_id}`) or one `<unmatched>` value, so label
cardinality is bounded whatever paths clients send. The template is found before the request runs
(the router's own matching, done once more, then cached) so long streams count as in flight from
their start.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

UNMATCHED_ROUTE = "<unmatched>"
EXCLUDED_PATHS = frozenset({"/metrics", "/health"})
EXCLUDED_PREFIX = "/health/"
# Templates by (root_path, path, method): the hot paths then skip matching. Emptied when full, so a
# scan of random paths costs a re-match, never memory.
TEMPLATE_CACHE_SIZE = 4096


def is_excluded(path: str) -> bool:
    """True for paths whose requests are not counted (scrapes and probes would drown real traffic)."""
    return path in EXCLUDED_PATHS or path.startswith(EXCLUDED_PREFIX)


def match_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The template of the route the router will pick (full match first, then method mismatch)."""
    partial: str | None = None
    for route in routes:
        match, child_scope = route.matches(scope)
        if match == Match.FULL:
            if isinstance(route, Route):
                return route.path
            if isinstance(route, Mount):
                inner = match_template(route.routes, {**scope, **child_scope})
                return inner if inner == UNMATCHED_ROUTE else route.path + inner
            return UNMATCHED_ROUTE
        if match == Match.PARTIAL and partial is None and isinstance(route, Route):
            partial = route.path
    return partial or UNMATCHED_ROUTE


class TemplateCache:
    """`template(scope)`: the route template of a request, matched once per (root_path, path, method)."""

    def __init__(self) -> None:
        self.templates: dict[tuple[str, str, str], str] = {}

    def template(self, scope: Scope) -> str:
        key = (scope.get("root_path", ""), scope["path"], scope["method"])
        template = self.templates.get(key)
        if template is None:
            router = getattr(scope.get("app"), "router", None)
            template = match_template(router.routes, scope) if router is not None else UNMATCHED_ROUTE
            if len(self.templates) >= TEMPLATE_CACHE_SIZE:
                self.templates.clear()
            self.templates[key] = template
        return template
