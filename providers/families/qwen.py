"""Qwen 3: hybrid thinking (`think` is a bool), tools. reasoning_effort "none" turns thinking off."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="qwen", thinking=True)
