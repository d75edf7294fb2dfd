from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from tests.support.control_plane import use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]


@pytest.fixture
async def web(app_client: App) -> App:
    """The app (each backend) with cheap password hashing, and a browser-like client."""
    use_cheap_passwords(app_client[0])
    return app_client
