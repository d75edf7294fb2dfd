"""Every form control on every page has a label (WCAG 1.3.1 / 4.1.2), and no control is taken out of
the keyboard's reach."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
from starlette.applications import Starlette

from tests.support.web import web_signup

App = tuple[Starlette, httpx.AsyncClient]
USER_PAGES = ["/dashboard", "/keys", "/billing", "/usage", "/models", "/playground", "/logout"]
ADMIN_PAGES = ["/admin", "/admin/users", "/admin/nodes", "/admin/registry"]


class Controls(HTMLParser):
    """Collects form controls, the ids labels point to, and controls wrapped in a label."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.in_label = 0
        self.unreachable: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("tabindex", "0") not in ("0", None):
            self.unreachable.append(f"{tag} tabindex={values['tabindex']}")
        if tag == "label":
            self.in_label += 1
            if values.get("for"):
                self.label_for.add(str(values["for"]))
        if tag in ("input", "select", "textarea") and values.get("type") not in ("hidden", "submit"):
            self.controls.append({**values, "_wrapped": "yes" if self.in_label else None})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.in_label -= 1


def _unlabelled(page: httpx.Response) -> list[str]:
    parser = Controls()
    parser.feed(page.text)
    assert not parser.unreachable, parser.unreachable
    return [str(control.get("name") or control.get("id")) for control in parser.controls
            if not control["_wrapped"] and control.get("id") not in parser.label_for
            and not control.get("aria-label")]


async def test_every_control_has_a_label(web: App) -> None:
    app, client = web
    for path in ("/login", "/signup"):
        assert _unlabelled(await client.get(path)) == [], path
    user = await web_signup(client, app, admin=True)
    await client.post("/keys", data={"csrf_token": user.csrf, "name": "k"})
    for path in USER_PAGES + ADMIN_PAGES + [f"/admin/users/{user.user_id}"]:
        page = await client.get(path)
        assert page.status_code == 200, path
        assert _unlabelled(page) == [], path
