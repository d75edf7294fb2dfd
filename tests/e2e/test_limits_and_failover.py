"""Rate limits across gateway replicas and node failover, through real sockets."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.settings import Settings
from tests.support.servers import serve_app
from tests.support.stack import Stack, registry_text, run_stack

CHAT = {"model": "privaterouter/fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


async def test_rate_limit_is_429_with_headers(stack: Stack) -> None:
    tenant = await stack.tenant(plan="free")  # 20 requests per minute
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        answers = [await client.post("/chat/completions", json=CHAT) for _ in range(21)]
    assert [a.status_code for a in answers] == [200] * 20 + [429]
    first, last = answers[0].headers, answers[-1]
    assert first["x-ratelimit-limit-requests"] == "20" and first["x-ratelimit-remaining-requests"] == "19"
    assert first["X-RateLimit-Limit"] == "20" and "x-ratelimit-reset-requests" in first
    assert last.json()["error"]["code"] == "rate_limit_exceeded" and last.json()["error"]["type"] == "rate_limit_error"
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    await stack.settled(tenant.account_id, 20)  # refused requests are not admitted: no event


async def test_key_rpm_limits_one_key_and_its_headers_report_it(stack: Stack) -> None:
    tenant = await stack.tenant(key_rpm=2)  # the developer plan allows 300 a minute: the key's 2 binds
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        answers = [await client.post("/chat/completions", json=CHAT) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert [answer.headers["x-ratelimit-limit-requests"] for answer in answers] == ["2", "2", "2"]
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers] == ["1", "0", "0"]


async def test_a_limited_request_gets_its_429_before_any_complaint_about_its_body(stack: Stack) -> None:
    """The rate-limit call runs while the body is checked (Redis), yet the 429 still comes first."""
    tenant = await stack.tenant(key_rpm=1)
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        within = await client.post("/chat/completions", content=b"{not json")
        bad_json = await client.post("/chat/completions", content=b"{not json")
        unknown = await client.post("/chat/completions", json={**CHAT, "model": "no/such-model"})
        unsupported = await client.post("/chat/completions", json={**CHAT, "n": 3})
        valid = await client.post("/chat/completions", json=CHAT)
    assert within.status_code == 400 and within.headers["x-ratelimit-remaining-requests"] == "0"
    for answer in (bad_json, unknown, unsupported, valid):
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "rate_limit_exceeded" and int(answer.headers["retry-after"]) >= 1
    await stack.settled(tenant.account_id, 0)  # nothing was admitted


async def test_two_replicas_share_one_redis_limit(make_settings: Callable[..., Settings], postgres_url: str,
                                                  redis_url: str, tmp_path: Path) -> None:
    """Two gateway apps (separate servers and event loops) on one PostgreSQL and one Redis: one budget."""
    with run_stack(make_settings, postgres_url, tmp_path, REDIS_URL=redis_url) as first, ExitStack() as extra:
        second_url = extra.enter_context(serve_app(create_app(first.settings)))
        tenant = await first.tenant(plan="free")
        statuses = []
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
            for index in range(22):
                base = first.v1 if index % 2 else f"{second_url}/v1"
                statuses.append((await client.post(f"{base}/chat/completions", json=CHAT)).status_code)
        await first.engine.dispose()
    assert statuses.count(200) == 20 and statuses[-2:] == [429, 429]


async def test_failover_before_first_byte_to_a_healthy_node(make_settings: Callable[..., Settings],
                                                            database_url: str, tmp_path: Path) -> None:
    with run_stack(make_settings, database_url, tmp_path, nodes=2) as stack:
        stack.models_file.write_text(registry_text(["http://127.0.0.1:9"] + stack.ollama_urls[1:]))  # node0 refuses
        tenant = await stack.tenant()
        token = await stack.admin_token()
        async with httpx.AsyncClient(timeout=30) as client:
            reloaded = await client.post(f"{stack.base_url}/api/admin/reload",
                                         headers={"Authorization": f"Bearer {token}"})
            assert reloaded.status_code == 200
            for stream in (False, True):
                answer = await client.post(f"{stack.v1}/chat/completions", json={**CHAT, "stream": stream},
                                           headers={"Authorization": f"Bearer {tenant.api_key}"})
                assert answer.status_code == 200, answer.text
        events = await stack.settled(tenant.account_id, 2)
        await stack.engine.dispose()
    assert {event.node for event in events} == {"node1"}
    assert all(event.status == "success" for event in events)


async def test_node_dropping_mid_stream_is_an_error_event_charged_for_what_was_relayed(stack: Stack) -> None:
    tenant = await stack.tenant()
    body = {"model": "privaterouter/test-drop", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        response = await client.post("/chat/completions", json=body)
    assert response.status_code == 200
    frames = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"error"' in frames[-1] and "[DONE]" not in response.text
    [event] = await stack.settled(tenant.account_id, 1)
    assert event.status == "error" and event.output_tokens > 0 and event.cost_pico > 0


async def test_upstream_hang_is_504(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        response = await client.post("/chat/completions", json={**CHAT, "model": "privaterouter/test-hang"})
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    [event] = await stack.settled(tenant.account_id, 1)
    assert (event.status, event.error_code, event.cost_pico) == ("error", "upstream_timeout", 0)
