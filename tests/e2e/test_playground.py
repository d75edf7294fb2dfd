"""The playground through a real gateway and the Ollama emulator: the session is the principal of
the same pipeline as /v1 (hold, one usage event, billing to the account), CSRF-protected."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator

import httpx

from gateway.accounts import require_member
from gateway.db.engine import session_factory
from gateway.fields import usd
from tests.support.control_plane import PASSWORD
from tests.support.stack import Stack

CSRF = re.compile(r'data-csrf="([0-9a-f]{64})"')


@contextlib.asynccontextmanager
async def browser(stack: Stack, email: str) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """A signed-up user's client, their CSRF token and their account id."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        response = await client.post("/signup", data={"email": email, "password": PASSWORD})
        assert response.status_code == 303, response.text
        found = CSRF.search((await client.get("/playground")).text)
        assert found is not None
        user_id = (await client.get("/api/auth/me")).json()["id"]
        async with session_factory(stack.engine)() as session:
            account_id = (await require_member(session, user_id)).account.id
        yield client, found.group(1), account_id


def _body(model: str = "privaterouter/fast") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": True,
            "stream_options": {"include_usage": True}, "reasoning_effort": "none"}  # the answer's 12 tokens only


async def test_a_turn_streams_and_is_billed_to_the_account(stack: Stack) -> None:
    async with browser(stack, "player@example.com") as (client, csrf, account_id):
        async with client.stream("POST", "/playground/chat", json=_body(), headers={"X-CSRF-Token": csrf}) as reply:
            assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
            request_id = reply.headers["x-request-id"]
            frames = [line[6:] async for line in reply.aiter_lines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        chunks = [json.loads(frame) for frame in frames[:-1]]
        text = "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])
        usage = next(chunk["usage"] for chunk in chunks if chunk.get("usage"))
        assert text and usage["completion_tokens"] == 12
        events = await stack.settled(account_id, 1)
        assert len(events) == 1
        event = events[0]
        assert (event.request_id, event.api_key_id, event.status) == (request_id, None, "success")
        assert (event.input_tokens, event.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
        account = await stack.account(account_id)
        assert event.cost_pico > 0 and account.balance_pico == 10**12 - event.cost_pico
        assert await stack.ledger_sum(account_id) == account.balance_pico and account.held_pico == 0
        turn = (await client.get(f"/playground/turns/{request_id}")).json()
        assert (turn["cost_usd"], turn["balance_usd"]) == (usd(event.cost_pico), usd(account.balance_pico))
        assert (turn["input_tokens"], turn["output_tokens"]) == (event.input_tokens, event.output_tokens)


async def test_without_the_csrf_token_or_a_session_nothing_runs(stack: Stack) -> None:
    async with browser(stack, "victim@example.com") as (client, csrf, account_id):
        refused = await client.post("/playground/chat", json=_body())
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        cross = await client.post("/playground/chat", json=_body(),
                                  headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
    async with httpx.AsyncClient(base_url=stack.base_url) as anonymous:
        response = await anonymous.post("/playground/chat", json=_body(), headers={"X-CSRF-Token": csrf})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_token"
    assert await stack.events(account_id) == []


async def test_the_plan_rules_of_v1_apply_and_turns_are_private(stack: Stack) -> None:
    async with browser(stack, "free@example.com") as (client, csrf, account_id):
        response = await client.post("/playground/chat", json=_body("privaterouter/qwen-pro"),
                                     headers={"X-CSRF-Token": csrf})
        assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_allowed"
        plain = {"model": "privaterouter/fast", "messages": [{"role": "user", "content": "Hi"}]}
        done = await client.post("/playground/chat", json=plain, headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200, done.text
        request_id = done.headers["x-request-id"]
        await stack.settled(account_id, 1)
        mine = await client.get(f"/playground/turns/{request_id}")
        assert mine.status_code == 200 and mine.json()["settled"] is True
        async with browser(stack, "other@example.com") as (other, _, _):
            theirs = await other.get(f"/playground/turns/{request_id}")
            assert (theirs.status_code, theirs.json()) == (202, {"settled": False})
