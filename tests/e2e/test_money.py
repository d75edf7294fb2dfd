"""Money under concurrency, disconnects and reloads, through real sockets."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from tests.support.stack import Stack


async def test_balance_for_ten_requests_with_two_hundred_fired_at_once(stack: Stack) -> None:
    # Without max_tokens a request holds its worst case: what the 8,192-token context leaves, at $0.30 per
    # million output tokens, about $0.00245. $0.025 pays for ten such holds at once.
    tenant = await stack.tenant(credits_usd="0.025", plan="team")
    body = {"model": "privaterouter/fast", "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=stack.v1, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        responses = await asyncio.gather(*(client.post("/chat/completions", json=body) for _ in range(200)))
    statuses = [response.status_code for response in responses]
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 402}, statuses
    assert admitted >= 10 and statuses.count(402) > 0
    events = await stack.settled(tenant.account_id, admitted)
    assert len(events) == admitted and len({event.request_id for event in events}) == admitted
    assert all(event.status == "success" for event in events)
    account = await stack.account(tenant.account_id)
    assert account.balance_pico >= 0 and account.held_pico == 0
    assert await stack.ledger_sum(tenant.account_id) == account.balance_pico
    assert sum(event.cost_pico for event in events) == 25 * 10**9 - account.balance_pico


async def test_client_disconnect_cancels_upstream_and_charges_partial(stack: Stack) -> None:
    tenant = await stack.tenant()
    body = {"model": "privaterouter/test-slow", "stream": True, "max_tokens": 200,
            "messages": [{"role": "user", "content": "tell me a long story"}]}
    cancelled_before = stack.fake.stats.cancelled_streams
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        async with client.stream("POST", "/chat/completions", json=body) as response:
            assert response.status_code == 200
            frames = 0
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    frames += 1
                if frames >= 4:
                    break  # leave mid-stream
    deadline = time.monotonic() + 2
    while stack.fake.stats.cancelled_streams == cancelled_before:
        assert time.monotonic() < deadline, "upstream generation was not cancelled within a second or two"
        await asyncio.sleep(0.02)
    [event] = await stack.settled(tenant.account_id, 1)
    assert event.status == "cancelled" and event.error_code == "client_disconnected"
    assert 0 < event.output_tokens < 200 and event.cost_pico > 0 and event.tokens_estimated


async def test_reload_during_a_stream_keeps_the_old_prices(stack: Stack) -> None:
    tenant = await stack.tenant()
    body = {"model": "privaterouter/test-slow", "stream": True, "max_tokens": 10,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "hi"}]}
    original = stack.models_file.read_text()
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        async with client.stream("POST", "/chat/completions", json=body) as response:
            lines = response.aiter_lines()
            await anext(lines)
            # Ten times the price, loaded while the stream is still going.
            stack.models_file.write_text(original.replace(
                "  - name: privaterouter/test-slow\n    tag: gemma4-slow:latest\n    family: gemma\n"
                "    kind: chat\n    context: 8192\n    input_price: \"0.100000\"\n    output_price: \"0.300000\"",
                "  - name: privaterouter/test-slow\n    tag: gemma4-slow:latest\n    family: gemma\n"
                "    kind: chat\n    context: 8192\n    input_price: \"1.000000\"\n    output_price: \"3.000000\""))
            token = await stack.admin_token()
            reloaded = await client.post(f"{stack.base_url}/api/admin/reload",
                                         headers={"Authorization": f"Bearer {token}"})
            assert reloaded.status_code == 200 and "~privaterouter/test-slow" in reloaded.json()["diff"]
            usage = None
            async for line in lines:
                if line.startswith("data: {") and '"usage":{' in line:
                    usage = orjson.loads(line[6:])["usage"]
    assert usage is not None
    [event] = await stack.settled(tenant.account_id, 1)
    assert event.cost_pico == usage["prompt_tokens"] * 100_000 + usage["completion_tokens"] * 300_000


async def test_a_reused_client_request_id_is_still_billed_once_per_request(stack: Stack) -> None:
    tenant = await stack.tenant()
    body = {"model": "privaterouter/fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {tenant.api_key}", "X-Request-ID": "client-retry-1"}
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30, headers=headers) as client:
        answers = await asyncio.gather(*(client.post("/chat/completions", json=body) for _ in range(3)))
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert {answer.headers["x-request-id"] for answer in answers} == {"client-retry-1"}
    events = await stack.settled(tenant.account_id, 3)
    assert len({event.request_id for event in events}) == 3
