"""A private PostgreSQL cluster for tests that stop the database (never the shared one).

`initdb` + `pg_ctl` from the Debian packages, run as the `postgres` user in a temporary directory
on a free port; `stop()` and `start()` simulate an outage; `close()` removes everything.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.gateway_process import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found under /usr/lib/postgresql (apt-get install postgresql)")
    return found[-1]


def _as_postgres(*args: str) -> list[str]:
    return list(args) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]


class PrivatePostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pr-private-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(_as_postgres(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"),
                       check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                                    str(self.root / "log"), "-w", "start"), check=True, capture_output=True,
                       timeout=60)

    def stop(self) -> None:
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
                       check=False, capture_output=True, timeout=60)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
