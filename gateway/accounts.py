"""Users and their accounts: sign-up, authentication, plans, status and credits.

Functions take an injected session and keyword-only arguments; they flush but never commit, so a
caller can group them in one transaction. Validation failures raise `FieldError` naming the
request field (`param`) they concern.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, Passwords
from gateway.billing import ledger
from gateway.db.models import Account, ApiKey, User, utcnow
from gateway.errors import GatewayError
from gateway.fields import FieldError
from gateway.registry import Registry

MAX_EMAIL_LENGTH = 320
MAX_NAME_LENGTH = 200
FREE_PLAN = "free"
ROLES = ("user", "admin")
STATUSES = ("active", "disabled")
DELETED = "deleted"  # soft-deleted (see soft_delete); not a status an admin can set back
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")


class EmailTaken(FieldError):
    def __init__(self) -> None:
        super().__init__("An account with this email already exists.", param="email", code="email_taken",
                         status=409)


class UserNotFound(GatewayError):
    """No user with this id (404)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(404, "not_found", f"No user with id '{user_id}'.")


@dataclass(frozen=True)
class Member:
    """A user with their account: what every /api route works from."""

    user: User
    account: Account


def normalize_email(email: object) -> str:
    """The canonical (trimmed, lower-case) form of an email address, or FieldError(param='email')."""
    if email is None or email == "":
        raise FieldError("email is required.", param="email")
    if not isinstance(email, str):
        raise FieldError("email must be a string.", param="email")
    canonical = email.strip().lower()
    if len(canonical) > MAX_EMAIL_LENGTH:
        raise FieldError(f"email must be at most {MAX_EMAIL_LENGTH} characters.", param="email")
    if not _EMAIL.match(canonical) or any(ord(char) < 32 for char in canonical):
        raise FieldError("email is not a valid email address.", param="email")
    return canonical


def check_password(password: object) -> str:
    if password is None:
        raise FieldError("password is required.", param="password")
    if not isinstance(password, str):
        raise FieldError("password must be a string.", param="password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FieldError(f"password must be at least {MIN_PASSWORD_LENGTH} characters.", param="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise FieldError(f"password must be at most {MAX_PASSWORD_LENGTH} characters.", param="password")
    return password


def check_name(name: object) -> str:
    if name is None:
        return ""
    if not isinstance(name, str):
        raise FieldError("name must be a string.", param="name")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise FieldError(f"name must be at most {MAX_NAME_LENGTH} characters.", param="name")
    return name


async def find_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(sa.select(User).where(col(User.email) == email))
    return result.scalar_one_or_none()


async def get_member(session: AsyncSession, user_id: str) -> Member | None:
    """The user and their account in one indexed read."""
    result = await session.execute(
        sa.select(User, Account).join(Account, col(Account.user_id) == col(User.id)).where(col(User.id) == user_id)
    )
    row = result.first()
    return Member(user=row[0], account=row[1]) if row is not None else None


async def require_member(session: AsyncSession, user_id: str) -> Member:
    member = await get_member(session, user_id)
    if member is None:
        raise UserNotFound(user_id)
    return member


async def create_user(session: AsyncSession, registry: Registry, passwords: Passwords, *, email: object,
                      password: object, name: object = "", role: str = "user", starter_credits: bool = True) -> Member:
    """A new user with an account on the free plan and (unless `starter_credits` is False: they wait for
    email verification) its included credits as a `grant` entry."""
    canonical = normalize_email(email)
    secret = check_password(password)
    display_name = check_name(name)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if await find_by_email(session, canonical) is not None:
        raise EmailTaken()
    free = registry.plans[FREE_PLAN]
    user = User(id=str(uuid.uuid4()), email=canonical, name=display_name, role=role,
                password_hash=await passwords.hash(secret))
    account = Account(id=str(uuid.uuid4()), user_id=user.id, plan_name=free.name)
    session.add(user)
    try:
        await session.flush()  # a concurrent sign-up with the same email loses here
    except IntegrityError:
        await session.rollback()
        raise EmailTaken() from None
    session.add(account)
    await session.flush()
    if starter_credits and free.included_credits_pico > 0:
        await ledger.post(session, account_id=account.id, kind="grant", amount_pico=free.included_credits_pico,
                          note=f"{free.name} plan included credits")
    await session.refresh(account)
    return Member(user=user, account=account)


async def authenticate(session: AsyncSession, passwords: Passwords, *, email: str, password: str) -> User | None:
    """The user whose email and password these are (whatever their status), else None.

    An unknown email costs the same argon2 verification as a known one, so timing tells nothing.
    A hash made with older parameters is upgraded on the way.
    """
    try:
        canonical = normalize_email(email)
    except FieldError:
        canonical = None
    user = await find_by_email(session, canonical) if canonical is not None else None
    if not await passwords.verify(user.password_hash if user is not None else None, password):
        return None
    assert user is not None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash(password)
        user.updated_at = utcnow()
        await session.flush()
    return user


async def create_admin(sessions: async_sessionmaker[AsyncSession], registry: Registry, *, email: str, password: str,
                       name: str = "", passwords: Passwords | None = None) -> str:
    """Make `email` an active admin and return the user id.

    An existing user is promoted (and re-enabled) and keeps their password; otherwise a user is
    created with this password. Raises ValueError (FieldError) for a bad email or password.
    """
    canonical = normalize_email(email)
    check_password(password)
    async with sessions() as session:
        user = await find_by_email(session, canonical)
        if user is None:
            member = await create_user(session, registry, passwords or Passwords(), email=canonical,
                                       password=password, name=name, role="admin")
            user = member.user
        else:
            user.role = "admin"
            user.status = "active"
            user.updated_at = utcnow()
        await session.commit()
        return user.id


async def set_plan(session: AsyncSession, registry: Registry, *, user_id: str, plan: object,
                   grant_included_credits: bool = False, actor_user_id: str | None = None,
                   reason: str | None = None) -> Member:
    """Move the user's account to `plan` (which must exist in the registry in force); `reason` goes into the
    note of the credits grant."""
    if not isinstance(plan, str) or plan not in registry.plans:
        known = ", ".join(registry.plans)
        raise FieldError(f"plan must be one of: {known}.", param="plan")
    member = await require_member(session, user_id)
    member.account.plan_name = plan
    member.account.updated_at = utcnow()
    await session.flush()
    credits = registry.plans[plan].included_credits_pico
    if grant_included_credits and credits > 0:
        note = f"{plan} plan included credits" + (f": {reason}" if reason else "")
        await ledger.post(session, account_id=member.account.id, kind="grant", amount_pico=credits,
                          note=note[:500], actor_user_id=actor_user_id)
        await session.refresh(member.account)
    return member


async def set_status(session: AsyncSession, *, user_id: str, status: str) -> Member:
    """Enable or disable a user; a disabled user cannot log in and their tokens and keys stop working."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    member = await require_member(session, user_id)
    if member.user.status == DELETED:
        raise GatewayError(409, "user_deleted", "This user was deleted; create a new one instead.")
    member.user.status = status
    member.user.updated_at = utcnow()
    await session.flush()
    return member


async def soft_delete(session: AsyncSession, *, user_id: str) -> Member:
    """Delete a user but keep their account's ledger and usage for accounting.

    The status becomes `deleted` (no login, no session), every key is marked `deleted` in the same
    transaction, and the email is replaced by a placeholder so the address can sign up again.
    Idempotent. Does not commit.
    """
    member = await require_member(session, user_id)
    now = utcnow()
    keys = ApiKey.__table__  # type: ignore[attr-defined]
    await session.execute(sa.update(keys).where(keys.c.user_id == user_id, keys.c.status != DELETED)
                          .values(status=DELETED, updated_at=now))
    if member.user.status != DELETED:
        member.user.status = DELETED
        member.user.email = f"deleted-{user_id}@deleted.invalid"
        member.user.updated_at = now
    await session.flush()
    return member


async def post_credits(session: AsyncSession, *, account_id: str, kind: ledger.Kind, amount_pico: int,
                       note: str | None = None, actor_user_id: str | None = None) -> Account:
    """Post one ledger entry and return the refreshed account; `ledger.InsufficientBalance` on overdraft."""
    await ledger.post(session, account_id=account_id, kind=kind, amount_pico=amount_pico, note=note,
                      actor_user_id=actor_user_id)
    account = await session.get(Account, account_id, populate_existing=True)
    assert account is not None
    return account
