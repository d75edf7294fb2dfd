"""Rendering pages: one Jinja2 environment, the shared template context, and the page decorator
that turns login redirects, 404s, CSRF refusals and API errors into HTML answers."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.billing.money import PICO_PER_USD, format_usd
from gateway.errors import GatewayError
from gateway.fields import as_utc
from gateway.web.security import CSRF_FIELD, CsrfRefused, add_security_headers
from gateway.web.session import LoginRequired, PageNotFound, WebSession, current_session, login_url

log = logging.getLogger("pr.web")
HERE = Path(__file__).parent
STATIC = HERE / "static"
HTMX = "htmx-2.0.11.min.js"

if TYPE_CHECKING:
    import jinja2

Handler = Callable[[Request], Awaitable[Response]]


def _fingerprint(name: str) -> str:
    """`/static/name?v=<content hash>`: browsers may cache static files for good, and still see changes."""
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]
    return f"/static/{name}?v={digest}"


def _money(pico: int | None) -> str:
    return "—" if pico is None else "$" + format_usd(pico)


def dollars(pico: int) -> str:
    """$25 for whole dollars, $20.50 otherwise (prices on buttons)."""
    return "$" + (str(pico // PICO_PER_USD) if pico % PICO_PER_USD == 0 else format_usd(pico))


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else as_utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def _epoch(seconds: int) -> str:
    return _when(datetime.fromtimestamp(seconds, UTC))


def _number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


@functools.cache
def environment() -> jinja2.Environment:
    """The pages' Jinja environment, built on the first page: a gateway serving only the API never loads
    Jinja (issue #16: nothing loaded at start that a request never needs)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(money=_money, dollars=dollars, when=_when, number=_number, epoch=_epoch)
    env.globals.update(css=_fingerprint("app.css"), js=_fingerprint("app.js"), htmx=f"/static/{HTMX}",
                       csrf_field=CSRF_FIELD)
    return env


def render(request: Request, template: str, web: WebSession | None, *, status: int = 200,
           **values: Any) -> HTMLResponse:
    """The template rendered with the shared context (`web`, `path`, `csrf`, `root`), with the security headers.

    `root` is ROOT_PATH as the request carries it (`scope["root_path"]`, "" without one): every link, form
    action, asset and fetch in the templates starts with it, so pages work behind a prefixing proxy.
    Redirects need nothing: the edge middleware prefixes every Location on this host.
    """
    html = environment().get_template(template).render(web=web, path=request.url.path, csrf=web.csrf if web else "",
                                             root=root_of(request), **values)
    response = HTMLResponse(html, status_code=status)
    add_security_headers(response)
    return response


def root_of(request: Request) -> str:
    """The path prefix this request came under (ROOT_PATH, recorded by RootPathMiddleware), or ""."""
    return str(request.scope.get("root_path", ""))


def redirect(request: Request, url: str) -> Response:
    """303 See Other (post/redirect/get); htmx gets the same redirect and follows it itself."""
    return add_security_headers(RedirectResponse(url, status_code=303))


def page(handler: Handler) -> Handler:
    """Wrap a page handler: anonymous -> /login?next=, PageNotFound -> 404 page, CSRF -> 403 page,
    a GatewayError that escaped the handler -> an error page with its status and message."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except LoginRequired as needed:
            return redirect(request, login_url(needed.next_path))
        except PageNotFound:
            return await error_page(request, 404, "Page not found", "There is nothing at this address.")
        except CsrfRefused as refused:
            log.warning("web request refused: %s", refused)
            return await error_page(request, 403, "Request refused",
                                    "This form was sent from another site or has expired. Reload the page and "
                                    "try again.")
        except GatewayError as error:
            return await error_page(request, error.status, "Something is not right", error.message)

    return wrapped


async def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", await current_session(request), status=status, title=title,
                  message=message)
