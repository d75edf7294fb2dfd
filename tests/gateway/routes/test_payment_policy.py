"""PAYMENT_PROVIDERS: defaults per backend, the mock top-up gate, the options API and the start warning."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError
from tests.conftest import MODELS_FILE, envelope
from tests.support.control_plane import make_admin, signup
from tests.support.running import running

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/none"
STRIPE = {"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x",
          "PUBLIC_BASE_URL": "https://router.example.com"}


def test_defaults_mock_on_sqlite_and_none_on_postgres(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().payment_providers == ("mock",)
    assert make_settings(DATABASE_URL=PG).payment_providers == ()
    assert make_settings(DATABASE_URL=PG, PAYMENT_PROVIDERS="mock").payment_providers == ("mock",)
    assert make_settings(PAYMENT_PROVIDERS="none").payment_providers == ()
    assert make_settings(PAYMENT_PROVIDERS=" Stripe , mock,stripe", **STRIPE).payment_providers == ("stripe", "mock")


@pytest.mark.parametrize("env, names", [
    ({"PAYMENT_PROVIDERS": "paypal"}, "PAYMENT_PROVIDERS"),
    ({"PAYMENT_PROVIDERS": "stripe"}, "STRIPE_SECRET_KEY"),
    ({"PAYMENT_PROVIDERS": "stripe", "STRIPE_SECRET_KEY": "sk_test_x"}, "STRIPE_WEBHOOK_SECRET"),
    ({"PAYMENT_PROVIDERS": "stripe", "STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"},
     "PUBLIC_BASE_URL"),
    ({"SIGNUP_MODE": "maybe"}, "SIGNUP_MODE"),
    ({"PAYMENT_PROVIDERS": "btcpay", "PUBLIC_BASE_URL": "https://x.example"}, "BTCPAY_URL"),
    ({"PAYMENT_PROVIDERS": "btcpay", "PUBLIC_BASE_URL": "https://x.example", "BTCPAY_URL": "https://b.example",
      "BTCPAY_STORE_ID": "s", "BTCPAY_API_KEY": "k"}, "BTCPAY_WEBHOOK_SECRET"),
])
def test_bad_or_half_configured_policy_stops_the_start(make_settings: Callable[..., Settings], env: dict[str, str],
                                                       names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        make_settings(**env)


async def test_topup_is_refused_when_mock_is_off(make_settings: Callable[..., Settings], database_url: str) -> None:
    # No PAYMENT_PROVIDERS: mock on SQLite, nothing on PostgreSQL (the production default gives nothing away).
    async with running(make_settings(DATABASE_URL=database_url)) as (app, client):
        login = await signup(client)
        response = await client.post("/api/billing/topup", headers=login.headers, json={"amount_usd": 10})
        options = (await client.get("/api/billing/options")).json()
        if database_url.startswith("sqlite"):
            assert response.status_code == 200, response.text
            assert options["providers"] == ["mock"]
        else:
            assert response.status_code == 403
            assert envelope(response)["code"] == "payments_disabled"
            assert options["providers"] == []
        balance = (await client.get("/api/billing/balance", headers=login.headers)).json()
        assert balance["balance_usd"] == ("11.00" if database_url.startswith("sqlite") else "1.00")


async def test_options_lists_providers_amounts_and_packs(make_settings: Callable[..., Settings], tmp_path: Path,
                                                        database_url: str) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_FILE.read_text() + "\nbilling:\n  topup_amounts_usd: [\"5\", \"20.50\"]\n"
                      "  packs:\n    - name: big\n      price_usd: \"100\"\n      bonus_usd: \"15\"\n")
    settings = make_settings(DATABASE_URL=database_url, MODELS_FILE=str(models), PAYMENT_PROVIDERS="mock")
    async with running(settings) as (_, client):
        assert (await client.get("/api/billing/options")).json() == {
            "providers": ["mock"], "currency": "usd", "topup_amounts_usd": ["5.00", "20.50"],
            "packs": [{"name": "big", "price_usd": "100.00", "credits_usd": "115.00", "bonus_usd": "15.00"}],
            "trial": None}
        login = await signup(client)
        refused = await client.post("/api/billing/topup", headers=login.headers, json={"amount_usd": 10})
        assert refused.status_code == 400 and "5, 20.50" in envelope(refused)["message"]
        pack = await client.post("/api/billing/topup", headers=login.headers, json={"pack": "big"})
        assert pack.json()["balance_usd"] == "116.00"
        unknown = await client.post("/api/billing/topup", headers=login.headers, json={"pack": "huge"})
        assert envelope(unknown)["param"] == "pack"
        ledger = (await client.get("/api/billing/transactions", headers=login.headers)).json()["items"]
        assert ledger[0]["note"] == "top-up pack big (100.00 USD + 15.00 USD bonus) (mock)"


async def test_loud_warning_when_mock_runs_on_postgres(make_settings: Callable[..., Settings],
                                                      postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pr.billing"):
        async with running(make_settings(DATABASE_URL=postgres_url, PAYMENT_PROVIDERS="mock")):
            pass
    assert any("PAYMENT_PROVIDERS includes 'mock' on PostgreSQL" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pr.billing"):
        async with running(make_settings(DATABASE_URL=postgres_url)):
            pass
    assert not [r for r in caplog.records if "mock" in r.getMessage()]


async def test_offers_follow_a_registry_reload(make_settings: Callable[..., Settings], tmp_path: Path,
                                              database_url: str) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_FILE.read_text())
    settings = make_settings(DATABASE_URL=database_url, MODELS_FILE=str(models), PAYMENT_PROVIDERS="mock")
    async with running(settings) as (app, client):
        admin = await make_admin(app, client)
        models.write_text(MODELS_FILE.read_text() + "\nbilling:\n  topup_amounts_usd: [\"7\"]\n")
        reloaded = await client.post("/api/admin/reload", headers=admin.headers)
        assert reloaded.status_code == 200 and "billing ~" in reloaded.json()["diff"]
        assert (await client.get("/api/billing/options")).json()["topup_amounts_usd"] == ["7.00"]
        assert (await client.post("/api/billing/topup", headers=admin.headers, json={"amount_usd": 7})).status_code \
            == 200
        models.write_text(MODELS_FILE.read_text() + "\nbilling:\n  topup_amounts_usd: [\"7.001\"]\n")
        refused = await client.post("/api/admin/reload", headers=admin.headers)
        assert refused.status_code == 400 and "billing.topup_amounts_usd[0]" in envelope(refused)["message"]
        assert (await client.get("/api/billing/options")).json()["topup_amounts_usd"] == ["7.00"]
