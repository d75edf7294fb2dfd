from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import envelope
from tests.support.control_plane import Login, create_key, record_usage, signup, use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]
EVENT_FIELDS = {"id", "request_id", "model_public_name", "endpoint", "input_tokens", "output_tokens",
                "tokens_estimated", "cost_usd", "latency_ms", "ttft_ms", "status", "error_code", "key_id",
                "created_at"}
DAY1 = datetime(2026, 5, 14, 23, 30, tzinfo=UTC)
DAY2 = datetime(2026, 5, 15, 6, 25, 33, tzinfo=UTC)


@pytest.fixture
async def api(app_client: App) -> App:
    use_cheap_passwords(app_client[0])
    return app_client


async def _history(app: Starlette, login: Login, key_id: str) -> None:
    """Four events over two UTC days, two models, one failure."""
    await record_usage(app, login, created_at=DAY1, key_id=key_id, input_tokens=10, output_tokens=5,
                       cost_pico=2_500_000)
    await record_usage(app, login, created_at=DAY1 + timedelta(minutes=20), model="privaterouter/embed",
                       input_tokens=8, output_tokens=0, cost_pico=400_000)
    await record_usage(app, login, created_at=DAY2, key_id=key_id, input_tokens=14, output_tokens=9,
                       cost_pico=4_100_000)
    await record_usage(app, login, created_at=DAY2 + timedelta(seconds=1), key_id=key_id, status="error",
                       input_tokens=0, output_tokens=0, cost_pico=0)


async def test_lists_events_newest_first_with_seed_fields(api: App) -> None:
    app, client = api
    login = await signup(client)
    _, key = await create_key(client, login)
    await _history(app, login, key["id"])
    page = (await client.get("/api/usage?limit=20", headers=login.headers)).json()
    assert (page["total"], page["limit"], page["offset"]) == (4, 20, 0)
    assert [item["status"] for item in page["items"]] == ["error", "success", "success", "success"]
    newest_success = page["items"][1]
    assert set(newest_success) == EVENT_FIELDS
    assert (newest_success["model_public_name"], newest_success["input_tokens"], newest_success["output_tokens"],
            newest_success["cost_usd"], newest_success["latency_ms"]) == ("privaterouter/fast", 14, 9, "0.0000041",
                                                                          412)
    assert newest_success["created_at"] == "2026-05-15T06:25:33.000000Z"
    assert newest_success["key_id"] == key["id"]
    assert page["items"][0]["error_code"] == "upstream_error" and page["items"][0]["cost_usd"] == "0.00"

    second = (await client.get("/api/usage?limit=2&offset=2", headers=login.headers)).json()
    assert [item["id"] for item in second["items"]] == [item["id"] for item in page["items"][2:]]


async def test_filters(api: App) -> None:
    app, client = api
    login = await signup(client)
    _, key = await create_key(client, login)
    await _history(app, login, key["id"])

    async def count(query: str) -> int:
        response = await client.get(f"/api/usage?{query}", headers=login.headers)
        assert response.status_code == 200, response.text
        assert response.json()["total"] == len(response.json()["items"])
        return int(response.json()["total"])

    assert await count("model=privaterouter/embed") == 1
    assert await count("status=error") == 1
    assert await count("status=success&model=privaterouter/fast") == 2
    assert await count(f"key_id={key['id']}") == 3
    assert await count("since=2026-05-15T00:00:00Z") == 2
    assert await count("until=2026-05-15T00:00:00Z") == 2
    assert await count("since=2026-05-14T23:30:00Z&until=2026-05-14T23:50:00Z") == 1  # since inclusive, until not
    assert await count("since=2026-05-15T08:25:33%2B02:00") == 2  # offsets are honoured
    assert await count("model=privaterouter/nope") == 0


async def test_query_is_validated(api: App) -> None:
    _, client = api
    login = await signup(client)
    for query, param in [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("offset=-3", "offset"),
                         ("status=ok", "status"), ("since=yesterday", "since"), ("until=2026-13-01", "until"),
                         ("since=2026-05-15T00:00:00Z&until=2026-05-14T00:00:00Z", "until")]:
        response = await client.get(f"/api/usage?{query}", headers=login.headers)
        assert response.status_code == 400, query
        assert (envelope(response)["code"], envelope(response)["param"]) == ("invalid_body", param)
    response = await client.get("/api/usage/summary?group_by=hour", headers=login.headers)
    assert response.status_code == 400 and envelope(response)["param"] == "group_by"


async def test_each_user_sees_only_their_own_usage(api: App) -> None:
    app, client = api
    alice, bob = await signup(client), await signup(client)
    await record_usage(app, alice)
    assert (await client.get("/api/usage", headers=bob.headers)).json()["total"] == 0
    summary = (await client.get("/api/usage/summary", headers=bob.headers)).json()
    assert summary["items"] == [] and summary["totals"]["requests"] == 0
    assert (await client.get("/api/usage", headers=alice.headers)).json()["total"] == 1


async def test_summary_by_model_and_by_day(api: App) -> None:
    app, client = api
    login = await signup(client)
    _, key = await create_key(client, login)
    await _history(app, login, key["id"])

    by_model = (await client.get("/api/usage/summary", headers=login.headers)).json()
    assert by_model["group_by"] == "model"
    assert by_model["items"] == [
        {"model": "privaterouter/embed", "requests": 1, "input_tokens": 8, "output_tokens": 0, "cost_usd": "0.0000004"},
        {"model": "privaterouter/fast", "requests": 3, "input_tokens": 24, "output_tokens": 14,
         "cost_usd": "0.0000066"},
    ]
    assert by_model["totals"] == {"requests": 4, "input_tokens": 32, "output_tokens": 14, "cost_usd": "0.000007"}

    by_day = (await client.get("/api/usage/summary?group_by=day", headers=login.headers)).json()
    assert [(item["day"], item["requests"], item["cost_usd"]) for item in by_day["items"]] == [
        ("2026-05-14", 2, "0.0000029"), ("2026-05-15", 2, "0.0000041")]

    period = (await client.get("/api/usage/summary?since=2026-05-15T00:00:00Z&until=2026-05-16T00:00:00Z",
                               headers=login.headers)).json()
    assert period["totals"]["requests"] == 2 and period["since"] == "2026-05-15T00:00:00.000000Z"
