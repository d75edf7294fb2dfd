"""What a model family changes in the translation: thinking, tools, images, default options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.errors import InvalidRequest

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# OpenAI's effort names -> Ollama's think levels (for families whose `think` takes levels).
_LEVELS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "max", "max": "max"}


@dataclass(frozen=True)
class Family:
    """A model family's capabilities and defaults; a family module holds one of these, named FAMILY."""

    name: str
    kinds: frozenset[str] = frozenset({"chat"})  # registry kinds the family serves
    thinking: bool = False  # accepts Ollama's `think`
    think_default: bool | str | None = None  # `think` sent when the client says nothing; None = Ollama's default
    think_levels: bool = False  # `think` takes "low"/"medium"/"high" (gpt-oss style) rather than a bool
    think_tags: bool = False  # old servers leave `<think>...</think>` in content: split it out
    tools: bool = True
    vision: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # Ollama options, under the model's and the client's

    def think_for(self, effort: str, param: str) -> bool | str | None:
        """Ollama's `think` value for an OpenAI reasoning effort; None = send nothing."""
        if effort not in REASONING_EFFORTS:
            raise InvalidRequest(
                f"Invalid value for '{param}': {effort!r}. Supported values: {', '.join(REASONING_EFFORTS)}.",
                param=param,
            )
        if effort == "none":
            # A model that cannot think already does not; Ollama also accepts think:false there,
            # but sending nothing keeps old servers (pre-`think`) working.
            return False if self.thinking else None
        if not self.thinking:
            raise InvalidRequest(
                f"This model ({self.name} family) does not support reasoning; use '{param}': 'none' or omit it.",
                param=param,
            )
        return _LEVELS[effort] if self.think_levels else True
