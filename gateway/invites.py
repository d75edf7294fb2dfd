"""Sign-up invitations (SIGNUP_MODE=invite): single-use, expiring tokens that only an admin creates.

The token is shown once; only its HMAC-SHA256 (keyed with APP_SECRET_KEY, like API keys) is stored,
so it is also the indexed lookup key. Using an invite is one conditional UPDATE (unused and not
expired), so two sign-ups racing for one invite cannot both win.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Invite, utcnow
from gateway.errors import GatewayError

DEFAULT_DAYS = 7
MAX_DAYS = 90
_invites = Invite.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NewInvite:
    invite: Invite
    token: str  # shown once to the admin (and emailed when mail is configured)


def invite_refused() -> GatewayError:
    return GatewayError(403, "invite_required", "Sign-up needs a valid invite: this one is unknown, used, "
                        "expired or for another email address.")


def hash_token(token: str, secret: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


async def create_invite(session: AsyncSession, *, secret: str, email: str | None = None, days: int = DEFAULT_DAYS,
                        created_by: str | None = None) -> NewInvite:
    """A new invite valid for `days` days, optionally only for `email` (already canonical). Flushes."""
    token = "inv_" + secrets.token_urlsafe(24)
    invite = Invite(id=str(uuid.uuid4()), token_hash=hash_token(token, secret), email=email, created_by=created_by,
                    expires_at=utcnow() + timedelta(days=days))
    session.add(invite)
    await session.flush()
    return NewInvite(invite, token)


async def use_invite(session: AsyncSession, *, secret: str, token: object, email: str, user_id: str) -> None:
    """Mark the invite used by `user_id` in the caller's transaction; 403 `invite_required` otherwise.

    An invite bound to an address only admits that address (`email` is canonical).
    """
    if not isinstance(token, str) or not token or len(token) > 200:
        raise invite_refused()
    now = utcnow()
    used = (await session.execute(
        sa.update(_invites)
        .where(_invites.c.token_hash == hash_token(token, secret), _invites.c.used_at.is_(None),
               _invites.c.expires_at > now, sa.or_(_invites.c.email.is_(None), _invites.c.email == email))
        .values(used_at=now, used_by=user_id)
        .returning(_invites.c.id))).first()
    if used is None:
        raise invite_refused()
