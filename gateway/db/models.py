"""Tables. Money columns are BIGINT pico-USD (see gateway/billing/money.py); times are UTC.

Invariants the code keeps (and tests check):
- `accounts.balance_pico` equals the sum of the account's `credit_transactions.amount_pico`.
- `accounts.held_pico` equals the sum of the account's open `holds.amount_pico`, and
  `balance_pico - held_pico` never goes below zero through holds.
- `accounts.trial_pico` (the trial bucket inside the balance) equals the sum of the ledger's
  `trial_pico` parts; debits take from it first.
- `accounts.balance_pico` goes below zero only through a payment reversal (a refund or a lost
  dispute of credit already spent); holds then refuse every request (402) until a top-up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _money(default: int = 0) -> Any:
    return Field(default=default, sa_type=sa.BigInteger, nullable=False)


def _time(nullable: bool = False, index: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=sa.DateTime(timezone=True), nullable=True, index=index)
    return Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True), nullable=False, index=index)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=36)
    email: str = Field(max_length=320, unique=True)  # stored lower-cased
    name: str = Field(default="", max_length=200)
    password_hash: str = Field(max_length=255)
    role: str = Field(default="user", max_length=16)  # user | admin
    status: str = Field(default="active", max_length=16)  # active | disabled
    email_verified_at: datetime | None = _time(nullable=True)
    # Carried in every session token (`sv`); logout and a password change bump it, ending all sessions.
    session_version: int = Field(default=0, nullable=False, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = _time()
    updated_at: datetime = _time()


class Account(SQLModel, table=True):
    __tablename__ = "accounts"
    __table_args__ = (sa.CheckConstraint("held_pico >= 0", name="ck_accounts_held_nonnegative"),)

    id: str = Field(primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="users.id", unique=True, max_length=36)
    plan_name: str = Field(default="free", max_length=64)
    balance_pico: int = _money()
    held_pico: int = _money()
    # The trial bucket: the part of balance_pico that is trial credit, spent first, removed at expiry.
    trial_pico: int = _money()
    trial_expires_at: datetime | None = _time(nullable=True)
    created_at: datetime = _time()
    updated_at: datetime = _time()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    __table_args__ = (sa.Index("ix_api_keys_user_created", "user_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="users.id", max_length=36)
    account_id: str = Field(foreign_key="accounts.id", max_length=36)
    name: str = Field(max_length=100)
    key_prefix: str = Field(max_length=32)
    key_hash: str = Field(max_length=64, unique=True)  # HMAC-SHA256 hex; the key itself is never stored
    status: str = Field(default="active", max_length=16)  # active | disabled | deleted
    monthly_limit_pico: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=True)
    allowed_models: list[str] | None = Field(default=None, sa_type=sa.JSON, nullable=True)
    rpm: int | None = Field(default=None, nullable=True)
    expires_at: datetime | None = _time(nullable=True)
    last_used_at: datetime | None = _time(nullable=True)
    spend_month: str | None = Field(default=None, max_length=7, nullable=True)  # "YYYY-MM" of spend_pico
    spend_pico: int = _money()
    held_pico: int = _money()
    created_at: datetime = _time()
    updated_at: datetime = _time()


class Hold(SQLModel, table=True):
    """Credits reserved for one in-flight request; removed when the request settles."""

    __tablename__ = "holds"

    request_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(foreign_key="accounts.id", max_length=36, index=True)
    api_key_id: str | None = Field(default=None, foreign_key="api_keys.id", max_length=36, nullable=True)
    amount_pico: int = _money()
    created_at: datetime = _time(index=True)
    # The instance (gateway process) serving the request: when its lease expires, the hold is settled
    # as `interrupted` (gateway/billing/leases.py). NULL for holds placed before owners existed.
    owner: str | None = Field(default=None, max_length=64, nullable=True, index=True)
    # What the usage event of an interrupted request names (`api_key_id` is set only on limited keys).
    key_id: str | None = Field(default=None, max_length=36, nullable=True)
    model_public_name: str | None = Field(default=None, max_length=128, nullable=True)
    endpoint: str | None = Field(default=None, max_length=32, nullable=True)


class IdempotencyKey(SQLModel, table=True):
    """An `Idempotency-Key` of a /v1 POST, per account: its request, and the answer once finished."""

    __tablename__ = "idempotency_keys"

    account_id: str = Field(foreign_key="accounts.id", max_length=36, primary_key=True)
    key: str = Field(max_length=255, primary_key=True)
    body_sha256: str = Field(max_length=64)
    request_id: str = Field(max_length=64)
    state: str = Field(max_length=16)  # running | done (answer stored) | streamed (not replayable)
    response_body: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    created_at: datetime = _time(index=True)


class InstanceLease(SQLModel, table=True):
    """One serving process (a worker of one replica), alive while `expires_at` is in the future."""

    __tablename__ = "instance_leases"

    instance_id: str = Field(primary_key=True, max_length=64)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = _time()
    expires_at: datetime = _time()


class CreditTransaction(SQLModel, table=True):
    """The ledger: every change of an account's balance, with the balance after it."""

    __tablename__ = "credit_transactions"
    __table_args__ = (sa.Index("ix_credit_transactions_account_id_id", "account_id", "id"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    account_id: str = Field(foreign_key="accounts.id", max_length=36)
    kind: str = Field(max_length=16)  # grant | topup | usage | admin_adjust | refund
    amount_pico: int = Field(sa_type=sa.BigInteger, nullable=False)
    trial_pico: int = _money()  # the part of amount_pico that moved the trial bucket (sums to accounts.trial_pico)
    balance_after_pico: int = Field(sa_type=sa.BigInteger, nullable=False)
    request_id: str | None = Field(default=None, max_length=64, nullable=True, unique=True)
    note: str | None = Field(default=None, max_length=500, nullable=True)
    actor_user_id: str | None = Field(default=None, max_length=36, nullable=True)
    created_at: datetime = _time()


class UsageEvent(SQLModel, table=True):
    """One row per admitted /v1 request, success or not."""

    __tablename__ = "usage_events"
    __table_args__ = (
        sa.Index("ix_usage_events_account_created", "account_id", "created_at"),
        sa.Index("ix_usage_events_account_model_created", "account_id", "model_public_name", "created_at"),
        sa.Index("ix_usage_events_key_created", "api_key_id", "created_at"),
        sa.Index("ix_usage_events_created", "created_at"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    request_id: str = Field(max_length=64, unique=True)
    account_id: str = Field(foreign_key="accounts.id", max_length=36)
    user_id: str = Field(max_length=36)
    api_key_id: str | None = Field(default=None, max_length=36, nullable=True)
    model_public_name: str = Field(max_length=128)
    ollama_tag: str = Field(default="", max_length=128)
    node: str | None = Field(default=None, max_length=128, nullable=True)
    endpoint: str = Field(max_length=32)
    input_tokens: int = Field(default=0)
    output_tokens: int = Field(default=0)
    tokens_estimated: bool = Field(default=False)
    cost_pico: int = _money()
    # What Ollama's counts cost above the hold and was not charged (the hold is the most a request costs).
    cost_capped_pico: int = Field(default=0, sa_type=sa.BigInteger, nullable=False,
                                  sa_column_kwargs={"server_default": "0"})
    latency_ms: int = Field(default=0)
    ttft_ms: int | None = Field(default=None, nullable=True)
    status: str = Field(max_length=16)  # success | error | cancelled | interrupted
    error_code: str | None = Field(default=None, max_length=64, nullable=True)
    registry_version: str = Field(default="", max_length=16)
    created_at: datetime = _time()


class Invite(SQLModel, table=True):
    """A single-use, expiring sign-up invitation (SIGNUP_MODE=invite); only the token's hash is stored."""

    __tablename__ = "invites"

    id: str = Field(primary_key=True, max_length=36)
    token_hash: str = Field(max_length=64, unique=True)  # HMAC-SHA256 hex of the token
    email: str | None = Field(default=None, max_length=320, nullable=True)  # only this address may use it
    created_by: str | None = Field(default=None, max_length=36, nullable=True)
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    used_at: datetime | None = _time(nullable=True)
    used_by: str | None = Field(default=None, max_length=36, nullable=True)
    created_at: datetime = _time()


class Payment(SQLModel, table=True):
    """One purchase through a payment provider: what was asked, what was credited and reversed.

    `status` moves pending -> paid exactly once (a conditional UPDATE), which is what makes crediting
    exactly-once whatever the provider redelivers.
    """

    __tablename__ = "payments"
    __table_args__ = (sa.UniqueConstraint("provider", "provider_ref", name="uq_payments_provider_ref"),)

    id: str = Field(primary_key=True, max_length=36)  # our own id, sent to the provider as metadata
    account_id: str = Field(foreign_key="accounts.id", max_length=36, index=True)
    provider: str = Field(max_length=16)  # stripe | btcpay
    kind: str = Field(default="topup", max_length=16)  # topup | subscription
    provider_ref: str | None = Field(default=None, max_length=255, nullable=True)  # checkout session / invoice id
    charge_ref: str | None = Field(default=None, max_length=255, nullable=True, index=True)  # payment intent id
    status: str = Field(default="pending", max_length=16)  # pending | paid | mismatch | failed
    amount_minor: int = Field(sa_type=sa.BigInteger, nullable=False)  # price in the currency's minor unit
    currency: str = Field(max_length=8)
    credit_pico: int = _money()  # credits granted when paid (price plus any pack bonus)
    refunded_minor: int = Field(default=0, sa_type=sa.BigInteger, nullable=False)  # refunded so far (cumulative)
    disputed_minor: int = Field(default=0, sa_type=sa.BigInteger, nullable=False)  # lost in disputes
    reversed_pico: int = _money()  # credits taken back for refunds and lost disputes
    offer: str = Field(default="", max_length=64)  # amount or pack name, for receipts and audit
    paid_at: datetime | None = _time(nullable=True)
    created_at: datetime = _time()
    updated_at: datetime = _time()


class WebhookEvent(SQLModel, table=True):
    """Every verified provider webhook, once: the unique (provider, event_id) makes redeliveries no-ops."""

    __tablename__ = "webhook_events"
    __table_args__ = (sa.UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    provider: str = Field(max_length=16)
    event_id: str = Field(max_length=255)
    type: str = Field(max_length=128)
    outcome: str = Field(max_length=32)  # credited | reversed | ignored | duplicate... (see gateway/billing)
    detail: str | None = Field(default=None, max_length=500, nullable=True)
    account_id: str | None = Field(default=None, max_length=36, nullable=True)
    created_at: datetime = _time(index=True)


class RedemptionCode(SQLModel, table=True):
    """A single-use credit voucher from an admin's batch; only the code's HMAC is stored."""

    __tablename__ = "redemption_codes"

    id: str = Field(primary_key=True, max_length=36)
    batch_id: str = Field(max_length=36, index=True)
    code_hash: str = Field(max_length=64, unique=True)  # HMAC-SHA256 hex of the normalised code
    face_pico: int = _money()
    expires_at: datetime | None = _time(nullable=True)
    reason: str = Field(default="", max_length=500)
    created_by: str | None = Field(default=None, max_length=36, nullable=True)
    redeemed_at: datetime | None = _time(nullable=True)
    redeemed_by: str | None = Field(default=None, max_length=36, nullable=True)  # account id
    created_at: datetime = _time()


class Subscription(SQLModel, table=True):
    """A provider subscription that puts an account on a paid plan while it is paid."""

    __tablename__ = "subscriptions"

    id: str = Field(primary_key=True, max_length=255)  # the provider's id (sub_...)
    provider: str = Field(default="stripe", max_length=16)
    account_id: str = Field(foreign_key="accounts.id", max_length=36, index=True)
    plan_name: str = Field(max_length=64)
    status: str = Field(max_length=32)  # the provider's status: active, past_due, canceled...
    created_at: datetime = _time()
    updated_at: datetime = _time()


class EmailToken(SQLModel, table=True):
    """A single-use, expiring emailed link (password reset or address verification); only its HMAC is kept."""

    __tablename__ = "email_tokens"

    id: str = Field(primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="users.id", max_length=36, index=True)
    purpose: str = Field(max_length=16)  # reset | verify
    token_hash: str = Field(max_length=64, unique=True)
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    used_at: datetime | None = _time(nullable=True)
    created_at: datetime = _time()
