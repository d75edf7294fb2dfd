"""Load with wrk: one scenario = one URL, one body, one concurrency; the Lua script reports JSON."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "lua" / "post.lua"
PROMPT = [{"role": "user", "content": "Write a short note about measuring the latency of an API gateway."}]
EMBED_INPUT = "A gateway's cost is the latency and CPU it adds in front of the GPU."
KINDS = ("chat", "stream", "embed")  # the scenarios, in report order


@dataclass(frozen=True)
class Scenario:
    """What one wrk run sends: `kind` is chat, stream or embed; `target` is direct or a gateway backend."""

    kind: str
    target: str
    path: str
    body: dict[str, Any]

    @property
    def label(self) -> str:
        return {"chat": "chat (non-stream)", "stream": "chat stream (32 tokens)", "embed": "embeddings"}[self.kind]


def direct_scenarios() -> list[Scenario]:
    """Ollama's native API on the emulator, as the gateway itself calls it."""
    return [
        Scenario("chat", "direct", "/api/chat", {"model": "gemma4:latest", "messages": PROMPT, "stream": False}),
        Scenario("stream", "direct", "/api/chat", {"model": "gemma4:latest", "messages": PROMPT, "stream": True}),
        Scenario("embed", "direct", "/api/embed", {"model": "nomic-embed-text:latest", "input": EMBED_INPUT}),
    ]


def gateway_scenarios(target: str, chat_model: str, embed_model: str) -> list[Scenario]:
    """The OpenAI-compatible /v1 surface, with what a typical client sends."""
    return [
        Scenario("chat", target, "/v1/chat/completions", {"model": chat_model, "messages": PROMPT}),
        Scenario("stream", target, "/v1/chat/completions", {"model": chat_model, "messages": PROMPT, "stream": True}),
        Scenario("embed", target, "/v1/embeddings", {"model": embed_model, "input": EMBED_INPUT}),
    ]


@dataclass(frozen=True)
class WrkResult:
    duration_s: float
    requests: int  # responses completed in the window (any status)
    ok: int  # 2xx, counted by the Lua response() callback
    non_2xx: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]  # p50, p75, p90, p99, p99.9, mean, max

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors (connect, read, write, timeout)."""
        return self.non_2xx + sum(self.socket_errors.values())


def parse(output: str) -> WrkResult:
    """The BENCH_JSON line that post.lua's done() prints."""
    line = next((line for line in output.splitlines() if line.startswith("BENCH_JSON ")), None)
    if line is None:
        raise ValueError(f"wrk printed no BENCH_JSON line:\n{output[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    latency = data["latency_us"]
    ms = {name: int(value) / 1000 for name, value in latency["p"].items()}
    ms.update(mean=float(latency["mean"]) / 1000, max=int(latency["max"]) / 1000)
    return WrkResult(duration_s=data["duration_us"] / 1e6, requests=data["requests"], ok=data["ok"],
                     non_2xx=data["non_2xx"], statuses={str(k): int(v) for k, v in data["statuses"].items()},
                     socket_errors={k: int(v) for k, v in data["socket_errors"].items()}, latency_ms=ms)


async def run_wrk(url: str, body_file: Path, *, connections: int, seconds: float, core: int | None,
                  ids_file: Path | None = None, headers: tuple[str, ...] = (), timeout_s: float = 30.0) -> WrkResult:
    """One bounded wrk run (one thread, `connections` keep-alive connections) against a loopback URL."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing to load anything but 127.0.0.1: {url}")
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:.0f}s",
            "-s", str(LUA), url, "--", str(body_file), str(ids_file) if ids_file else "-", *headers]
    if core is not None:
        args = ["taskset", "-c", str(core), *args]
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=seconds + timeout_s + 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return parse(out.decode(errors="replace"))
