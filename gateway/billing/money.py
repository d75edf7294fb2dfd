"""Exact money: integers of pico-USD (1 USD = 10**12). Never float.

Prices are USD per million tokens with at most 6 decimal places, so the price of one token is a
whole number of pico-USD and every cost is an exact integer.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

PICO_PER_USD = 10**12
TOKENS_PER_PRICE_UNIT = 10**6
MAX_AMOUNT_PICO = 10**18  # 1,000,000 USD: the largest amount one request may move
MAX_BALANCE_PICO = 2**63 - 1  # BIGINT: no balance may exceed it (the ledger refuses the credit)


class MoneyError(ValueError):
    """A money amount is not a decimal number or has more precision than we keep."""


def to_pico(amount: str | int | Decimal) -> int:
    """Parse a USD amount (decimal string, int or Decimal) into pico-USD, refusing any rounding."""
    if isinstance(amount, bool) or isinstance(amount, float):
        raise MoneyError("money must be a decimal string, not a float")
    try:
        value = Decimal(amount) if not isinstance(amount, Decimal) else amount
    except (InvalidOperation, ValueError):
        raise MoneyError(f"not a decimal number: {amount!r}") from None
    if not value.is_finite():
        raise MoneyError(f"not a finite decimal number: {amount!r}")
    scaled = value * PICO_PER_USD
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"more than 12 decimal places: {amount!r}")
    return int(scaled)


def to_decimal(pico: int) -> Decimal:
    return Decimal(pico) / PICO_PER_USD


def format_usd(pico: int) -> str:
    """Decimal string with at least two decimals and no trailing zeros beyond: 11.00, 0.0000041."""
    text = format(to_decimal(pico).normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def price_per_token(price_per_million: Decimal) -> int:
    """Pico-USD per token for a USD-per-million-tokens price; exact or MoneyError."""
    pico = to_pico(price_per_million)
    if pico % TOKENS_PER_PRICE_UNIT:
        raise MoneyError(f"a price per million tokens takes at most 6 decimal places: {price_per_million}")
    return pico // TOKENS_PER_PRICE_UNIT


def cost(input_tokens: int, output_tokens: int, input_per_token: int, output_per_token: int) -> int:
    """The exact pico-USD cost of a request."""
    return input_tokens * input_per_token + output_tokens * output_per_token
