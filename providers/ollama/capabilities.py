"""What a node says about itself and its models: `/api/version`, `/api/show`, `/api/ps`.

Pure parsers plus two small readers over an `OllamaClient`, shared by the node pool (which caches
the result and refreshes it with its health checks) and by operator tooling that wants the same
facts without a pool. Nothing here guesses from a model's name: what a model can do is what its
node's `/api/show` lists under `capabilities` (Ollama >= 0.6.4), its context is
`model_info["<architecture>.context_length"]`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from providers.errors import UpstreamError, UpstreamStatusError
from providers.ollama.client import OllamaClient

# Ollama's capability names (types/model/capability.go).
COMPLETION = "completion"
TOOLS = "tools"
THINKING = "thinking"
VISION = "vision"
EMBEDDING = "embedding"
INSERT = "insert"

# The first Ollama release whose /api/chat and /api/generate return token log probabilities.
LOGPROBS_SINCE = (0, 12, 11)

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class ModelInfo:
    """One model on one node (or the combination over every node serving it).

    `capabilities` is None when the node did not say (servers before 0.6.4 have no such field);
    `context_length` is the model's trained context in tokens, None when `model_info` lacks it;
    `version` is the node's Ollama version as (major, minor, patch), None when unknown.
    """

    capabilities: frozenset[str] | None
    context_length: int | None
    version: tuple[int, int, int] | None = None

    def can(self, capability: str) -> bool | None:
        """Whether the model has `capability`; None when the node did not list capabilities."""
        return None if self.capabilities is None else capability in self.capabilities


def parse_version(payload: Any) -> tuple[int, int, int] | None:
    """`/api/version`'s `{"version": "0.12.11"}` (or a bare string) -> (0, 12, 11); None if unreadable."""
    text = payload.get("version") if isinstance(payload, Mapping) else payload
    if not isinstance(text, str):
        return None
    match = _VERSION.match(text.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def parse_show(show: Mapping[str, Any], version: tuple[int, int, int] | None = None) -> ModelInfo:
    """An `/api/show` answer -> ModelInfo (capabilities, context length from `model_info`)."""
    raw = show.get("capabilities")
    capabilities = (frozenset(c for c in raw if isinstance(c, str)) if isinstance(raw, list) else None)
    context: int | None = None
    info = show.get("model_info")
    if isinstance(info, Mapping):
        architecture = info.get("general.architecture")
        value = info.get(f"{architecture}.context_length") if isinstance(architecture, str) else None
        if value is None:  # some conversions name the key after another architecture string
            value = next((v for k, v in info.items() if isinstance(k, str) and k.endswith(".context_length")), None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            context = value
    return ModelInfo(capabilities, context, version)


def combine(infos: Sequence[ModelInfo]) -> ModelInfo | None:
    """What every node serving a model can do: capabilities intersected, smallest context, lowest version.

    A request may land on any of them, so only what all of them offer can be promised.
    """
    if not infos:
        return None
    listed = [i.capabilities for i in infos if i.capabilities is not None]
    capabilities = frozenset.intersection(*listed) if listed else None
    contexts = [i.context_length for i in infos if i.context_length is not None]
    versions = [i.version for i in infos if i.version is not None]
    return ModelInfo(capabilities, min(contexts) if contexts else None,
                     min(versions) if len(versions) == len(infos) else None)


def resident_models(ps: Mapping[str, Any]) -> list[str]:
    """The model names `/api/ps` lists as loaded in memory."""
    names = []
    for model in ps.get("models") or ():
        if isinstance(model, Mapping):
            name = model.get("model") or model.get("name")
            if isinstance(name, str) and name:
                names.append(name)
    return names


async def read_version(client: OllamaClient) -> tuple[int, int, int] | None:
    """GET /api/version on one node; raises UpstreamError when the node does not answer."""
    return parse_version(await client.version())


async def read_model_info(client: OllamaClient, tag: str,
                          version: tuple[int, int, int] | None = None) -> ModelInfo | None:
    """POST /api/show for `tag` on one node; None when the node does not have the model (404).

    Other failures raise UpstreamError (the node is unwell, not the model missing).
    """
    try:
        return parse_show(await client.show(tag), version)
    except UpstreamStatusError as error:
        if error.upstream_status == 404:
            return None
        raise


async def read_models(client: OllamaClient, tags: Iterable[str],
                      version: tuple[int, int, int] | None) -> dict[str, ModelInfo | None]:
    """`read_model_info` for several tags at once; a tag whose read failed is left out."""
    tags = list(tags)
    results = await asyncio.gather(*(read_model_info(client, tag, version) for tag in tags), return_exceptions=True)
    out: dict[str, ModelInfo | None] = {}
    for tag, result in zip(tags, results, strict=True):
        if isinstance(result, UpstreamError) or result is None:
            if result is None:
                out[tag] = None
            continue
        if isinstance(result, BaseException):
            raise result
        out[tag] = result
    return out
