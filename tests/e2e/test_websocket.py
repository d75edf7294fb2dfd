"""`/ws` with the `websockets` client library against a real gateway and the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from gateway.billing.money import format_usd
from gateway.settings import Settings
from tests.e2e.conftest import production_env
from tests.support.stack import Stack, run_stack

HELLO = [{"role": "user", "content": "Say hello."}]


def ws_url(stack: Stack) -> str:
    return stack.base_url.replace("http://", "ws://") + "/ws"


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def recv(ws: ClientConnection, *, skip: tuple[str, ...] = ("heartbeat",)) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        if event["type"] not in skip:
            return event


@asynccontextmanager
async def authenticated(stack: Stack, api_key: str) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(stack)) as ws:
        await send(ws, {"type": "authenticate", "apiKey": api_key})
        assert (await recv(ws))["type"] == "authenticated"
        yield ws


async def until_done(ws: ClientConnection, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Events per chat id until each of `ids` has its `done` or `error`."""
    events: dict[str, list[dict[str, Any]]] = {chat_id: [] for chat_id in ids}
    open_ids = set(ids)
    while open_ids:
        event = await recv(ws)
        events[event["id"]].append(event)
        if event["type"] in ("done", "error"):
            open_ids.discard(event["id"])
    return events


async def test_one_chat_streams_tokens_and_is_billed_like_v1(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="1")
    async with authenticated(stack, tenant.api_key) as ws:
        await send(ws, {"type": "chat", "id": "c1", "model": "privaterouter/fast", "messages": HELLO,
                        "maxTokens": 8, "temperature": 0.2, "reasoning_effort": "none"})  # answer tokens only
        events = (await until_done(ws, {"c1"}))["c1"]
    tokens, done = events[:-1], events[-1]
    assert tokens and all(event["type"] == "token" and event["content"] for event in tokens)
    assert done["type"] == "done" and done["finish_reason"] == "length" and done["model"] == "privaterouter/fast"
    assert done["usage"]["completion_tokens"] == 8 == len(tokens)
    (event,) = await stack.settled(tenant.account_id, 1)
    assert (event.status, event.endpoint, event.output_tokens) == ("success", "chat.completions", 8)
    assert done["usage"]["prompt_tokens"] == event.input_tokens
    assert done["cost_usd"] == format_usd(event.cost_pico) and event.cost_pico > 0
    account = await stack.account(tenant.account_id)
    assert account.held_pico == 0 and await stack.ledger_sum(tenant.account_id) == account.balance_pico


async def test_concurrent_chats_on_one_socket_each_recorded(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="1")
    ids = {f"chat-{index}" for index in range(4)}
    async with authenticated(stack, tenant.api_key) as ws:
        for chat_id in sorted(ids):
            await send(ws, {"type": "chat", "id": chat_id, "model": "privaterouter/test-slow", "messages": HELLO,
                            "maxTokens": 6})
        events = await until_done(ws, ids)
    assert {chat_id: chat[-1]["type"] for chat_id, chat in events.items()} == dict.fromkeys(ids, "done")
    order = [(chat_id, index) for chat_id, chat in events.items() for index, _ in enumerate(chat)]
    assert len(order) == 4 * 7
    found = await stack.settled(tenant.account_id, 4)
    assert len(found) == 4 and {event.status for event in found} == {"success"}


async def test_errors_are_openai_shaped_and_per_chat(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="1", plan="free", key_rpm=2)
    async with authenticated(stack, tenant.api_key) as ws:
        await send(ws, {"type": "chat", "id": "a", "model": "privaterouter/nope", "messages": HELLO})
        unknown = await recv(ws)
        await send(ws, {"type": "chat", "id": "b", "model": "privaterouter/qwen-pro", "messages": HELLO})
        refused = await recv(ws)
        await send(ws, {"type": "chat", "id": "c", "model": "privaterouter/fast", "messages": HELLO, "maxTokens": 2})
        limited = await recv(ws)
        await ws.send("not json")
        garbage = await recv(ws)
        await send(ws, {"type": "ping"})
        pong = await recv(ws)
    assert unknown == {"type": "error", "id": "a", "error": {
        "message": "The model 'privaterouter/nope' does not exist.", "type": "invalid_request_error",
        "code": "model_not_found", "param": "model"}}
    assert (refused["id"], refused["error"]["code"]) == ("b", "model_not_allowed")
    assert (limited["id"], limited["error"]["type"], limited["error"]["code"]) == (
        "c", "rate_limit_error", "rate_limit_exceeded")
    assert garbage["error"]["code"] == "invalid_body" and pong == {"type": "pong"}
    assert await stack.events(tenant.account_id) == []  # nothing admitted, nothing recorded


async def test_bad_key_is_refused_and_closed(stack: Stack) -> None:
    async with connect(ws_url(stack)) as ws:
        await send(ws, {"type": "authenticate", "apiKey": "sk-pr-not-a-real-key"})
        event = await recv(ws)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert event["error"]["code"] == "invalid_api_key" and event["error"]["type"] == "invalid_request_error"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_disconnect_mid_answer_cancels_upstream_and_charges_what_was_relayed(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="1")
    cancelled_before = stack.fake.stats.cancelled_streams
    async with authenticated(stack, tenant.api_key) as ws:
        await send(ws, {"type": "chat", "id": "long", "model": "privaterouter/test-slow", "messages": HELLO,
                        "maxTokens": 200})
        await send(ws, {"type": "chat", "id": "long2", "model": "privaterouter/test-slow", "messages": HELLO,
                        "maxTokens": 200})
        received = 0
        while received < 6:
            if (await recv(ws))["type"] == "token":
                received += 1
    # leaving the `async with` closed the socket mid-answer
    events = await stack.settled(tenant.account_id, 2)
    assert {(event.status, event.error_code) for event in events} == {("cancelled", "client_disconnected")}
    assert all(0 < event.output_tokens < 200 and event.cost_pico > 0 for event in events)
    for _ in range(100):
        if stack.fake.stats.cancelled_streams >= cancelled_before + 2:
            break
        await asyncio.sleep(0.05)
    assert stack.fake.stats.cancelled_streams >= cancelled_before + 2  # generation stopped on the node
    account = await stack.account(tenant.account_id)
    assert account.held_pico == 0 and await stack.ledger_sum(tenant.account_id) == account.balance_pico


@pytest.fixture
async def quick_stack(make_settings: Callable[..., Settings], database_url: str,
                      tmp_path: Path) -> AsyncIterator[Stack]:
    with run_stack(make_settings, database_url, tmp_path, WS_HEARTBEAT_SECONDS="0.2", WS_IDLE_TIMEOUT="1",
                   **production_env(database_url)) as running:
        yield running
        await running.engine.dispose()


async def test_heartbeats_then_idle_timeout(quick_stack: Stack) -> None:
    tenant = await quick_stack.tenant()
    async with authenticated(quick_stack, tenant.api_key) as ws:
        heartbeat = await recv(ws, skip=())
        idle = await recv(ws)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert heartbeat["type"] == "heartbeat" and isinstance(heartbeat["ts"], int)
    assert idle["error"]["code"] == "idle_timeout"
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000,
                                                                                                  "idle timeout")


async def test_disconnect_before_the_first_byte_settles_the_chat(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="1")
    async with authenticated(stack, tenant.api_key) as ws:
        await send(ws, {"type": "chat", "id": "h", "model": "privaterouter/test-hang", "messages": HELLO,
                        "maxTokens": 5})
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"
        await asyncio.sleep(0.3)  # the chat is admitted and waiting for the node
    (event,) = await stack.settled(tenant.account_id, 1)
    assert (event.status, event.error_code, event.cost_pico) == ("cancelled", "client_disconnected", 0)
    account = await stack.account(tenant.account_id)
    assert account.held_pico == 0


async def test_an_unexpected_failure_is_an_internal_error_event_and_the_socket_lives(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = await stack.tenant()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database exploded")

    monkeypatch.setattr("gateway.ws.admit", broken)
    async with authenticated(stack, tenant.api_key) as ws:
        await send(ws, {"type": "chat", "id": "x", "model": "privaterouter/fast", "messages": HELLO})
        failed = await recv(ws)
        await send(ws, {"type": "ping"})
        pong = await recv(ws)
    assert failed["id"] == "x" and failed["error"]["code"] == "internal_error"
    assert "exploded" not in str(failed) and pong == {"type": "pong"}


async def test_binary_frames_are_read_as_utf8_json(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with authenticated(stack, tenant.api_key) as ws:
        await ws.send(orjson.dumps({"type": "ping"}))  # bytes: a binary frame
        pong = await recv(ws)
        await ws.send(b"\xff\xfe")
        bad = await recv(ws)
    assert pong == {"type": "pong"} and bad["error"]["code"] == "invalid_body"


async def test_a_key_deleted_mid_socket_stops_working_for_the_next_chat(stack: Stack) -> None:
    import httpx

    from gateway.auth.sessions import issue_token

    tenant = await stack.tenant()
    token = issue_token(tenant.user_id, secret=stack.settings.jwt_secret, ttl_seconds=600)
    async with authenticated(stack, tenant.api_key) as ws:
        await send(ws, {"type": "chat", "id": "before", "model": "privaterouter/fast", "messages": HELLO,
                        "maxTokens": 2})
        assert (await until_done(ws, {"before"}))["before"][-1]["type"] == "done"
        async with httpx.AsyncClient(base_url=stack.base_url) as client:
            deleted = await client.delete(f"/api/keys/{tenant.key_id}", headers={"Authorization": f"Bearer {token}"})
        assert deleted.status_code == 200
        await send(ws, {"type": "chat", "id": "after", "model": "privaterouter/fast", "messages": HELLO})
        refused = await recv(ws)
    assert (refused["id"], refused["error"]["code"]) == ("after", "invalid_api_key")
    assert len(await stack.settled(tenant.account_id, 1)) == 1


async def test_cancel_stops_one_chat_and_says_what_it_cost(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="1")
    async with authenticated(stack, tenant.api_key) as ws:
        for chat_id in ("stop-me", "keep-me"):
            await send(ws, {"type": "chat", "id": chat_id, "model": "privaterouter/test-slow", "messages": HELLO,
                            "maxTokens": 12})
        tokens = 0
        while tokens < 3:
            event = await recv(ws)
            tokens += event["type"] == "token" and event["id"] == "stop-me"
        await send(ws, {"type": "cancel", "id": "stop-me"})
        events = await until_ended(ws, {"stop-me": "cancelled", "keep-me": "done"})
        await send(ws, {"type": "cancel", "id": "stop-me"})
        unknown = await recv(ws)
    cancelled = events["stop-me"]
    assert 3 <= cancelled["usage"]["completion_tokens"] < 12 and cancelled["cost_usd"] != "0.00"
    assert events["keep-me"]["usage"]["completion_tokens"] == 12
    assert unknown["error"]["code"] == "chat_not_found"
    found = {event.status: event for event in await stack.settled(tenant.account_id, 2)}
    assert set(found) == {"cancelled", "success"}
    assert found["cancelled"].output_tokens == cancelled["usage"]["completion_tokens"]
    assert format_usd(found["cancelled"].cost_pico) == cancelled["cost_usd"]


async def until_ended(ws: ClientConnection, ending: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The final event of each chat, which must be of the type `ending` names."""
    found: dict[str, dict[str, Any]] = {}
    while len(found) < len(ending):
        event = await recv(ws)
        if event["type"] in ("done", "error", "cancelled"):
            assert event["type"] == ending[event["id"]], event
            found[event["id"]] = event
    return found
