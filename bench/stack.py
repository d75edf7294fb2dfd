"""The system under test: a bench-only registry, a throwaway database, the bench tenant, the gateways."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from bench.procs import REPO
from gateway.tenants import Tenant

BENCH_PLAN = "bench"
BENCH_RPM = 100_000_000  # the shipped plans stop at 1,000 RPM; load needs a plan that never refuses
BENCH_CREDITS_USD = "1000000"
NODE_SLOTS = 4096  # node concurrency high enough that the pool never queues: we measure the gateway, not a GPU
CHAT_MODEL = "privaterouter/fast"
EMBED_MODEL = "privaterouter/embed"
SLOW_MODEL = "bench/slow-stream"


def registry_text(fast_url: str, slow_url: str) -> str:
    """The shipped models.yaml with its node replaced by the emulators, a slow-token model and the bench plan."""
    registry: dict[str, Any] = yaml.safe_load((REPO / "models.yaml").read_text())
    registry["nodes"] = [
        {"name": "fast", "url": fast_url, "max_concurrency": NODE_SLOTS},
        {"name": "slow", "url": slow_url, "max_concurrency": NODE_SLOTS},
    ]
    for model in registry["models"]:
        model["nodes"] = ["fast"]
    shipped_fast = next(model for model in registry["models"] if model["name"] == CHAT_MODEL)
    registry["models"].append({**shipped_fast, "name": SLOW_MODEL, "nodes": ["slow"]})
    registry["plans"].append({"name": BENCH_PLAN, "monthly_usd": "0", "included_credits_usd": "0", "models": "all",
                              "rpm": BENCH_RPM})
    header = "# Written by bench/ for one run: the shipped registry pointed at the emulators, plus a bench plan.\n"
    return header + yaml.safe_dump(registry, sort_keys=False)


@dataclass
class Backend:
    """One gateway configuration: its environment, where its data lives, and its counters."""

    name: str  # "postgres" or "sqlite"
    database_url: str
    env: dict[str, str]
    data_dir: Path
    pg_database: str | None = None  # the throwaway database's name (PostgreSQL only)
    tenant: Tenant | None = None
    ids_dir: Path = field(default_factory=Path)

    @property
    def is_postgres(self) -> bool:
        return self.pg_database is not None


def new_secret() -> str:
    return secrets.token_urlsafe(48)


def gateway_env(base: dict[str, str], *, models_file: Path, data_dir: Path, port: int, database_url: str | None,
                redis_url: str | None, app_secret: str, jwt_secret: str, workers: int = 1,
                metrics_token: str | None = None) -> dict[str, str]:
    """The production settings, as `privaterouter serve` reads them (logs at the default level, JSON).

    `workers` > 1 is uvicorn's multiprocess mode (`WORKERS`), which the gateway allows only with Redis.
    `METRICS_TOKEN` (given or new) opens /metrics on the public port to the bench (bench/httpstats.py).
    """
    env = {key: value for key, value in base.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "WORKERS", "METRICS_PORT", "METRICS_TOKEN"}}
    env.update(MODELS_FILE=str(models_file), DATA_DIR=str(data_dir), HOST="127.0.0.1", PORT=str(port),
               WORKERS=str(workers), APP_SECRET_KEY=app_secret, JWT_SECRET=jwt_secret, LOG_LEVEL="info",
               LOG_FORMAT="json", PYTHONPATH=str(REPO), METRICS_TOKEN=metrics_token or new_secret())
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


async def create_database(admin_dsn: str) -> str:
    """A new empty database on the PostgreSQL server; returns its name."""
    name = f"pr_bench_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def create_tenant(database_url: str, app_secret: str) -> Tenant:
    """A user with an account on the bench plan, a large grant and one API key."""
    from gateway.billing.money import to_pico
    from gateway.db.engine import create_engine, session_factory
    from gateway.tenants import create_tenant as provision

    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            return await provision(session, secret=app_secret, plan=BENCH_PLAN, credits_pico=to_pico(BENCH_CREDITS_USD),
                                   note="bench credits", key_name="bench")
    finally:
        await engine.dispose()
