"""Sampling profile of the running gateway with py-spy, summarised by function and by layer."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Layers by where a frame's file lives (first match wins), for "where does the time go".
LAYERS: tuple[tuple[str, str], ...] = (
    ("/gateway/middleware/", "gateway middleware"),
    ("/gateway/", "gateway"),
    ("/providers/", "providers"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/asyncpg/", "asyncpg"),
    ("/aiosqlite/", "aiosqlite"),
    ("/httpx/", "httpx"),
    ("/httpcore/", "httpcore"),
    ("/h11/", "h11"),
    ("/anyio/", "anyio"),
    ("/starlette/", "Starlette"),
    ("/uvicorn/", "uvicorn"),
    ("/redis/", "redis-py"),
    ("/prometheus_client/", "prometheus_client"),
    ("/logging/", "logging"),
    ("/asyncio/", "asyncio"),
    ("/uuid.py", "uuid"),
    ("/json/", "json"),
)

# Pipeline stages whose inclusive share answers "what does one request spend its CPU on".
STAGES: tuple[tuple[str, str], ...] = (
    ("authenticate", "authenticate (key lookup)"),
    ("enforce_rate_limits", "rate limit (Redis)"),
    ("read_json", "read + parse body"),
    ("prepare", "prepare upstream request"),
    ("place_hold", "place credit hold (DB)"),
    ("place_worst_case_hold", "place credit hold (DB)"),
    ("request", "upstream call (pool + httpx)"),
    ("open_stream", "open upstream stream (pool + httpx)"),
    ("_relay", "relay: upstream NDJSON -> SSE frames"),
    ("render_response", "render OpenAI answer"),
    ("finish", "settle: Call.finish"),
    ("_write_batch", "usage writer (background)"),
    ("flush_last_used", "key last-used flush (background)"),
)


PROJECT_LAYERS = frozenset({"gateway", "gateway middleware", "providers"})


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


RATE = 250  # samples per second


async def record(pid: int, seconds: int, output: Path, *, core: int | None, rate: int = RATE) -> str:
    """Sample `pid` for `seconds` into a collapsed-stack file; returns py-spy's own output."""
    binary = py_spy()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    args = [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate), "--format", "raw",
            "--output", str(output)]
    if core is not None:
        args = ["taskset", "-c", str(core), *args]
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), timeout=seconds + 60)
    return out.decode(errors="replace")


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw)
        if match is None:
            frames.append((raw, ""))
        else:
            frames.append((match["func"], match["file"]))
    return frames


def _short(func: str, file: str) -> str:
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{func} ({file})"


def _layer(file: str) -> str:
    file = "/" + file  # py-spy shortens paths to "package/module.py"
    for needle, name in LAYERS:
        if needle in file:
            return name
    return "other (stdlib, C extensions' callers)"


def summarise(collapsed: Path, top: int = 25) -> dict[str, Any]:
    """Self time by function, self time by layer and inclusive time of pipeline stages (shares of samples)."""
    self_time: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in _frames(stack) if not frame[0].startswith("process ")
                  and not frame[0].startswith("thread ")]
        if not frames:
            continue
        total += count
        func, file = frames[-1]
        self_time[_short(func, file)] += count
        layers[_layer(file)] += count
        names = {_short(f, fl) for f, fl in frames}
        for name in names:
            inclusive[name] += count
        in_project = {f.rpartition(".")[2] for f, fl in frames if _layer(fl) in PROJECT_LAYERS}
        for label in {label for func_name, label in STAGES if func_name in in_project}:
            stages[label] += count

    def share(counter: Counter[str], limit: int | None = None) -> list[dict[str, Any]]:
        return [{"name": name, "samples": count, "pct": round(100 * count / total, 1) if total else 0.0}
                for name, count in counter.most_common(limit)]

    project_inclusive = Counter({name: count for name, count in inclusive.items()
                                 if "gateway/" in name or "providers/" in name})
    return {"samples": total, "self": share(self_time, top), "layers": share(layers),
            "stages": share(stages), "inclusive_project": share(project_inclusive, top)}
