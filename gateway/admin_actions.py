"""The operator actions that both `/api/admin/*` and the `/admin` pages offer, with their checks in one place:
invites, redemption-code batches, trial grants, soft deletion, and the lists behind them (invites,
codes and batches, payment webhook deliveries).

Values arrive as the client sent them (`object`): each function checks its own fields and raises
FieldError naming the field, so a JSON body and an HTML form are refused with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from gateway import accounts, invites
from gateway import admin as operators
from gateway.billing import redemption, trials
from gateway.billing.offers import MAX_TRIAL_DAYS
from gateway.db.models import Invite, RedemptionCode, WebhookEvent
from gateway.errors import GatewayError
from gateway.fields import FieldError, parse_time, parse_usd
from gateway.settings import Settings

MAX_CODE_VALUE_PICO = 100_000 * 10**12  # one code or trial grant: at most 100,000 USD


def _int_in(value: object, *, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FieldError(f"{param} must be an integer from {low} to {high}.", param=param)
    return value


def _grant_amount(value: object) -> int:
    amount = parse_usd(value, param="amount_usd")
    if not 0 < amount <= MAX_CODE_VALUE_PICO:
        raise FieldError("amount_usd must be more than 0 and at most 100000.", param="amount_usd")
    return amount


async def create_invite(session: AsyncSession, settings: Settings, *, email: object, days: object,
                        actor_user_id: str) -> invites.NewInvite:
    """A single-use sign-up invite (`email` optional, `days` 1..MAX_DAYS); does not commit."""
    address = accounts.normalize_email(email) if email is not None else None
    valid_days = _int_in(days, param="days", low=1, high=invites.MAX_DAYS)
    return await invites.create_invite(session, secret=settings.app_secret_key, email=address, days=valid_days,
                                       created_by=actor_user_id)


def invite_link(settings: Settings, token: str) -> str | None:
    """`PUBLIC_BASE_URL/signup?invite=<token>`, or None without PUBLIC_BASE_URL."""
    base = settings.public_base_url
    return f"{base}/signup?invite={token}" if base else None


async def list_invites(session: AsyncSession, *, limit: int, offset: int) -> tuple[int, list[Invite]]:
    """(total, invites newest first); their tokens are not stored, only hashes."""
    total = await session.scalar(sa.select(sa.func.count()).select_from(Invite))
    rows = await session.execute(sa.select(Invite).order_by(col(Invite.created_at).desc(), col(Invite.id))
                                 .limit(limit).offset(offset))
    return total or 0, list(rows.scalars())


async def create_code_batch(session: AsyncSession, settings: Settings, *, count: object, amount_usd: object,
                            reason: object, expires_at: object, actor_user_id: str) -> redemption.Batch:
    """`count` codes (1..MAX_BATCH) worth `amount_usd` each, with a required reason and an optional future
    `expires_at` (ISO 8601); does not commit. The plain codes are in the returned batch only."""
    valid_count = _int_in(count, param="count", low=1, high=redemption.MAX_BATCH)
    face = _grant_amount(amount_usd)
    why = operators.require_reason(reason)
    try:
        expires = parse_time(expires_at, param="expires_at") if expires_at is not None else None
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        raise FieldError("expires_at is out of range.", param="expires_at") from None
    if expires is not None and not datetime.now(UTC) < expires < datetime(9000, 1, 1, tzinfo=UTC):
        raise FieldError("expires_at must be in the future (and before the year 9000).", param="expires_at")
    return await redemption.create_batch(session, secret=settings.app_secret_key, count=valid_count, face_pico=face,
                                         expires_at=expires, reason=why, created_by=actor_user_id)


async def list_codes(session: AsyncSession, *, batch_id: str | None, limit: int,
                     offset: int) -> tuple[int, list[RedemptionCode]]:
    """(total, codes newest first), optionally of one batch; never their plain text."""
    conditions = [col(RedemptionCode.batch_id) == batch_id] if batch_id else []
    total = await session.scalar(sa.select(sa.func.count()).select_from(RedemptionCode).where(*conditions))
    rows = await session.execute(sa.select(RedemptionCode).where(*conditions)
                                 .order_by(col(RedemptionCode.created_at).desc(), col(RedemptionCode.id))
                                 .limit(limit).offset(offset))
    return total or 0, list(rows.scalars())


@dataclass(frozen=True)
class BatchSummary:
    """One batch of codes: how many, how many redeemed, face value (pico-USD), reason, expiry, creation."""

    batch_id: str
    count: int
    redeemed: int
    face_pico: int
    reason: str
    expires_at: datetime | None
    created_at: datetime


async def list_batches(session: AsyncSession, *, limit: int) -> list[BatchSummary]:
    """The newest `limit` batches with their redemption counts."""
    code = RedemptionCode.__table__.c  # type: ignore[attr-defined]
    rows = await session.execute(
        sa.select(code.batch_id, sa.func.count(), sa.func.count(code.redeemed_at), sa.func.max(code.face_pico),
                  sa.func.max(code.reason), sa.func.max(code.expires_at), sa.func.min(code.created_at))
        .group_by(code.batch_id).order_by(sa.func.min(code.created_at).desc()).limit(limit))
    return [BatchSummary(row[0], int(row[1]), int(row[2]), int(row[3]), str(row[4]), row[5], row[6])
            for row in rows.all()]


async def grant_trial(session: AsyncSession, *, user_id: str, amount_usd: object, days: object, reason: object,
                      actor_user_id: str) -> None:
    """Trial credit for a user (a `trial_grant` ledger row; expires after `days`, 1..MAX_TRIAL_DAYS); does not
    commit. Raises FieldError for a field, 404 for an unknown user."""
    amount = _grant_amount(amount_usd)
    valid_days = _int_in(days, param="days", low=1, high=MAX_TRIAL_DAYS)
    why = operators.require_reason(reason)
    member = await accounts.require_member(session, user_id)
    await trials.grant_trial(session, account_id=member.account.id, credit_pico=amount, days=valid_days,
                             note=f"trial granted by an admin ({valid_days} days): {why}", actor_user_id=actor_user_id)


async def delete_user(session: AsyncSession, *, user_id: str, actor_user_id: str) -> None:
    """Soft-delete a user (keys revoked, email freed, ledger and usage kept); an admin cannot delete
    themself (400 `cannot_delete_self`). Does not commit; the caller drops the user's cached keys."""
    if user_id == actor_user_id:
        raise GatewayError(400, "cannot_delete_self", "An admin cannot delete their own account.")
    await accounts.soft_delete(session, user_id=user_id)


async def list_webhook_events(session: AsyncSession, *, provider: str | None, limit: int,
                              offset: int) -> tuple[int, list[WebhookEvent]]:
    """(total, the providers' webhook deliveries as applied, newest first), optionally of one provider."""
    conditions = [col(WebhookEvent.provider) == provider] if provider else []
    total = await session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent).where(*conditions))
    rows = await session.execute(sa.select(WebhookEvent).where(*conditions)
                                 .order_by(col(WebhookEvent.id).desc()).limit(limit).offset(offset))
    return total or 0, list(rows.scalars())
