"""DeepSeek R1 style: thinking, tools; servers without thinking support leave `<think>` tags in content."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="deepseek", thinking=True, think_tags=True)
