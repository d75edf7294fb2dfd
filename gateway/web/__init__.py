"""The web face: server-rendered pages (Jinja2, htmx) served by the gateway's own app.

One module per page group; every page calls the same domain functions as the /api routes.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from gateway.web import admin, admin_tools, auth, billing, dashboard, email_pages, keys, playground, usage
from gateway.web.render import STATIC

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
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]
