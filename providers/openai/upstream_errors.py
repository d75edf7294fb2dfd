"""An Ollama refusal (a 4xx with `{"error": "..."}`) -> a stable OpenAI error naming the public model.

Ollama's error texts name its own tags (`registry.ollama.ai/library/qwen3:latest does not support
tools`) and change between releases; clients must see neither. Ollama gives no error codes, so its
texts are recognised here, in one place, and everything unrecognised becomes one generic message.
Source of the texts: Ollama's server/routes.go and llm/server.go (0.6 - 0.12).
"""

from __future__ import annotations

from providers.errors import InvalidRequest

# (fragment of Ollama's message, parameter, our message after "The model '<name>' ...", code)
_KNOWN: tuple[tuple[str, str | None, str, str], ...] = (
    ("exceeds the context length", "input", "cannot take an input this long: it exceeds the model's context "
                                            "length. Shorten the input.", "context_length_exceeded"),
    ("does not support thinking", "reasoning_effort", "does not support reasoning; use 'none' or omit it.",
     "invalid_body"),
    ("does not support tools", "tools", "cannot call tools.", "invalid_body"),
    ("does not support insert", "suffix", "does not support 'suffix' (fill-in-the-middle).", "invalid_body"),
    ("does not support vision", "messages", "does not accept images.", "invalid_body"),
    ("does not support chat", "model", "cannot serve chat requests.", "invalid_body"),
    ("does not support generate", "model", "cannot serve text completions.", "invalid_body"),
    ("does not support embed", "model", "cannot serve embeddings.", "invalid_body"),
    ("invalid format", "response_format", "cannot use this response format.", "invalid_body"),
)


def refusal(ollama_message: str, public_model: str, *, input_param: str = "input") -> InvalidRequest:
    """The 400 to answer when Ollama refused a request for `public_model` with `ollama_message`."""
    text = ollama_message.lower()
    for fragment, param, message, code in _KNOWN:
        if fragment in text:
            return InvalidRequest(f"The model '{public_model}' {message}",
                                  param=input_param if param == "input" else param, code=code)
    return InvalidRequest(f"The model '{public_model}' cannot serve this request as sent; check the "
                          f"parameters against the model's capabilities (GET /v1/models).")


_STABLE = {
    "upstream_unavailable": "No model server is available for {model} right now; retry shortly.",
    "upstream_unconfigured": "No model server is configured for {model}.",
    "upstream_timeout": "The model server did not start answering for {model} in time; retry shortly.",
}


def stable_message(code: str, public_model: str | None) -> str:
    """The client-facing text of an upstream failure `code` (never the upstream's own words)."""
    model = f"the model '{public_model}'" if public_model else "this model"
    return _STABLE.get(code, "The model server failed while answering for {model}.").format(model=model)
