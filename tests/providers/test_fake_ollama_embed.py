"""The emulator's `/api/embed` and legacy `/api/embeddings` over loopback HTTP (§4.1, §11.10)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from providers.ollama.fake import FakeConfig, create_fake_app
from tests.support.servers import serve_app

MODEL = "nomic-embed-text"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with serve_app(create_fake_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def embed(http: httpx.Client, **payload: Any) -> httpx.Response:
    payload.setdefault("model", MODEL)
    return http.post("/api/embed", json=payload)


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


def test_a_string_gives_one_unit_vector_of_768(http: httpx.Client) -> None:
    response = embed(http, input="Vectors are nice")
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["model"] == MODEL
    (vector,) = body["embeddings"]
    assert len(vector) == 768 and norm(vector) == pytest.approx(1, abs=1e-9)
    assert body["prompt_eval_count"] == 3 and body["total_duration"] > 0 and body["load_duration"] > 0


def test_a_list_gives_vectors_in_order_deterministically(http: httpx.Client) -> None:
    both = embed(http, input=["first text", "second text"]).json()["embeddings"]
    first = embed(http, input="first text").json()["embeddings"][0]
    second = embed(http, input=["second text"]).json()["embeddings"][0]
    assert both == [first, second] and first != second


def test_dimensions_truncate_and_renormalise(http: httpx.Client) -> None:
    full = embed(http, input="abc").json()["embeddings"][0]
    (short,) = embed(http, input="abc", dimensions=8).json()["embeddings"]
    assert len(short) == 8 and norm(short) == pytest.approx(1, abs=1e-9)
    scale = norm(full[:8])
    assert short == pytest.approx([value / scale for value in full[:8]])
    assert len(embed(http, input="abc", dimensions=4096).json()["embeddings"][0]) == 768


@pytest.mark.parametrize("value", ["", []])
def test_empty_input_loads_the_model(http: httpx.Client, value: Any) -> None:
    assert embed(http, input=value).json() == {"model": MODEL, "embeddings": []}
    assert http.post("/api/embed", json={"model": MODEL}).json() == {"model": MODEL, "embeddings": []}


@pytest.mark.parametrize("value", [[1, 2], ["a", {"b": 1}], 7, {"text": "a"}])
def test_non_string_input_is_invalid(http: httpx.Client, value: Any) -> None:
    response = embed(http, input=value)
    assert response.status_code == 400 and response.json() == {"error": "invalid input type"}


def test_long_input_is_cut_unless_truncate_is_false(http: httpx.Client) -> None:
    long = "word " * 3000
    body = embed(http, input=long).json()
    assert body["prompt_eval_count"] == 2048
    assert body["embeddings"] == embed(http, input=" ".join(["word"] * 2048)).json()["embeddings"]
    refused = embed(http, input=long, truncate=False)
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}


def test_unknown_model_and_chat_model(http: httpx.Client) -> None:
    assert embed(http, model="nope", input="x").status_code == 404
    chat_model = embed(http, model="qwen3", input="x")
    assert chat_model.status_code == 500 and chat_model.json() == {"error": "this model does not support embeddings"}


def test_legacy_embeddings(http: httpx.Client) -> None:
    vector = http.post("/api/embeddings", json={"model": MODEL, "prompt": "abc"}).json()["embedding"]
    assert vector == embed(http, input="abc").json()["embeddings"][0]
    assert http.post("/api/embeddings", json={"model": MODEL, "prompt": ""}).json() == {"embedding": []}
    assert http.post("/api/embeddings", json={"prompt": "x"}).json() == {"error": "model is required"}


def test_configured_dimensions() -> None:
    with serve_app(create_fake_app(FakeConfig(embedding_dimensions=32))) as url:
        vector = httpx.post(f"{url}/api/embed", json={"model": MODEL, "input": "x"}).json()["embeddings"][0]
    assert len(vector) == 32 and norm(vector) == pytest.approx(1, abs=1e-9)


def test_slow_embedding_model(http: httpx.Client) -> None:
    response = embed(http, model="nomic-embed-text-slow", input="x")
    assert response.status_code == 200 and response.elapsed.total_seconds() >= 0.05
