"""Private PostgreSQL and Redis servers a test may stop, restart or freeze (SIGSTOP) at will.

Never the shared services: each instance lives in its own temporary directory on a free loopback
port and is removed afterwards. PostgreSQL runs as the `postgres` user when the tests run as root
(initdb refuses root), else as the current user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def require_server_binaries(*names: str) -> None:
    """Skip (outside CI) when PostgreSQL's initdb/pg_ctl or redis-server are not installed; in CI fail."""
    import pytest

    missing = [name for name in names if not (glob.glob(f"/usr/lib/postgresql/*/bin/{name}") or shutil.which(name))]
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{', '.join(missing)} missing in CI (install postgresql and redis-server)")
        pytest.skip(f"{', '.join(missing)} not installed: private database/Redis tests need them")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found (install postgresql)")
    return path


def _as_db_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class PrivatePostgres:
    """initdb + pg_ctl in a temporary directory; trust auth on loopback, user `postgres`."""

    def __init__(self, password: str | None = None) -> None:
        """With `password`, the `postgres` user needs it (scram-sha-256) instead of trust."""
        self.root = Path(tempfile.mkdtemp(prefix="pr-private-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        auth = ["-A", "trust"]
        if password is not None:
            pwfile = self.root / "pwfile"
            pwfile.write_text(password + "\n")
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        if os.geteuid() == 0:
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, "postgres", "postgres")
        subprocess.run(_as_db_user([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", *auth,
                                    "--no-sync"]), check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_db_user([_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                                    str(self.root / "log"), "-w", "start"]), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(_as_db_user([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                       check=False, capture_output=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def signal_all(self, signum: int) -> None:
        """Send `signum` to the postmaster and every backend (SIGSTOP freezes the whole server)."""
        postmaster = self.pid()
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        for pid in [postmaster, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.signal_all(signal.SIGCONT)
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """`redis-server` on a free port without persistence; stoppable and restartable on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextlib.contextmanager
def private_postgres(password: str | None = None) -> Iterator[PrivatePostgres]:
    require_server_binaries("initdb", "pg_ctl")
    server = PrivatePostgres(password)
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    require_server_binaries("redis-server")
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.stop()
