from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.settings import Settings
from tests.support.stack import Stack, run_stack


@pytest.fixture
async def stack(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """Emulator + real gateway on loopback, on each configured database backend."""
    with run_stack(make_settings, database_url, tmp_path) as running:
        yield running
        await running.engine.dispose()
