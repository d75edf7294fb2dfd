"""Mock top-ups: the offer a buyer picked and the ledger entry it makes (no card is charged).

Shared by `POST /api/billing/topup` and the `/billing` page, so both follow the same policy
(PAYMENT_PROVIDERS must include `mock`) and accept exactly the amounts and packs of `models.yaml`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway import accounts
from gateway.accounts import Member
from gateway.billing import policy
from gateway.billing.offers import BillingConfig, Offer
from gateway.db.models import Account
from gateway.settings import Settings


def mock_offer(settings: Settings, billing: BillingConfig, body: dict[str, Any]) -> Offer:
    """The offer a mock top-up names (`{"amount_usd"}` or `{"pack"}`).

    Raises 403 `payments_disabled` unless PAYMENT_PROVIDERS includes mock, and FieldError naming
    `amount_usd` or `pack` for anything `models.yaml`'s `billing:` section does not offer.
    """
    return policy.provider_offer(settings, billing, "mock", body)


async def top_up(session: AsyncSession, *, member: Member, offer: Offer) -> Account:
    """Credit a chosen offer (price plus any pack bonus) as a `topup` ledger entry; returns the refreshed
    account. Does not commit."""
    return await accounts.post_credits(session, account_id=member.account.id, kind="topup",
                                       amount_pico=offer.credit_pico, note=f"top-up {offer.label} (mock)",
                                       actor_user_id=member.user.id)
