"""A whole stack on loopback: the Ollama emulator and a real uvicorn gateway, plus tenants.

The gateway runs in its own thread and event loop (as in production, over real sockets); tests set
up tenants and read results through their own database engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.billing import ledger
from gateway.billing.money import to_pico
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Account, CreditTransaction, Hold, UsageEvent, User
from gateway.settings import Settings
from gateway.tenants import Tenant, create_tenant
from providers.ollama.fake import FakeConfig, FakeOllamaApp, create_fake_app
from tests.support.servers import serve_app

REPO = Path(__file__).resolve().parent.parent.parent

# Test models on top of the shipped six: each maps to an emulator behaviour suffix.
TEST_MODELS = {
    "privaterouter/test-slow": "gemma4-slow:latest",
    "privaterouter/test-error": "gemma4-error-500:latest",
    "privaterouter/test-midstream": "gemma4-midstream-error:latest",
    "privaterouter/test-drop": "gemma4-drop:latest",
    "privaterouter/test-no-usage": "gemma4-no-usage:latest",
    "privaterouter/test-hang": "gemma4-hang:latest",
    "privaterouter/test-tools": "qwen3-tools:latest",
}


def registry_text(ollama_urls: list[str], *, extra: str = "", without: tuple[str, ...] = ()) -> str:
    """The shipped models.yaml pointed at the given nodes, plus the test models (except those `without` names)."""
    text = (REPO / "models.yaml").read_text()
    nodes = "".join(f"  - name: node{index}\n    url: {url}\n    max_concurrency: 64\n"
                    for index, url in enumerate(ollama_urls))
    start, end = text.index("nodes:\n"), text.index("models:\n")
    text = text[:start] + "nodes:\n" + nodes + "\n" + text[end:]
    models = "".join(
        f"  - name: {name}\n    tag: {tag}\n    family: {'qwen' if tag.startswith('qwen') else 'gemma'}\n"
        f"    kind: chat\n    context: 8192\n    input_price: \"0.100000\"\n    output_price: \"0.300000\"\n"
        for name, tag in TEST_MODELS.items() if name not in without)
    return text.replace("\nplans:\n", "\n" + models + extra + "\nplans:\n")


@dataclass
class Stack:
    base_url: str
    ollama_urls: list[str]
    fakes: list[FakeOllamaApp]
    settings: Settings
    engine: AsyncEngine
    models_file: Path

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def fake(self) -> FakeOllamaApp:
        return self.fakes[0]

    async def tenant(self, *, credits_usd: str = "10", plan: str = "developer", key_limit_usd: str | None = None,
                     allowed_models: list[str] | None = None, key_rpm: int | None = None) -> Tenant:
        """A user with an account on `plan` holding `credits_usd`, and one live API key."""
        async with session_factory(self.engine)() as session:
            return await create_tenant(
                session, secret=self.settings.app_secret_key, plan=plan, credits_pico=to_pico(credits_usd),
                monthly_limit_pico=None if key_limit_usd is None else to_pico(key_limit_usd),
                allowed_models=allowed_models, rpm=key_rpm)

    async def admin_token(self) -> str:
        """A session token of a fresh admin user (for /api/admin/* calls)."""
        from gateway.auth.sessions import issue_token

        tenant = await self.tenant(credits_usd="0")
        async with session_factory(self.engine)() as session:
            user = await session.get(User, tenant.user_id)
            assert user is not None
            user.role = "admin"
            await session.commit()
        return issue_token(tenant.user_id, secret=self.settings.jwt_secret, ttl_seconds=600)

    async def grant(self, account_id: str, amount_pico: int) -> None:
        async with session_factory(self.engine)() as session:
            await ledger.post(session, account_id=account_id, kind="grant", amount_pico=amount_pico)
            await session.commit()

    async def account(self, account_id: str) -> Account:
        async with session_factory(self.engine)() as session:
            account = await session.get(Account, account_id)
            assert account is not None
            return account

    async def events(self, account_id: str) -> list[UsageEvent]:
        async with session_factory(self.engine)() as session:
            rows = await session.execute(sa.select(UsageEvent).where(UsageEvent.account_id == account_id)
                                         .order_by(UsageEvent.id))
            return list(rows.scalars())

    async def ledger_sum(self, account_id: str) -> int:
        async with session_factory(self.engine)() as session:
            total = await session.execute(sa.select(sa.func.coalesce(sa.func.sum(CreditTransaction.amount_pico), 0))
                                          .where(CreditTransaction.account_id == account_id))
            return int(total.scalar_one())

    async def open_holds(self, account_id: str) -> int:
        async with session_factory(self.engine)() as session:
            count = await session.execute(sa.select(sa.func.count()).select_from(Hold)
                                          .where(Hold.account_id == account_id))
            return int(count.scalar_one())

    async def settled(self, account_id: str, events: int, timeout: float = 10.0) -> list[UsageEvent]:
        """Wait until the account has `events` usage events and no open hold; return the events."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.events(account_id)
            if len(found) >= events and await self.open_holds(account_id) == 0:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {events} settled events, have {len(found)} "
                                     f"and {await self.open_holds(account_id)} open holds")
            await asyncio.sleep(0.05)


@contextmanager
def run_stack(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path, *, nodes: int = 1,
              fake_config: FakeConfig | None = None, node_apps: list[Any] | None = None,
              **env: str) -> Iterator[Stack]:
    """Emulator node(s) (or the given ASGI `node_apps`, e.g. a scripted Ollama) and a gateway on loopback."""
    with ExitStack() as stack:
        fakes = [create_fake_app(fake_config or FakeConfig(tokens_per_reply=12)) for _ in range(nodes)]
        urls = [stack.enter_context(serve_app(app)) for app in (node_apps if node_apps is not None else fakes)]
        models_file = tmp_path / "models.yaml"
        models_file.write_text(registry_text(urls))
        settings = make_settings(DATABASE_URL=database_url, MODELS_FILE=str(models_file),
                                 UPSTREAM_FIRST_BYTE_TIMEOUT=env.pop("UPSTREAM_FIRST_BYTE_TIMEOUT", "3"),
                                 HEALTH_CHECK_INTERVAL=env.pop("HEALTH_CHECK_INTERVAL", "0.2"), **env)
        gateway = create_app(settings)
        base_url = stack.enter_context(serve_app(gateway))
        # The caller's event loop owns this engine and disposes of it (see tests/e2e/conftest.py).
        yield Stack(base_url, urls, fakes, settings, create_engine(database_url), models_file)


def usage_of(response: dict[str, Any]) -> tuple[int, int]:
    usage = response["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]
