"""A faithful fake of Ollama's native HTTP API, for tests, demos and benchmarks (no GPU, no weights).

Public API::

    FakeConfig(tokens_per_reply=32, token_delay=0.0, first_token_delay=0.0, embedding_dimensions=768)
    create_fake_app(config=None) -> FakeOllamaApp   # an ASGI app; `.stats` is a FakeStats
    run_fake(host, port, config) -> None            # blocking uvicorn run (`privaterouter fake-ollama`)

Endpoints: GET/HEAD `/`, POST `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`, `/api/show`,
GET/HEAD `/api/tags`, `/api/version`, GET `/api/ps`, POST `/api/pull` (progress lines; resumes
after a disconnect) and DELETE `/api/delete` (the model leaves `/api/tags` and answers 404 until pulled).
Unknown paths are a plain-text 404, a known path with the wrong method a plain-text 405.

Models (`/api/tags`): gemma4 (completion, vision, tools), qwen3 and qwen3.6 (completion, tools, thinking),
qwen3-coder (completion, tools), deepseek-r1 (completion, thinking), llama3.2 (completion, tools),
nomic-embed-text (embedding; 2048-token context). Names match case-insensitively, ":latest" is implied,
and answers echo the model string exactly as sent.

Behaviour suffixes, placed before the tag and combinable (``qwen3-think-slow:latest``):

- ``-slow``             50 ms per streamed token (embeddings: 50 ms before the answer).
- ``-error-500``        500 ``model runner has unexpectedly stopped, ...`` before any byte.
- ``-error-503``        503 ``server busy, please try again.  maximum pending requests exceeded``.
- ``-midstream-error``  streams 3 pieces, then an ``{"error": ...}`` line (status 200); not streamed: 500.
- ``-no-usage``         omits ``prompt_eval_count`` and ``eval_count``.
- ``-drop``             streams 3 pieces (not streamed: half the JSON body), then drops the connection.
- ``-garbage``          200 with a body that is not JSON.
- ``-tools``            with ``tools`` in the request, always calls the first tool (adds the capability).
- ``-think``            adds the thinking capability (qwen3, qwen3.6 and deepseek-r1 think already).
- ``-hang``             reads the request and never answers; stops when the client disconnects.

Replies are deterministic: words picked by a hash of the last non-assistant message (or the prompt),
one word per token, ``tokens_per_reply`` tokens. Thinking turns first emit ``tokens_per_reply // 4``
(at least 1) thinking tokens. ``eval_count`` counts every token emitted (thinking included);
``prompt_eval_count`` is the words of all messages + 4 per message + 64 per image + 10 per tool,
capped at ``num_ctx`` (default 4096) unless ``truncate`` is false (then 400).
``options.num_predict`` cuts the turn (``done_reason`` "length"), ``options.stop`` cuts the content
("stop"). ``format`` "json" answers ``{"answer": "..."}``; a schema answers a value filled by type.
A request with ``tools`` gets a call of the first tool when the last user message mentions "weather"
(or the model is ``-tools``), unless the last message is already a tool result.

Counters (``app.stats``, a FakeStats): ``requests``, ``in_flight``, ``max_in_flight``,
``completed_streams`` and ``cancelled_streams`` (inference answers, streamed or not, finished vs
abandoned by a departing client, ``-hang`` included), ``dropped_connections``, ``paths`` (per path)
and ``recent`` (the last 256 requests with their raw bodies; ``stats.bodies("/api/chat")`` decodes them).
"""

from __future__ import annotations

from .app import FakeOllamaApp, create_fake_app, run_fake
from .config import FakeConfig
from .state import FakeStats, RecordedRequest

__all__ = ["FakeConfig", "FakeOllamaApp", "FakeStats", "RecordedRequest", "create_fake_app", "run_fake"]
