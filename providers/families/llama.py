"""Llama 3.x: no quirks of its own."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="llama")
