"""The emulator's `/api/pull` and `/api/delete`: Ollama's progress lines, the disk, resuming."""

from __future__ import annotations

import httpx
import orjson

from providers.ollama.fake import FakeConfig, create_fake_app
from providers.ollama.fake.catalogue import BY_NAME
from providers.ollama.fake.pull import STEPS_PER_LAYER, disk
from tests.support.servers import serve_app


def _names(base: str) -> list[str]:
    return [item["name"] for item in httpx.get(f"{base}/api/tags").json()["models"]]


def test_pull_streams_ollamas_progress_lines() -> None:
    with serve_app(create_fake_app()) as base:
        httpx.request("DELETE", f"{base}/api/delete", json={"model": "llama3.2"}).raise_for_status()
        response = httpx.post(f"{base}/api/pull", json={"model": "llama3.2"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [{"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                          {"status": "success"}]
    digest = BY_NAME["llama3.2"].digest
    weights = [line for line in lines if line.get("digest") == f"sha256:{digest}"]
    assert weights[0] == {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}",
                          "total": BY_NAME["llama3.2"].size}
    completed = [line["completed"] for line in weights[1:]]
    assert completed == sorted(completed) and completed[-1] == BY_NAME["llama3.2"].size
    assert len(completed) >= STEPS_PER_LAYER


def test_delete_removes_from_tags_and_pull_restores() -> None:
    with serve_app(create_fake_app()) as base:
        assert "gemma4:latest" in _names(base)
        assert httpx.request("DELETE", f"{base}/api/delete", json={"model": "gemma4"}).status_code == 200
        assert "gemma4:latest" not in _names(base)
        again = httpx.request("DELETE", f"{base}/api/delete", json={"model": "gemma4"})
        assert again.status_code == 404 and again.json() == {"error": "model 'gemma4:latest' not found"}
        chat = {"model": "gemma4", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        gone = httpx.post(f"{base}/api/chat", json=chat)
        assert gone.status_code == 404 and gone.json() == {"error": "model 'gemma4' not found"}
        assert httpx.post(f"{base}/api/pull", json={"model": "gemma4", "stream": False}).json() == {"status": "success"}
        assert "gemma4:latest" in _names(base)
        assert httpx.post(f"{base}/api/chat", json=chat).status_code == 200


def test_unknown_model_is_an_error_line_or_a_500() -> None:
    with serve_app(create_fake_app()) as base:
        streamed = httpx.post(f"{base}/api/pull", json={"model": "no-such-model"})
        assert streamed.status_code == 200
        assert orjson.loads(streamed.text) == {"error": "pull model manifest: file does not exist"}
        whole = httpx.post(f"{base}/api/pull", json={"model": "no-such-model", "stream": False})
        assert whole.status_code == 500 and whole.json()["error"] == "pull model manifest: file does not exist"
        assert httpx.post(f"{base}/api/pull", json={}).status_code == 400


def test_an_interrupted_pull_resumes_from_the_bytes_received() -> None:
    fake = create_fake_app(FakeConfig(token_delay=0.05))
    digest = BY_NAME["qwen3"].digest
    with serve_app(fake) as base:
        httpx.request("DELETE", f"{base}/api/delete", json={"model": "qwen3"}).raise_for_status()
        with httpx.stream("POST", f"{base}/api/pull", json={"model": "qwen3"}) as response:
            seen = 0
            for line in response.iter_lines():
                if orjson.loads(line).get("completed"):
                    seen += 1
                    if seen == 3:
                        break  # the client goes away mid-layer
        for _ in range(100):
            if fake.stats.cancelled_streams:
                break
            httpx.get(f"{base}/api/version")
        kept = disk(fake.runtime).partial[digest]
        assert 0 < kept < BY_NAME["qwen3"].size
        again = httpx.post(f"{base}/api/pull", json={"model": "qwen3"})
        lines = [orjson.loads(line) for line in again.text.splitlines()]
    first = next(line for line in lines if line.get("digest") == f"sha256:{digest}" and "completed" in line)
    assert first["completed"] > kept  # started from what was kept, one step on
    assert lines[-1] == {"status": "success"}
