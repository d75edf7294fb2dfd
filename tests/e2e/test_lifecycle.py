"""Keep-alives, shutdown with streams in flight, and `privaterouter demo`."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway import streaming
from gateway.settings import Settings
from tests.support.stack import Stack, run_stack

SLOW = {"model": "privaterouter/test-slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def test_keepalive_comments_while_upstream_is_silent(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "KEEPALIVE_SECONDS", 0.02)  # the emulator's -slow waits 50 ms per token
    tenant = await stack.tenant()
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        response = await client.post("/chat/completions", json=SLOW)
    lines = response.text.splitlines()
    assert ": keep-alive" in lines
    assert [line for line in lines if line][-1] == "data: [DONE]"
    [event] = await stack.settled(tenant.account_id, 1)
    assert event.status == "success"


async def test_shutdown_lets_streams_finish_and_flushes_their_events(make_settings: Callable[..., Settings],
                                                                   database_url: str, tmp_path: Path) -> None:
    with run_stack(make_settings, database_url, tmp_path) as stack:
        tenant = await stack.tenant()
        client = httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                   headers={"Authorization": f"Bearer {tenant.api_key}"})
        streams = [asyncio.create_task(client.post("/chat/completions", json=SLOW)) for _ in range(3)]
        while stack.fake.stats.in_flight < 3:
            await asyncio.sleep(0.01)
    # Leaving run_stack stopped the gateway: uvicorn drained the streams, then the lifespan flushed.
    answers = await asyncio.gather(*streams)
    await client.aclose()
    assert all(answer.status_code == 200 and "[DONE]" in answer.text for answer in answers)
    events = await stack.events(tenant.account_id)
    assert len(events) == 3 and all(event.status == "success" for event in events)
    assert await stack.open_holds(tenant.account_id) == 0
    await stack.engine.dispose()


def test_demo_prints_a_working_key_and_touches_no_configured_storage(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configured = tmp_path / "production.db"  # the demo must never create its user here
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "MODELS_FILE": str(Path("models.yaml").resolve()),
           "DATABASE_URL": f"sqlite+aiosqlite:///{configured}", "REDIS_URL": "redis://127.0.0.1:1/0"}
    for name in ("JWT_SECRET", "APP_SECRET_KEY"):
        env.pop(name, None)
    log = tmp_path / "demo.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", str(port)], env=env,
                                   stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"API key \(shown once\): (sk-pr-live-\w+)", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                            headers={"Authorization": f"Bearer {match.group(1)}"},
                            json={"model": "privaterouter/fast", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        assert "curl http://127.0.0.1" in log.read_text() and "from openai import OpenAI" in log.read_text()
        demo_dir = Path(re.search(r"Demo data \(deleted when the demo stops\): (\S+)", log.read_text())[1])
        assert demo_dir.is_dir()
        assert not configured.exists() and not (tmp_path / "data" / "privaterouter.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert not demo_dir.exists()  # the throwaway data went with the demo
