"""Tunables of the Ollama emulator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FakeConfig:
    """How long and how fast the emulator answers; the replies themselves are deterministic."""

    tokens_per_reply: int = 32  # tokens generated when num_predict does not cut earlier
    token_delay: float = 0.0  # seconds between streamed tokens
    first_token_delay: float = 0.0  # extra delay before the first token (simulates prompt eval)
    embedding_dimensions: int = 768
