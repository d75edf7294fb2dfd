"""The models and the migrations agree, on every backend: autogenerate finds nothing to do."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import gateway.db.models  # noqa: F401
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def test_models_match_migrations(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
    finally:
        await engine.dispose()


def test_migrate_is_idempotent(database_url: str) -> None:
    upgrade(database_url)  # the fixture already migrated: a second run changes nothing and does not fail
    upgrade(database_url)
