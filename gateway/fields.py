"""Parsing request fields and rendering values for the /api JSON: times, money, integers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from gateway.billing.money import MAX_AMOUNT_PICO, MoneyError, format_usd, to_pico
from gateway.errors import GatewayError

# Bounds that keep every parsed value inside what both databases store (BIGINT, timestamps), so a
# request can never reach the database with a value that makes it fail (a 500) instead of a 400.
MAX_QUERY_INT = 2**31 - 1  # default upper bound of query-string integers (offsets included)
MIN_YEAR, MAX_YEAR = 1970, 9998  # a UTC conversion of any offset stays inside datetime's range


class FieldError(GatewayError, ValueError):
    """A bad value for one request field (`param`) or a conflict (`code`, `status`); rendered as the envelope."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_body",
                 status: int = 400) -> None:
        super().__init__(status, code, message, param=param)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; SQLite hands back naive datetimes and everything we store is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`: 2026-05-15T06:23:00.123456Z."""
    if moment is None:
        return None
    return as_utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(value: object, *, param: str) -> datetime:
    """An ISO 8601 time (a `Z` or offset; none means UTC) as an aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f"{param} must be an ISO 8601 time such as 2026-05-15T06:23:00Z.", param=param)
    text = value.strip()
    try:
        moment = as_utc(datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text))
    except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        raise FieldError(f"{param} must be an ISO 8601 time such as 2026-05-15T06:23:00Z.", param=param) from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise FieldError(f"{param} must be a time between the years {MIN_YEAR} and {MAX_YEAR}.", param=param)
    return moment


def parse_int(value: str | None, *, param: str, default: int, minimum: int, maximum: int = MAX_QUERY_INT) -> int:
    """A query-string integer from `minimum` to `maximum` (default 2^31 - 1), or 400 naming it."""
    if value is None or value == "":
        return default
    bounds = f"from {minimum} to {maximum}"
    if len(value) > 20:  # int() of a huge digit string is slow, and it is out of bounds anyway
        raise FieldError(f"{param} must be an integer {bounds}.", param=param)
    try:
        number = int(value)
    except ValueError:
        raise FieldError(f"{param} must be an integer {bounds}.", param=param) from None
    if number < minimum or number > maximum:
        raise FieldError(f"{param} must be an integer {bounds}.", param=param)
    return number


def parse_usd(value: object, *, param: str, signed: bool = False) -> int:
    """A USD amount given as a decimal string or an integer (never a float), in pico-USD.

    At most 1,000,000 USD either way (`MAX_AMOUNT_PICO`), so sums stay far inside BIGINT.
    """
    example = '"+5.00" or "-2.50"' if signed else '"10.00"'
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError(f"{param} must be a decimal string such as {example}.", param=param)
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and (not text or len(text) > 64 or text[0] not in "+-0123456789."):
        raise FieldError(f"{param} must be a decimal string such as {example}.", param=param)
    try:
        pico = to_pico(Decimal(text) if isinstance(text, str) else text)
    except (MoneyError, ArithmeticError, ValueError):
        raise FieldError(f"{param} must be a decimal string such as {example}.", param=param) from None
    if abs(pico) > MAX_AMOUNT_PICO:
        raise FieldError(f"{param} must be at most {format_usd(MAX_AMOUNT_PICO)} USD.", param=param)
    return pico


def usd(pico: int) -> str:
    return format_usd(pico)
