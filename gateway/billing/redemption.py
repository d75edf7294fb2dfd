"""Redemption codes: admin-made batches of single-use credit vouchers, redeemed by users.

A code is `PR-` + four groups of five Crockford base32 characters (100 random bits), e.g.
`PR-7K3QD-9XW2M-...`. Only an HMAC-SHA256 of its normalised form (upper case, no dashes or spaces,
keyed with APP_SECRET_KEY) is stored, so the digest is also the lookup key and the plain codes
exist only in the admin's one-time answer (JSON or CSV). Redeeming is one conditional UPDATE
(unused, unexpired), so a code pays once however many people race for it, and its ledger row
(`redeem`) is in the same transaction. Failed attempts are throttled per account and per address
(`gateway.auth.attempts.redeem_throttle`) so codes cannot be guessed.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth.attempts import AttemptThrottle, redeem_limits
from gateway.billing import ledger
from gateway.billing.money import format_usd
from gateway.db.models import Account, RedemptionCode, utcnow
from gateway.errors import GatewayError
from gateway.fields import iso

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
GROUPS, GROUP_LENGTH = 4, 5
MAX_BATCH = 1000
_codes = RedemptionCode.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Batch:
    batch_id: str
    codes: list[str]  # plain codes: shown once
    face_pico: int
    expires_at: datetime | None

    def csv(self) -> str:
        """`code,amount_usd,expires_at,batch_id` with one row per code."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["code", "amount_usd", "expires_at", "batch_id"])
        for code in self.codes:
            writer.writerow([code, format_usd(self.face_pico), iso(self.expires_at) or "", self.batch_id])
        return out.getvalue()


def invalid_code() -> GatewayError:
    # One answer for unknown, used and expired codes: the message must not help a guesser.
    return GatewayError(400, "invalid_code", "This code is not valid: it is unknown, already used or expired.",
                        param="code")


def new_code() -> str:
    groups = ("".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS))
    return "PR-" + "-".join(groups)


def normalise(code: str) -> str:
    text = code.strip().upper().replace("-", "").replace(" ", "")
    return text[2:] if len(text) == GROUPS * GROUP_LENGTH + 2 and text.startswith("PR") else text


def hash_code(code: str, secret: str) -> str:
    return hmac.new(secret.encode(), normalise(code).encode(), hashlib.sha256).hexdigest()


async def create_batch(session: AsyncSession, *, secret: str, count: int, face_pico: int,
                       expires_at: datetime | None, reason: str, created_by: str | None) -> Batch:
    """`count` new codes worth `face_pico` each; flushes (the caller commits)."""
    if not 1 <= count <= MAX_BATCH:
        raise ValueError(f"count must be 1..{MAX_BATCH}")
    batch_id = str(uuid.uuid4())
    codes = [new_code() for _ in range(count)]
    session.add_all(RedemptionCode(id=str(uuid.uuid4()), batch_id=batch_id, code_hash=hash_code(code, secret),
                                   face_pico=face_pico, expires_at=expires_at, reason=reason, created_by=created_by)
                    for code in codes)
    await session.flush()
    return Batch(batch_id, codes, face_pico, expires_at)


async def redeem(session: AsyncSession, *, secret: str, code: str, account_id: str, actor_user_id: str) -> int:
    """Spend `code` for the account and post its `redeem` ledger row; return the credited pico-USD.

    Raises 400 `invalid_code` for an unknown, used or expired code. Does not commit.
    """
    if len(code) > 64:
        raise invalid_code()
    now = utcnow()
    row = (await session.execute(
        sa.update(_codes)
        .where(_codes.c.code_hash == hash_code(code, secret), _codes.c.redeemed_at.is_(None),
               sa.or_(_codes.c.expires_at.is_(None), _codes.c.expires_at > now))
        .values(redeemed_at=now, redeemed_by=account_id)
        .returning(_codes.c.id, _codes.c.face_pico, _codes.c.batch_id))).first()
    if row is None:
        raise invalid_code()
    await ledger.post(session, account_id=account_id, kind="redeem", amount_pico=int(row.face_pico),
                      note=f"redemption code {row.id} (batch {row.batch_id})", actor_user_id=actor_user_id)
    return int(row.face_pico)


async def redeem_throttled(sessions: async_sessionmaker[AsyncSession], throttle: AttemptThrottle, *, secret: str,
                           code: object, account_id: str, actor_user_id: str, ip: str | None) -> Account:
    """What the API and the billing page call: count the attempt, redeem, take the count back on success; commits.

    Returns the account after the credit. Raises 400 (`param: code`) for a missing code, 400
    `invalid_code`, or 429 while the account or the address is locked out.
    """
    if not isinstance(code, str) or not code.strip():
        raise GatewayError(400, "invalid_body", "code is required (a string such as PR-XXXXX-XXXXX-XXXXX-XXXXX).",
                           param="code")
    limits = redeem_limits(account_id, ip)
    await throttle.reserve(limits)  # counted before the code is tried: concurrent guesses cannot slip through
    async with sessions() as session:
        await redeem(session, secret=secret, code=code, account_id=account_id, actor_user_id=actor_user_id)
        await session.commit()
        account = await session.get(Account, account_id, populate_existing=True)
    await throttle.undo(limits)  # only failures count
    assert account is not None
    return account
