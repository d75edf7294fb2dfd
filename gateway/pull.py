"""`privaterouter pull-models`: make every node hold the Ollama tags the registry routes to it.

The compose `gpu` profile runs it once the Ollama container is healthy, so a fresh deployment serves
the registry's models without a manual `ollama pull`. It POSTs Ollama's `/api/pull` (with
`stream: false`, so one JSON answer when the download is complete) for each (node, tag) pair, with
the node's own headers and CA file. Already-present tags return at once.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import httpx

from gateway.registry import Registry

PULL_TIMEOUT = httpx.Timeout(connect=10.0, read=3600.0, write=30.0, pool=10.0)  # a model is gigabytes


def pulls(registry: Registry) -> list[tuple[str, str]]:
    """(node name, Ollama tag) pairs: each model's tag on each node that may serve it, in registry order."""
    pairs: list[tuple[str, str]] = []
    for model in registry.models.values():
        for node in model.nodes if model.nodes is not None else tuple(registry.nodes):
            if (node, model.tag) not in pairs:
                pairs.append((node, model.tag))
    return pairs


def pull_models(registry: Registry, *, report: Callable[[str], None] = print,
                transport: httpx.BaseTransport | None = None) -> int:
    """Pull every pair; returns how many failed (each failure is reported as one line, never raised)."""
    failures = 0
    for node_name, tag in pulls(registry):
        node = registry.nodes[node_name]
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=node.ca_file) if node.ca_file else True
        try:
            with httpx.Client(timeout=PULL_TIMEOUT, headers=dict(node.headers), verify=verify,
                              transport=transport) as client:
                response = client.post(f"{node.url}/api/pull", json={"model": tag, "stream": False})
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            report(f"{node_name}: {tag} ready")
        except (httpx.HTTPError, RuntimeError) as exc:
            failures += 1
            report(f"{node_name}: {tag} failed: {exc}")
    return failures
