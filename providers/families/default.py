"""Any family the registry names that has no module of its own: no quirks."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="default")
