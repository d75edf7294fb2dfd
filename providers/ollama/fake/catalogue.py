"""The models the emulator pretends to have, and how a requested name resolves to one of them.

A requested name may carry behaviour suffixes before its tag (``qwen3-slow-no-usage:latest``);
they are peeled off right to left until a catalogue base name remains.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

REGISTRY_PREFIX = "registry.ollama.ai/library/"

COMPLETION = "completion"
TOOLS = "tools"
THINKING = "thinking"
VISION = "vision"
EMBEDDING = "embedding"
INSERT = "insert"


@dataclass(frozen=True)
class ModelSpec:
    """One installed model as /api/tags, /api/show and /api/ps describe it."""

    name: str  # base name without tag, e.g. "qwen3"
    family: str
    architecture: str
    capabilities: tuple[str, ...]
    parameter_size: str
    quantization: str
    size: int
    context_length: int
    embedding_length: int
    modified_at: str  # RFC 3339 with a local offset, as Ollama lists it
    template: str
    parameters: tuple[tuple[str, Any], ...] = ()

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(f"fake-ollama/{self.name}".encode()).hexdigest()

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }


_CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)
_GEMMA = (
    "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}user{{ end }}\n"
    "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
)
_LLAMA = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)

# Listed newest first: /api/tags sorts by modified_at descending, and so does this tuple.
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("gemma4", "gemma4", "gemma4", (COMPLETION, VISION, TOOLS, THINKING), "8.0B", "Q4_K_M", 9_608_350_718,
              131_072, 2560, "2026-08-14T09:12:31.118226405-07:00", _GEMMA,
              (("stop", "<end_of_turn>"), ("temperature", 1), ("top_k", 64), ("top_p", 0.95))),
    ModelSpec("qwen3.6", "qwen3", "qwen3", (COMPLETION, TOOLS, THINKING), "14.8B", "Q4_K_M", 9_276_198_565,
              262_144, 5120, "2026-08-02T17:40:05.5621-07:00", _CHATML,
              (("stop", "<|im_start|>"), ("stop", "<|im_end|>"), ("temperature", 0.6), ("top_p", 0.95))),
    ModelSpec("qwen3-coder", "qwen3moe", "qwen3moe", (COMPLETION, TOOLS), "30.5B", "Q4_K_M", 18_556_700_761,
              262_144, 2048, "2026-07-21T11:03:44.90871-07:00", _CHATML,
              (("stop", "<|im_start|>"), ("stop", "<|im_end|>"), ("temperature", 0.7), ("top_p", 0.8))),
    ModelSpec("qwen3", "qwen3", "qwen3", (COMPLETION, TOOLS, THINKING), "8.2B", "Q4_K_M", 5_225_388_164,
              40_960, 4096, "2026-06-30T08:21:09.300201-07:00", _CHATML,
              (("stop", "<|im_start|>"), ("stop", "<|im_end|>"), ("temperature", 0.6), ("top_p", 0.95))),
    ModelSpec("deepseek-r1", "qwen3", "qwen3", (COMPLETION, THINKING), "8.2B", "Q4_K_M", 5_225_376_047,
              131_072, 4096, "2026-05-18T22:47:13.0046-07:00", _CHATML,
              (("stop", "<｜begin▁of▁sentence｜>"), ("stop", "<｜end▁of▁sentence｜>"), ("temperature", 0.6))),
    ModelSpec("llama3.2", "llama", "llama", (COMPLETION, TOOLS), "3.2B", "Q4_K_M", 2_019_393_189,
              131_072, 3072, "2026-04-04T17:37:44.706015396-07:00", _LLAMA,
              (("stop", "<|start_header_id|>"), ("stop", "<|end_header_id|>"), ("stop", "<|eot_id|>"))),
    ModelSpec("nomic-embed-text", "nomic-bert", "nomic-bert", (EMBEDDING,), "137M", "F16", 274_302_450,
              2048, 768, "2026-03-11T10:00:00.5-07:00", "{{ .Prompt }}", (("num_ctx", 8192),)),
)
BY_NAME: dict[str, ModelSpec] = {spec.name: spec for spec in MODELS}

# Behaviour suffixes (documented in the package docstring). Longer ones first so "-error-500"
# is never mistaken for a shorter suffix.
SUFFIXES: tuple[str, ...] = (
    "-midstream-error", "-error-500", "-error-503", "-no-usage", "-garbage", "-think", "-tools", "-slow",
    "-drop", "-hang",
)


@dataclass(frozen=True)
class Resolved:
    """A requested model name mapped to a catalogue entry plus the behaviours its suffixes ask for."""

    spec: ModelSpec
    canonical: str  # lower-case "<base><suffixes>:<tag>", the name /api/ps lists
    behaviours: frozenset[str] = field(default_factory=frozenset)

    @property
    def capabilities(self) -> tuple[str, ...]:
        caps = self.spec.capabilities
        if "-think" in self.behaviours and THINKING not in caps and EMBEDDING not in caps:
            caps = (*caps, THINKING)
        if "-tools" in self.behaviours and TOOLS not in caps and EMBEDDING not in caps:
            caps = (*caps, TOOLS)
        return caps

    @property
    def registry_name(self) -> str:
        return REGISTRY_PREFIX + self.canonical

    def has(self, behaviour: str) -> bool:
        return behaviour in self.behaviours


def resolve(requested: str, cache: dict[str, Resolved | None]) -> Resolved | None:
    """The catalogue entry for `requested` (case-insensitive, ':latest' implied), or None."""
    try:
        return cache[requested]
    except KeyError:
        pass
    found = _resolve(requested)
    if len(cache) < 4096:  # bounded: names are client-controlled
        cache[requested] = found
    return found


def _resolve(requested: str) -> Resolved | None:
    name = requested.strip().lower()
    for prefix in (REGISTRY_PREFIX, "library/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    base, _, tag = name.partition(":")
    tag = tag or "latest"
    if tag != "latest" or not base or "/" in base:
        return None
    canonical = f"{base}:{tag}"
    behaviours: set[str] = set()
    while base not in BY_NAME:
        for suffix in SUFFIXES:
            if base.endswith(suffix) and len(base) > len(suffix):
                behaviours.add(suffix)
                base = base[: -len(suffix)]
                break
        else:
            return None
    return Resolved(BY_NAME[base], canonical, frozenset(behaviours))
