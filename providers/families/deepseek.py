"""DeepSeek R1 style: servers without native thinking support leave `<think>` tags in content."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="deepseek", think_tags=True)
