"""The README's degraded-mode table, one test per row, against PRIVATE PostgreSQL and Redis servers
that these tests stop, restart and freeze (never the shared ones)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.db.migrate import upgrade
from gateway.settings import Settings
from tests.support.control_plane import PASSWORD
from tests.support.private_services import PrivatePostgres, PrivateRedis, private_postgres, private_redis
from tests.support.stack import Stack, run_stack

CHAT = {"model": "privaterouter/fast", "messages": [{"role": "user", "content": "hi"}]}
# Bounds short enough to keep the tests quick; the defaults are 5, 15 and 5 seconds.
DB_BOUNDS = {"DB_CONNECT_TIMEOUT": "2", "DB_STATEMENT_TIMEOUT": "2", "DB_POOL_TIMEOUT": "2"}
CLIENT_TIMEOUT = 30.0  # far above the bounds: a hang (the old 21 s, or forever) fails the test


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        upgrade(server.url)
        yield server


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"
    assert int(response.headers["retry-after"]) >= 1


async def _signup(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})


async def test_redis_down_fails_open_and_readiness_stays_200(
        make_settings: Callable[..., Settings], tmp_path: Path, redis_server: PrivateRedis) -> None:
    # failing input 13: with Redis stopped every login was 500 and readiness 503
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    with run_stack(make_settings, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", tmp_path,
                   REDIS_URL=redis_server.url) as stack:
        tenant = await stack.tenant()
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=CLIENT_TIMEOUT) as client:
            assert (await _signup(client, "r@example.com")).status_code == 201
            redis_server.stop()
            chat = await client.post("/v1/chat/completions", json=CHAT,
                                     headers={"Authorization": f"Bearer {tenant.api_key}"})
            assert chat.status_code == 200, chat.text  # rate limits fail open
            login = await client.post("/api/auth/login", json={"email": "r@example.com", "password": PASSWORD})
            assert login.status_code == 200, login.text  # the throttle counts in process
            wrong = await client.post("/api/auth/login", json={"email": "r@example.com", "password": "bad-guess"})
            assert wrong.status_code == 401
            ready = await client.get("/health/readiness")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "degraded" and ready.json()["checks"]["redis"].startswith("degraded")
        await stack.engine.dispose()


async def test_redis_frozen_answers_within_the_redis_timeouts(
        make_settings: Callable[..., Settings], tmp_path: Path, redis_server: PrivateRedis) -> None:
    """SIGSTOP: Redis accepts connections but never answers; its 0.5 s client timeouts bound every call."""
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    with run_stack(make_settings, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", tmp_path,
                   REDIS_URL=redis_server.url) as stack:
        tenant = await stack.tenant()
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=CLIENT_TIMEOUT) as client:
            assert (await _signup(client, "f@example.com")).status_code == 201
            assert redis_server.process is not None
            redis_server.process.send_signal(signal.SIGSTOP)
            try:
                chat = await client.post("/v1/chat/completions", json=CHAT,
                                         headers={"Authorization": f"Bearer {tenant.api_key}"})
                login = await client.post("/api/auth/login", json={"email": "f@example.com", "password": PASSWORD})
                ready = await client.get("/health/readiness")
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
        assert chat.status_code == 200, chat.text
        assert login.status_code == 200, login.text
        assert ready.status_code == 200 and ready.json()["checks"]["redis"].startswith("degraded")
        await stack.engine.dispose()


async def _every_route_is_503(stack: Stack, api_key: str, token: str) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=CLIENT_TIMEOUT) as client:
        bearer = {"Authorization": f"Bearer {token}"}
        answers = await asyncio.gather(
            client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {api_key}"}),
            client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-pr-live-" + "x" * 40}),
            client.post("/api/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}),
            _signup(client, "new@example.com"),
            client.get("/api/auth/me", headers=bearer),
            client.get("/api/billing/balance", headers=bearer),
            client.get("/api/usage", headers=bearer),
            client.post("/api/keys", json={"name": "k"}, headers=bearer),
        )
        for answer in answers:
            _unavailable(answer)
        ready = await client.get("/health/readiness")
        assert ready.status_code == 503 and int(ready.headers["retry-after"]) >= 1
        assert (await client.get("/health")).status_code == 200  # liveness: the process is fine


async def _session(stack: Stack) -> tuple[str, str]:
    tenant = await stack.tenant()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=CLIENT_TIMEOUT) as client:
        signed = await _signup(client, "owner@example.com")
        assert signed.status_code == 201, signed.text
        return tenant.api_key, signed.json()["access_token"]


async def test_database_stopped_every_route_answers_503(
        make_settings: Callable[..., Settings], tmp_path: Path, postgres: PrivatePostgres) -> None:
    # failing input 14: every route answered 500
    with run_stack(make_settings, postgres.url, tmp_path, **DB_BOUNDS) as stack:
        api_key, token = await _session(stack)
        await stack.engine.dispose()
        postgres.stop()
        await _every_route_is_503(stack, api_key, token)


async def test_database_frozen_answers_503_within_the_bounds(
        make_settings: Callable[..., Settings], tmp_path: Path, postgres: PrivatePostgres) -> None:
    # failing input 14: with the database frozen (SIGSTOP) requests hung ~21 s
    with run_stack(make_settings, postgres.url, tmp_path, **DB_BOUNDS) as stack:
        api_key, token = await _session(stack)
        await stack.engine.dispose()
        postgres.signal_all(signal.SIGSTOP)
        try:
            await _every_route_is_503(stack, api_key, token)
        finally:
            postgres.signal_all(signal.SIGCONT)


async def test_database_restart_stale_connections_are_replaced(
        make_settings: Callable[..., Settings], tmp_path: Path, postgres: PrivatePostgres) -> None:
    with run_stack(make_settings, postgres.url, tmp_path, **DB_BOUNDS) as stack:
        api_key, token = await _session(stack)
        await stack.engine.dispose()
        v1 = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=CLIENT_TIMEOUT) as client:
            for _ in range(3):  # pooled connections, the raw asyncpg hold path included
                assert (await client.post("/v1/chat/completions", json=CHAT, headers=v1)).status_code == 200
                assert (await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
                        ).status_code == 200
            postgres.restart()
            statuses = []
            for _ in range(6):
                statuses.append((await client.post("/v1/chat/completions", json=CHAT, headers=v1)).status_code)
                statuses.append((await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
                                 ).status_code)
        assert set(statuses) <= {200, 503}, statuses  # never a 500
        assert statuses[-4:] == [200, 200, 200, 200], statuses  # the stale connections were replaced
