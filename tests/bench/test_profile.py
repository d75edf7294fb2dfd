"""bench/profile.py: the layer and concern grouping of py-spy's stacks, and that it matches the code."""

from __future__ import annotations

import re
from pathlib import Path

from bench import profile

REPO = Path(__file__).resolve().parents[2]

STACK = ("<module> (privaterouter:6);Runner.run (asyncio/runners.py:118);"
         "RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:422);"
         "handle (gateway/inference.py:302);enforce_rate_limits (gateway/inference.py:120);"
         "RedisLimiter.hit (gateway/ratelimit/redis.py:40);Redis.execute_command (redis/asyncio/client.py:600);"
         "Timeout.__aenter__ (asyncio/timeouts.py:20)")


def _frames(stack: str) -> list[tuple[str, str]]:
    return profile._frames(stack)


def test_project_layers_name_modules_that_exist() -> None:
    """A renamed or moved module must be renamed here too, or its time lands in another layer."""
    for needle, name in profile.LAYERS:
        if name.startswith(("gateway", "providers")):
            assert (REPO / needle.strip("/")).exists(), f"{needle} ({name}) no longer exists"


def test_pipeline_stages_name_functions_that_exist() -> None:
    sources = "\n".join(path.read_text() for folder in ("gateway", "providers")
                        for path in (REPO / folder).rglob("*.py"))
    for func, label in profile.STAGES:
        assert re.search(rf"def {re.escape(func)}\(", sources), f"stage {label!r}: no function {func}() any more"


def test_every_concern_names_a_known_layer() -> None:
    layers = {name for _, name in profile.LAYERS}
    assert set(profile.CONCERNS) <= layers


def test_asyncio_helpers_count_for_the_library_that_called_them() -> None:
    assert profile.concern(_frames(STACK)) == "rate limit (Redis)"


def test_asyncio_helpers_called_from_our_code_are_event_loop_work() -> None:
    stack = ("Runner.run (asyncio/runners.py:118);handle (gateway/inference.py:302);"
             "Timeout.__aenter__ (asyncio/timeouts.py:20)")
    assert profile.concern(_frames(stack)) == profile.EVENT_LOOP


def test_the_loop_itself_is_event_loop_work_not_its_caller() -> None:
    stack = "Server.run (uvicorn/server.py:86);asyncio_run (uvicorn/_compat.py:30);Runner.run (asyncio/runners.py:118)"
    assert profile.concern(_frames(stack)) == profile.EVENT_LOOP


def test_stdlib_frames_count_for_their_caller() -> None:
    stack = "Runner.run (asyncio/runners.py:118);access (gateway/logs.py:10);dumps (json/__init__.py:231)"
    assert profile.concern(_frames(stack)) == "logging"


def test_summarise_gives_layers_concerns_and_stages(tmp_path: Path) -> None:
    collapsed = tmp_path / "profile.txt"
    collapsed.write_text(f"{STACK} 3\nServer.run (uvicorn/server.py:86);Runner.run (asyncio/runners.py:118) 1\n")
    found = profile.summarise(collapsed)
    assert found["samples"] == 4
    assert {row["name"]: row["pct"] for row in found["concerns"]} == {"rate limit (Redis)": 75.0,
                                                                     profile.EVENT_LOOP: 25.0}
    assert {row["name"]: row["pct"] for row in found["layers"]} == {"asyncio": 100.0}
    assert {row["name"] for row in found["stages"]} == {"rate limit (Redis)"}


def test_background_thread_samples_are_counted_apart(tmp_path: Path) -> None:
    collapsed = tmp_path / "profile.txt"
    collapsed.write_text(
        "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);"
        "_worker (concurrent/futures/thread.py:81) 5\n"
        "Server.run (uvicorn/server.py:86);Runner.run (asyncio/runners.py:118) 1\n")
    found = profile.summarise(collapsed)
    assert found["samples"] == 1 and found["thread_samples"] == 5
    assert found["threads"] == [{"name": "_worker (concurrent/futures/thread.py)", "samples": 5}]
    assert found["concerns"] == [{"name": profile.EVENT_LOOP, "samples": 1, "pct": 100.0}]
