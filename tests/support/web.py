"""Driving the HTML pages from tests: sign-up through the form (the cookie stays in the client's jar)
and the CSRF token read from a page, as a browser would."""

from __future__ import annotations

import html
import itertools
import re
import uuid
from dataclasses import dataclass

import httpx
import sqlalchemy as sa
from sqlmodel import col
from starlette.applications import Starlette

from tests.support.control_plane import PASSWORD, ctx

_numbers = itertools.count(1)
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


@dataclass(frozen=True)
class WebUser:
    email: str
    user_id: str
    csrf: str


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


def text_of(page: httpx.Response) -> str:
    """The page's visible text, roughly: tags removed, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text)).split())


async def web_signup(client: httpx.AsyncClient, app: Starlette, email: str | None = None, *,
                     admin: bool = False) -> WebUser:
    """Sign up through /signup (the client keeps the session cookie); optionally promote to admin."""
    from gateway.db.models import User

    email = email or f"web{next(_numbers)}-{uuid.uuid4().hex[:6]}@example.com"
    response = await client.post("/signup", data={"email": email, "password": PASSWORD, "name": "Web"})
    assert response.status_code == 303, response.text
    async with ctx(app).sessions() as session:
        user = (await session.execute(sa.select(User).where(col(User.email) == email))).scalar_one()
        if admin:
            user.role = "admin"
            await session.commit()
        user_id = user.id
    page = await client.get("/dashboard")
    return WebUser(email=email, user_id=user_id, csrf=csrf_of(page))


def other_client(app: Starlette, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A second browser (its own cookie jar) on the same app."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 50001)),
                             base_url="http://testserver")
