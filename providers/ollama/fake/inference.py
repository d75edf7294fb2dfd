"""`POST /api/chat` and `POST /api/generate`, with Ollama's checks in Ollama's order."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any

from . import decode
from .asgi import FakeError, Receive, Send, send_json
from .catalogue import COMPLETION, INSERT, THINKING, TOOLS, Resolved
from .clock import utc_now
from .emit import Answer, ChatShape, GenerateShape, Timing, respond
from .replies import Plan, generate, tool_call, word_count
from .runtime import Runtime

TEMPLATE_TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 64
TOKENS_PER_TOOL = 10
TOKENS_PER_TOOL_CALL = 8
CONTEXT_EXCEEDED = "the input length exceeds the context length"
_CHAT = "ChatRequest"
_GENERATE = "GenerateRequest"
_CHAT_SHAPE = ChatShape()


@dataclass(frozen=True)
class _Message:
    role: str
    content: str
    tokens: int


def _messages(request: dict[str, Any]) -> list[_Message]:
    where = f"{_CHAT}.messages"
    out = []
    for item in decode.array(request, "messages", _CHAT, "[]api.Message"):
        if not isinstance(item, dict):
            raise decode.mismatch(item, where, "api.Message")
        content = decode.string(item, "content", where)
        tokens = (word_count(content) + word_count(decode.string(item, "thinking", where))
                  + TEMPLATE_TOKENS_PER_MESSAGE + TOKENS_PER_IMAGE * len(decode.images(item, where)))
        for call in decode.array(item, "tool_calls", where, "[]api.ToolCall"):
            if not isinstance(call, dict):
                raise decode.mismatch(call, f"{where}.tool_calls", "api.ToolCall")
            function = decode.mapping(call, "function", f"{where}.tool_calls", "api.ToolCallFunction")
            arguments = function.get("arguments")
            if arguments is not None and not isinstance(arguments, dict):
                raise decode.mismatch(arguments, f"{where}.tool_calls.function.arguments",
                                      "api.ToolCallFunctionArguments")
            tokens += TOKENS_PER_TOOL_CALL + word_count(str(arguments or ""))
        decode.string(item, "tool_name", where)
        decode.string(item, "tool_call_id", where)
        out.append(_Message(decode.string(item, "role", where).lower(), content, tokens))
    return out


def _common(request: dict[str, Any], where: str) -> tuple[bool, bool | str | None, float | None, bool, bool]:
    stream = decode.boolean(request, "stream", where) is not False
    think = decode.think(request)
    keep_alive = decode.keep_alive(request)
    truncate = decode.boolean(request, "truncate", where) is not False
    shift = decode.boolean(request, "shift", where) is not False
    decode.boolean(request, "logprobs", where)
    top_logprobs = decode.integer(request, "top_logprobs", where)
    if not 0 <= top_logprobs <= 20:
        raise FakeError(400, "top_logprobs must be between 0 and 20")
    return stream, think, keep_alive, truncate, shift


def _check_think(model: Resolved, requested: str, think: bool | str | None) -> bool:
    """Whether the turn thinks; 400 when thinking is asked of a model that cannot."""
    if THINKING in model.capabilities:
        return think is not False
    if think:
        raise FakeError(400, f'"{requested}" does not support thinking')
    return False


def _fit(prompt_tokens: int, num_ctx: int, truncate: bool) -> int:
    if prompt_tokens <= num_ctx:
        return prompt_tokens
    if not truncate:
        raise FakeError(400, CONTEXT_EXCEEDED)
    return num_ctx


async def chat(rt: Runtime, body: bytes, send: Send, receive: Receive) -> None:
    """POST /api/chat."""
    started = time.perf_counter_ns()
    request = decode.parse_object(body, "api.ChatRequest")
    requested = decode.string(request, "model", _CHAT)
    messages = _messages(request)
    tools = decode.array(request, "tools", _CHAT, "[]api.Tool")
    stream, think, keep_alive, truncate, shift = _common(request, _CHAT)
    if not requested:
        raise FakeError(400, "model is required")
    model = rt.find(requested)
    if not messages and keep_alive == 0:
        rt.residency.unload(model)
        await send_json(send, 200, _chat_stub(requested, "unload"))
        return
    thinks = _check_think(model, requested, think)
    capabilities = model.capabilities
    if COMPLETION not in capabilities:
        raise FakeError(400, f'"{requested}" does not support chat')
    if tools and TOOLS not in capabilities:
        raise FakeError(400, f"{model.registry_name} does not support tools")
    options = decode.options(request, _CHAT)
    await rt.schedule(model, receive)
    rt.residency.touch(model, keep_alive, options.num_ctx)
    if not messages:
        await send_json(send, 200, _chat_stub(requested, "load"))
        return
    output_format = decode.output_format(request)
    prompt_tokens = _fit(_chat_prompt_tokens(messages, len(tools), options.num_ctx, truncate), options.num_ctx,
                         truncate)
    plan = Plan(
        seed_text=_seed_text(messages),
        prompt_tokens=prompt_tokens,
        tokens_per_reply=rt.config.tokens_per_reply,
        options=options,
        think=thinks,
        output_format=output_format,
        call=_tool_call(rt, model, messages, tools),
        shift=shift,
    )
    # Ollama >= 0.12.11: per generated token, its log probability (and top_logprobs alternatives).
    shape = ChatShape(decode.integer(request, "top_logprobs", _CHAT)) if request.get("logprobs") is True \
        else _CHAT_SHAPE
    answer = Answer(requested, model, generate(plan), shape, Timing(started, time.perf_counter_ns()),
                    rt.token_delay(model), rt.config.first_token_delay)
    await respond(answer, stream, send, receive, rt.stats)


def _chat_stub(requested: str, reason: str) -> dict[str, Any]:
    return {"model": requested, "created_at": utc_now(), "message": {"role": "assistant", "content": ""},
            "done": True, "done_reason": reason}


def _chat_prompt_tokens(messages: list[_Message], tool_count: int, num_ctx: int, truncate: bool) -> int:
    total = sum(message.tokens for message in messages) + TOKENS_PER_TOOL * tool_count
    if truncate:
        # Oldest non-system messages go first; the last message always stays (server/prompt.go).
        for message in messages[:-1]:
            if total <= num_ctx:
                break
            if message.role != "system":
                total -= message.tokens
    return total


def _seed_text(messages: list[_Message]) -> str:
    for message in reversed(messages):
        if message.role != "assistant":
            return message.content
    return ""


def _tool_call(rt: Runtime, model: Resolved, messages: list[_Message], tools: list[Any]) -> dict[str, Any] | None:
    """A call of the first tool when the model is `-tools` or the user asks about the weather.

    After a tool result the model answers in text, so agent loops terminate.
    """
    if not tools or messages[-1].role == "tool":
        return None
    if not model.has("-tools"):
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        if "weather" not in last_user.lower():
            return None
    return tool_call(tools, rt.tool_call_id())


async def generate_handler(rt: Runtime, body: bytes, send: Send, receive: Receive) -> None:
    """POST /api/generate."""
    started = time.perf_counter_ns()
    request = decode.parse_object(body, "api.GenerateRequest")
    requested = decode.string(request, "model", _GENERATE)
    prompt = decode.string(request, "prompt", _GENERATE)
    suffix = decode.string(request, "suffix", _GENERATE)
    system = decode.string(request, "system", _GENERATE)
    template = decode.string(request, "template", _GENERATE)
    context = decode.array(request, "context", _GENERATE, "[]int")
    for token in context:
        if isinstance(token, bool) or not isinstance(token, int):
            raise decode.mismatch(token, f"{_GENERATE}.context", "int")
    raw = decode.boolean(request, "raw", _GENERATE) is True
    image_count = len(decode.images(request, _GENERATE))
    stream, think, keep_alive, truncate, shift = _common(request, _GENERATE)
    model = rt.find(requested)
    if not prompt and keep_alive == 0:
        rt.residency.unload(model)
        await send_json(send, 200, _generate_stub(requested, "unload"))
        return
    if raw and (template or system or context):
        raise FakeError(400, "raw mode does not support template, system, or context")
    thinks = _check_think(model, requested, think)
    capabilities = model.capabilities
    if COMPLETION not in capabilities:
        raise FakeError(400, f'"{requested}" does not support generate')
    if suffix and INSERT not in capabilities:
        raise FakeError(400, f"{model.registry_name} does not support insert")
    options = decode.options(request, _GENERATE)
    await rt.schedule(model, receive)
    rt.residency.touch(model, keep_alive, options.num_ctx)
    if not prompt:
        await send_json(send, 200, _generate_stub(requested, "load"))
        return
    output_format = decode.output_format(request)
    if raw:
        prompt_tokens = word_count(prompt)
    else:
        prompt_tokens = (word_count(prompt) + TEMPLATE_TOKENS_PER_MESSAGE + len(context)
                         + TOKENS_PER_IMAGE * image_count)
        if system:
            prompt_tokens += word_count(system) + TEMPLATE_TOKENS_PER_MESSAGE
    prompt_tokens = _fit(max(prompt_tokens, 1), options.num_ctx, truncate)
    plan = Plan(seed_text=prompt, prompt_tokens=prompt_tokens, tokens_per_reply=rt.config.tokens_per_reply,
                options=options, think=thinks, output_format=output_format, shift=shift)
    turn = generate(plan)
    shape = GenerateShape(None if raw else _context_ids(prompt, prompt_tokens + turn.eval_count),
                          decode.integer(request, "top_logprobs", _GENERATE) if request.get("logprobs") is True
                          else None)
    answer = Answer(requested, model, turn, shape, Timing(started, time.perf_counter_ns()), rt.token_delay(model),
                    rt.config.first_token_delay)
    await respond(answer, stream, send, receive, rt.stats)


def _generate_stub(requested: str, reason: str) -> dict[str, Any]:
    return {"model": requested, "created_at": utc_now(), "response": "", "done": True, "done_reason": reason}


def _context_ids(prompt: str, count: int) -> list[int]:
    """Token ids of prompt plus reply, as the deprecated `context` field returns them."""
    start = zlib.crc32(prompt.encode("utf-8", "surrogatepass"))
    return [(start + i * 7919) % 151_936 for i in range(count)]
