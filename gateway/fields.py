"""Parsing request fields and rendering values for the /api JSON: times, money, integers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from gateway.billing.money import MoneyError, format_usd, to_pico
from gateway.errors import GatewayError


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
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except ValueError:
        raise FieldError(f"{param} must be an ISO 8601 time such as 2026-05-15T06:23:00Z.", param=param) from None
    return as_utc(moment)


def parse_int(value: str | None, *, param: str, default: int, minimum: int, maximum: int | None = None) -> int:
    """A query-string integer within bounds, or 400 naming it."""
    if value is None or value == "":
        return default
    bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
    try:
        number = int(value)
    except ValueError:
        raise FieldError(f"{param} must be an integer {bounds}.", param=param) from None
    if number < minimum or (maximum is not None and number > maximum):
        raise FieldError(f"{param} must be an integer {bounds}.", param=param)
    return number


def parse_usd(value: object, *, param: str, signed: bool = False) -> int:
    """A USD amount given as a decimal string or an integer (never a float), in pico-USD."""
    example = '"+5.00" or "-2.50"' if signed else '"10.00"'
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError(f"{param} must be a decimal string such as {example}.", param=param)
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and (not text or text[0] not in "+-0123456789."):
        raise FieldError(f"{param} must be a decimal string such as {example}.", param=param)
    try:
        return to_pico(Decimal(text) if isinstance(text, str) else text)
    except (MoneyError, ArithmeticError, ValueError):
        raise FieldError(f"{param} must be a decimal string such as {example}.", param=param) from None


def usd(pico: int) -> str:
    return format_usd(pico)
