"""Logging in with email and password: the one rule shared by `/api/auth/login` and the `/login` page."""

from __future__ import annotations

from gateway import accounts
from gateway.auth.deps import account_disabled
from gateway.auth.passwords import MAX_PASSWORD_LENGTH
from gateway.context import AppContext
from gateway.db.models import User
from gateway.errors import GatewayError
from gateway.fields import FieldError


def invalid_credentials() -> GatewayError:
    return GatewayError(401, "invalid_credentials", "Incorrect email or password.")


async def log_in(ctx: AppContext, *, ip: str | None, email: object, password: object) -> User:
    """The active user these credentials belong to; throttled per (email, client address) before the
    password is checked.

    Raises FieldError (param `email`/`password`) for a missing or malformed field, 429 from the
    throttle, 401 `invalid_credentials` for a wrong pair, 403 `account_disabled` (only after the
    password matched, so a guesser learns nothing about disabled accounts).
    """
    if not isinstance(email, str) or not email.strip():
        raise FieldError("email is required and must be a string.", param="email")
    if not isinstance(password, str) or not password:
        raise FieldError("password is required and must be a string.", param="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise FieldError(f"password must be at most {MAX_PASSWORD_LENGTH} characters.", param="password")
    # Counted before the password is checked, one check per email in flight (gateway/auth/throttle.py).
    async with ctx.login_throttle.attempt(ip=ip, email=email) as attempt:
        async with ctx.sessions() as session:
            user = await accounts.authenticate(session, ctx.passwords, email=email, password=password)
            if user is None:
                raise invalid_credentials()
            await session.commit()  # keeps an upgraded password hash
        attempt.succeeded()
    if user.status != "active":
        raise account_disabled()
    return user
