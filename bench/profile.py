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

# Layers by where a frame's file lives (first match wins), for "where does the time go". The project's
# own modules are split by concern; tests/bench/test_profile.py checks each path still exists.
LAYERS: tuple[tuple[str, str], ...] = (
    ("/gateway/middleware/", "gateway: middleware"),
    ("/gateway/billing/", "gateway: billing (hold, settlement)"),
    ("/gateway/usage.py", "gateway: usage writer"),
    ("/gateway/db/", "gateway: database (engine, SQLite writer)"),
    ("/gateway/ratelimit/", "gateway: rate limit"),
    ("/gateway/auth/", "gateway: authentication"),
    ("/gateway/metrics.py", "gateway: metrics"),
    ("/gateway/logs.py", "gateway: logging"),
    ("/gateway/streaming.py", "gateway: stream relay"),
    ("/gateway/", "gateway: request pipeline"),
    ("/providers/ollama/", "providers: upstream client"),
    ("/providers/pool.py", "providers: node pool"),
    ("/providers/", "providers: translation"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/sqlmodel/", "SQLAlchemy"),
    ("/asyncpg/", "asyncpg"),
    ("/aiosqlite/", "aiosqlite"),
    ("/sqlite3/", "aiosqlite"),
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

# Concerns: the breakdown ("database work inside the process", "the upstream client", ...). A sample
# goes to the concern of its innermost frame in a layer named here; stdlib frames without a concern of
# their own (json, uuid, ...) go to their caller's, so `json.dumps` in the access log counts as logging.
# asyncio's helpers count for the library that called them (redis-py's timeouts are the rate-limit call's);
# called from our own code (`asyncio.timeout`, `create_task`) or running the loop itself, they are
# event-loop work.
EVENT_LOOP = "event loop (tasks, timers, switches)"
ASYNC_LAYERS = frozenset({"asyncio", "anyio"})
LOOP_FRAMES = ("Runner.run", "_run_once", "run_forever", "Handle._run")  # uvloop's C code shows as Runner.run
CONCERNS: dict[str, str] = {
    "gateway: billing (hold, settlement)": "database work (hold, settlement, SQL layers)",
    "gateway: usage writer": "database work (hold, settlement, SQL layers)",
    "gateway: database (engine, SQLite writer)": "database work (hold, settlement, SQL layers)",
    "SQLAlchemy": "database work (hold, settlement, SQL layers)",
    "asyncpg": "database work (hold, settlement, SQL layers)",
    "aiosqlite": "database work (hold, settlement, SQL layers)",
    "providers: upstream client": "upstream client",
    "providers: node pool": "upstream client",
    "httpx": "upstream client",
    "httpcore": "upstream client",
    "h11": "upstream client",
    "gateway: rate limit": "rate limit (Redis)",
    "redis-py": "rate limit (Redis)",
    "uvicorn": "server + routing (uvicorn, Starlette)",
    "Starlette": "server + routing (uvicorn, Starlette)",
    "gateway: middleware": "middleware",
    "gateway: metrics": "metrics",
    "prometheus_client": "metrics",
    "gateway: logging": "logging",
    "logging": "logging",
    "gateway: authentication": "authentication",
    "gateway: stream relay": "stream relay",
    "gateway: request pipeline": "request pipeline + translation",
    "providers: translation": "request pipeline + translation",
}
OTHER = "other (stdlib, C extensions' callers)"

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


PROJECT_LAYERS = frozenset(name for _, name in LAYERS if name.startswith(("gateway", "providers")))


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
    return OTHER


def concern(frames: list[tuple[str, str]]) -> str:
    """The concern of a sample (frames run outer to inner): see CONCERNS and EVENT_LOOP."""
    via_async = False
    for func, file in reversed(frames):
        layer = _layer(file)
        if layer in ASYNC_LAYERS:
            if func.endswith(LOOP_FRAMES):
                return EVENT_LOOP
            via_async = True
            continue
        found = CONCERNS.get(layer)
        if found is None:
            continue
        return EVENT_LOOP if via_async and layer in PROJECT_LAYERS else found
    return EVENT_LOOP if via_async else OTHER


def _is_thread(frames: list[tuple[str, str]]) -> bool:
    """A sample of a background thread (`asyncio.to_thread`'s pool, e.g. the journal's fsync), not the loop's."""
    return frames[0][0].startswith("Thread._bootstrap") and frames[0][1].startswith("threading.py")


def summarise(collapsed: Path, top: int = 25) -> dict[str, Any]:
    """Self time by function, layer and concern, and inclusive time of pipeline stages, as shares of the
    event loop thread's samples; background threads' samples are counted apart (`thread_samples`,
    `threads`: their innermost frames), since py-spy also samples a pool thread blocked in a queue or
    an fsync and those are not the loop's CPU."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    concerns: Counter[str] = Counter()
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
        if _is_thread(frames):
            threads[_short(*frames[-1])] += count
            continue
        total += count
        func, file = frames[-1]
        self_time[_short(func, file)] += count
        layers[_layer(file)] += count
        concerns[concern(frames)] += count
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
    return {"samples": total, "self": share(self_time, top), "layers": share(layers), "concerns": share(concerns),
            "stages": share(stages), "inclusive_project": share(project_inclusive, top),
            "thread_samples": sum(threads.values()),
            "threads": [{"name": name, "samples": count} for name, count in threads.most_common(5)]}
