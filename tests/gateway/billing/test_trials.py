"""Trial credit: its own bucket, spent first, removed at expiry; the ledger sums to both buckets."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing import ledger
from gateway.billing.holds import Quote, place_hold
from gateway.billing.settlement import Settlement, settle_batch
from gateway.billing.trials import expire_trials, grant_trial
from gateway.db.models import Account, CreditTransaction, utcnow
from gateway.registry import RegistryError, parse
from gateway.settings import Settings
from tests.conftest import MODELS_FILE, envelope
from tests.support.accounts import make_account
from tests.support.control_plane import account_id, ctx, make_admin, signup
from tests.support.running import running

USD = 10**12
TRIAL_YAML = "\nbilling:\n  trial:\n    credits_usd: \"5\"\n    days: 14\n"


async def buckets(session: AsyncSession, account: str) -> tuple[int, int]:
    """(balance, trial) after checking that the ledger sums to each."""
    row = await session.get(Account, account, populate_existing=True)
    assert row is not None
    total, trial = (await session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(CreditTransaction.amount_pico), 0),
                  sa.func.coalesce(sa.func.sum(CreditTransaction.trial_pico), 0))
        .where(CreditTransaction.account_id == account))).one()
    assert (row.balance_pico, row.trial_pico) == (total, trial), "the ledger must sum to both buckets"
    assert 0 <= row.trial_pico
    return row.balance_pico, row.trial_pico


def _settlement(request_id: str, user: str, account: str, cost: int) -> Settlement:
    return Settlement(request_id=request_id, account_id=account, user_id=user, api_key_id=None,
                      model_public_name="privaterouter/fast", ollama_tag="gemma4:latest", node="n",
                      endpoint="chat.completions", input_tokens=1, output_tokens=1, tokens_estimated=False,
                      cost_pico=cost, latency_ms=1, ttft_ms=1, status="success", error_code=None,
                      registry_version="v", created_at=utcnow())


async def _spend(sessions: async_sessionmaker[AsyncSession], request_id: str, user: str, account: str,
                 cost: int) -> None:
    async with sessions() as session:
        await place_hold(session, request_id=request_id, account_id=account, key_id=None, key_has_limit=False,
                         quote=Quote(cost, 0, 0))
    async with sessions() as session:
        await settle_batch(session, [_settlement(request_id, user, account, cost)])
        await session.commit()


async def test_usage_spends_the_trial_first(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, _ = await make_account(sessions, credits_pico=2 * USD)
    async with sessions() as session:
        await grant_trial(session, account_id=account, credit_pico=3 * USD, days=7, note="t")
        await session.commit()
        assert await buckets(session, account) == (5 * USD, 3 * USD)
    await _spend(sessions, "r1", user, account, 2 * USD)
    async with sessions() as session:
        assert await buckets(session, account) == (3 * USD, 1 * USD)
    await _spend(sessions, "r2", user, account, 2 * USD)
    async with sessions() as session:
        assert await buckets(session, account) == (1 * USD, 0)
        await ledger.post(session, account_id=account, kind="admin_adjust", amount_pico=-USD // 2)
        await session.commit()
        assert await buckets(session, account) == (USD // 2, 0)


async def test_expiry_removes_what_is_left_with_a_ledger_row(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, _ = await make_account(sessions, credits_pico=USD)
    async with sessions() as session:
        await grant_trial(session, account_id=account, credit_pico=5 * USD, days=1, note="t")
        await session.commit()
    await _spend(sessions, "r1", user, account, 2 * USD)
    async with sessions() as session:
        assert await expire_trials(session, utcnow() + timedelta(hours=23)) == 0  # not yet due
        assert await buckets(session, account) == (4 * USD, 3 * USD)
        assert await expire_trials(session, utcnow() + timedelta(days=1, seconds=1)) == 1
        assert await buckets(session, account) == (USD, 0)
        last = (await session.execute(sa.select(CreditTransaction).order_by(CreditTransaction.id.desc())
                                      .limit(1))).scalar_one()
        assert (last.kind, last.amount_pico, last.trial_pico) == ("trial_expired", -3 * USD, -3 * USD)
        assert (await session.get(Account, account, populate_existing=True)).trial_expires_at is None  # type: ignore[union-attr]
        assert await expire_trials(session, utcnow() + timedelta(days=2)) == 0  # nothing left to do


async def test_expiry_never_takes_credit_held_by_requests_in_flight(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, _ = await make_account(sessions, credits_pico=0)
    async with sessions() as session:
        await grant_trial(session, account_id=account, credit_pico=5 * USD, days=1, note="t")
        await session.commit()
    async with sessions() as session:
        await place_hold(session, request_id="r1", account_id=account, key_id=None, key_has_limit=False,
                         quote=Quote(2 * USD, 0, 0))
    later = utcnow() + timedelta(days=2)
    async with sessions() as session:
        await expire_trials(session, later)
        assert await buckets(session, account) == (2 * USD, 2 * USD)  # the held part stays for now
    async with sessions() as session:
        await settle_batch(session, [_settlement("r1", user, account, USD)])
        await session.commit()
    async with sessions() as session:
        await expire_trials(session, later)
        assert await buckets(session, account) == (0, 0)


async def test_a_reversal_takes_paid_credit_before_the_trial(sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account, _ = await make_account(sessions, credits_pico=2 * USD)
    async with sessions() as session:
        await grant_trial(session, account_id=account, credit_pico=3 * USD, days=1, note="t")
        await ledger.post(session, account_id=account, kind="reversal", amount_pico=-USD, allow_negative=True)
        await session.commit()
        assert await buckets(session, account) == (4 * USD, 3 * USD)
        await ledger.post(session, account_id=account, kind="reversal", amount_pico=-5 * USD, allow_negative=True)
        await session.commit()
        assert await buckets(session, account) == (-USD, 0)


async def test_signup_trial_is_shown_apart_and_expires(make_settings: Callable[..., Settings], tmp_path: Path,
                                                      database_url: str) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_FILE.read_text() + TRIAL_YAML)
    async with running(make_settings(DATABASE_URL=database_url, MODELS_FILE=str(models))) as (app, client):
        login = await signup(client)
        balance = (await client.get("/api/billing/balance", headers=login.headers)).json()
        assert (balance["balance_usd"], balance["paid_usd"], balance["trial_usd"]) == ("6.00", "1.00", "5.00")
        assert balance["trial_expires_at"].endswith("Z")
        kinds = [item["kind"] for item in
                 (await client.get("/api/billing/transactions", headers=login.headers)).json()["items"]]
        assert kinds == ["trial_grant", "grant"]
        assert (await client.get("/api/billing/options")).json()["trial"] == {"credits_usd": "5.00", "days": 14}
        account = await account_id(app, login)
        async with ctx(app).sessions() as session:
            await session.execute(sa.update(Account).where(Account.id == account)
                                  .values(trial_expires_at=utcnow() - timedelta(seconds=1)))
            await session.commit()
        expired = (await client.get("/api/billing/balance", headers=login.headers)).json()
        assert (expired["balance_usd"], expired["trial_usd"], expired["trial_expires_at"]) == ("1.00", "0.00", None)
        async with ctx(app).sessions() as session:
            assert await buckets(session, account) == (USD, 0)


async def test_admin_grants_a_trial_with_a_reason(app_client: tuple, database_url: str) -> None:
    app, client = app_client
    admin = await make_admin(app, client)
    user = await signup(client)
    url = f"/api/admin/users/{user.user_id}/trial"
    granted = await client.post(url, headers=admin.headers, json={"amount_usd": "3", "days": 10, "reason": "pilot"})
    assert granted.status_code == 200, granted.text
    assert (granted.json()["trial_usd"], granted.json()["balance_usd"]) == ("3.00", "4.00")
    ledger_rows = (await client.get("/api/billing/transactions", headers=user.headers)).json()["items"]
    assert ledger_rows[0]["kind"] == "trial_grant" and "pilot" in ledger_rows[0]["note"]
    for body, param in (({"amount_usd": "3", "days": 10}, "reason"), ({"amount_usd": "0", "days": 1, "reason": "r"},
                        "amount_usd"), ({"amount_usd": "3", "days": 0, "reason": "r"}, "days")):
        bad = await client.post(url, headers=admin.headers, json=body)
        assert bad.status_code == 400 and envelope(bad)["param"] == param
    assert (await client.post(url, headers=user.headers, json={})).status_code == 403


@pytest.mark.parametrize("section, message", [
    ("billing:\n  trial:\n    credits_usd: \"5\"\n", "missing required key 'days'"),
    ("billing:\n  trial:\n    credits_usd: \"5\"\n    days: 0\n", "must be an integer >= 1"),
    ("billing:\n  trial:\n    credits_usd: \"5\"\n    days: 400\n", "at most 366"),
    ("billing:\n  trial:\n    credits_usd: \"0\"\n    days: 3\n", "must be more than 0"),
])
def test_trial_section_is_validated(section: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse(MODELS_FILE.read_text() + section)
