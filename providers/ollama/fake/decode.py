"""Request decoding with the errors Go's `encoding/json` and Ollama's own checks would produce.

Unknown fields are ignored and JSON `null` counts as absent, as in Go.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .asgi import FakeError

THINK_LEVELS = frozenset({"high", "medium", "low", "max"})
FOREVER = float("inf")

_INT_OPTIONS = frozenset({"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch",
                          "num_gpu", "main_gpu", "num_thread"})
_FLOAT_OPTIONS = frozenset({"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                            "frequency_penalty"})
_BOOL_OPTIONS = frozenset({"use_mmap", "numa", "low_vram", "f16_kv", "vocab_only", "use_mlock", "logits_all"})
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_DURATION = re.compile(r"[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
            "h": 3600 * 10**9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
DEFAULT_NUM_CTX = 4096


def parse_object(body: bytes, go_type: str) -> dict[str, Any]:
    """The request body as a JSON object."""
    if not body.strip():
        raise FakeError(400, "missing request body")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FakeError(400, _syntax_error(body, exc.pos)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FakeError(400, f"json: cannot unmarshal {kind(value)} into Go value of type {go_type}")
    return value


def _syntax_error(body: bytes, pos: int) -> str:
    text = body.decode("utf-8", "replace")
    if pos >= len(text.rstrip()):
        return "unexpected EOF"
    return f"invalid character {text[pos]!r} looking for beginning of value"


def kind(value: Any) -> str:
    """The JSON kind name Go's decoder uses in its messages."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def mismatch(value: Any, where: str, go_type: str) -> FakeError:
    """Go's UnmarshalTypeError as a 400."""
    return FakeError(400, f"json: cannot unmarshal {kind(value)} into Go struct field {where} of type {go_type}")


def string(obj: dict[str, Any], key: str, where: str) -> str:
    """A string field ("" when absent)."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise mismatch(value, f"{where}.{key}", "string")
    return value


def boolean(obj: dict[str, Any], key: str, where: str) -> bool | None:
    """A bool field (None when absent)."""
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise mismatch(value, f"{where}.{key}", "bool")


def integer(obj: dict[str, Any], key: str, where: str) -> int:
    """An int field (0 when absent)."""
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise mismatch(value, f"{where}.{key}", "int")
    return value


def array(obj: dict[str, Any], key: str, where: str, go_type: str) -> list[Any]:
    """An array field ([] when absent)."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise mismatch(value, f"{where}.{key}", go_type)
    return value


def mapping(obj: dict[str, Any], key: str, where: str, go_type: str) -> dict[str, Any]:
    """An object field ({} when absent)."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise mismatch(value, f"{where}.{key}", go_type)
    return value


def images(obj: dict[str, Any], where: str) -> list[str]:
    """Bare base64 images; anything else fails the way Go's []byte decoding does."""
    items = array(obj, "images", where, "[]api.ImageData")
    for item in items:
        if not isinstance(item, str):
            raise mismatch(item, f"{where}.images", "api.ImageData")
        position = base64_error(item)
        if position is not None:
            raise FakeError(400, f"illegal base64 data at input byte {position}")
    return items


def base64_error(text: str) -> int | None:
    """Where Go's StdEncoding.Decode would fail on `text`, or None if it decodes."""
    try:
        binascii.a2b_base64(text, strict_mode=True)
        return None
    except (binascii.Error, ValueError):
        pass
    return _go_base64_error(text.encode("utf-8", "surrogatepass"))


def _go_base64_error(src: bytes) -> int | None:
    # A transcription of the quantum loop in Go's encoding/base64 (padding required, CR/LF skipped).
    si, n = 0, len(src)
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return None
                return si - j
            char = src[si]
            si += 1
            if char in _B64:
                j += 1
                continue
            if char in (10, 13):
                continue
            if char != 61:  # '='
                return si - 1
            if j < 2:
                return si - 1
            if j == 2:
                while si < n and src[si] in (10, 13):
                    si += 1
                if si == n:
                    return n
                if src[si] != 61:
                    return si - 1
                si += 1
            while si < n and src[si] in (10, 13):
                si += 1
            return si if si < n else None
    return None


def think(obj: dict[str, Any]) -> bool | str | None:
    """The `think` value: None (absent), a bool, or a level."""
    value = obj.get("think")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in THINK_LEVELS:
            raise FakeError(400, f'invalid think value: "{value}" (must be "high", "medium", "low", "max", true, '
                                 "or false)")
        return value
    raise FakeError(400, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def keep_alive(obj: dict[str, Any]) -> float | None:
    """`keep_alive` in seconds (None when absent, inf for "forever")."""
    value = obj.get("keep_alive")
    if value is None:
        return None
    if isinstance(value, bool):
        raise FakeError(400, "Unsupported type: 'bool'")
    if isinstance(value, int | float):
        return FOREVER if value < 0 else float(int(value))  # Go truncates to whole seconds
    if isinstance(value, str):
        seconds = parse_duration(value)
        return FOREVER if seconds < 0 else seconds
    go_type = "[]interface {}" if isinstance(value, list) else "map[string]interface {}"
    raise FakeError(400, f"Unsupported type: '{go_type}'")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds."""
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _DURATION.fullmatch(text):
        if text.lstrip("+-").replace(".", "", 1).isdigit():
            raise FakeError(400, f'time: missing unit in duration "{text}"')
        raise FakeError(400, f'time: invalid duration "{text}"')
    total = sum(float(number) * _UNIT_NS[unit] for number, unit in _PART.findall(text)) / 1e9
    return -total if text.startswith("-") else total


@dataclass(frozen=True)
class Options:
    """The options the emulator acts on; the rest are only type-checked."""

    num_predict: int = -1
    stop: tuple[str, ...] = ()
    num_ctx: int = DEFAULT_NUM_CTX


DEFAULT_OPTIONS = Options()


def options(obj: dict[str, Any], where: str) -> Options:
    """Type-check `options` as Ollama's Options.FromMap does (a wrong type is a 500, raised at scheduling)."""
    raw = mapping(obj, "options", where, "map[string]interface {}")
    if not raw:
        return DEFAULT_OPTIONS
    for key, value in raw.items():
        if value is None:
            continue
        if key in _INT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FakeError(500, f'option "{key}" must be of type integer')
        elif key in _FLOAT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FakeError(500, f'option "{key}" must be of type float32')
        elif key in _BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise FakeError(500, f'option "{key}" must be of type boolean')
        elif key == "stop":
            if not isinstance(value, list):
                raise FakeError(500, 'option "stop" must be of type array')
            if not all(isinstance(item, str) for item in value):
                raise FakeError(500, 'option "stop" must be of an array of strings')
    num_predict = raw.get("num_predict")
    num_ctx = raw.get("num_ctx")
    return Options(
        num_predict=int(num_predict) if num_predict is not None else -1,
        stop=tuple(s for s in raw.get("stop") or () if s),
        num_ctx=int(num_ctx) if num_ctx else DEFAULT_NUM_CTX,
    )


def output_format(obj: dict[str, Any]) -> str | dict[str, Any] | None:
    """`format`: None, "json" or a JSON-schema object; anything else fails when generation starts (500)."""
    value = obj.get("format")
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value
    if value == "json":
        return "json"
    quoted = orjson.dumps(orjson.dumps(value).decode()).decode()
    raise FakeError(500, f'invalid format: {quoted}; expected "json" or a valid JSON Schema object')
