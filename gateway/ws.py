"""`GET /ws`: chat over a WebSocket (seed 001), through the very pipeline `/v1/chat/completions` uses.

Protocol (JSON text messages; `id` is the client's name for one chat, echoed on its events):

    -> {"type": "authenticate", "apiKey": "sk-pr-..."}           first, within AUTH_TIMEOUT seconds
    <- {"type": "authenticated"}
    -> {"type": "chat", "id": "c1", "model": "...", "messages": [...], "maxTokens": 64, "temperature": 0.2}
    <- {"type": "token", "id": "c1", "content": "Hel"}           (reasoning models: "reasoning" too)
    <- {"type": "done", "id": "c1", "finish_reason": "stop", "usage": {...}, "cost_usd": "0.0000042"}
    <- {"type": "error", "id": "c1", "error": {"message", "type", "code", "param"}}
    <- {"type": "heartbeat", "ts": 1764500000}                   every WS_HEARTBEAT_SECONDS
    -> {"type": "ping"}  <- {"type": "pong"}
    -> {"type": "cancel", "id": "c1"}  <- {"type": "cancelled", "id": "c1", "usage": {...}, "cost_usd": "..."}

Each chat is one synthetic `POST /v1/chat/completions` request handed to `gateway.inference.admit`
and `open_stream` and relayed by the same `RelayResponse`: the same authentication (per chat, so a
key disabled mid-socket stops working), plan and key rate limits, hold, usage event and ledger
entry. Chats run concurrently. When the socket closes (or a chat is cancelled) the relay sees a
client disconnect: the upstream generation is cancelled and the chat is charged for what was
relayed, exactly like an abandoned SSE stream. A socket with no chat running and no message for
WS_IDLE_TIMEOUT seconds is closed (code 1000, reason "idle timeout").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Message, Scope
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.billing.money import cost, format_usd
from gateway.context import context
from gateway.errors import GatewayError
from gateway.inference import Call, admit, authenticate, open_stream
from gateway.streaming import RelayResponse
from providers.base import Usage
from providers.errors import ProviderError

log = logging.getLogger("pr.ws")

AUTH_TIMEOUT = 10.0  # seconds for the first message
MAX_CHATS = 32  # chats running at once on one socket
MAX_ID_LENGTH = 64
CHAT_FIELDS = {"maxTokens": "max_tokens", "topP": "top_p", "responseFormat": "response_format"}
Emit = Callable[[dict[str, Any]], Awaitable[None]]


def _error(code: str, message: str, *, type: str = "invalid_request_error", param: str | None = None,
           chat_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "error", "error": {"message": message, "type": type, "code": code,
                                                       "param": param}}
    if chat_id is not None:
        event["id"] = chat_id
    return event


def _gateway_error(error: GatewayError, chat_id: str | None) -> dict[str, Any]:
    return _error(error.code, error.message, type=error.type, param=error.param, chat_id=chat_id)


def chat_body(message: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat body of a `chat` message: camelCase names mapped, streaming with usage forced."""
    body = {CHAT_FIELDS.get(name, name): value for name, value in message.items() if name not in ("type", "id")}
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class _Chat:
    chat_id: str
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set: the client left or cancelled
    task: asyncio.Task[None] | None = None
    phase: str = "admitting"  # admitting -> opening (waiting for the node's first byte) -> streaming


class _Relay:
    """Turns the SSE frames `RelayResponse` sends into WebSocket events for one chat."""

    def __init__(self, chat: _Chat, call: Call, emit: Emit) -> None:
        self.chat = chat
        self.call = call
        self.emit = emit
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.buffer = b""
        self.ended = False  # a done or error event was sent

    async def send(self, message: Message) -> None:
        """The relay's ASGI `send`: split the body into SSE frames and emit one event per `data:` line."""
        if message["type"] != "http.response.body":
            return
        self.buffer += message.get("body", b"")
        *frames, self.buffer = self.buffer.split(b"\n\n")
        for frame in frames:
            for line in frame.split(b"\n"):
                if line.startswith(b"data: "):
                    await self._data(line[6:])

    async def _data(self, data: bytes) -> None:
        chat_id = self.chat.chat_id
        if data == b"[DONE]":
            self.ended = True
            usage = self.usage or {}
            model = self.call.model
            pico = cost(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                        model.input_pico_per_token, model.output_pico_per_token)
            await self.emit({"type": "done", "id": chat_id, "model": model.name, "finish_reason": self.finish_reason,
                             "usage": usage, "cost_usd": format_usd(pico)})
            return
        chunk = orjson.loads(data)
        if "error" in chunk:
            self.ended = True
            await self.emit({"type": "error", "id": chat_id, "error": chunk["error"]})
            return
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            event: dict[str, Any] = {"type": "token", "id": chat_id}
            if delta.get("content"):
                event["content"] = delta["content"]
            if delta.get("reasoning_content"):
                event["reasoning"] = delta["reasoning_content"]
            if delta.get("tool_calls"):
                event["tool_calls"] = delta["tool_calls"]
            if len(event) > 2:
                await self.emit(event)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    async def receive(self) -> Message:
        """What the relay's disconnect watcher reads: nothing until the chat's client is gone."""
        await self.chat.gone.wait()
        return {"type": "http.disconnect"}


class Session:
    """One WebSocket connection: authentication, the chats it runs, heartbeats and the idle timer."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.ctx = context(websocket)
        self.settings = self.ctx.settings
        self.api_key = ""
        self.chats: dict[str, _Chat] = {}
        self.lock = asyncio.Lock()
        self.closed = False
        self.last_activity = time.monotonic()

    async def emit(self, event: dict[str, Any]) -> None:
        """Send one event (serialised: chats share the socket); a closed socket drops it silently."""
        if self.closed:
            return
        async with self.lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.send_text(orjson.dumps(event).decode())

    async def run(self) -> None:
        """Accept, authenticate, then read messages until the client leaves; every chat is settled on exit."""
        await self.ws.accept()
        if not await self._authenticate():
            return
        helpers = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._idle_watch())]
        try:
            while True:
                try:
                    text = await self._receive_text()
                except (WebSocketDisconnect, RuntimeError):
                    break
                self.last_activity = time.monotonic()
                await self._message(text)
        finally:
            self.closed = True
            for task in helpers:
                task.cancel()
            await self._close_chats()

    async def _receive_text(self) -> str:
        """The next message as text (a binary frame is read as UTF-8; undecodable ones become "")."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("text") is not None:
            return str(message["text"])
        try:
            return bytes(message.get("bytes") or b"").decode()
        except UnicodeDecodeError:
            return ""  # answered as a message that is not a JSON object

    async def _close_chats(self) -> None:
        """Every chat learns its client left; each relay then cancels upstream and settles what it sent."""
        for chat in list(self.chats.values()):
            chat.gone.set()
            if chat.task is not None and chat.phase == "opening":
                chat.task.cancel()  # waiting for the node's first byte: stop waiting (open_stream settles)
        tasks = [chat.task for chat in self.chats.values() if chat.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _authenticate(self) -> bool:
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                text = await self._receive_text()
        except TimeoutError:
            await self._refuse(_error("authentication_timeout",
                                      f"Send {{\"type\":\"authenticate\",\"apiKey\":\"sk-pr-...\"}} within "
                                      f"{AUTH_TIMEOUT:g} seconds.", param="apiKey"))
            return False
        except (WebSocketDisconnect, RuntimeError):
            return False
        message = self._parse(text)
        if message is None or message.get("type") != "authenticate" or not isinstance(message.get("apiKey"), str):
            await self._refuse(_error("invalid_api_key", "The first message must be "
                                      "{\"type\":\"authenticate\",\"apiKey\":\"sk-pr-...\"}.", param="apiKey"))
            return False
        self.api_key = message["apiKey"].strip()
        try:
            principal = await authenticate(self._request(None, b""))
        except GatewayError as error:
            await self._refuse(_gateway_error(error, None))
            return False
        await self.emit({"type": "authenticated", "plan": principal.plan_name})
        return True

    async def _refuse(self, event: dict[str, Any]) -> None:
        await self.emit(event)
        self.closed = True
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.ws.close(code=1008, reason=event["error"]["code"])

    def _parse(self, text: str) -> dict[str, Any] | None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        return message if isinstance(message, dict) else None

    async def _message(self, text: str) -> None:
        if len(text.encode()) > self.settings.max_body_bytes:
            await self.emit(_error("request_too_large", f"A message may be at most {self.settings.max_body_bytes} "
                                   "bytes."))
            return
        message = self._parse(text)
        if message is None:
            await self.emit(_error("invalid_body", "Each message must be a JSON object with a `type`."))
            return
        kind = message.get("type")
        chat_id = message.get("id")
        if chat_id is not None and (not isinstance(chat_id, str) or not 0 < len(chat_id) <= MAX_ID_LENGTH):
            await self.emit(_error("invalid_body", f"id must be a string of 1 to {MAX_ID_LENGTH} characters.",
                                   param="id"))
            return
        if kind == "ping":
            await self.emit({"type": "pong"})
        elif kind == "chat":
            await self._start_chat(chat_id or uuid.uuid4().hex[:12], message)
        elif kind == "cancel":
            chat = self.chats.get(chat_id or "")
            if chat is None:
                await self.emit(_error("chat_not_found", f"No chat with id {chat_id!r} is running.", param="id"))
            else:
                chat.gone.set()
                if chat.task is not None and chat.phase == "opening":
                    chat.task.cancel()  # stop waiting for the node's first byte
        elif kind == "authenticate":
            await self.emit(_error("already_authenticated", "This socket is already authenticated."))
        else:
            await self.emit(_error("invalid_body", "type must be chat, cancel or ping.", param="type"))

    async def _start_chat(self, chat_id: str, message: dict[str, Any]) -> None:
        if chat_id in self.chats:
            await self.emit(_error("duplicate_id", f"A chat with id {chat_id!r} is still running.", param="id",
                                   chat_id=chat_id))
            return
        if len(self.chats) >= MAX_CHATS:
            await self.emit(_error("too_many_chats", f"At most {MAX_CHATS} chats may run at once on one socket.",
                                   chat_id=chat_id))
            return
        chat = self.chats[chat_id] = _Chat(chat_id)
        chat.task = asyncio.create_task(self._chat(chat, chat_body(message)))

    def _request(self, chat: _Chat | None, body: bytes) -> Request:
        """A `POST /v1/chat/completions` carrying this socket's key and the chat's body."""
        scope: Scope = {
            "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
            "root_path": self.ws.scope.get("root_path", ""), "client": self.ws.scope.get("client"),
            "server": self.ws.scope.get("server"), "app": self.ws.scope["app"],
            "headers": [(b"authorization", b"Bearer " + self.api_key.encode("latin-1", "replace")),
                        (b"content-type", b"application/json")],
            "state": {"request_id": uuid.uuid4().hex, "unique_request_id": uuid.uuid4().hex},
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            if chat is not None:
                await chat.gone.wait()
            return {"type": "http.disconnect"}

        return Request(scope, receive)

    async def _chat(self, chat: _Chat, body: dict[str, Any]) -> None:
        request = self._request(chat, orjson.dumps(body))
        call: Call | None = None
        relay: _Relay | None = None
        usage = Usage(0, 0, False)
        try:
            call = await admit(request, "chat.completions")
            if chat.gone.is_set():  # left while being admitted: settle the admitted call as cancelled
                call.finish(None, "cancelled", "client_disconnected")
            else:
                chat.phase = "opening"
                response = await open_stream(call)
                chat.phase = "streaming"
                relay = _Relay(chat, call, self.emit)
                await response(request.scope, relay.receive, relay.send)
                if isinstance(response, RelayResponse):
                    usage = response.encoder.usage()
        except GatewayError as error:
            await self.emit(_gateway_error(error, chat.chat_id))
        except ProviderError as error:
            await self.emit(_error(error.code, error.message, type=error.type, chat_id=chat.chat_id))
        except asyncio.CancelledError:
            if not chat.gone.is_set():
                raise
        except Exception:  # a bug or a database outage: the chat still gets an answer, the socket lives on
            log.exception("websocket chat %s failed", chat.chat_id)
            await self.emit(_error("internal_error", "The server had an error while processing this chat.",
                                   type="api_error", chat_id=chat.chat_id))
        finally:
            self.chats.pop(chat.chat_id, None)
            self.last_activity = time.monotonic()
        if call is not None and chat.gone.is_set() and not self.closed and (relay is None or not relay.ended):
            # A `cancel` from the client: say what the stopped chat was charged for.
            pico = cost(usage.input_tokens, usage.output_tokens, call.model.input_pico_per_token,
                        call.model.output_pico_per_token)
            await self.emit({"type": "cancelled", "id": chat.chat_id, "usage": {
                "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens}, "cost_usd": format_usd(pico)})

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ws_heartbeat_seconds)
            await self.emit({"type": "heartbeat", "ts": int(time.time())})

    async def _idle_watch(self) -> None:
        timeout = self.settings.ws_idle_timeout
        while True:
            await asyncio.sleep(min(timeout, 1.0))
            if not self.chats and time.monotonic() - self.last_activity >= timeout:
                await self.emit(_error("idle_timeout", f"No activity for {timeout:g} seconds; closing."))
                self.closed = True
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await self.ws.close(code=1000, reason="idle timeout")
                return


async def serve_socket(websocket: WebSocket) -> None:
    """Run one `/ws` connection to its end (every chat settled)."""
    await Session(websocket).run()
