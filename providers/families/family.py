"""What a model family changes in the translation: prompt and output quirks, default options.

What a model *can* do (think, call tools, see images) is not a family matter: it comes from the
node's `/api/show` (see `providers/ollama/capabilities.py`) and reaches the translation as
`ModelTarget.capabilities`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Family:
    """A model family's quirks and defaults; a family module holds one of these, named FAMILY."""

    name: str
    kinds: frozenset[str] = frozenset({"chat"})  # registry kinds the family serves (chat models vs embedders)
    think_default: bool | str | None = None  # `think` sent when the client says nothing; None = Ollama's default
    think_levels: bool = False  # `think` takes "low"/"medium"/"high" (gpt-oss style) rather than a bool
    think_tags: bool = False  # old servers leave `<think>...</think>` in content: split it out
    options: Mapping[str, Any] = field(default_factory=dict)  # Ollama options, under the model's and the client's
