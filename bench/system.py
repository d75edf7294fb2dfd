"""What the benchmark reads from the machine: /proc counters, tools, ports, limits."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import socket
import subprocess
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
INSTALL_WRK = "apt-get update && apt-get install -y wrk"


class BenchError(Exception):
    """An expected failure of the benchmark (missing tool, service down): printed as one line."""


def require_tools() -> None:
    """Fail with the install command when `wrk` or `taskset` is missing."""
    if shutil.which("wrk") is None:
        raise BenchError(f"wrk is not installed; install it with: {INSTALL_WRK}")
    if shutil.which("taskset") is None:
        raise BenchError("taskset is not installed; install it with: apt-get install -y util-linux")


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))


def cpu_ticks_of(pids: list[int]) -> dict[int, int]:
    """CPU ticks of each process that still exists (a process that is gone is left out)."""
    found: dict[int, int] = {}
    for pid in pids:
        try:
            found[pid] = cpu_ticks(pid)
        except (OSError, IndexError, ValueError):
            continue
    return found


def ticks_spent(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """Ticks each process spent between two readings; a process first seen in `after` counts from zero."""
    return {pid: ticks - before.get(pid, 0) for pid, ticks in after.items()}


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (scans /proc; uvicorn's workers are children of its supervisor)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                command = handle.read()
        except OSError:
            continue
        if int(fields[1]) == pid and b"resource_tracker" not in command:
            found.append(int(entry.name))
    return sorted(found)


def ticks_to_ms(ticks: int) -> float:
    return ticks * 1000.0 / CLK_TCK


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {field}")


def rss_kib(pid: int) -> int:
    """Resident set size now (VmRSS)."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """Resident set high-water mark since start or the last reset_peak_rss (VmHWM)."""
    return _status_kib(pid, "VmHWM")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (clear_refs 5); False when the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class CoreTimes:
    busy: int
    total: int


def core_times(core: int | tuple[int, ...]) -> CoreTimes:
    """Busy and total jiffies of one CPU core, or summed over several (from /proc/stat)."""
    wanted = {core} if isinstance(core, int) else set(core)
    busy = total = 0
    with open("/proc/stat") as handle:
        for line in handle:
            name = line.split(" ", 1)[0]
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in wanted:
                values = [int(part) for part in line.split()[1:]]
                idle = values[3] + values[4]  # idle + iowait
                busy += sum(values[:8]) - idle
                total += sum(values[:8])
                wanted.discard(int(name[3:]))
    if wanted:
        raise BenchError(f"/proc/stat has no cpu{min(wanted)}")
    return CoreTimes(busy=busy, total=total)


def load_average() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def cores() -> int:
    return len(os.sched_getaffinity(0))


def raise_nofile(wanted: int) -> int:
    """Raise the soft open-files limit (inherited by every child) towards `wanted`; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def source_state(repo: str) -> dict[str, str]:
    """The commit the gateway ran from, and any uncommitted change to the code under test."""
    commit = _run(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", repo, "status", "--porcelain", "--", "gateway", "providers", "migrations",
                  "models.yaml"])
    return {"commit": commit, "uncommitted": dirty}


def machine() -> dict[str, str]:
    """The machine as RESULTS.md describes it."""
    model, mhz = "unknown", ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "cpu MHz" and not mhz:
                mhz = value.strip()
    wrk = _run(["wrk", "--version"]).splitlines()
    return {
        "cpu": model,
        "cpu_mhz": mhz,
        "cores": str(os.cpu_count()),
        "memory": _run(["free", "-h"]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk[0] if wrk else "",
        "postgresql": _run(["psql", "--version"]),
        "redis": _run(["redis-server", "--version"]) or _run(["redis-cli", "--version"]),
    }
