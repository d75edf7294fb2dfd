"""Shared fixtures.

Storage tests run on the embedded default (SQLite) everywhere and also on PostgreSQL when
`TEST_DATABASE_URL` is set; Redis tests run when `TEST_REDIS_URL` is set. With `CI=true` both
must be set and reachable, or the session fails: a missing service is never a silent skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.db.engine import create_engine, session_factory
from gateway.db.migrate import upgrade
from gateway.registry import Registry, load
from gateway.settings import Settings

REPO = Path(__file__).resolve().parent.parent
MODELS_FILE = REPO / "models.yaml"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
IN_CI = os.environ.get("CI", "").lower() == "true"

BACKENDS = ["sqlite"] + (["postgres"] if TEST_DATABASE_URL else [])


# Parameter combinations that do not exist, dropped at collection instead of skipped (a skip would
# look like a gap): the asyncpg settlement path is PostgreSQL's.
_IMPOSSIBLE = [{"database_url": "sqlite", "settle": "asyncpg"}]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def impossible(item: pytest.Item) -> bool:
        params = getattr(getattr(item, "callspec", None), "params", {})
        return any(all(params.get(name) == value for name, value in combo.items()) for combo in _IMPOSSIBLE)

    dropped = [item for item in items if impossible(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not impossible(item)]


def pytest_sessionstart(session: pytest.Session) -> None:
    if not IN_CI:
        return
    missing = [name for name, value in (("TEST_DATABASE_URL", TEST_DATABASE_URL), ("TEST_REDIS_URL", TEST_REDIS_URL))
               if not value]
    if missing:
        raise pytest.UsageError(f"CI=true but {', '.join(missing)} not set: PostgreSQL/Redis tests must run in CI")
    asyncio.run(_check_services())


async def _check_services() -> None:
    import asyncpg
    from redis.asyncio import Redis

    assert TEST_DATABASE_URL and TEST_REDIS_URL
    connection = await asyncpg.connect(_asyncpg_dsn(TEST_DATABASE_URL))
    await connection.close()
    redis = Redis.from_url(TEST_REDIS_URL)
    await redis.ping()
    await redis.aclose()


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


class _PostgresTemplates:
    """A migrated template database, cloned per test (CREATE DATABASE ... TEMPLATE is fast)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.template = f"pr_tpl_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    async def _admin(self, sql: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(_asyncpg_dsn(self.base_url))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    def url_for(self, database: str) -> str:
        return make_url(self.base_url).set(database=database).render_as_string(hide_password=False)

    def setup(self) -> None:
        asyncio.run(self._admin(f'CREATE DATABASE "{self.template}"'))
        upgrade(self.url_for(self.template))

    def clone(self) -> str:
        name = f"pr_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return self.url_for(name)

    def drop(self, name_or_url: str) -> None:
        name = make_url(name_or_url).database if "://" in name_or_url else name_or_url
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def teardown(self) -> None:
        self.drop(self.template)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_templates() -> Iterator[_PostgresTemplates | None]:
    if not TEST_DATABASE_URL:
        yield None
        return
    templates = _PostgresTemplates(TEST_DATABASE_URL)
    templates.setup()
    yield templates
    templates.teardown()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path,
                 postgres_templates: _PostgresTemplates | None) -> Iterator[str]:
    """A fresh, migrated database for one test, on each configured backend."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    assert postgres_templates is not None
    url = postgres_templates.clone()
    yield url
    postgres_templates.drop(url)


@pytest.fixture
def postgres_url(postgres_templates: _PostgresTemplates | None) -> Iterator[str]:
    """A fresh PostgreSQL database, for what only the production shape has (several replicas)."""
    if postgres_templates is None:
        pytest.skip("TEST_DATABASE_URL not set (CI always sets it)")
    url = postgres_templates.clone()
    yield url
    postgres_templates.drop(url)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database emptied for this test (TEST_REDIS_URL, e.g. redis://127.0.0.1:6379/15)."""
    if not TEST_REDIS_URL:
        pytest.skip("TEST_REDIS_URL not set (CI always sets it)")
    from redis import Redis

    client = Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on a fresh database (each backend)."""
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load(MODELS_FILE)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: an isolated data dir and explicit values; keyword overrides by env name."""

    def build(**env: str) -> Settings:
        values = {
            "DATA_DIR": str(tmp_path / "data"),
            "MODELS_FILE": str(MODELS_FILE),
            "JWT_SECRET": "test-jwt-secret-" + "x" * 32,
            "APP_SECRET_KEY": "test-app-secret-" + "y" * 32,
            "LOG_LEVEL": "warning",
        }
        values.update(env)
        return Settings.from_env(values, dotenv=None)

    return build


@pytest.fixture
def gateway_settings(make_settings: Callable[..., Settings], sqlite_template: Path,
                     tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a migrated SQLite copy (these tests are about HTTP, not storage)."""
    path = tmp_path / "gateway.db"
    shutil.copyfile(sqlite_template, path)
    return lambda **env: make_settings(DATABASE_URL=f"sqlite+aiosqlite:///{path}", **env)


@pytest.fixture
async def app_client(make_settings: Callable[..., Settings],
                     database_url: str) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """An app on a fresh database with its lifespan running, and an in-process client for it."""
    # mock payments on both backends (PostgreSQL's default is none): the /api tests top up freely.
    app = create_app(make_settings(DATABASE_URL=database_url, PAYMENT_PROVIDERS="mock"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


@pytest.fixture
async def client(app_client: tuple[Starlette, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]


def envelope(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object of a response, asserting the envelope's shape."""
    body = response.json()
    assert set(body) >= {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)
