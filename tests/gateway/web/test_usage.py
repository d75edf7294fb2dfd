"""/usage: filters, keyset pagination, per-model totals, CSV of the filtered rows; only one's own events."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import httpx
from starlette.applications import Starlette

from tests.support.control_plane import Login
from tests.support.control_plane import record_usage as record
from tests.support.web import other_client, text_of, web_signup

App = tuple[Starlette, httpx.AsyncClient]


def _login(user_id: str) -> Login:
    return Login(user_id=user_id, email="", token="")


def _rows(page: httpx.Response) -> list[str]:
    """The request ids of the table's rows (an empty table has one placeholder row, id "")."""
    body = page.text.split('<table id="usage-table">')[1].split("<tbody>")[1].split("</tbody>")[0]
    return [found or "" for found in re.findall(r'<tr(?: data-request-id="([^"]+)")?>', body)]


async def test_lists_filters_and_totals_by_model(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    login = _login(user.user_id)
    now = datetime.now(UTC)
    await record(app, login, model="privaterouter/fast", cost_pico=4_100_000, created_at=now)
    await record(app, login, model="privaterouter/embed", cost_pico=700_000, input_tokens=7, output_tokens=0,
                 created_at=now - timedelta(days=3))
    await record(app, login, model="privaterouter/fast", status="error", cost_pico=0, input_tokens=0,
                 output_tokens=0, created_at=now - timedelta(days=10))
    page = await client.get("/usage?since=")  # all time
    assert page.status_code == 200 and len(_rows(page)) == 3
    text = text_of(page)
    assert "3 matching" in text
    assert "privaterouter/embed 1 7 0 $0.0000007" in text and "privaterouter/fast 2 14 9 $0.0000041" in text
    errors = await client.get("/usage?since=&status=error")
    assert len(_rows(errors)) == 1 and "upstream_error" in errors.text
    fast = await client.get("/usage?since=&model=privaterouter/fast")
    assert len(_rows(fast)) == 2
    since = (now - timedelta(days=5)).date().isoformat()
    recent = await client.get(f"/usage?since={since}&until={now.date().isoformat()}")
    assert len(_rows(recent)) == 2  # `until` is the last day included
    bad = await client.get("/usage?since=yesterday&status=maybe")
    assert bad.status_code == 400
    assert 'id="e-since">Use a date such as 2026-05-15.' in bad.text and "Choose one of success" in bad.text


async def test_keyset_pages_cover_every_row_once(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    start = datetime.now(UTC) - timedelta(hours=1)
    for index in range(57):  # a few share a timestamp: the cursor breaks ties by id
        await record(app, _login(user.user_id), created_at=start + timedelta(seconds=index // 3), charge=False)
    first = await client.get("/usage?since=&model=privaterouter/fast")
    assert len(_rows(first)) == 50
    found = re.search(r'href="(/usage\?[^"]*after=[^"]+)" rel="next"', first.text)
    assert found is not None
    next_url = found.group(1).replace("&amp;", "&")
    assert "model=privaterouter%2Ffast" in next_url and "since=&" in next_url
    second = await client.get(next_url)
    assert len(_rows(second)) == 7 and 'rel="next"' not in second.text and "Newest" in second.text
    assert len(set(_rows(first)) | set(_rows(second))) == 57
    assert (await client.get("/usage?after=garbage")).status_code == 400


async def test_csv_exports_all_filtered_rows(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    for index in range(3):
        await record(app, _login(user.user_id), cost_pico=1_000_000 * (index + 1), charge=False)
    await record(app, _login(user.user_id), model="privaterouter/embed", charge=False)
    response = await client.get("/usage.csv?since=&model=privaterouter/fast")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 3 and {row["model"] for row in rows} == {"privaterouter/fast"}
    assert sorted(row["cost_usd"] for row in rows) == ["0.000001", "0.000002", "0.000003"]
    assert {row["key"] for row in rows} == {"playground"}
    assert (await client.get("/usage.csv?since=nope")).status_code == 400


async def test_a_user_never_sees_another_users_usage(web: App) -> None:
    app, client = web
    owner = await web_signup(client, app)
    await record(app, _login(owner.user_id), model="privaterouter/qwen-pro", charge=False)
    async with other_client(app) as browser:
        await web_signup(browser, app)
        page = await browser.get("/usage")
        assert "0 matching" in text_of(page) and _rows(page) == [""] and "No requests yet" in page.text
        exported = await browser.get("/usage.csv")
        assert exported.text.strip().count("\n") == 0  # the header only


async def test_without_dates_the_page_shows_the_current_month(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await record(app, _login(user.user_id), created_at=now, charge=False)
    await record(app, _login(user.user_id), created_at=month_start - timedelta(seconds=1), charge=False)
    page = await client.get("/usage")
    assert len(_rows(page)) == 1 and f'value="{month_start.date().isoformat()}"' in page.text
    assert len(_rows(await client.get("/usage?since="))) == 2


async def test_the_last_representable_day_is_a_valid_filter_not_a_500(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    await record(app, _login(user.user_id), model="privaterouter/fast")
    for path in ("/usage?since=0001-01-01&until=9999-12-31", "/usage?until=9999-12-31"):
        page = await client.get(path)
        assert page.status_code == 200
        assert len(_rows(page)) == 1
    assert (await client.get("/usage.csv?since=0001-01-01&until=9999-12-31")).status_code == 200
