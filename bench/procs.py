"""Child processes pinned to cores: start, wait until they answer, stop (only the ones we started)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from bench.system import BenchError

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent


def privaterouter() -> list[str]:
    """The `privaterouter` command of this interpreter's environment."""
    script = Path(PYTHON).with_name("privaterouter")
    return [str(script)] if script.exists() else [PYTHON, "-m", "gateway"]


def run_checked(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    """Run a short command to completion; raise BenchError with its output when it fails."""
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(args[-2:])} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


class Child:
    """A long-running child (`taskset -c CORES cmd...`), its output in `log`; taskset execs, so pid is cmd's.

    `core` is one core (1) or a taskset list ("0,1").
    """

    def __init__(self, name: str, args: list[str], *, core: int | str | None, log: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        pinned = ["taskset", "-c", str(core), *args] if core is not None else args
        self._out = log.open("ab")
        self.process = subprocess.Popen(pinned, stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        """Poll `url` (loopback) until it answers 2xx, the child dies or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if 200 <= answer.status < 300:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer {url} within {timeout:.0f}s; see {self.log}")

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM (graceful: the gateway flushes its usage queue), then SIGKILL after `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._out.close()
        return self.process.returncode

    def __enter__(self) -> Child:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
