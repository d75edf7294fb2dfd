"""gateway.usage_export and its two faces (CLI, admin API): 100,000 events, streamed in keyset pages."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import usage_export
from gateway.db.models import UsageEvent
from gateway.usage_export import ExportQuery
from tests.support.accounts import make_account

START = datetime(2026, 10, 1, tzinfo=UTC)
EVENTS = 100_000


async def _bulk_events(sessions: async_sessionmaker[AsyncSession], user_id: str, account_id: str, count: int,
                       *, start: datetime = START, step: timedelta = timedelta(seconds=30)) -> None:
    """`count` events, `step` apart from `start`, cost = index pico-USD; bulk INSERTs of 10,000 rows."""
    batch = 10_000
    prefix = uuid.uuid4().hex[:8]
    async with sessions() as session:
        for first in range(0, count, batch):
            rows = [{"request_id": f"{prefix}-{index}", "account_id": account_id, "user_id": user_id,
                     "model_public_name": "privaterouter/fast", "ollama_tag": "gemma4:latest", "node": "gpu-1",
                     "endpoint": "chat", "input_tokens": 10, "output_tokens": index % 50, "cost_pico": index,
                     "latency_ms": 5, "status": "success", "created_at": start + step * index}
                    for index in range(first, min(first + batch, count))]
            await session.execute(sa.insert(UsageEvent), rows)
        await session.commit()


async def test_hundred_thousand_events_stream_in_pages(sessions: async_sessionmaker[AsyncSession]) -> None:
    user_id, account_id, _ = await make_account(sessions, credits_pico=0)
    await _bulk_events(sessions, user_id, account_id, EVENTS)
    selects = 0
    engine = sessions.kw["bind"]

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal selects
        selects += statement.lstrip().upper().startswith("SELECT")

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    query = ExportQuery(since=START, until=START + timedelta(days=400))
    total_cost = 0
    seen = 0
    previous = ""
    async for chunk in usage_export.lines(sessions, query, "jsonl", page_size=5000):
        for line in chunk.splitlines():
            row = orjson.loads(line)
            assert row["created_at"] > previous  # oldest first, no duplicates
            previous = row["created_at"]
            total_cost += int(Decimal(row["cost_usd"]) * 10**12)
            seen += 1
    event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert seen == EVENTS
    assert total_cost == EVENTS * (EVENTS - 1) // 2  # every pico accounted for, exactly
    assert selects >= EVENTS // 5000  # one SELECT per page: never the whole period at once


async def test_csv_range_and_user_filter(sessions: async_sessionmaker[AsyncSession]) -> None:
    first = await make_account(sessions, credits_pico=0)
    second = await make_account(sessions, credits_pico=0)
    await _bulk_events(sessions, first[0], first[1], 10, step=timedelta(days=1))
    await _bulk_events(sessions, second[0], second[1], 10, step=timedelta(days=1))
    query = ExportQuery(since=START + timedelta(days=2), until=START + timedelta(days=5),
                        email=f"{first[0]}@example.com")
    text = b"".join([chunk async for chunk in usage_export.lines(sessions, query, "csv", page_size=2)]).decode()
    table = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == list(usage_export.COLUMNS)
    assert [row["created_at"] for row in table] == [f"2026-10-0{day}T00:00:00.000000Z" for day in (3, 4, 5)]
    assert {row["user_email"] for row in table} == {f"{first[0]}@example.com"}
    assert [row["cost_usd"] for row in table] == ["0.000000000002", "0.000000000003", "0.000000000004"]
    with pytest.raises(usage_export.UnknownUser):
        _ = [chunk async for chunk in usage_export.lines(sessions, ExportQuery(START, START, "x@y.z"), "csv")]


async def _seed(database_url: str, count: int) -> str:
    from gateway.db.engine import create_engine, session_factory

    engine = create_engine(database_url)
    try:
        user_id, account_id, _ = await make_account(session_factory(engine), credits_pico=0)
        await _bulk_events(session_factory(engine), user_id, account_id, count, step=timedelta(hours=1))
    finally:
        await engine.dispose()
    return f"{user_id}@example.com"


def test_cli_export_to_stdout_and_file(database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                       capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    import asyncio

    from gateway.cli import main

    email = asyncio.run(_seed(database_url, 30))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("JWT_SECRET", "j" * 40)
    monkeypatch.setenv("APP_SECRET_KEY", "a" * 40)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert main(["usage", "export", "--from", "2026-10-01", "--to", "2026-10-02", "--format", "jsonl",
                 "--user", email]) == 0
    captured = capsysbinary.readouterr()
    rows = [orjson.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 24 and rows[0]["user_email"] == email and rows[-1]["created_at"].startswith("2026-10-01T23")
    assert b"exported 24 usage events" in captured.err
    out = tmp_path / "usage.csv"
    assert main(["usage", "export", "--from", "2026-10-01", "--to", "2026-11-01", "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 31  # header + 30
    assert main(["usage", "export", "--from", "2026-10-01", "--to", "2026-11-01", "--user", "no@one.example"]) == 1
    assert b"No user has the email" in capsysbinary.readouterr().err
    assert main(["usage", "export", "--from", "yesterday", "--to", "2026-11-01"]) == 1
    assert b"--from must be an ISO 8601 time" in capsysbinary.readouterr().err


async def test_admin_api_export(app_client: Any) -> None:
    from tests.conftest import envelope
    from tests.support.control_plane import ctx, make_admin, signup, use_cheap_passwords

    app, client = app_client
    use_cheap_passwords(app)
    admin = await make_admin(app, client)
    user_id, account_id, _ = await make_account(ctx(app).sessions, credits_pico=0)
    await _bulk_events(ctx(app).sessions, user_id, account_id, 12, step=timedelta(hours=1))
    response = await client.get("/api/admin/usage/export?from=2026-10-01&to=2026-10-02&format=jsonl",
                                headers=admin.headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"] == 'attachment; filename="usage-20261001-20261002.jsonl"'
    assert len(response.text.splitlines()) == 12
    as_csv = await client.get("/api/admin/usage/export?from=2026-10-01&to=2026-10-02", headers=admin.headers)
    assert as_csv.headers["content-type"].startswith("text/csv") and len(as_csv.text.splitlines()) == 13
    for query, status, param in [("from=2026-10-01", 400, "to"), ("from=x&to=2026-10-02", 400, "from"),
                                 ("from=2026-10-02&to=2026-10-01", 400, "to"),
                                 ("from=2026-10-01&to=9999-12-31T23:59:59-01:00", 400, "to"),
                                 ("from=2026-10-01&to=2026-10-02&format=xml", 400, "format"),
                                 ("from=2026-10-01&to=2026-10-02&user=no@one.example", 404, "user")]:
        bad = await client.get(f"/api/admin/usage/export?{query}", headers=admin.headers)
        assert (bad.status_code, envelope(bad)["param"]) == (status, param), query
    user = await signup(client)
    assert (await client.get("/api/admin/usage/export?from=2026-10-01&to=2026-10-02",
                             headers=user.headers)).status_code == 403


def test_cli_export_into_a_closed_pipe_ends_quietly(database_url: str, tmp_path: Any) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    asyncio.run(_seed(database_url, 20_000))
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": "j" * 40, "APP_SECRET_KEY": "a" * 40,
           "DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "usage", "export", "--from", "2026-01-01",
                                "--to", "2027-01-01", "--format", "jsonl"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert orjson.loads(process.stdout.readline())["model"] == "privaterouter/fast"
    process.stdout.close()  # like `| head -1`
    err = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 0 and b"Traceback" not in err, err
