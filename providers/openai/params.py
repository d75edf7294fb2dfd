"""Validation of OpenAI request parameters; every failure is an InvalidRequest naming the parameter.

JSON `null` counts as "not given" everywhere, as in OpenAI's API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.errors import InvalidRequest

_JSON_TYPES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
               dict: "an object", type(None): "null"}

INT64 = 2**63


def type_name(value: Any) -> str:
    """How OpenAI names a JSON value's type in its error messages."""
    return _JSON_TYPES.get(type(value), "an object" if isinstance(value, Mapping) else type(value).__name__)


def wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    """The error for a value of the wrong JSON type."""
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.", param=param
    )


def unsupported(param: str, why: str) -> InvalidRequest:
    """The error for a parameter we understand but cannot honour."""
    return InvalidRequest(f"'{param}' is not supported: {why}", param=param)


def mapping(value: Any, param: str) -> Mapping[str, Any]:
    """`value` as a JSON object, or a 400."""
    if not isinstance(value, Mapping):
        raise wrong_type(param, "an object", value)
    return value


def integer(body: Mapping[str, Any], key: str, *, lo: int = -INT64, hi: int = INT64 - 1,
            param: str | None = None) -> int | None:
    """An optional integer within [lo, hi]."""
    value = body.get(key)
    if value is None:
        return None
    name = param or key
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise wrong_type(name, "an integer", value)
    if value < lo:
        raise InvalidRequest(f"Invalid '{name}': integer below minimum value. Expected a value >= {lo}, "
                             f"but got {value} instead.", param=name)
    if value > hi:
        raise InvalidRequest(f"Invalid '{name}': integer above maximum value. Expected a value <= {hi}, "
                             f"but got {value} instead.", param=name)
    return value


def number(body: Mapping[str, Any], key: str, *, lo: float, hi: float, param: str | None = None) -> float | None:
    """An optional number within [lo, hi]."""
    value = body.get(key)
    if value is None:
        return None
    name = param or key
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise wrong_type(name, "a number", value)
    if value != value:  # NaN
        raise InvalidRequest(f"Invalid '{name}': not a number.", param=name)
    if value < lo:
        raise InvalidRequest(f"Invalid '{name}': decimal below minimum value. Expected a value >= {lo:g}, "
                             f"but got {value} instead.", param=name)
    if value > hi:
        raise InvalidRequest(f"Invalid '{name}': decimal above maximum value. Expected a value <= {hi:g}, "
                             f"but got {value} instead.", param=name)
    return value


def boolean(body: Mapping[str, Any], key: str, *, param: str | None = None) -> bool | None:
    """An optional boolean."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise wrong_type(param or key, "a boolean", value)
    return value


def string(body: Mapping[str, Any], key: str, *, param: str | None = None) -> str | None:
    """An optional string."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong_type(param or key, "a string", value)
    return value


def choice(body: Mapping[str, Any], key: str, allowed: tuple[str, ...], *, param: str | None = None) -> str | None:
    """An optional string from a fixed set."""
    value = string(body, key, param=param)
    if value is not None and value not in allowed:
        name = param or key
        raise InvalidRequest(f"Invalid value for '{name}': {value!r}. Supported values are: "
                             f"{', '.join(repr(a) for a in allowed)}.", param=name)
    return value


def stream_flags(body: Mapping[str, Any], *, usage_option: bool = True) -> tuple[bool, bool]:
    """`stream` and `stream_options.include_usage`; stream_options without streaming is a 400."""
    stream = bool(boolean(body, "stream"))
    options = body.get("stream_options")
    if options is None:
        return stream, False
    options = mapping(options, "stream_options")
    if not stream:
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                             param="stream_options")
    include = boolean(options, "include_usage", param="stream_options.include_usage") if usage_option else None
    return stream, bool(include)


def stop_sequences(body: Mapping[str, Any]) -> list[str] | None:
    """`stop`: a string or a list of at most 4 non-empty strings -> Ollama's list."""
    value = body.get("stop")
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise wrong_type("stop", "a string or an array of strings", value)
    if len(items) > 4:
        raise InvalidRequest(f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
                             f"but got an array with length {len(items)} instead.", param="stop")
    for i, item in enumerate(items):
        param = "stop" if isinstance(value, str) else f"stop[{i}]"
        if not isinstance(item, str):
            raise wrong_type(param, "a string", item)
        if not item:
            raise InvalidRequest(f"Invalid '{param}': a stop sequence cannot be empty.", param=param)
    return list(items)


def max_output(body: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """The output cap from whichever of `keys` is given; two different values are a 400."""
    found: int | None = None
    found_key = ""
    for key in keys:
        value = integer(body, key, lo=1)
        if value is None:
            continue
        if found is not None and value != found:
            raise InvalidRequest(f"'{found_key}' ({found}) and '{key}' ({value}) disagree; send one of them.",
                                 param=key)
        found, found_key = value, key
    return found


def sampling_options(body: Mapping[str, Any], *, penalties: bool = True, seed: bool = True,
                     stop: bool = True) -> dict[str, Any]:
    """temperature, top_p, seed, stop and the penalties -> Ollama `options`, only those given.

    Unlike Ollama's own /v1 layer we do not force temperature/top_p to 1.0 when absent: the
    model's Modelfile defaults apply, as they would for a native Ollama client.
    """
    options: dict[str, Any] = {}
    temperature = number(body, "temperature", lo=0, hi=2)
    if temperature is not None:
        options["temperature"] = temperature
    top_p = number(body, "top_p", lo=0, hi=1)
    if top_p is not None:
        options["top_p"] = top_p
    if seed:
        seed_value = integer(body, "seed")
        if seed_value is not None:
            options["seed"] = seed_value
    if stop:
        sequences = stop_sequences(body)
        if sequences:
            options["stop"] = sequences
    if penalties:
        for key in ("presence_penalty", "frequency_penalty"):
            penalty = number(body, key, lo=-2, hi=2)
            if penalty is not None:
                options[key] = penalty
    return options


def json_format(spec: Any, param: str, *, nested: bool = True) -> str | dict[str, Any] | None:
    """An OpenAI output format (`response_format` / Responses `text.format`) -> Ollama `format`.

    `nested` is Chat Completions' shape (`{"type":"json_schema","json_schema":{"schema":...}}`);
    the Responses API puts `schema` beside `type`.
    """
    if spec is None:
        return None
    spec = mapping(spec, param)
    kind = spec.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        holder, where = spec, param
        if nested:
            where = f"{param}.json_schema"
            if spec.get("json_schema") is None:
                raise InvalidRequest(f"Missing required parameter: '{where}'.", param=where)
            holder = mapping(spec["json_schema"], where)
        schema = holder.get("schema")
        if schema is None:
            raise InvalidRequest(f"Missing required parameter: '{where}.schema'.", param=f"{where}.schema")
        return dict(mapping(schema, f"{where}.schema"))
    if kind is None:
        raise InvalidRequest(f"Missing required parameter: '{param}.type'.", param=f"{param}.type")
    raise InvalidRequest(f"Invalid value for '{param}.type': {kind!r}. Supported values are: 'text', "
                         f"'json_object', 'json_schema'.", param=f"{param}.type")


def refuse_if(body: Mapping[str, Any], key: str, harmless: tuple[Any, ...], why: str) -> None:
    """A 400 when `key` is present with a value other than null or one of `harmless`."""
    value = body.get(key)
    if value is None:
        return
    for ok in harmless:
        if value == ok and type(value) is type(ok):
            return
    raise unsupported(key, why)


def check_context(typical_prompt: int, max_tokens: int | None, context: int, param: str) -> None:
    """context_length_exceeded when the prompt plus the requested output cannot fit the model."""
    needed = typical_prompt + (max_tokens or 0)
    if needed > context:
        asked = f" ({typical_prompt} in the prompt, {max_tokens} requested for the output)" if max_tokens else ""
        raise InvalidRequest(
            f"This model's maximum context length is {context} tokens. However, you requested about "
            f"{needed} tokens{asked}. Please reduce the length of the messages or the output.",
            param=param, code="context_length_exceeded",
        )
