from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.billing.money import MoneyError, cost, format_usd, price_per_token, to_pico


def test_seed_example_cost_is_exact() -> None:
    # seed 000: 14 input + 9 output tokens on privaterouter/fast ($0.10 / $0.30 per million) = $0.0000041
    pico = cost(14, 9, price_per_token(Decimal("0.100000")), price_per_token(Decimal("0.300000")))
    assert format_usd(pico) == "0.0000041"


@pytest.mark.parametrize(("pico", "text"), [(0, "0.00"), (11 * 10**12, "11.00"), (15 * 10**11, "1.50"),
                                            (1, "0.000000000001"), (-25 * 10**11, "-2.50")])
def test_format_usd(pico: int, text: str) -> None:
    assert format_usd(pico) == text


def test_to_pico_refuses_floats_and_rounding() -> None:
    assert to_pico("10") == 10 * 10**12
    with pytest.raises(MoneyError):
        to_pico(0.1)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        to_pico("0.0000000000001")
    with pytest.raises(MoneyError):
        to_pico("abc")
    with pytest.raises(MoneyError):
        to_pico("NaN")


def test_price_with_more_than_six_places_is_refused() -> None:
    with pytest.raises(MoneyError):
        price_per_token(Decimal("0.1234567"))
