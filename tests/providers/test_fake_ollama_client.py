"""The official `ollama` Python client against the emulator: the "Done when" check of issue 3."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import pytest

from providers.ollama.fake import create_fake_app
from tests.support.servers import serve_app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_app(create_fake_app()) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[ollama.Client]:
    client = ollama.Client(host=base_url)  # ollama 0.6 has __exit__ but no __enter__: close by hand
    yield client
    client.close()  # type: ignore[no-untyped-call]


def get_weather(city: str) -> str:
    """Current weather of a city.

    Args:
      city: the city
    """
    return "22 degrees"


def test_chat(client: ollama.Client) -> None:
    response = client.chat(model="llama3.2", messages=[{"role": "user", "content": "Hi"}])
    assert response.message.role == "assistant" and response.message.content
    assert response.done and response.done_reason == "stop" and response.eval_count == 32


def test_streaming_chat_with_thinking(client: ollama.Client) -> None:
    parts = list(client.chat(model="qwen3", messages=[{"role": "user", "content": "Hi"}],
                                                   stream=True))
    assert parts[-1].done and not any(part.done for part in parts[:-1])
    assert "".join(part.message.thinking or "" for part in parts)
    assert "".join(part.message.content or "" for part in parts)


def test_tool_call_from_a_python_function(client: ollama.Client) -> None:
    response = client.chat(
        model="qwen3", messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[get_weather])
    (call,) = response.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "x"}


def test_generate(client: ollama.Client) -> None:
    response = client.generate(model="gemma4", prompt="Why is the sky blue?")
    assert response.response and response.context and response.done_reason == "stop"


def test_embed(client: ollama.Client) -> None:
    response = client.embed(model="nomic-embed-text", input=["a", "b"])
    assert [len(vector) for vector in response.embeddings] == [768, 768]


def test_list_show_ps(client: ollama.Client) -> None:
    assert "qwen3:latest" in [model.model for model in client.list().models]
    assert "thinking" in (client.show("qwen3").capabilities or [])
    client.chat(model="qwen3-coder", messages=[{"role": "user", "content": "Hi"}])
    assert "qwen3-coder:latest" in [model.model for model in client.ps().models]


def test_errors_raise_response_error(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="missing", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 404 and "missing" in caught.value.error
    with pytest.raises(ollama.ResponseError):
        list(client.chat(model="qwen3-midstream-error",
                                               messages=[{"role": "user", "content": "Hi"}], stream=True))


async def test_async_client_streaming_chat_and_embed(base_url: str) -> None:
    client = ollama.AsyncClient(host=base_url)
    try:
        content = ""
        async for part in await client.chat(model="llama3.2", messages=[{"role": "user", "content": "Hi"}],
                                            stream=True):
            content += part.message.content or ""
        assert len(content.split()) == 32
        response = await client.embed(model="nomic-embed-text", input="hello")
        assert len(response.embeddings) == 1
        generated = await client.generate(model="deepseek-r1", prompt="Why?", think=False)
        assert generated.response and not generated.thinking
    finally:
        await client.close()  # type: ignore[no-untyped-call]
