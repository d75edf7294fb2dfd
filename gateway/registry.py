"""The registry: `models.yaml` (nodes, models, plans) as one immutable, validated object.

Reload is prepare-then-swap: `load()` parses and validates the whole file and either returns a new
`Registry` or raises `RegistryError` naming the file, line and key path. Only then does
`RegistryHolder.swap()` replace one reference, so a request that read `holder.current` once keeps a
consistent registry (prices included) to its end, and the running registry stays in force when a
new file is invalid.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gateway.billing.money import MoneyError, price_per_token, to_pico
from gateway.billing.offers import DEFAULT_BILLING, BillingConfig, parse_billing
from providers.families import get_family

log = logging.getLogger("pr.registry")

Path_ = tuple[str | int, ...]
KINDS = ("chat", "embedding")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")


class RegistryError(ValueError):
    """The registry file is invalid; the message names the file, line and key path."""


@dataclass(frozen=True)
class Node:
    name: str
    url: str
    max_concurrency: int = 4
    weight: int = 1
    headers: tuple[tuple[str, str], ...] = ()  # sent on every request to the node, `${ENV}` already resolved
    ca_file: str | None = None  # PEM bundle to verify an https:// node with (default: the system's CAs)


@dataclass(frozen=True)
class Model:
    name: str
    tag: str
    family: str
    kind: str
    context: int
    input_price: Decimal
    output_price: Decimal
    input_pico_per_token: int
    output_pico_per_token: int
    nodes: tuple[str, ...] | None = None
    dimensions: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    name: str
    monthly_usd: Decimal
    included_credits_usd: Decimal
    models: tuple[str, ...] | None  # None = all models
    rpm: int
    rpd: int | None = None
    tpd: int | None = None
    stripe_price_id: str | None = None  # a recurring Stripe price: the plan can be bought (issue 11)

    @property
    def included_credits_pico(self) -> int:
        return to_pico(self.included_credits_usd)

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class Registry:
    nodes: Mapping[str, Node]
    models: Mapping[str, Model]
    plans: Mapping[str, Plan]
    version: str
    source: str
    loaded_at: int = 0  # unix seconds; the `created` of every model in /v1/models
    billing: BillingConfig = DEFAULT_BILLING  # top-up amounts and packs (gateway/billing/offers.py)

    def diff(self, new: Registry) -> str:
        """One line saying what `new` changes relative to this registry."""
        parts = []
        for label, old_items, new_items in (("nodes", self.nodes, new.nodes), ("models", self.models, new.models),
                                            ("plans", self.plans, new.plans)):
            added = sorted(set(new_items) - set(old_items))
            removed = sorted(set(old_items) - set(new_items))
            changed = sorted(k for k in set(old_items) & set(new_items) if old_items[k] != new_items[k])
            marks = [f"+{k}" for k in added] + [f"-{k}" for k in removed] + [f"~{k}" for k in changed]
            if marks:
                parts.append(f"{label} {' '.join(marks)}")
        if self.billing != new.billing:
            parts.append("billing ~")
        summary = "; ".join(parts) if parts else "no changes"
        return f"registry {self.version} -> {new.version}: {summary}"


# --- parsing with line numbers -------------------------------------------------------------------


def _compose(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    """YAML -> plain Python values plus the line of every key path."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise RegistryError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    lines: dict[Path_, int] = {}

    def build(node: yaml.Node, path: Path_) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in result:
                    raise RegistryError(f"{source}:{key_node.start_mark.line + 1}: {_dotted(path + (key,))}: "
                                        "duplicate key")
                lines[path + (key,)] = key_node.start_mark.line + 1
                result[key] = build(value_node, path + (key,))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [build(item, path + (index,)) for index, item in enumerate(node.value)]
        if node.tag == "tag:yaml.org,2002:float":
            # Keep the text as written so no float ever carries a price: "0.10" and 0.10 mean the same.
            try:
                return Decimal(node.value)
            except ArithmeticError:
                return node.value
        return constructor.construct_object(node)

    constructor = yaml.SafeLoader("")
    return (build(root, ()) if root is not None else None), lines


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "<root>"


class _Validator:
    def __init__(self, source: str, lines: dict[Path_, int]) -> None:
        self.source = source
        self.lines = lines

    def fail(self, path: Path_, message: str) -> RegistryError:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        where = f"{self.source}:{line}" if line else self.source
        return RegistryError(f"{where}: {_dotted(path)}: {message}")

    def mapping(self, value: Any, path: Path_, required: set[str], optional: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, got {type(value).__name__}")
        for key in value:
            if key not in required | optional:
                allowed = ", ".join(sorted(required | optional))
                raise self.fail(path + (key,), f"unknown key (allowed: {allowed})")
        for key in sorted(required):
            if key not in value:
                raise self.fail(path, f"missing required key '{key}'")
        return value

    def name(self, value: Any, path: Path_) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            raise self.fail(path, f"must be a name of letters, digits and ._:/@- (got {value!r})")
        return value

    def integer(self, value: Any, path: Path_, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(path, f"must be an integer >= {minimum} (got {value!r})")
        return value

    def decimal(self, value: Any, path: Path_) -> Decimal:
        if isinstance(value, bool):
            raise self.fail(path, f"must be a decimal number (got {value!r})")
        try:
            number = Decimal(str(value))
            to_pico(number)
        except (ArithmeticError, ValueError, MoneyError):
            raise self.fail(path, f"must be a decimal number (got {value!r})") from None
        if number < 0:
            raise self.fail(path, f"must not be negative (got {value})")
        return number

    def price(self, value: Any, path: Path_) -> tuple[Decimal, int]:
        number = self.decimal(value, path)
        try:
            return number, price_per_token(number)
        except MoneyError as exc:
            raise self.fail(path, str(exc)) from None

    def names(self, value: Any, path: Path_) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, "must be a non-empty list of names")
        return tuple(self.name(item, path + (index,)) for index, item in enumerate(value))


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(check: _Validator, text: str, path: Path_) -> str:
    """`${NAME}` -> the environment variable (unset: an error naming it); `${NAME:-default}` -> it or default."""

    def substitute(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1)) or match.group(2)
        if found is None:
            raise check.fail(path, f"environment variable {match.group(1)} is not set")
        return found

    return _ENV_REFERENCE.sub(substitute, text)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _node_headers(check: _Validator, value: Any, path: Path_) -> tuple[tuple[str, str], ...]:
    """`headers:` of a node: name -> value, each `${NAME}` replaced by that environment variable (so
    tokens stay out of the file); a variable that is not set is an error naming it."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise check.fail(path, "must be a mapping of header names to values")
    headers = []
    for name, raw in value.items():
        if not _HEADER_NAME.match(name) or not isinstance(raw, str):
            raise check.fail(path + (name,), "must be a header name with a string value")
        resolved = _interpolate(check, raw, path + (name,))
        if any(char in resolved for char in "\r\n\x00"):
            raise check.fail(path + (name,), "must not contain line breaks")
        headers.append((name, resolved))
    return tuple(headers)


def _ca_file(check: _Validator, value: Any, url: str, path: Path_) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not url.startswith("https://"):
        raise check.fail(path, "must be the path of a PEM file, on an https:// node")
    if not os.path.isfile(value):
        raise check.fail(path, f"no such file: {value}")
    return value


def parse(text: str, source: str = "models.yaml") -> Registry:
    """Validate a whole registry document; raise RegistryError on the first problem found."""
    data, lines = _compose(text, source)
    check = _Validator(source, lines)
    top = check.mapping(data, (), {"nodes", "models", "plans"}, {"billing"})

    nodes: dict[str, Node] = {}
    if not isinstance(top["nodes"], list) or not top["nodes"]:
        raise check.fail(("nodes",), "must be a non-empty list")
    for index, raw in enumerate(top["nodes"]):
        path: Path_ = ("nodes", index)
        item = check.mapping(raw, path, {"name", "url"}, {"max_concurrency", "weight", "headers", "ca_file"})
        name = check.name(item["name"], path + ("name",))
        if name in nodes:
            raise check.fail(path + ("name",), f"duplicate node name '{name}'")
        url = item["url"]
        if isinstance(url, str):
            url = _interpolate(check, url, path + ("url",))  # e.g. ${OLLAMA_URL:-http://127.0.0.1:11434}
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            raise check.fail(path + ("url",), f"must be an http(s) URL (got {url!r})")
        nodes[name] = Node(name=name, url=url.rstrip("/"),
                           max_concurrency=check.integer(item.get("max_concurrency", 4), path + ("max_concurrency",)),
                           weight=check.integer(item.get("weight", 1), path + ("weight",)),
                           headers=_node_headers(check, item.get("headers"), path + ("headers",)),
                           ca_file=_ca_file(check, item.get("ca_file"), url, path + ("ca_file",)))

    models: dict[str, Model] = {}
    if not isinstance(top["models"], list) or not top["models"]:
        raise check.fail(("models",), "must be a non-empty list")
    for index, raw in enumerate(top["models"]):
        path = ("models", index)
        item = check.mapping(raw, path, {"name", "tag", "family", "kind", "context", "input_price", "output_price"},
                             {"nodes", "dimensions", "options"})
        name = check.name(item["name"], path + ("name",))
        if name in models:
            raise check.fail(path + ("name",), f"duplicate model name '{name}'")
        kind = item["kind"]
        if kind not in KINDS:
            raise check.fail(path + ("kind",), f"must be one of {', '.join(KINDS)} (got {kind!r})")
        family = get_family(check.name(item["family"], path + ("family",)))
        if kind not in family.kinds:
            raise check.fail(path + ("kind",), f"family '{family.name}' serves {', '.join(sorted(family.kinds))} "
                             f"models, not {kind}")
        model_nodes = None
        if "nodes" in item:
            model_nodes = check.names(item["nodes"], path + ("nodes",))
            for node_index, node_name in enumerate(model_nodes):
                if node_name not in nodes:
                    raise check.fail(path + ("nodes", node_index), f"unknown node '{node_name}'")
        dimensions = None
        if "dimensions" in item:
            if kind != "embedding":
                raise check.fail(path + ("dimensions",), "only embedding models have dimensions")
            dimensions = check.integer(item["dimensions"], path + ("dimensions",))
        options = item.get("options", {})
        if not isinstance(options, dict):
            raise check.fail(path + ("options",), "must be a mapping")
        input_price, input_per_token = check.price(item["input_price"], path + ("input_price",))
        output_price, output_per_token = check.price(item["output_price"], path + ("output_price",))
        models[name] = Model(
            name=name, tag=check.name(item["tag"], path + ("tag",)),
            family=check.name(item["family"], path + ("family",)), kind=kind,
            context=check.integer(item["context"], path + ("context",)),
            input_price=input_price, output_price=output_price,
            input_pico_per_token=input_per_token, output_pico_per_token=output_per_token,
            nodes=model_nodes, dimensions=dimensions, options=MappingProxyType(dict(options)),
        )

    plans: dict[str, Plan] = {}
    if not isinstance(top["plans"], list) or not top["plans"]:
        raise check.fail(("plans",), "must be a non-empty list")
    for index, raw in enumerate(top["plans"]):
        path = ("plans", index)
        item = check.mapping(raw, path, {"name", "monthly_usd", "included_credits_usd", "models", "rpm"},
                             {"rpd", "tpd", "stripe_price_id"})
        name = check.name(item["name"], path + ("name",))
        if name in plans:
            raise check.fail(path + ("name",), f"duplicate plan name '{name}'")
        allowed: tuple[str, ...] | None = None
        if item["models"] != "all":
            allowed = check.names(item["models"], path + ("models",))
            for model_index, model_name in enumerate(allowed):
                if model_name not in models:
                    raise check.fail(path + ("models", model_index), f"unknown model '{model_name}'")
        plans[name] = Plan(
            name=name, monthly_usd=check.decimal(item["monthly_usd"], path + ("monthly_usd",)),
            included_credits_usd=check.decimal(item["included_credits_usd"], path + ("included_credits_usd",)),
            models=allowed, rpm=check.integer(item["rpm"], path + ("rpm",)),
            rpd=check.integer(item["rpd"], path + ("rpd",)) if "rpd" in item else None,
            tpd=check.integer(item["tpd"], path + ("tpd",)) if "tpd" in item else None,
            stripe_price_id=_stripe_price(check, item, path),
        )
    if "free" not in plans:
        raise check.fail(("plans",), "a plan named 'free' is required (new accounts start on it)")

    billing = parse_billing(check, top["billing"]) if "billing" in top else DEFAULT_BILLING

    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    return Registry(nodes=MappingProxyType(nodes), models=MappingProxyType(models), plans=MappingProxyType(plans),
                    version=version, source=source, loaded_at=int(time.time()), billing=billing)


def _stripe_price(check: _Validator, item: dict[str, Any], path: Path_) -> str | None:
    if "stripe_price_id" not in item:
        return None
    value = item["stripe_price_id"]
    if not isinstance(value, str) or not re.match(r"^price_[A-Za-z0-9]{1,200}$", value):
        raise check.fail(path + ("stripe_price_id",), f"must be a Stripe price id such as price_1Abc (got {value!r})")
    if item.get("name") == "free":
        raise check.fail(path + ("stripe_price_id",), "the free plan cannot be sold")
    return value


def load(path: Path) -> Registry:
    """Read and validate a registry file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(text, str(path))


class RegistryHolder:
    """Holds the registry in force; `reload()` validates first and swaps one reference."""

    def __init__(self, path: Path, registry: Registry | None = None) -> None:
        self.path = path
        self.current = registry if registry is not None else load(path)
        self._listeners: list[Callable[[Registry], None]] = []
        self._refusal_listeners: list[Callable[[RegistryError], None]] = []

    def on_swap(self, listener: Callable[[Registry], None]) -> None:
        """Call `listener(new_registry)` after every successful swap (node pool, metrics...)."""
        self._listeners.append(listener)

    def on_refuse(self, listener: Callable[[RegistryError], None]) -> None:
        """Call `listener(error)` whenever a reload is refused, whoever asked for it."""
        self._refusal_listeners.append(listener)

    def reload(self) -> str:
        """Load the file again; swap if valid and return the one-line diff; raise RegistryError otherwise."""
        try:
            new = load(self.path)
        except RegistryError as exc:
            log.error("registry reload refused, the running registry stays in force: %s", exc)
            for listener in self._refusal_listeners:
                listener(exc)
            raise
        return self.swap(new)

    def swap(self, new: Registry) -> str:
        diff = self.current.diff(new)
        self.current = new
        log.info(diff)
        for listener in self._listeners:
            try:
                listener(new)
            except Exception:  # the new registry is in force; a failing observer must not undo that
                log.exception("a registry listener failed after the swap")
        return diff
