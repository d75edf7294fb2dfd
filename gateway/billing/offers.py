"""What can be bought: the `billing:` section of models.yaml (top-up amounts, credit packs, trial).

    billing:
      currency: usd                       # ISO code the providers charge in (credits are USD)
      topup_amounts_usd: ["10", "25", "50", "100", "500"]
      packs:                              # optional: pay `price_usd`, receive price + `bonus_usd`
        - name: team-pack
          price_usd: "200"
          bonus_usd: "20"
      trial:                              # optional: trial credit at sign-up, removed after `days`
        credits_usd: "5"
        days: 14

Without the section the seed's amounts (10, 25, 50, 100, 500 USD, seed 000) apply and there are no
packs. Amounts are whole cents (a payment provider charges in cents). Parsing reports the file,
line and key of the first problem, like the rest of the registry (gateway/registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gateway.billing.money import PICO_PER_USD, format_usd, to_pico

if TYPE_CHECKING:
    from gateway.registry import Path_, _Validator

DEFAULT_TOPUP_AMOUNTS_USD = ("10", "25", "50", "100", "500")
PICO_PER_CENT = PICO_PER_USD // 100
MAX_AMOUNT_USD = Decimal(100_000)  # one purchase; far below what a BIGINT of pico-USD holds
MAX_TRIAL_DAYS = 366


@dataclass(frozen=True)
class Offer:
    """One thing a buyer can pay for: `price_pico` charged, `credit_pico` credited (price + bonus)."""

    name: str  # "25.00" for a plain amount, the pack's name for a pack
    price_pico: int
    credit_pico: int

    @property
    def price_minor(self) -> int:
        """The price in cents, as payment providers take it."""
        return self.price_pico // PICO_PER_CENT

    @property
    def label(self) -> str:
        """For ledger notes and receipts: "25.00 USD" or "pack team-pack (200.00 USD + 20.00 USD bonus)"."""
        if self.bonus_pico == 0 and self.name == format_usd(self.price_pico):
            return f"{self.name} USD"
        return f"pack {self.name} ({format_usd(self.price_pico)} USD + {format_usd(self.bonus_pico)} USD bonus)"

    @property
    def bonus_pico(self) -> int:
        return self.credit_pico - self.price_pico

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "price_usd": format_usd(self.price_pico),
                "credits_usd": format_usd(self.credit_pico), "bonus_usd": format_usd(self.bonus_pico)}


@dataclass(frozen=True)
class Trial:
    """Trial credit granted at sign-up: `credit_pico` for `days` days (spent first, then removed)."""

    credit_pico: int
    days: int


@dataclass(frozen=True)
class BillingConfig:
    """The registry's billing section, parsed; `DEFAULT_BILLING` when the file has none."""

    currency: str
    amounts: tuple[Offer, ...]
    packs: tuple[Offer, ...]
    trial: Trial | None = None

    def amount(self, price_pico: int) -> Offer | None:
        return next((offer for offer in self.amounts if offer.price_pico == price_pico), None)

    def pack(self, name: str) -> Offer | None:
        return next((offer for offer in self.packs if offer.name == name), None)

    def as_json(self) -> dict[str, Any]:
        trial = None if self.trial is None else {"credits_usd": format_usd(self.trial.credit_pico),
                                                 "days": self.trial.days}
        return {"currency": self.currency, "topup_amounts_usd": [format_usd(o.price_pico) for o in self.amounts],
                "packs": [pack.as_json() for pack in self.packs], "trial": trial}


def _plain(amount: str) -> Offer:
    pico = to_pico(amount)
    return Offer(name=format_usd(pico), price_pico=pico, credit_pico=pico)


DEFAULT_BILLING = BillingConfig(currency="usd", amounts=tuple(_plain(a) for a in DEFAULT_TOPUP_AMOUNTS_USD), packs=())


def _price(check: _Validator, value: Any, path: Path_, *, allow_zero: bool = False) -> int:
    number = check.decimal(value, path)
    if (number == 0 and not allow_zero) or number > MAX_AMOUNT_USD:
        raise check.fail(path, f"must be more than 0 and at most {MAX_AMOUNT_USD} USD (got {number})")
    if number * 100 != (number * 100).to_integral_value():
        raise check.fail(path, f"must be whole cents (got {number})")
    return to_pico(number)


def parse_billing(check: _Validator, raw: Any) -> BillingConfig:
    """Validate the `billing:` mapping; raise RegistryError (via `check.fail`) on the first problem."""
    path: Path_ = ("billing",)
    item = check.mapping(raw, path, set(), {"currency", "topup_amounts_usd", "packs", "trial"})
    currency = item.get("currency", "usd")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise check.fail(path + ("currency",), f"must be a three-letter ISO currency code (got {currency!r})")
    amounts = DEFAULT_BILLING.amounts
    if "topup_amounts_usd" in item:
        values = item["topup_amounts_usd"]
        if not isinstance(values, list):
            raise check.fail(path + ("topup_amounts_usd",), "must be a list of USD amounts (may be empty)")
        prices = [_price(check, value, path + ("topup_amounts_usd", index)) for index, value in enumerate(values)]
        if len(set(prices)) != len(prices):
            raise check.fail(path + ("topup_amounts_usd",), "lists an amount twice")
        amounts = tuple(Offer(name=format_usd(p), price_pico=p, credit_pico=p) for p in prices)
    packs: list[Offer] = []
    raw_packs = item.get("packs", [])
    if not isinstance(raw_packs, list):
        raise check.fail(path + ("packs",), "must be a list of packs")
    for index, raw_pack in enumerate(raw_packs):
        pack_path = path + ("packs", index)
        pack = check.mapping(raw_pack, pack_path, {"name", "price_usd"}, {"bonus_usd"})
        name = check.name(pack["name"], pack_path + ("name",))
        if any(existing.name == name for existing in packs):
            raise check.fail(pack_path + ("name",), f"duplicate pack name '{name}'")
        price = _price(check, pack["price_usd"], pack_path + ("price_usd",))
        bonus = _price(check, pack.get("bonus_usd", "0"), pack_path + ("bonus_usd",), allow_zero=True)
        packs.append(Offer(name=name, price_pico=price, credit_pico=price + bonus))
    trial = None
    if "trial" in item:
        trial_path = path + ("trial",)
        raw_trial = check.mapping(item["trial"], trial_path, {"credits_usd", "days"}, set())
        days = check.integer(raw_trial["days"], trial_path + ("days",))
        if days > MAX_TRIAL_DAYS:
            raise check.fail(trial_path + ("days",), f"must be at most {MAX_TRIAL_DAYS} (got {days})")
        trial = Trial(credit_pico=_price(check, raw_trial["credits_usd"], trial_path + ("credits_usd",)), days=days)
    return BillingConfig(currency=currency.lower(), amounts=amounts, packs=tuple(packs), trial=trial)
