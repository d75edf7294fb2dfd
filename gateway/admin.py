"""What operators do to users and read about the deployment: search, credit adjustments, statistics.

Shared by `/api/admin/*` and the `/admin` pages. Functions take an injected session, flush but
never commit (the caller groups them in one transaction), and raise FieldError naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from gateway import accounts
from gateway.accounts import Member
from gateway.billing.ledger import InsufficientBalance
from gateway.db.models import Account, CreditTransaction, UsageEvent, User, utcnow
from gateway.errors import GatewayError
from gateway.fields import FieldError, parse_usd, usd
from gateway.usage_report import day_of

USAGE_WINDOW = timedelta(days=30)
MAX_NOTE_LENGTH = 500


@dataclass(frozen=True)
class UserRow:
    """A user with their account and their last-30-days usage (requests, cost in pico-USD)."""

    member: Member
    requests_30d: int
    cost_30d_pico: int


@dataclass(frozen=True)
class Stats:
    """Deployment totals over [since, until): money in pico-USD, tokens as counted by Ollama."""

    since: datetime
    until: datetime
    users: int
    new_users: int
    active_users: int
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    revenue_pico: int
    topups_pico: int


@dataclass(frozen=True)
class Day:
    """One UTC day of traffic: requests, tokens (in + out) and revenue in pico-USD."""

    day: str
    requests: int
    tokens: int
    revenue_pico: int


async def usage_30d(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """account id -> (requests, cost pico-USD) over the last 30 days."""
    if not account_ids:
        return {}
    rows = await session.execute(
        sa.select(col(UsageEvent.account_id), sa.func.count(), sa.func.coalesce(sa.func.sum(UsageEvent.cost_pico), 0))
        .where(col(UsageEvent.account_id).in_(account_ids), col(UsageEvent.created_at) >= utcnow() - USAGE_WINDOW)
        .group_by(col(UsageEvent.account_id))
    )
    return {account_id: (int(requests), int(cost)) for account_id, requests, cost in rows.all()}


def _like(fragment: str) -> str:
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_users(session: AsyncSession, *, email: str | None, limit: int,
                       offset: int) -> tuple[int, list[UserRow]]:
    """(total, page) of users, newest first, whose email contains `email` (case-insensitive) if given."""
    where = []
    if email and email.strip():
        where.append(col(User.email).like(_like(email.strip().lower()), escape="\\"))
    total = await session.scalar(sa.select(sa.func.count()).select_from(User).where(*where))
    rows = (await session.execute(
        sa.select(User, Account).join(Account, col(Account.user_id) == col(User.id)).where(*where)
        .order_by(col(User.created_at).desc(), col(User.id)).limit(limit).offset(offset)
    )).all()
    members = [Member(user=user, account=account) for user, account in rows]
    usage = await usage_30d(session, [member.account.id for member in members])
    return int(total or 0), [UserRow(member, *usage.get(member.account.id, (0, 0))) for member in members]


async def user_row(session: AsyncSession, user_id: str) -> UserRow:
    """One user with their 30-day usage; 404 UserNotFound if there is none."""
    member = await accounts.require_member(session, user_id)
    usage = await usage_30d(session, [member.account.id])
    return UserRow(member, *usage.get(member.account.id, (0, 0)))


async def adjust_credits(session: AsyncSession, *, user_id: str, amount: object, reason: object,
                         actor_user_id: str, reason_param: str = "reason") -> Account:
    """Credit or debit a user's account (`admin_adjust` ledger entry) by a signed USD amount.

    `amount` is a signed decimal string or integer (`"+5.00"`, `"-2.50"`), never zero; `reason` a
    required non-empty string of at most MAX_NOTE_LENGTH characters, kept as the ledger note (every
    admin money action carries one, issue 11). A debit beyond the available balance is refused
    (FieldError code `insufficient_credits`). Does not commit.
    """
    if amount is None or amount == "":
        raise FieldError('amount_usd is required, e.g. "+5.00" or "-2.50".', param="amount_usd")
    pico = parse_usd(amount, param="amount_usd", signed=True)
    if pico == 0:
        raise FieldError("amount_usd must not be zero.", param="amount_usd")
    note = require_reason(reason, param=reason_param)
    member = await accounts.require_member(session, user_id)
    try:
        return await accounts.post_credits(session, account_id=member.account.id, kind="admin_adjust",
                                           amount_pico=pico, note=note, actor_user_id=actor_user_id)
    except InsufficientBalance:
        raise FieldError(f"The account's available balance cannot cover a debit of {usd(-pico)} USD.",
                         param="amount_usd", code="insufficient_credits") from None


def require_reason(reason: object, *, param: str = "reason") -> str:
    """The required reason of an admin money action, stripped; FieldError(param) otherwise."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_NOTE_LENGTH:
        raise FieldError(f"{param} is required: a non-empty string of at most {MAX_NOTE_LENGTH} characters.",
                         param=param)
    return reason.strip()


async def set_user_status(session: AsyncSession, *, user_id: str, status: str, actor_user_id: str) -> Member:
    """Enable or disable a user; an admin cannot disable their own account (400 `cannot_disable_self`)."""
    if status == "disabled" and user_id == actor_user_id:
        raise GatewayError(400, "cannot_disable_self", "An admin cannot disable their own account.")
    if status not in accounts.STATUSES:
        raise FieldError(f"status must be one of {', '.join(accounts.STATUSES)}.", param="status")
    return await accounts.set_status(session, user_id=user_id, status=status)


async def stats(session: AsyncSession, *, since: datetime, until: datetime) -> Stats:
    """Users, active users, requests, errors, tokens, revenue (usage cost) and top-ups over [since, until)."""
    created = col(UsageEvent.created_at)
    users = await session.scalar(sa.select(sa.func.count()).select_from(User).where(col(User.created_at) < until))
    new_users = await session.scalar(sa.select(sa.func.count()).select_from(User)
                                     .where(col(User.created_at) >= since, col(User.created_at) < until))
    usage = (await session.execute(
        sa.select(sa.func.count(), sa.func.count(sa.distinct(col(UsageEvent.account_id))),
                  sa.func.coalesce(sa.func.sum(UsageEvent.input_tokens), 0),
                  sa.func.coalesce(sa.func.sum(UsageEvent.output_tokens), 0),
                  sa.func.coalesce(sa.func.sum(UsageEvent.cost_pico), 0),
                  sa.func.coalesce(sa.func.sum(sa.case((col(UsageEvent.status) != "success", 1), else_=0)), 0))
        .where(created >= since, created < until)
    )).one()
    topups = await session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(CreditTransaction.amount_pico), 0))
        .where(col(CreditTransaction.kind) == "topup", col(CreditTransaction.created_at) >= since,
               col(CreditTransaction.created_at) < until)
    )
    requests, active, tokens_in, tokens_out, revenue, errors = (int(value) for value in usage)
    return Stats(since=since, until=until, users=int(users or 0), new_users=int(new_users or 0),
                 active_users=active, requests=requests, errors=errors, input_tokens=tokens_in,
                 output_tokens=tokens_out, revenue_pico=revenue, topups_pico=int(topups or 0))


async def daily(session: AsyncSession, *, since: datetime, until: datetime) -> list[Day]:
    """Requests, tokens and revenue per UTC day over [since, until), days without traffic left out."""
    day = day_of(session, col(UsageEvent.created_at))
    rows = (await session.execute(
        sa.select(day, sa.func.count(),
                  sa.func.coalesce(sa.func.sum(UsageEvent.input_tokens + UsageEvent.output_tokens), 0),
                  sa.func.coalesce(sa.func.sum(UsageEvent.cost_pico), 0))
        .where(col(UsageEvent.created_at) >= since, col(UsageEvent.created_at) < until)
        .group_by(day).order_by(day)
    )).all()
    return [Day(str(row[0]), int(row[1]), int(row[2]), int(row[3])) for row in rows]
