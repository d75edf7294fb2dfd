"""The `billing:` section of models.yaml: validated with file:line errors and hot-reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.billing.money import to_pico
from gateway.billing.offers import DEFAULT_BILLING
from gateway.registry import RegistryError, RegistryHolder, parse
from tests.conftest import MODELS_FILE

BASE = MODELS_FILE.read_text()
BASE_LINES = BASE.count("\n")


def test_without_a_section_the_seed_amounts_apply() -> None:
    billing = parse(BASE).billing
    assert billing == DEFAULT_BILLING
    assert [offer.name for offer in billing.amounts] == ["10.00", "25.00", "50.00", "100.00", "500.00"]
    assert billing.packs == () and billing.currency == "usd"


def test_amounts_and_packs_parse_exactly() -> None:
    billing = parse(BASE + 'billing:\n  currency: EUR\n  topup_amounts_usd: [5, "19.99"]\n  packs:\n'
                    '    - name: big\n      price_usd: "100"\n      bonus_usd: "12.50"\n').billing
    assert billing.currency == "eur"
    assert [(o.price_pico, o.price_minor) for o in billing.amounts] == [(to_pico(5), 500), (to_pico("19.99"), 1999)]
    big = billing.pack("big")
    assert big is not None and (big.price_minor, big.credit_pico) == (10000, to_pico("112.50"))
    assert billing.amount(to_pico("19.99")) is not None and billing.amount(to_pico(6)) is None


@pytest.mark.parametrize("section, line, message", [
    ("billing:\n  topup_amounts_usd: [10, \"0.001\"]\n", 2, "billing.topup_amounts_usd[1]: must be whole cents"),
    ("billing:\n  topup_amounts_usd: [10, 10]\n", 2, "lists an amount twice"),
    ("billing:\n  topup_amounts_usd: [0]\n", 2, "must be more than 0"),
    ("billing:\n  topup_amounts_usd: [\"-5\"]\n", 2, "must not be negative"),
    ("billing:\n  topup_amounts_usd: [1000000]\n", 2, "at most 100000"),
    ("billing:\n  currency: dollars\n", 2, "billing.currency: must be a three-letter"),
    ("billing:\n  packs:\n    - name: a\n      price_usd: \"1\"\n    - name: a\n      price_usd: \"2\"\n", 5,
     "duplicate pack name"),
    ("billing:\n  packs:\n    - name: a\n", 3, "missing required key 'price_usd'"),
    ("billing:\n  packs:\n    - name: a\n      price_usd: \"1\"\n      gift: 2\n", 5, "unknown key"),
    ("billing:\n  tip: 1\n", 2, "billing.tip: unknown key"),
    ("billing: 5\n", 1, "billing: must be a mapping"),
])
def test_invalid_sections_name_line_and_key(section: str, line: int, message: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse(BASE + section, "models.yaml")
    assert f"models.yaml:{BASE_LINES + line}:" in str(caught.value)
    assert message in str(caught.value)


def test_reload_swaps_the_offers_and_an_invalid_file_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(BASE)
    holder = RegistryHolder(path)
    path.write_text(BASE + "billing:\n  topup_amounts_usd: [7]\n")
    assert "billing ~" in holder.reload()
    assert [offer.name for offer in holder.current.billing.amounts] == ["7.00"]
    path.write_text(BASE + "billing:\n  topup_amounts_usd: [\"7.001\"]\n")
    with pytest.raises(RegistryError):
        holder.reload()
    assert [offer.name for offer in holder.current.billing.amounts] == ["7.00"]
