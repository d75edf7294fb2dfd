"""The local settlement journal: nothing billable is only in memory.

Each process appends to its own file, `DATA_DIR/journal/<instance id>.ndjson`, holding an
exclusive `flock` on it while alive. One JSON object a line:

    {"t": "s", ...settlement}   a request's settlement, appended before it enters the writer's batch
    {"t": "r", ...settlement}   a stream's progress: what was relayed so far, as an `interrupted`
                                settlement (written every PROGRESS_SECONDS while it streams)
    {"t": "d", "ids": [...]}    these requests are committed to the database

Appends are buffered and written + fsynced by a background task every few milliseconds
(`SYNC_INTERVAL`); the usage writer also waits for the journal to be durable before it writes a
batch, so a settlement reaches the database only after it reached the disk.

At start, `replay()` reads the journals of dead processes (those whose lock it can take), and
returns for each request not marked done its last settlement, or else its last progress record.
Settling is idempotent by request id (gateway/billing/settlement.py), so a replay that races
another process, or repeats after a crash during replay, cannot charge twice. A replayed file is
deleted once its settlements are committed. When no request of the live file is outstanding and
the file has grown past `ROTATE_BYTES`, it is truncated.

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


def settlement_record(kind: str, item: Settlement) -> dict[str, Any]:
    """A journal line for `item` (`kind` "s" or "r")."""
    record = dataclasses.asdict(item)
    record["created_at"] = item.created_at.isoformat()
    record["t"] = kind
    return record


def settlement_from(record: dict[str, Any]) -> Settlement:
    """The Settlement of an "s" or "r" journal line. Raises KeyError/ValueError on a damaged line."""
    fields = {field.name for field in dataclasses.fields(Settlement)}
    values = {name: record[name] for name in fields}
    values["created_at"] = datetime.fromisoformat(record["created_at"])
    return Settlement(**values)


class Journal:
    """This process's journal file. `append_*` never block; `sync()` makes everything appended durable."""

    def __init__(self, directory: Path, instance_id: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / f"{instance_id}.ndjson"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours alone while we live
        self._pending: list[bytes] = []
        self._outstanding: set[str] = set()
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._size = os.fstat(self._fd).st_size

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="settlement-journal")

    def append_settlement(self, item: Settlement) -> None:
        """Journal a settlement (before it is queued for the database)."""
        self._append(settlement_record("s", item))
        self._outstanding.add(item.request_id)

    def append_progress(self, item: Settlement) -> None:
        """Journal what a stream has relayed so far (an `interrupted` settlement, replayed after a crash)."""
        self._append(settlement_record("r", item))
        self._outstanding.add(item.request_id)

    def mark_done(self, request_ids: Iterable[str]) -> None:
        """These requests are committed: a replay skips them."""
        ids = list(request_ids)
        if ids:
            self._append({"t": "d", "ids": ids})
            self._outstanding.difference_update(ids)

    def _append(self, record: dict[str, Any]) -> None:
        self._pending.append(orjson.dumps(record) + b"\n")
        self._wakeup.set()

    async def sync(self) -> None:
        """Write and fsync everything appended so far (in a thread: the disk never blocks the loop)."""
        async with self._lock:
            if not self._pending:
                return
            data, self._pending = b"".join(self._pending), []
            rotate = not self._outstanding and self._size + len(data) > ROTATE_BYTES
            await asyncio.to_thread(self._write, data, rotate)

    def _write(self, data: bytes, rotate: bool) -> None:
        if rotate:
            os.ftruncate(self._fd, 0)
            self._size = 0
            return  # only done marks can be pending when nothing is outstanding
        os.write(self._fd, data)
        os.fsync(self._fd)
        self._size += len(data)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(SYNC_INTERVAL)  # gather what the next few ms append into one fsync
            try:
                await self.sync()
            except OSError as exc:
                log.critical("the settlement journal cannot be written (%s): %s", self.path, exc)

    async def aclose(self) -> None:
        """Flush and close. The file stays when requests are outstanding (the next start replays it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sync()
        outstanding = bool(self._outstanding)
        os.close(self._fd)
        if not outstanding:
            self.path.unlink(missing_ok=True)


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
    items: dict[str, Settlement] = {}
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
            items.update(_unfinished(path))
    return Replay(list(items.values()), files)


def _unfinished(path: Path) -> dict[str, Settlement]:
    settled: dict[str, Settlement] = {}
    progress: dict[str, Settlement] = {}
    done: set[str] = set()
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
