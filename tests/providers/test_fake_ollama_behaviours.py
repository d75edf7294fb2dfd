"""Behaviour suffixes of the Ollama emulator, its delays, and its counters (cancellation on disconnect)."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from providers.ollama.fake import FakeConfig, FakeOllamaApp, create_fake_app
from tests.support.servers import serve_app

HELLO = [{"role": "user", "content": "hello"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "book",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "nights": {"type": "integer"},
                "budget": {"type": "number"},
                "pets": {"type": "boolean"},
                "room": {"type": "string", "enum": ["single", "double"]},
                "guests": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "note": {"type": ["null", "string"]},
            },
        },
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeOllamaApp, str]]:
    app = create_fake_app(FakeConfig(tokens_per_reply=8))
    with serve_app(app) as url:
        yield app, url


@pytest.fixture
def served(server: tuple[FakeOllamaApp, str]) -> Iterator[tuple[FakeOllamaApp, httpx.Client]]:
    app, url = server
    app.stats.reset()
    with httpx.Client(base_url=url, timeout=10) as client:
        yield app, client


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def lines_of(response: httpx.Response) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in response.content.splitlines()]


def test_slow_streams_50_ms_per_token(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    started = time.monotonic()
    lines = lines_of(http.post("/api/chat", json={"model": "llama3.2-slow", "messages": HELLO,
                                                   "options": {"num_predict": 4}}))
    assert time.monotonic() - started >= 4 * 0.05
    assert lines[-1]["eval_count"] == 4


def test_error_500_before_any_byte(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    response = http.post("/api/chat", json={"model": "qwen3-error-500", "messages": HELLO})
    assert response.status_code == 500
    assert response.json()["error"].startswith("model runner has unexpectedly stopped")
    embed = http.post("/api/embed", json={"model": "nomic-embed-text-error-500", "input": "x"})
    assert embed.status_code == 500


def test_error_503_is_server_busy(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    response = http.post("/api/generate", json={"model": "gemma4-error-503", "prompt": "x"})
    assert response.status_code == 503
    assert response.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}


def test_validation_errors_come_before_behaviours(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    response = http.post("/api/chat", json={"model": "llama3.2-error-500", "messages": HELLO, "think": True})
    assert response.status_code == 400


def test_midstream_error_line_with_status_200(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    app, http = served
    response = http.post("/api/chat", json={"model": "gemma4-midstream-error", "messages": HELLO})
    assert response.status_code == 200
    lines = lines_of(response)
    assert [set(line) for line in lines[-1:]] == [{"error"}]
    assert len(lines) == 4 and all(line["done"] is False for line in lines[:-1])
    assert app.stats.completed_streams == 1


def test_midstream_error_not_streamed_is_500(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    response = http.post("/api/chat", json={"model": "gemma4-midstream-error", "messages": HELLO, "stream": False})
    assert response.status_code == 500 and "error" in response.json()


def test_midstream_error_when_paced(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    lines = lines_of(http.post("/api/generate", json={"model": "llama3.2-slow-midstream-error", "prompt": "x"}))
    assert len(lines) == 4 and "error" in lines[-1]


def test_no_usage_omits_the_counts(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    final = lines_of(http.post("/api/chat", json={"model": "qwen3-no-usage", "messages": HELLO}))[-1]
    assert "prompt_eval_count" not in final and "eval_count" not in final
    assert final["done_reason"] == "stop" and final["eval_duration"] > 0
    embed = http.post("/api/embed", json={"model": "nomic-embed-text-no-usage", "input": "x"}).json()
    assert "prompt_eval_count" not in embed and len(embed["embeddings"]) == 1


def test_drop_aborts_a_stream_without_a_final_line(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    app, http = served
    received: list[bytes] = []
    with pytest.raises(httpx.RemoteProtocolError), http.stream(
            "POST", "/api/chat", json={"model": "llama3.2-drop", "messages": HELLO}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            received.append(line.encode())
    assert len(received) == 3 and all(b'"done":false' in line for line in received)
    assert app.stats.dropped_connections == 1 and app.stats.completed_streams == 0


def test_drop_not_streamed_cuts_the_json_body(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    app, http = served
    with pytest.raises(httpx.RemoteProtocolError):
        http.post("/api/chat", json={"model": "llama3.2-drop", "messages": HELLO, "stream": False})
    assert app.stats.dropped_connections == 1


def test_garbage_is_200_and_not_json(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    for stream in (True, False):
        response = http.post("/api/chat", json={"model": "qwen3-garbage", "messages": HELLO, "stream": stream})
        assert response.status_code == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(response.content.splitlines()[0])


def test_tools_suffix_calls_the_first_tool_with_schema_arguments(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    response = http.post("/api/chat", json={"model": "llama3.2-tools", "messages": HELLO, "tools": [TOOL],
                                            "stream": False})
    (call,) = response.json()["message"]["tool_calls"]
    assert call["function"]["arguments"] == {"city": "x", "nights": 1, "budget": 1, "pets": True, "room": "single",
                                             "guests": [{"name": "x"}], "note": "x"}


def test_tools_suffix_adds_the_capability(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    response = http.post("/api/chat", json={"model": "deepseek-r1-tools", "messages": HELLO, "tools": [TOOL],
                                            "think": False, "stream": False})
    assert response.json()["message"]["tool_calls"][0]["function"]["name"] == "book"


def test_think_suffix_combines_with_slow(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    body = http.post("/api/chat", json={"model": "LLAMA3.2-think-slow:latest", "messages": HELLO, "stream": False,
                                        "options": {"num_predict": 3}}).json()
    assert body["model"] == "LLAMA3.2-think-slow:latest"
    assert body["message"]["thinking"] and body["done_reason"] == "length"


def test_unknown_suffix_is_an_unknown_model(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    response = http.post("/api/chat", json={"model": "qwen3-fast", "messages": HELLO})
    assert response.status_code == 404 and response.json() == {"error": "model 'qwen3-fast' not found"}


def test_hang_never_answers_and_stops_when_the_client_leaves(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    app, http = served
    with pytest.raises(httpx.ReadTimeout):
        http.post("/api/chat", json={"model": "qwen3-hang", "messages": HELLO}, timeout=httpx.Timeout(10, read=0.2))
    wait_until(lambda: app.stats.cancelled_streams == 1 and app.stats.in_flight == 0)
    assert app.stats.completed_streams == 0


def test_client_disconnect_stops_a_stream_promptly(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    app, http = served
    payload = {"model": "qwen3-slow", "messages": HELLO, "options": {"num_predict": 200}}  # 10 s if not stopped
    started = time.monotonic()
    with http.stream("POST", "/api/chat", json=payload) as response:
        lines = response.iter_lines()
        next(lines), next(lines)
    wait_until(lambda: app.stats.cancelled_streams == 1 and app.stats.in_flight == 0)
    assert time.monotonic() - started < 2
    assert app.stats.completed_streams == 0


def test_client_disconnect_during_a_delayed_single_answer() -> None:
    app = create_fake_app(FakeConfig(first_token_delay=5))
    with serve_app(app) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/api/chat", json={"model": "llama3.2", "messages": HELLO, "stream": False},
                       timeout=httpx.Timeout(10, read=0.2))
        wait_until(lambda: app.stats.cancelled_streams == 1 and app.stats.in_flight == 0)
    assert app.stats.completed_streams == 0


def test_counters(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    app, http = served
    http.get("/api/tags")
    http.post("/api/chat", json={"model": "qwen3", "messages": HELLO})
    http.post("/api/chat", json={"model": "qwen3", "messages": HELLO, "stream": False})
    http.post("/api/embed", json={"model": "nomic-embed-text", "input": "x"})
    http.post("/api/chat", json={"model": "nope", "messages": HELLO})
    stats = app.stats
    assert stats.requests == 5 and stats.completed_streams == 3 and stats.cancelled_streams == 0
    assert stats.in_flight == 0 and stats.max_in_flight >= 1
    assert stats.paths["/api/chat"] == 3
    assert [body["model"] for body in stats.bodies("/api/chat")] == ["qwen3", "qwen3", "nope"]


def test_apps_do_not_share_state() -> None:
    first, second = create_fake_app(), create_fake_app()
    assert first.stats is not second.stats and first.runtime.residency is not second.runtime.residency


def test_reset_zeroes_the_counters(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    app, http = served
    http.post("/api/chat", json={"model": "qwen3", "messages": HELLO})
    app.stats.reset()
    assert app.stats.requests == 0 and app.stats.completed_streams == 0 and not app.stats.recent
    assert not app.stats.paths


def test_token_delay_paces_every_token_and_first_token_delay_the_first() -> None:
    app = create_fake_app(FakeConfig(tokens_per_reply=5, token_delay=0.03, first_token_delay=0.2))
    with serve_app(app) as url, httpx.Client(base_url=url) as http:
        started = time.monotonic()
        with http.stream("POST", "/api/chat", json={"model": "llama3.2", "messages": HELLO}) as response:
            arrivals = []
            for _ in response.iter_lines():
                arrivals.append(time.monotonic() - started)
    assert arrivals[0] >= 0.2
    assert arrivals[-1] >= 0.2 + 5 * 0.03
    assert len(arrivals) == 6 and app.stats.completed_streams == 1


def test_tokens_per_reply_sets_the_reply_length() -> None:
    with serve_app(create_fake_app(FakeConfig(tokens_per_reply=3))) as url:
        body = httpx.post(f"{url}/api/chat", json={"model": "llama3.2", "messages": HELLO, "stream": False}).json()
    assert body["eval_count"] == 3 and len(body["message"]["content"].split()) == 3


def test_run_fake_serves_until_interrupted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ("from providers.ollama.fake import FakeConfig, run_fake; "
            f"run_fake('127.0.0.1', {port}, FakeConfig(tokens_per_reply=2))")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                body = httpx.post(f"http://127.0.0.1:{port}/api/chat",
                                  json={"model": "llama3.2", "messages": HELLO, "stream": False}).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        assert body["eval_count"] == 2
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_deliberate_drops_are_not_logged_as_server_errors(served: tuple[FakeOllamaApp, httpx.Client]) -> None:
    _, http = served
    handler = _Collect()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/api/chat", json={"model": "llama3.2-drop", "messages": HELLO, "stream": False})
        http.get("/")  # the log line would come right after the drop
    finally:
        logger.removeHandler(handler)
    assert not [record for record in handler.records if "without completing" in record.getMessage()]
