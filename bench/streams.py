"""A light streaming client: time to first token and the gaps between tokens, for many streams at once.

wrk cannot see inside a response, so streams whose timing matters are read here: one connection per
stream (`Connection: close`, so the end of the stream is the end of the socket), one `read()` per
arrival, frames counted with `bytes.count` (a frame split across reads is still counted once). A
frame's time is the time of the read that brought it. The clock starts when the request is written,
after the connection is up, so connecting is not part of the time to first token on either path.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

READ_SIZE = 65536


@dataclass
class StreamTiming:
    status: int = 0
    request_id: str = ""
    sent_at: float = 0.0  # perf_counter() when the request was written
    head: float | None = None  # seconds from the request to the first byte of the answer
    frames: int = 0
    first: float | None = None  # seconds from the request to the first frame
    last: float | None = None
    complete: bool = False  # the terminal frame arrived and the server closed cleanly
    error: str = ""
    body_excerpt: bytes = b""  # the start of a non-2xx answer, to say why

    @property
    def gap(self) -> float | None:
        """Mean time between frames after the first one."""
        if self.first is None or self.last is None or self.frames < 2:
            return None
        return (self.last - self.first) / (self.frames - 1)


@dataclass(frozen=True)
class StreamSpec:
    """One streaming request: `marker` starts every frame, `terminal` ends the last one."""

    port: int
    path: str
    body: dict[str, Any]
    marker: bytes
    terminal: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def request(self) -> bytes:
        payload = orjson.dumps(self.body)
        head = [f"POST {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def _parse_head(head: bytes, timing: StreamTiming) -> None:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    timing.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-request-id":
            timing.request_id = value.strip().decode()


async def read_stream(spec: StreamSpec, payload: bytes, timeout: float) -> StreamTiming:
    """Send one streaming request on a fresh loopback connection and time its frames."""
    timing = StreamTiming()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", spec.port), timeout)
    except (OSError, TimeoutError) as exc:
        timing.error = f"connect: {type(exc).__name__}"
        return timing
    start = timing.sent_at = time.perf_counter()
    deadline = start + timeout
    buffer = b""
    in_body = False
    tail = b""
    keep = max(len(spec.marker), len(spec.terminal)) - 1
    saw_terminal = False
    try:
        writer.write(payload)
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(reader.read(READ_SIZE), left)
            now = time.perf_counter() - start
            if timing.head is None:
                timing.head = now
            if not data:
                timing.complete = saw_terminal and 200 <= timing.status < 300
                break
            if not in_body:
                buffer += data
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    continue
                _parse_head(buffer[:end], timing)
                data, in_body = buffer[end + 4:], True
            if not 200 <= timing.status < 300 and len(timing.body_excerpt) < 300:
                timing.body_excerpt += data[:300 - len(timing.body_excerpt)]
            window = tail + data
            found = window.count(spec.marker)
            if found:
                timing.frames += found
                if timing.first is None:
                    timing.first = now
                timing.last = now
            if spec.terminal in window:
                saw_terminal = True
            tail = window[-keep:] if keep > 0 else b""
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        timing.error = type(exc).__name__
    finally:
        writer.close()
    return timing


@dataclass
class StreamRun:
    streams: list[StreamTiming] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def complete(self) -> int:
        return sum(1 for stream in self.streams if stream.complete)

    def summary(self) -> dict[str, Any]:
        """Counts and the p50/p90/p99 of time to first frame and of the mean gap between frames (ms)."""
        firsts = [s.first * 1000 for s in self.streams if s.complete and s.first is not None]
        gaps = [gap * 1000 for s in self.streams if s.complete and (gap := s.gap) is not None]
        errors: dict[str, int] = {}
        examples: dict[str, str] = {}
        for stream in self.streams:
            if not stream.complete:
                reason = stream.error or (f"status {stream.status}" if not 200 <= stream.status < 300
                                          else "no terminal frame")
                errors[reason] = errors.get(reason, 0) + 1
                if stream.body_excerpt:
                    examples.setdefault(reason, stream.body_excerpt.decode(errors="replace"))
        return {
            "streams": len(self.streams), "complete": self.complete, "errors": errors, "error_examples": examples,
            "wall_s": round(self.wall_s, 3),
            "frames_per_stream": statistics.median([s.frames for s in self.streams]) if self.streams else 0,
            "ttft_ms": percentiles(firsts), "gap_ms": percentiles(gaps),
        }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": round(ordered[-1], 3), "n": len(ordered)}


async def run_streams(spec: StreamSpec, *, count: int, concurrency: int, ramp_s: float = 0.0,
                      timeout: float = 120.0) -> StreamRun:
    """`count` streams, at most `concurrency` at once, the first `concurrency` started evenly over `ramp_s`."""
    payload = spec.request()
    run = StreamRun()
    gate = asyncio.Semaphore(concurrency)
    begin = time.perf_counter()

    async def one(index: int) -> None:
        if ramp_s:  # later streams wait for the ramp, so they cannot overtake its slots
            await asyncio.sleep(ramp_s * min(index, concurrency) / concurrency)
        async with gate:
            run.streams.append(await read_stream(spec, payload, timeout))

    await asyncio.gather(*(one(index) for index in range(count)))
    run.wall_s = time.perf_counter() - begin
    return run
