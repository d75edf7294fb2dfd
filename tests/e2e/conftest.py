from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.settings import Settings
from tests.conftest import TEST_REDIS_URL
from tests.support.stack import Stack, run_stack


def production_env(database_url: str) -> dict[str, str]:
    """PostgreSQL runs with Redis (the production shape); SQLite with the in-process limiter (embedded)."""
    if database_url.startswith("postgresql") and TEST_REDIS_URL:
        from redis import Redis

        with Redis.from_url(TEST_REDIS_URL) as client:
            client.flushdb()
        return {"REDIS_URL": TEST_REDIS_URL}
    return {}


@pytest.fixture
async def stack(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """Emulator + real gateway on loopback: embedded default, and PostgreSQL + Redis when configured."""
    # mock payments on both backends (PostgreSQL's default is none), as tests/conftest.py's app_client does
    with run_stack(make_settings, database_url, tmp_path, PAYMENT_PROVIDERS="mock",
                   **production_env(database_url)) as running:
        yield running
        await running.engine.dispose()
