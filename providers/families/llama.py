"""Llama 3.x: tools, no thinking, text only."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="llama")
