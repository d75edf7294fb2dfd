"""Real `privaterouter` processes for end-to-end tests: the emulator and `serve`, on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.nodes import shipped_registry


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Deployment:
    url: str
    ollama_url: str
    env: dict[str, str]
    emulator: subprocess.Popen[bytes]
    server: subprocess.Popen[bytes]


@contextmanager
def deployment(tmp_path: Path, **extra_env: str) -> Iterator[Deployment]:
    """`privaterouter fake-ollama` and `privaterouter serve` (embedded SQLite unless DATABASE_URL is given)."""
    ollama_port, port = free_port(), free_port()
    ollama_url = f"http://127.0.0.1:{ollama_port}"
    models = tmp_path / "models.yaml"
    models.write_text(shipped_registry([ollama_url]))
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "MODELS_FILE": str(models), "PORT": str(port),
           "LOG_FORMAT": "text", "LOG_LEVEL": "warning", "HEALTH_CHECK_INTERVAL": "0.5", **extra_env}
    for name in ("REDIS_URL", "METRICS_PORT"):
        if name not in extra_env:
            env.pop(name, None)
    logs = tmp_path / "emulator.log", tmp_path / "serve.log"
    with logs[0].open("wb") as out:
        emulator = subprocess.Popen([sys.executable, "-m", "gateway", "fake-ollama", "--port", str(ollama_port),
                                     "--tokens", "8"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=tmp_path)
    try:
        wait_until_up(f"{ollama_url}/api/version", emulator, logs[0])
        with logs[1].open("wb") as out:
            server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, stdout=out,
                                      stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_until_up(f"http://127.0.0.1:{port}/health", server, logs[1])
            yield Deployment(f"http://127.0.0.1:{port}", ollama_url, env, emulator, server)
        finally:
            stop(server)
    finally:
        stop(emulator)
