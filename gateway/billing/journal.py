"""The local settlement journal: nothing billable is only in memory.

Each process appends to its own files, `DATA_DIR/journal/<instance id>~<n>.ndjson` (segments),
holding an exclusive `flock` on them while alive. One JSON object a line:

    {"t": "s", ...settlement}   a request's settlement, appended before it enters the writer's batch
    {"t": "r", ...settlement}   a stream's progress: what was relayed so far, as an `interrupted`
                                settlement (written every PROGRESS_SECONDS while it streams)
    {"t": "d", "ids": [...]}    these requests are committed to the database

Appends are buffered and written + fsynced by a background task every few milliseconds
(`SYNC_INTERVAL`); the usage writer also waits for the journal to be durable before it writes a
batch, so a settlement reaches the database only after it reached the disk. Done marks need no
fsync of their own (a lost one only makes a replay repeat an idempotent settlement): they are
written with the next round that settlements or progress lines start, and at close.

At start, `replay()` reads the journals of dead processes (those whose lock it can take), and
returns for each request not marked done its last settlement, or else its last progress record.
Settling is idempotent by request id (gateway/billing/settlement.py), so a replay that races
another process, or repeats after a crash during replay, cannot charge twice. A replayed file is
deleted once its settlements are committed. A live process starts a new segment past
`ROTATE_BYTES` and deletes a segment once every request in it is done.

This covers a crash (what streams had relayed, up to PROGRESS_SECONDS old, is billed at the next
start) and a database that is down when the process stops (the queued settlements are written by
the next start). The journal needs a persistent volume at DATA_DIR.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.billing.settlement import Settlement

log = logging.getLogger("pr.billing")

SYNC_INTERVAL = 0.005  # seconds between batched write + fsync rounds
PROGRESS_SECONDS = 2.0  # how often a stream journals what it has relayed
ROTATE_BYTES = 64 * 2**20


def settlement_line(kind: str, item: Settlement) -> bytes:
    """A journal line for `item` (`kind` "s" or "r"), newline included.

    orjson serialises the dataclass itself (its fields in order, `created_at` as ISO 8601, which
    `datetime.fromisoformat` reads back): about 5x cheaper than going through `dataclasses.asdict`,
    which deep-copies every field, and this runs once per request.
    """
    return b'{"t":"%s",' % kind.encode() + orjson.dumps(item)[1:] + b"\n"


def settlement_from(record: dict[str, Any]) -> Settlement:
    """The Settlement of an "s" or "r" journal line. Raises KeyError/ValueError on a damaged line."""
    fields = {field.name for field in dataclasses.fields(Settlement)}
    values = {name: record[name] for name in fields}
    values["created_at"] = datetime.fromisoformat(record["created_at"])
    return Settlement(**values)


@dataclasses.dataclass
class _Segment:
    path: Path
    fd: int
    size: int = 0
    outstanding: set[str] = dataclasses.field(default_factory=set)  # written, not yet marked done


class Journal:
    """This process's journal. `append_*` never block; `sync()` makes everything appended durable.

    The journal is a series of segment files `<instance id>~<n>.ndjson`: past ROTATE_BYTES a new
    segment starts, and an old one is deleted once every request written to it is done, so the
    disk holds about what is still outstanding, whatever the traffic.
    """

    def __init__(self, directory: Path, instance_id: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.instance_id = instance_id
        self._next_segment = 0
        self._segments = [self._open_segment()]
        # (line, the request id it leaves outstanding, the request ids it marks done), in order
        self._pending: list[tuple[bytes, str | None, tuple[str, ...]]] = []
        self._durable_pending = False  # whether a settlement or progress line waits (done marks alone need no fsync)
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Requests this process replayed from dead journals whose settlement may not be written yet.
        self.replayed: set[str] = set()

    def _open_segment(self) -> _Segment:
        path = self.directory / f"{self.instance_id}~{self._next_segment}.ndjson"
        self._next_segment += 1
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours alone while we live
        return _Segment(path, fd)

    @property
    def path(self) -> Path:
        """The segment being written."""
        return self._segments[-1].path

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="settlement-journal")

    def append_settlement(self, item: Settlement) -> None:
        """Journal a settlement (before it is queued for the database)."""
        self._append(settlement_line("s", item), item.request_id)

    def append_progress(self, item: Settlement) -> None:
        """Journal what a stream has relayed so far (an `interrupted` settlement, replayed after a crash)."""
        self._append(settlement_line("r", item), item.request_id)

    def mark_done(self, request_ids: Iterable[str]) -> None:
        """These requests are committed: a replay skips them.

        The mark is written with the next settlement's round (or at close), without a round of its own:
        a mark lost in a crash only makes the replay settle those requests again, which finds their
        holds gone and writes nothing (settling is idempotent by request id)."""
        ids = tuple(request_ids)
        if ids:
            self._pending.append((orjson.dumps({"t": "d", "ids": ids}) + b"\n", None, ids))

    def _append(self, line: bytes, request_id: str) -> None:
        self._pending.append((line, request_id, ()))
        if not self._durable_pending:
            self._durable_pending = True
            self._wakeup.set()

    async def make_durable(self) -> None:
        """Make every settlement and progress line appended so far durable (what the usage writer waits
        for before a batch); returns at once when only done marks are pending."""
        if self._durable_pending:
            await self.sync()

    async def sync(self) -> None:
        """Write and fsync everything appended so far (in a thread: the disk never blocks the loop),
        then start a new segment if this one is full and delete drained ones."""
        async with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, []
            self._durable_pending = False
            segment = self._segments[-1]
            data = b"".join(line for line, _, _ in pending)
            await asyncio.to_thread(_write, segment.fd, data)
            for _, request_id, done in pending:  # in order: a done mark clears what came before it
                if request_id is not None:
                    segment.outstanding.add(request_id)
                for each in self._segments:
                    each.outstanding.difference_update(done)
            segment.size += len(data)
            if segment.size > ROTATE_BYTES:
                self._segments.append(self._open_segment())
            for old in self._segments[:-1]:
                if not old.outstanding:
                    self._segments.remove(old)
                    _discard(old)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(SYNC_INTERVAL)  # gather what the next few ms append into one fsync
            try:
                await self.make_durable()
            except OSError as exc:
                log.critical("the settlement journal cannot be written (%s): %s", self.path, exc)

    async def aclose(self) -> None:
        """Flush and close. Segments with outstanding requests stay (the next start replays them)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sync()
        for segment in self._segments:  # `path` still names the last one afterwards
            if segment.outstanding:
                os.close(segment.fd)
            else:
                _discard(segment)


def _write(fd: int, data: bytes) -> None:
    os.write(fd, data)
    os.fdatasync(fd)  # the data and the file's new size; no need to wait for its timestamps


def _discard(segment: _Segment) -> None:
    segment.path.unlink(missing_ok=True)
    os.close(segment.fd)


def owner_of(path: Path) -> str:
    """The instance id a journal segment belongs to (its file name before `~`)."""
    return path.name.rsplit("~", 1)[0]


@dataclasses.dataclass
class Replay:
    """What the journals of dead processes left: unfinished settlements, and the files (locked by us)."""

    items: list[Settlement]
    files: dict[Path, int]  # path -> our locked descriptor

    def release(self, *, delete: bool) -> None:
        """Unlock the files, deleting them when their settlements are committed."""
        for path, fd in self.files.items():
            if delete:
                path.unlink(missing_ok=True)
            os.close(fd)
        self.files = {}


def replay(directory: Path) -> Replay:
    """Read every journal in `directory` whose lock can be taken (its process is gone).

    For each request not marked done: its last settlement, else its last progress record.
    """
    files: dict[Path, int] = {}
    if directory.is_dir():
        for path in sorted(directory.glob("*.ndjson")):
            fd = os.open(path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live process's journal
            files[path] = fd
    return Replay(list(_unfinished(list(files)).values()), files)


def _unfinished(paths: list[Path]) -> dict[str, Settlement]:
    """Across `paths` (the segments of one or more dead processes): each request not marked done,
    with its last settlement, else its last progress record."""
    settled: dict[str, Settlement] = {}
    progress: dict[str, Settlement] = {}
    done: set[str] = set()
    for path in sorted(paths, key=_segment_order):
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    record = orjson.loads(line)
                    kind = record["t"]
                    if kind == "d":
                        done.update(record["ids"])
                    elif kind in ("s", "r"):
                        item = settlement_from(record)
                        (settled if kind == "s" else progress)[item.request_id] = item
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.error("journal %s line %d is damaged (a torn last write?); skipped", path, number)
    unfinished = {**progress, **settled}  # a settlement supersedes the progress of the same request
    return {request_id: item for request_id, item in unfinished.items() if request_id not in done}


def _segment_order(path: Path) -> tuple[str, int]:
    owner, _, number = path.stem.rpartition("~")
    return owner, int(number) if number.isdigit() else 0
