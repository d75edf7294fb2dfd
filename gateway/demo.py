"""`privaterouter demo`: the whole gateway with no GPU — the Ollama emulator as its only node.

Runs the emulator and the gateway (embedded SQLite, in-process limiter) in one process, creates a
demo user with credits and an API key, and prints ready-to-paste examples. Everything lives in a
throwaway directory deleted on exit: the demo never touches the configured DATABASE_URL, REDIS_URL
or DATA_DIR (pointing it at a production database would create a user with free credits there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
from pathlib import Path

import uvicorn
from sqlmodel import col, select

from gateway.app import create_app
from gateway.billing.money import to_pico
from gateway.db.engine import create_engine, session_factory
from gateway.db.migrate import upgrade
from gateway.db.models import Account, User
from gateway.registry import load
from gateway.settings import Settings
from gateway.tenants import create_key, create_tenant
from providers.ollama.fake import FakeConfig, create_fake_app

DEMO_EMAIL = "demo@privaterouter.local"
DEMO_PLAN = "developer"
DEMO_CREDITS = "10.00"


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def demo_settings(settings: Settings, data_dir: Path) -> Settings:
    """`settings` moved into `data_dir`: its own SQLite file and secrets, no Redis, no metrics port."""
    return dataclasses.replace(settings, data_dir=data_dir, database_url=f"sqlite+aiosqlite:///{data_dir / 'demo.db'}",
                               redis_url=None, jwt_secret=secrets.token_urlsafe(48),
                               app_secret_key=secrets.token_urlsafe(48), metrics_port=None, workers=1)


def demo_registry(models_file: Path, ollama_url: str) -> str:
    """The registry text with every node replaced by the emulator."""
    text = models_file.read_text()
    start, end = text.index("nodes:\n"), text.index("models:\n")
    return text[:start] + f"nodes:\n  - name: emulator\n    url: {ollama_url}\n    max_concurrency: 64\n\n" + text[end:]


async def create_demo_tenant(database_url: str, secret: str) -> str:
    """The demo user on the developer plan with $10 (created once) and a fresh API key; returns the key."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            user = (await session.execute(select(User).where(col(User.email) == DEMO_EMAIL))).scalar_one_or_none()
            if user is None:
                tenant = await create_tenant(session, secret=secret, plan=DEMO_PLAN, credits_pico=to_pico(DEMO_CREDITS),
                                             email=DEMO_EMAIL, name="Demo", note="demo credits", key_name="demo")
                return tenant.api_key
            account = (await session.execute(select(Account).where(col(Account.user_id) == user.id))).scalar_one()
            _, raw = await create_key(session, user_id=user.id, account_id=account.id, secret=secret, name="demo")
            await session.commit()
            return raw
    finally:
        await engine.dispose()


def examples(base_url: str, key: str) -> str:
    return f"""
PrivateRouter demo is running at {base_url} (Ollama emulator as the GPU node).

API key (shown once): {key}

curl {base_url}/v1/chat/completions \\
  -H "Authorization: Bearer {key}" -H 'Content-Type: application/json' \\
  -d '{{"model": "privaterouter/fast", "messages": [{{"role": "user", "content": "Say hi in five words."}}]}}'

python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{base_url}/v1", api_key="{key}")
reply = client.chat.completions.create(model="privaterouter/fast",
                                       messages=[{{"role": "user", "content": "Say hi in five words."}}])
print(reply.choices[0].message.content)
EOF

Press Ctrl+C to stop.
"""


async def run_demo(settings: Settings, *, host: str, port: int) -> None:
    ollama_port = _free_port("127.0.0.1")
    ollama_url = f"http://127.0.0.1:{ollama_port}"
    models_file = settings.data_dir / "demo-models.yaml"
    models_file.parent.mkdir(parents=True, exist_ok=True)
    models_file.write_text(demo_registry(settings.models_file, ollama_url))
    load(models_file)
    await asyncio.to_thread(upgrade, settings.database_url)
    key = await create_demo_tenant(settings.database_url, settings.app_secret_key)
    demo_settings = Settings(**{**settings.__dict__, "models_file": models_file})
    fake = uvicorn.Server(uvicorn.Config(create_fake_app(FakeConfig(token_delay=0.02)), host="127.0.0.1",
                                         port=ollama_port, log_level="warning", access_log=False))
    gateway = uvicorn.Server(uvicorn.Config(create_app(demo_settings), host=host, port=port, log_config=None,
                                            access_log=False))
    fake_task = asyncio.create_task(fake.serve())
    while not fake.started:
        await asyncio.sleep(0.02)
    gateway_task = asyncio.create_task(gateway.serve())
    while not gateway.started and not gateway_task.done():
        await asyncio.sleep(0.02)
    if gateway.started:
        print(examples(f"http://{host}:{port}", key), flush=True)
        print(f"Demo data (deleted when the demo stops): {settings.data_dir}", flush=True)
    try:
        await gateway_task
    finally:
        fake.should_exit = True
        await fake_task
