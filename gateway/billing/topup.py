"""Mock top-ups: the amounts this deployment offers and the ledger entry one makes (no card is charged).

Shared by `POST /api/billing/topup` and the `/billing` page, so both accept exactly the same amounts.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gateway import accounts
from gateway.accounts import Member
from gateway.billing.money import to_pico
from gateway.db.models import Account
from gateway.fields import FieldError, parse_usd, usd

TOPUP_AMOUNTS_USD = (10, 25, 50, 100, 500)  # seed 000's mock top-up choices
_TOPUP_PICO = {to_pico(amount) for amount in TOPUP_AMOUNTS_USD}


def parse_topup_amount(value: object, *, param: str = "amount_usd") -> int:
    """One of TOPUP_AMOUNTS_USD (an integer or a decimal string) in pico-USD; FieldError(param) otherwise."""
    allowed = ", ".join(str(amount) for amount in TOPUP_AMOUNTS_USD)
    message = f"{param} must be one of {allowed} (an integer or a decimal string)."
    if value is None:
        raise FieldError(message, param=param)
    try:
        amount = parse_usd(value, param=param)
    except FieldError:
        raise FieldError(message, param=param) from None
    if amount not in _TOPUP_PICO:
        raise FieldError(message, param=param)
    return amount


async def top_up(session: AsyncSession, *, member: Member, amount_pico: int) -> Account:
    """Credit a validated mock top-up as a `topup` ledger entry; returns the refreshed account. Does not commit."""
    return await accounts.post_credits(session, account_id=member.account.id, kind="topup", amount_pico=amount_pico,
                                       note=f"top-up {usd(amount_pico)} USD (mock)", actor_user_id=member.user.id)
