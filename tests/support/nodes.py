"""Emulator nodes on loopback with the shipped models.yaml pointed at them (no test-only models)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from providers.ollama.fake import FakeConfig, FakeOllamaApp, create_fake_app
from tests.support.servers import serve_app

REPO = Path(__file__).resolve().parent.parent.parent


def shipped_registry(urls: list[str], *, dead: list[str] | None = None) -> str:
    """models.yaml with its nodes replaced by `node0..` at `urls` (and `deadN` nodes at `dead` URLs)."""
    text = (REPO / "models.yaml").read_text()
    nodes = "".join(f"  - name: node{index}\n    url: {url}\n    max_concurrency: 8\n"
                    for index, url in enumerate(urls))
    nodes += "".join(f"  - name: dead{index}\n    url: {url}\n" for index, url in enumerate(dead or []))
    start, end = text.index("nodes:\n"), text.index("models:\n")
    return text[:start] + "nodes:\n" + nodes + "\n" + text[end:]


@dataclass
class Nodes:
    urls: list[str]
    fakes: list[FakeOllamaApp]
    models_file: Path


@contextmanager
def emulator_nodes(tmp_path: Path, count: int = 2, *, config: FakeConfig | None = None,
                   dead: list[str] | None = None) -> Iterator[Nodes]:
    """`count` emulators served on loopback and a registry file naming them."""
    with ExitStack() as stack:
        fakes = [create_fake_app(config or FakeConfig()) for _ in range(count)]
        urls = [stack.enter_context(serve_app(fake)) for fake in fakes]
        models_file = tmp_path / "models.yaml"
        models_file.write_text(shipped_registry(urls, dead=dead))
        yield Nodes(urls, fakes, models_file)


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
