"""Sign-up under the operator's policy (SIGNUP_MODE): open, by invite, or closed.

The one function both `/api/auth/signup` and the web page call; admins create users directly with
`accounts.create_user`, whatever the mode.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gateway import accounts, invites
from gateway.accounts import Member
from gateway.auth.passwords import Passwords
from gateway.billing import trials
from gateway.errors import GatewayError
from gateway.registry import Registry
from gateway.settings import Settings


def signup_closed() -> GatewayError:
    return GatewayError(403, "signup_closed", "Sign-up is closed on this server: an administrator creates accounts.")


async def sign_up(session: AsyncSession, registry: Registry, passwords: Passwords, settings: Settings, *,
                  email: object, password: object, name: object = "", invite: object = None) -> Member:
    """A new user on the free plan (plus the registry's sign-up trial, if any), if SIGNUP_MODE allows it;
    flushes, the caller commits. With REQUIRE_EMAIL_VERIFICATION the credits wait for
    `email_flows.verify_email`.

    Raises 403 `signup_closed` (mode closed), 403 `invite_required` (mode invite without a valid,
    unused, unexpired invite for this address), or the field errors of `accounts.create_user`.
    On any error the caller must roll back: the invite is then not spent.
    """
    if settings.signup_mode == "closed":
        raise signup_closed()
    if settings.signup_mode == "invite" and (not isinstance(invite, str) or not invite):
        raise invites.invite_refused()
    verify = settings.require_email_verification  # then starter and trial credits wait for the address
    member = await accounts.create_user(session, registry, passwords, email=email, password=password, name=name,
                                        starter_credits=not verify)
    if settings.signup_mode == "invite":
        await invites.use_invite(session, secret=settings.app_secret_key, token=invite, email=member.user.email,
                                 user_id=member.user.id)
    trial = registry.billing.trial
    if trial is not None and not verify:
        await trials.grant_trial(session, account_id=member.account.id, credit_pico=trial.credit_pico,
                                 days=trial.days, note=f"sign-up trial ({trial.days} days)")
        await session.refresh(member.account)
    return member
