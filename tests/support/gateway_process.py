"""`privaterouter serve` as a real child process (its own process group), for crash tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SECRET = "k" * 48
_OWN = ("DATABASE_URL", "REDIS_URL", "WORKERS", "METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcess:
    """Starts `python -m gateway serve` with `env` on a free port; `kill()` signals its whole group."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = workdir / f"serve-{self.port}.log"
        inherited = {name: value for name, value in os.environ.items() if name not in _OWN}
        self.env = {**inherited, "PORT": str(self.port), "LOG_FORMAT": "text", "JWT_SECRET": SECRET,
                    "APP_SECRET_KEY": SECRET, "DATA_DIR": str(workdir / "data"), **env}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=self.env,
                                            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.log.read_text())
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("gateway did not become healthy:\n" + self.log.read_text())

    def workers(self) -> list[int]:
        """The pids of the uvicorn worker processes (children of the supervisor)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def signal_group(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the supervisor."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM (a clean stop, draining) and wait; SIGKILL if it outlives `timeout`."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
