"""Ending sessions server-side: logout and password changes bump `users.session_version`.

Every session token carries the version current when it was issued (claim `sv`), and
`current_user` compares it with the user row it reads on every request anyway, so a bump ends every
token issued before it at once, on every replica, with no extra round trip or cache.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from gateway.accounts import check_password
from gateway.auth.passwords import Passwords
from gateway.db.models import User, utcnow
from gateway.fields import FieldError


async def end_sessions(session: AsyncSession, *, user_id: str) -> None:
    """Invalidate every session token of the user issued so far (one atomic increment)."""
    await session.execute(sa.update(User).where(col(User.id) == user_id)
                          .values(session_version=col(User.session_version) + 1, updated_at=utcnow()))


async def change_password(session: AsyncSession, passwords: Passwords, *, user: User, current: object,
                          new: object) -> User:
    """Replace the user's password and end all their sessions; returns the refreshed user.

    Raises FieldError: `current_password` wrong (401 `invalid_credentials`), `new_password` invalid (400).
    """
    if not isinstance(current, str) or not await passwords.verify(user.password_hash, current):
        raise FieldError("current_password is incorrect.", param="current_password", code="invalid_credentials",
                         status=401)
    try:
        secret = check_password(new)
    except FieldError as exc:
        raise FieldError(exc.message.replace("password", "new_password", 1), param="new_password") from None
    user.password_hash = await passwords.hash(secret)
    await session.flush()
    await end_sessions(session, user_id=user.id)
    refreshed = await session.get(User, user.id, populate_existing=True)
    assert refreshed is not None
    return refreshed
