"""The web face: server-rendered pages (Jinja2, htmx) served by the gateway's own app.

One module per page group; every page calls the same domain functions as the /api routes.
"""

from __future__ import annotations

import os

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from gateway.web import admin, admin_tools, auth, billing, dashboard, email_pages, keys, playground, usage
from gateway.web.render import STATIC

STATIC_PREFIX = "/static"


class PrefixedStaticFiles(StaticFiles):
    """StaticFiles under ROOT_PATH too. The edge middleware strips the prefix from `path` and records it in
    `root_path`; Starlette's StaticFiles expects `path` to still begin with `root_path` (the mount's), and
    under a prefix it would look for `static/static/...`. Our path is always `/static/<file>` here."""

    def get_path(self, scope: Scope) -> str:
        path: str = scope["path"]
        relative = path[len(STATIC_PREFIX):] if path.startswith(STATIC_PREFIX + "/") else path
        return os.path.normpath(os.path.join(*relative.split("/")))


routes: list[BaseRoute] = [
    *auth.routes,
    *email_pages.routes,
    *dashboard.routes,
    *keys.routes,
    *billing.routes,
    *usage.routes,
    *playground.routes,
    *admin.routes,
    *admin_tools.routes,
    Mount(STATIC_PREFIX, app=PrefixedStaticFiles(directory=STATIC), name="static"),
]
