"""What email is used for: password reset, address verification, invites and payment receipts.

Links carry a random token; only its HMAC-SHA256 (APP_SECRET_KEY) is stored in `email_tokens`,
and using one is a single conditional UPDATE (unused, unexpired), so a link works once.
A password-reset request is answered the same way, at once, whether or not the address exists:
the lookup and the mail happen after the answer (`request_password_reset` runs in the background).
With REQUIRE_EMAIL_VERIFICATION, starter and trial credits wait for `verify_email`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.background import BackgroundTask

from gateway import accounts
from gateway.accounts import Member
from gateway.auth import revoke
from gateway.auth.attempts import AttemptThrottle, reset_limits
from gateway.auth.passwords import Passwords
from gateway.billing import ledger, trials
from gateway.billing.money import format_usd
from gateway.billing.payments import Outcome
from gateway.db.models import Account, CreditTransaction, EmailToken, User, utcnow
from gateway.errors import GatewayError
from gateway.fields import FieldError
from gateway.mail import Mailer
from gateway.registry import Registry
from gateway.settings import Settings

log = logging.getLogger("pr.mail")

RESET_TTL = timedelta(hours=1)
VERIFY_TTL = timedelta(days=2)
RESET_ACCEPTED = "If an account uses this address, a reset link is on its way; it works once, for an hour."
_tokens = EmailToken.__table__  # type: ignore[attr-defined]
_users = User.__table__  # type: ignore[attr-defined]
_accounts = Account.__table__  # type: ignore[attr-defined]


def invalid_link() -> GatewayError:
    return GatewayError(400, "invalid_token", "This link is not valid: it is unknown, already used or expired.",
                        param="token")


def email_not_verified() -> GatewayError:
    return GatewayError(403, "email_not_verified", "Verify your email address first: follow the link we sent "
                        "(POST /api/auth/verify-email/resend sends another).")


def _hash(token: str, secret: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


async def issue_token(session: AsyncSession, *, secret: str, user_id: str, purpose: str, ttl: timedelta) -> str:
    """A new single-use token for `purpose` (reset | verify); flushes."""
    token = secrets.token_urlsafe(32)
    session.add(EmailToken(id=str(uuid.uuid4()), user_id=user_id, purpose=purpose, token_hash=_hash(token, secret),
                           expires_at=utcnow() + ttl))
    await session.flush()
    return token


async def use_token(session: AsyncSession, *, secret: str, token: object, purpose: str) -> str:
    """Spend the token; return its user id, or 400 `invalid_token`. Does not commit."""
    if not isinstance(token, str) or not token or len(token) > 200:
        raise invalid_link()
    now = utcnow()
    row = (await session.execute(
        sa.update(_tokens).where(_tokens.c.token_hash == _hash(token, secret), _tokens.c.purpose == purpose,
                                 _tokens.c.used_at.is_(None), _tokens.c.expires_at > now)
        .values(used_at=now).returning(_tokens.c.user_id))).first()
    if row is None:
        raise invalid_link()
    return str(row[0])


async def request_password_reset(sessions: async_sessionmaker[AsyncSession], settings: Settings, mailer: Mailer,
                                 email: str) -> None:
    """Mail a reset link if `email` belongs to an active user; otherwise nothing. Never raises (background)."""
    try:
        async with sessions() as session:
            user = await accounts.find_by_email(session, email)
            if user is None or user.status != "active":
                return
            token = await issue_token(session, secret=settings.app_secret_key, user_id=user.id, purpose="reset",
                                      ttl=RESET_TTL)
            await session.commit()
        await mailer.send_quietly(user.email, "Reset your PrivateRouter password", (
            "Someone (we hope you) asked to reset the password of this PrivateRouter account.\n\n"
            f"Choose a new password here within an hour:\n{mailer.link('/reset-password?token=' + token)}\n\n"
            "If it was not you, ignore this message: your password stays as it is.\n"))
    except Exception:
        log.exception("password reset request failed")


async def reset_password(session: AsyncSession, passwords: Passwords, *, secret: str, token: object,
                         password: object) -> str:
    """Set a new password through a reset link; return the user id. 400 for a bad token or password."""
    new_password = accounts.check_password(password)
    user_id = await use_token(session, secret=secret, token=token, purpose="reset")
    await session.execute(sa.update(_users).where(_users.c.id == user_id)
                          .values(password_hash=await passwords.hash(new_password), updated_at=utcnow()))
    return user_id


async def accept_reset_request(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                               throttle: AttemptThrottle, mailer: Mailer, *, email: object,
                               ip: str | None) -> BackgroundTask:
    """A password-reset request as `POST /api/auth/password-reset` and the /forgot-password page take it:
    check the address's form, count it (429 beyond `reset_limits`), and return the background task that
    mails the link if the address has an account, so the answer is the same, at once, either way.

    Raises FieldError(param="email") for a malformed address, 429 `rate_limit_exceeded` when throttled.
    """
    address = check_email_field(email)
    await throttle_reset(throttle, email=address, ip=ip)
    return BackgroundTask(request_password_reset, sessions, settings, mailer, address)


async def reset_and_end_sessions(session: AsyncSession, passwords: Passwords, *, secret: str, token: object,
                                 password: object) -> str:
    """`reset_password`, then end every session of the user (a reset ends them, as a password change does);
    returns the user id. The caller commits and drops the user's cached API keys. Raises as `reset_password`."""
    user_id = await reset_password(session, passwords, secret=secret, token=token, password=password)
    await revoke.end_sessions(session, user_id=user_id)
    return user_id


def verification_task(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                      user_id: str) -> BackgroundTask | None:
    """The background task that mails a new user's verification link, when REQUIRE_EMAIL_VERIFICATION
    is on and SMTP is configured (run after the sign-up answer is sent); None otherwise."""
    mailer = Mailer.from_settings(settings)
    if not settings.require_email_verification or mailer is None:
        return None
    return BackgroundTask(send_verification, sessions, settings, mailer, user_id)


async def send_verification(sessions: async_sessionmaker[AsyncSession], settings: Settings, mailer: Mailer,
                            user_id: str) -> None:
    """Mail a verification link to the user (if not verified yet)."""
    async with sessions() as session:
        user = await session.get(User, user_id)
        if user is None or user.email_verified_at is not None:
            return
        token = await issue_token(session, secret=settings.app_secret_key, user_id=user_id, purpose="verify",
                                  ttl=VERIFY_TTL)
        await session.commit()
    await mailer.send_quietly(user.email, "Verify your email for PrivateRouter", (
        "Welcome to PrivateRouter. Confirm this address to receive your starter credits and create API keys:\n"
        f"{mailer.link('/verify-email?token=' + token)}\n\nThe link works once, for two days.\n"))


async def grant_starter_credits(session: AsyncSession, registry: Registry, account_id: str) -> None:
    """The free plan's included credits and the registry's trial: what a new (verified) user receives."""
    free = registry.plans[accounts.FREE_PLAN]
    if free.included_credits_pico > 0:
        await ledger.post(session, account_id=account_id, kind="grant", amount_pico=free.included_credits_pico,
                          note=f"{free.name} plan included credits")
    trial = registry.billing.trial
    if trial is not None:
        await trials.grant_trial(session, account_id=account_id, credit_pico=trial.credit_pico, days=trial.days,
                                 note=f"sign-up trial ({trial.days} days)")


async def verify_email(session: AsyncSession, registry: Registry, *, secret: str, token: object) -> Member:
    """Mark the address verified and grant the starter and trial credits, once (and never to an account
    that already had them, e.g. one made before verification was required). Does not commit."""
    user_id = await use_token(session, secret=secret, token=token, purpose="verify")
    now = utcnow()
    first = (await session.execute(sa.update(_users).where(_users.c.id == user_id, _users.c.email_verified_at.is_(None))
                                   .values(email_verified_at=now, updated_at=now).returning(_users.c.id))).first()
    member = await accounts.require_member(session, user_id)
    if first is not None and not await _had_grants(session, member.account.id):
        await grant_starter_credits(session, registry, member.account.id)
    return await accounts.require_member(session, user_id)


async def _had_grants(session: AsyncSession, account_id: str) -> bool:
    """Whether the account already received grants: it signed up before verification was required (and got
    its starter credits then), so verifying now must not pay them twice."""
    found = await session.scalar(sa.select(sa.func.count()).select_from(CreditTransaction).where(
        CreditTransaction.account_id == account_id,  # type: ignore[arg-type]
        CreditTransaction.kind.in_(("grant", "trial_grant"))))  # type: ignore[attr-defined]
    return bool(found)


async def throttle_reset(throttle: AttemptThrottle, *, email: str, ip: str | None) -> None:
    """Count one reset request; 429 beyond the limits of `gateway.auth.attempts.reset_limits`."""
    limits = reset_limits(email, ip)
    await throttle.reserve(limits)


def require_verified(settings: Settings, user: User) -> None:
    """403 `email_not_verified` when REQUIRE_EMAIL_VERIFICATION is on and the address is not verified."""
    if settings.require_email_verification and user.email_verified_at is None:
        raise email_not_verified()


def check_email_field(value: object) -> str:
    try:
        return accounts.normalize_email(value)
    except FieldError:
        raise FieldError("email must be a valid email address.", param="email") from None


async def send_invite(mailer: Mailer, *, email: str, token: str) -> bool:
    return await mailer.send_quietly(email, "You are invited to PrivateRouter", (
        "You have been invited to an account on this PrivateRouter (an OpenAI-compatible LLM gateway).\n\n"
        f"Sign up here (the link works once):\n{mailer.link('/signup?invite=' + token)}\n"))


async def send_receipt(sessions: async_sessionmaker[AsyncSession], mailer: Mailer, outcome: Outcome,
                       provider: str) -> None:
    """Mail a receipt for a credited payment or a paid plan invoice. Never raises (background)."""
    if outcome.account_id is None or outcome.credited_pico <= 0:
        return
    try:
        async with sessions() as session:
            row = (await session.execute(sa.select(_users.c.email, _accounts.c.balance_pico)
                                         .join(_accounts, _accounts.c.user_id == _users.c.id)
                                         .where(_accounts.c.id == outcome.account_id))).first()
        if row is None:
            return
        what = f"plan {outcome.detail}" if outcome.outcome == "plan_paid" else "credit"
        await mailer.send_quietly(row.email, "Your PrivateRouter receipt", (
            f"Thank you. Your payment through {provider} was received.\n\n"
            f"  Purchase: {what}\n  Credited: {format_usd(outcome.credited_pico)} USD\n"
            f"  Reference: {outcome.payment_id}\n  Balance now: {format_usd(int(row.balance_pico))} USD\n"))
    except Exception:
        log.exception("sending a receipt failed")
