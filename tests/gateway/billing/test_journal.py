"""The settlement journal: durable appends, done marks, and a replay that only dead files feed."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from gateway.billing import journal as journal_module
from gateway.billing.journal import Journal, replay
from gateway.billing.settlement import Settlement
from gateway.db.models import utcnow


def _item(request_id: str, status: str = "success", output_tokens: int = 4) -> Settlement:
    return Settlement(request_id=request_id, account_id="a", user_id="u", api_key_id="k",
                      model_public_name="privaterouter/fast", ollama_tag="gemma4:latest", node="n",
                      endpoint="chat.completions", input_tokens=3, output_tokens=output_tokens,
                      tokens_estimated=False, cost_pico=7 * output_tokens, latency_ms=1, ttft_ms=1, status=status,
                      error_code=None, registry_version="v", created_at=utcnow())


async def test_a_dead_journal_replays_what_was_not_marked_done(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "dead")
    journal.append_settlement(_item("written"))
    journal.append_progress(_item("streaming", "interrupted", output_tokens=10))
    journal.append_progress(_item("streaming", "interrupted", output_tokens=20))  # the latest progress wins
    journal.append_progress(_item("finished", "interrupted", output_tokens=5))
    journal.append_settlement(_item("finished", output_tokens=6))  # a settlement supersedes its progress
    journal.mark_done(["written"])
    await journal.sync()
    assert replay(tmp_path).items == []  # locked: its process is alive
    await journal.aclose()  # requests are outstanding: the file stays
    found = replay(tmp_path)
    by_id = {item.request_id: item for item in found.items}
    assert set(by_id) == {"streaming", "finished"}
    assert (by_id["streaming"].status, by_id["streaming"].output_tokens) == ("interrupted", 20)
    expected = dataclasses.replace(_item("finished", output_tokens=6), created_at=by_id["finished"].created_at)
    assert by_id["finished"] == expected  # every field survives the round trip
    assert (by_id["finished"].status, by_id["finished"].output_tokens) == ("success", 6)
    assert replay(tmp_path).items == []  # claimed by the first replay until released
    found.release(delete=True)
    assert list(tmp_path.iterdir()) == []


async def test_a_torn_last_line_is_skipped_and_a_clean_close_leaves_no_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "torn")
    journal.append_settlement(_item("kept"))
    await journal.sync()
    with journal.path.open("ab") as handle:
        handle.write(b'{"t":"s","request_id":"half')  # a crash in the middle of a write
    await journal.aclose()
    found = replay(tmp_path)
    assert [item.request_id for item in found.items] == ["kept"]
    found.release(delete=True)

    clean = Journal(tmp_path, "clean")
    clean.append_settlement(_item("x"))
    clean.mark_done(["x"])
    await clean.aclose()
    assert not clean.path.exists()


async def test_segments_rotate_and_a_drained_one_is_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 100)  # one settlement line fills a segment
    journal = Journal(tmp_path, "busy")
    first = journal.path
    journal.append_settlement(_item("a"))
    await journal.sync()
    assert journal.path != first  # full: a new segment was started
    journal.append_settlement(_item("b"))
    await journal.sync()
    assert first.exists()  # "a" is still outstanding there
    journal.mark_done(["a"])
    await journal.sync()
    assert not first.exists()  # drained: deleted
    await journal.aclose()
    found = replay(tmp_path)  # "b" survives in its own segment, across the rotation
    assert [item.request_id for item in found.items] == ["b"]
    found.release(delete=True)


async def test_a_done_mark_rides_with_the_next_settlement_not_a_round_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rounds: list[bytes] = []

    def counted(fd: int, data: bytes) -> None:
        rounds.append(data)
        os.write(fd, data)

    monkeypatch.setattr(journal_module, "_write", counted)
    journal = Journal(tmp_path, "quiet")
    journal.append_settlement(_item("a"))
    await journal.make_durable()
    journal.mark_done(["a"])
    await journal.make_durable()  # nothing the database waits for: no write, no fsync
    assert len(rounds) == 1
    journal.append_settlement(_item("b"))
    await journal.make_durable()
    assert len(rounds) == 2 and b'"t":"d"' in rounds[1] and b'"request_id":"b"' in rounds[1]
    await journal.aclose()
    found = replay(tmp_path)
    assert [item.request_id for item in found.items] == ["b"]
    found.release(delete=True)
