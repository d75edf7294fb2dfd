"""`GET /openapi.json` (the OpenAPI 3.1 document) and `GET /docs` (Redoc, vendored: no CDN)."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.http import JSONResponse
from gateway.openapi.document import document

VIEWER = "redoc-2.5.2.standalone.js"  # npm redoc@2.5.2, bundles/redoc.standalone.js (MIT)
_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PrivateRouter API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json" disable-search="false"></redoc>
<script src="/docs/{VIEWER}"></script></body></html>
"""


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


async def docs_page(request: Request) -> Response:
    return HTMLResponse(_PAGE, headers={"cache-control": "no-cache"})


async def viewer(request: Request) -> Response:
    script = resources.files("gateway.openapi").joinpath("static", VIEWER).read_bytes()
    return Response(script, media_type="application/javascript", headers={"cache-control": "public, max-age=86400"})


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Route(f"/docs/{VIEWER}", viewer, methods=["GET"]),
]
