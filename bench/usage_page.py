"""Server time of the /usage page for an account with a large history (100,000 usage events).

    python -m bench.usage_page                      # PostgreSQL on 127.0.0.1:5432 and SQLite, 100,000 events
    python -m bench.usage_page --events 20000 --backends sqlite

For each backend: a throwaway, migrated database (PostgreSQL: `pr_bench_usage_<random>`, dropped at
the end; SQLite: a temp file), one user with `--events` usage events spread over 90 days on three
models, then the app in-process (httpx's ASGI transport: the time is the server's own work —
session check, queries, template — without sockets) and `--reps` timed GETs of each page: the
default page (the current month), the all-time first page, an all-time page 50,000 rows deep
(addressed by its cursor), a filtered page (one model, one status), and, for comparison,
`/api/usage` at the same depth by offset. Prints a Markdown
table of median and p95 milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
MODELS = ("privaterouter/fast", "privaterouter/qwen-fast", "privaterouter/embed")


def _settings(database_url: str, data_dir: Path) -> Any:
    from gateway.settings import Settings

    return Settings.from_env({"DATA_DIR": str(data_dir), "DATABASE_URL": database_url,
                              "MODELS_FILE": str(REPO / "models.yaml"), "JWT_SECRET": "b" * 40,
                              "APP_SECRET_KEY": "c" * 40, "LOG_LEVEL": "warning"}, dotenv=None)


async def _fill(database_url: str, events: int) -> tuple[str, str]:
    """One user and account with `events` usage events; returns (user id, account id)."""
    from gateway.db.engine import create_engine
    from gateway.db.models import Account, UsageEvent, User

    engine = create_engine(database_url)
    user_id, account_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    rng = random.Random(7)
    async with engine.begin() as connection:
        await connection.execute(sa.insert(User.__table__).values(  # type: ignore[attr-defined]
            id=user_id, email="bench@example.com", name="", password_hash="x", role="user", status="active",
            created_at=now, updated_at=now))
        await connection.execute(sa.insert(Account.__table__).values(  # type: ignore[attr-defined]
            id=account_id, user_id=user_id, plan_name="free", balance_pico=0, held_pico=0, created_at=now,
            updated_at=now))
        batch: list[dict[str, Any]] = []
        for index in range(events):
            batch.append({"request_id": uuid.uuid4().hex, "account_id": account_id, "user_id": user_id,
                          "api_key_id": None, "model_public_name": MODELS[index % 3], "ollama_tag": "",
                          "node": "n", "endpoint": "chat.completions", "input_tokens": rng.randint(5, 500),
                          "output_tokens": rng.randint(1, 300), "tokens_estimated": False,
                          "cost_pico": rng.randint(10**5, 10**8), "latency_ms": rng.randint(50, 900),
                          "ttft_ms": 40, "status": "success" if index % 20 else "error", "error_code": None,
                          "registry_version": "", "created_at": now - timedelta(seconds=index * 77)})
            if len(batch) == 5000:
                await connection.execute(sa.insert(UsageEvent.__table__), batch)  # type: ignore[attr-defined]
                batch = []
        if batch:
            await connection.execute(sa.insert(UsageEvent.__table__), batch)  # type: ignore[attr-defined]
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            await connection.execute(sa.text("COMMIT"))
            await connection.execute(sa.text("ANALYZE usage_events"))
    await engine.dispose()
    return user_id, account_id


async def _time(client: httpx.AsyncClient, url: str, reps: int) -> tuple[float, float]:
    samples = []
    for _ in range(reps + 2):
        started = time.perf_counter()
        response = await client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
    samples = sorted(samples[2:])  # two warm-up requests
    return statistics.median(samples), samples[min(len(samples) - 1, round(len(samples) * 0.95) - 1)]


async def _measure(database_url: str, data_dir: Path, events: int, reps: int) -> list[tuple[str, float, float]]:
    from gateway.app import create_app
    from gateway.auth.sessions import COOKIE_NAME, issue_token

    user_id, _ = await _fill(database_url, events)
    settings = _settings(database_url, data_dir)
    app = create_app(settings)
    token = issue_token(user_id, secret=settings.jwt_secret, ttl_seconds=3600)
    rows: list[tuple[str, float, float]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     cookies={COOKIE_NAME: token}) as client:
            rows.append(("/usage (default: this month)", *await _time(client, "/usage", reps)))
            rows.append(("/usage?since= (all time, first page)", *await _time(client, "/usage?since=", reps)))
            # Follow the cursor 1,000 pages deep once, then time that page.
            from gateway.db.engine import create_engine
            from gateway.usage_report import Cursor

            engine = create_engine(database_url)
            async with engine.connect() as connection:
                row = (await connection.execute(sa.text(
                    "SELECT created_at, id FROM usage_events ORDER BY created_at DESC, id DESC "
                    "LIMIT 1 OFFSET :n"), {"n": min(events - 60, 50_000) - 1})).one()
            await engine.dispose()
            created = row[0] if isinstance(row[0], datetime) else datetime.fromisoformat(str(row[0]))
            cursor = Cursor(created, int(row[1])).encode()
            rows.append(("/usage all time, 50,000 rows deep (cursor)",
                         *await _time(client, "/usage?" + str(httpx.QueryParams({"since": "", "after": cursor})),
                                      reps)))
            rows.append(("/usage?since=&model=…&status=error", *await _time(
                client, "/usage?since=&model=privaterouter/fast&status=error", reps)))
            rows.append(("/api/usage?offset=50000 (API, by offset)", *await _time(
                client, f"/api/usage?limit=50&offset={min(events - 60, 50_000)}", reps)))
    return rows


async def _postgres(admin_dsn: str, data_dir: Path, events: int, reps: int) -> list[tuple[str, float, float]]:
    import asyncpg

    from gateway.db.migrate import upgrade

    name = f"pr_bench_usage_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"postgresql+asyncpg://{admin_dsn.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    try:
        await asyncio.to_thread(upgrade, url)
        return await _measure(url, data_dir, events, reps)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _sqlite(data_dir: Path, events: int, reps: int) -> list[tuple[str, float, float]]:
    from gateway.db.migrate import upgrade

    url = f"sqlite+aiosqlite:///{data_dir / 'bench.db'}"
    await asyncio.to_thread(upgrade, url)
    return await _measure(url, data_dir, events, reps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"| backend | page | median ms | p95 ms |  ({args.events:,} events, {args.reps} requests each)")
    print("| --- | --- | ---: | ---: |")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as folder:
            if backend == "postgres":
                rows = asyncio.run(_postgres(args.admin_dsn, Path(folder), args.events, args.reps))
            else:
                rows = asyncio.run(_sqlite(Path(folder), args.events, args.reps))
        for page, median, p95 in rows:
            print(f"| {backend} | {page} | {median:.1f} | {p95:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
