"""HTTP metrics for every request but `/metrics` and the health probes (pure ASGI, no body buffering).

`route` is the route template (`/api/keys/{key_id}`) or one `<unmatched>` value, so label
cardinality is bounded whatever paths clients send. The template is found before the request runs
(the router's own matching, done once more) so long streams count as in flight from their start.
"""

from __future__ import annotations

import time

from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics, method_label
from gateway.middleware.access_log import UNMATCHED_ROUTE

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


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: dict[tuple[str, str, str], str] = {}

    def _template(self, scope: Scope) -> str:
        key = (scope.get("root_path", ""), scope["path"], scope["method"])
        template = self._templates.get(key)
        if template is None:
            router = getattr(scope.get("app"), "router", None)
            template = match_template(router.routes, scope) if router is not None else UNMATCHED_ROUTE
            if len(self._templates) >= TEMPLATE_CACHE_SIZE:
                self._templates.clear()
            self._templates[key] = template
        return template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        method = method_label(scope["method"])
        route = self._template(scope)
        status = 500
        metrics = self.metrics
        in_flight = metrics.http_in_flight.labels(method, route)

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, observed_send)
        except Exception as exc:
            metrics.http_exceptions.labels(method, route, type(exc).__name__).inc()
            raise
        finally:
            elapsed = time.perf_counter() - start
            in_flight.dec()
            labels = (method, route, str(status))
            metrics.http_requests.labels(*labels).inc()
            metrics.http_duration.labels(*labels).observe(elapsed)
