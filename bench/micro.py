"""CPU per operation of the hot path's pieces, as the gateway does them now and as proposed.

`python -m bench.micro --database-url ... --emulator ... --redis-url ...` (the benchmark runs it against
its throwaway database, pinned to the gateway's core while the gateway is idle) prints one JSON object.
The "proposed" variants are prototypes written here only to price a change; the gateway's own code is
what the load tests measure. CPU is this process's time.process_time(), wall is perf_counter().
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

HOLD_CTE = (
    "WITH taken AS (UPDATE accounts SET held_pico = held_pico + $3 "
    "WHERE id = $2 AND balance_pico - held_pico >= $3 RETURNING id) "
    "INSERT INTO holds (request_id, account_id, api_key_id, amount_pico, created_at) "
    "SELECT $1, id, NULL, $3, now() FROM taken RETURNING request_id"
)


async def measure(label: str, operation: Callable[[], Awaitable[Any]], count: int, *, per: int = 1,
                  warmup: int = 10) -> dict[str, Any]:
    """Run `operation` `count` times after `warmup`; CPU and wall per item (`per` items per call)."""
    for _ in range(warmup):
        await operation()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        await operation()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    items = count * per
    return {"name": label, "cpu_ms": round(1000 * cpu / items, 4), "wall_ms": round(1000 * wall / items, 4),
            "items": items}


def _settlement(request_id: str, account_id: str, key_id: str, cost: int) -> Any:
    try:
        from gateway.billing.settlement import Settlement  # type: ignore[import-not-found, unused-ignore]
    except ImportError:  # before settlement moved out of holds.py
        from gateway.billing.holds import Settlement  # type: ignore[attr-defined, no-redef, unused-ignore]

    return Settlement(request_id=request_id, account_id=account_id, user_id=account_id, api_key_id=key_id,
                      model_public_name="privaterouter/fast", ollama_tag="gemma4:latest", node="fast",
                      endpoint="chat.completions", input_tokens=20, output_tokens=32, tokens_estimated=False,
                      cost_pico=cost, latency_ms=3, ttft_ms=None, status="success", error_code=None,
                      registry_version="bench", created_at=datetime.now(UTC))


async def settle_set_based(connection: asyncpg.Connection, items: list[Any]) -> None:
    """Prototype: a batch in a handful of statements whatever its size (one account and key per group)."""
    now = datetime.now(UTC)
    async with connection.transaction():
        rows = await connection.fetch("DELETE FROM holds WHERE request_id = ANY($1::text[]) "
                                      "RETURNING request_id, amount_pico", [item.request_id for item in items])
        held = {row["request_id"]: int(row["amount_pico"]) for row in rows}
        live = [item for item in items if item.request_id in held]
        groups: dict[str, list[Any]] = {}
        for item in live:
            groups.setdefault(item.account_id, []).append(item)
        ledger_rows: list[tuple[Any, ...]] = []
        spend: dict[str, int] = {}
        for account_id, group in groups.items():
            charge = sum(item.cost_pico for item in group)
            balance = await connection.fetchval(
                "UPDATE accounts SET balance_pico = balance_pico - $2, held_pico = held_pico - $3, updated_at = $4 "
                "WHERE id = $1 RETURNING balance_pico", account_id, charge, sum(held[i.request_id] for i in group), now)
            running = int(balance) + charge
            for item in group:  # each ledger row keeps its own balance after, in order
                running -= item.cost_pico
                if item.cost_pico:
                    ledger_rows.append((account_id, "usage", -item.cost_pico, running, item.request_id, now))
                if item.api_key_id is not None:
                    spend[item.api_key_id] = spend.get(item.api_key_id, 0) + item.cost_pico
        await connection.executemany(
            "INSERT INTO credit_transactions (account_id, kind, amount_pico, balance_after_pico, request_id, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6)", ledger_rows)
        month = now.strftime("%Y-%m")
        for key_id, amount in spend.items():
            await connection.execute(
                "UPDATE api_keys SET spend_pico = CASE WHEN spend_month = $3 THEN spend_pico ELSE 0 END + $2, "
                "spend_month = $3 WHERE id = $1", key_id, amount, month)
        await connection.executemany(
            "INSERT INTO usage_events (request_id, account_id, user_id, api_key_id, model_public_name, ollama_tag, "
            "node, endpoint, input_tokens, output_tokens, tokens_estimated, cost_pico, latency_ms, ttft_ms, status, "
            "error_code, registry_version, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            [(i.request_id, i.account_id, i.user_id, i.api_key_id, i.model_public_name, i.ollama_tag, i.node,
              i.endpoint, i.input_tokens, i.output_tokens, i.tokens_estimated, i.cost_pico, i.latency_ms, i.ttft_ms,
              i.status, i.error_code, i.registry_version, i.created_at) for i in live])


class RawHttp:
    """Prototype floor for the upstream call: one keep-alive HTTP/1.1 connection, Content-Length bodies only."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return await self.reader.readexactly(length)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.billing import holds as holds_module
    from gateway.billing.holds import Quote, place_hold
    from gateway.db.engine import create_engine, session_factory
    from gateway.logs import JsonFormatter
    from gateway.ratelimit.base import Limit
    from gateway.ratelimit.redis import RedisLimiter
    from gateway.usage import UsageWriter

    n = args.count
    engine = create_engine(args.database_url)
    sessions = session_factory(engine)
    dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    raw = await asyncpg.connect(dsn)
    raw_async_commit = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    account_id = args.account_id
    key_id = await raw.fetchval("SELECT id FROM api_keys WHERE account_id = $1 LIMIT 1", account_id)
    quote = Quote(20 * 100_000, 300_000, 8000)
    placed: list[str] = []
    found: list[dict[str, Any]] = []

    async def hold_current() -> None:
        request_id = uuid.uuid4().hex
        async with sessions() as session:
            await place_hold(session, request_id=request_id, account_id=account_id, key_id=key_id,
                             key_has_limit=False, quote=quote)
        placed.append(request_id)

    async def hold_cte(connection: asyncpg.Connection) -> None:
        request_id = uuid.uuid4().hex
        await connection.fetchval(HOLD_CTE, request_id, account_id, quote.worst_case)
        placed.append(request_id)

    async def hold_core() -> None:
        request_id = uuid.uuid4().hex
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(HOLD_CTE, (request_id, account_id, quote.worst_case))
        placed.append(request_id)

    found.append(await measure("place_hold, transactional path: ORM session, BEGIN/UPDATE/INSERT/COMMIT "
                               "(4 round trips; SQLite, keys with a monthly limit, low balances)",
                               hold_current, n) | {"group": "hold"})
    fast_path = getattr(holds_module, "place_worst_case_hold", None)
    if fast_path is not None:  # the gateway's own one-statement hold (PostgreSQL), when this tree has it
        async def hold_gateway_fast_path() -> None:
            request_id = uuid.uuid4().hex
            placed_hold = await fast_path(engine, request_id=request_id, account_id=account_id, quote=quote)
            assert placed_hold is not None
            placed.append(request_id)

        found.append(await measure("place_worst_case_hold: the gateway's one-statement hold as this tree has it "
                                   "(1 round trip)", hold_gateway_fast_path, n) | {"group": "hold"})
    else:
        found.append(await measure("place_hold as one UPDATE…INSERT CTE, SQLAlchemy AUTOCOMMIT (1 round trip)",
                                   hold_core, n) | {"group": "hold"})
    found.append(await measure("place_hold as one CTE, asyncpg directly (1 round trip)",
                               lambda: hold_cte(raw), n) | {"group": "hold"})
    found.append(await measure("…the same with synchronous_commit=off (no WAL fsync wait)",
                               lambda: hold_cte(raw_async_commit), n) | {"group": "hold"})

    writer = UsageWriter(sessions, batch_size=10_000)
    batch = 64

    async def settle_current(size: int) -> None:
        for _ in range(size):
            writer.submit(_settlement(placed.pop(), account_id, key_id, 16_600))
        await writer.flush()

    async def settle_proposed(size: int) -> None:
        await settle_set_based(raw, [_settlement(placed.pop(), account_id, key_id, 16_600) for _ in range(size)])

    rounds = max(2, n // batch)
    need = (rounds + 2) * batch * 2 + 2 * (n + 10)
    while len(placed) < need:
        await hold_cte(raw)
    found.append(await measure(f"settle now (UsageWriter, batch of {batch}), per request",
                               lambda: settle_current(batch), rounds, per=batch, warmup=1) | {"group": "settle"})
    found.append(await measure(f"settle set-based prototype (batch of {batch}), per request",
                               lambda: settle_proposed(batch), rounds, per=batch, warmup=1) | {"group": "settle"})
    found.append(await measure("settle now, batch of 1 (a quiet gateway)", lambda: settle_current(1), n)
                 | {"group": "settle"})
    found.append(await measure("settle set-based prototype, batch of 1", lambda: settle_proposed(1), n)
                 | {"group": "settle"})
    for request_id in placed:  # release what is left so the database stays consistent
        amount = await raw.fetchval("DELETE FROM holds WHERE request_id = $1 RETURNING amount_pico", request_id)
        if amount is not None:
            await raw.execute("UPDATE accounts SET held_pico = held_pico - $2 WHERE id = $1", account_id, amount)
    ledger, balance, held = await raw.fetchrow(
        "SELECT (SELECT COALESCE(SUM(amount_pico), 0) FROM credit_transactions WHERE account_id = $1), "
        "balance_pico, held_pico FROM accounts WHERE id = $1", account_id)
    consistent = int(ledger) == int(balance) and int(held) == 0

    chat = json.dumps({"model": "gemma4:latest", "stream": False, "options": {"num_predict": 8000},
                       "messages": [{"role": "user", "content": "Write a short note about gateways."}]}).encode()
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
    port = int(args.emulator.rsplit(":", 1)[1])
    rawhttp = RawHttp(port)

    async def upstream_httpx() -> None:
        answer = await client.post(args.emulator + "/api/chat", content=chat,
                                   headers={"content-type": "application/json"})
        answer.raise_for_status()

    async def upstream_raw() -> None:
        await rawhttp.post("/api/chat", chat)

    httpx_label = "upstream POST /api/chat with httpx (what OllamaClient uses for https and proxied nodes)"
    found.append(await measure(httpx_label, upstream_httpx, n) | {"group": "upstream"})
    found.append(await measure("upstream POST /api/chat, minimal asyncio HTTP/1.1 client (floor)", upstream_raw, n)
                 | {"group": "upstream"})
    await client.aclose()
    variants: list[tuple[str, Any]] = [("httpx (default transport)", None)]
    try:  # the gateway's own transport for httpx, when this tree has one
        transport_module = importlib.import_module("providers.ollama.transport")
        variants.append(("httpx + the gateway's FastTransport", transport_module.FastTransport))
    except (ImportError, AttributeError):
        pass
    for (label, transport_class), idle in [(variant, idle) for variant in variants for idle in (1, 16, 64, 128)]:
        # The gateway's client keeps up to 512 idle connections (httpx.Limits in gateway/app.py).
        pooled = httpx.AsyncClient(timeout=httpx.Timeout(30.0),
                                   transport=transport_class() if transport_class is not None else None,
                                   limits=httpx.Limits(max_connections=None, max_keepalive_connections=512))
        await asyncio.gather(*(pooled.post(args.emulator + "/api/chat", content=chat,
                                           headers={"content-type": "application/json"}) for _ in range(idle)))

        async def upstream_pooled(pooled: httpx.AsyncClient = pooled) -> None:
            answer = await pooled.post(args.emulator + "/api/chat", content=chat,
                                       headers={"content-type": "application/json"})
            answer.raise_for_status()

        found.append(await measure(f"{label}, after a burst of {idle} concurrent calls (idle connections kept)",
                                   upstream_pooled, min(n, 100)) | {"group": "upstream"})
        await pooled.aclose()

    from redis.asyncio import Redis

    redis = Redis.from_url(args.redis_url)
    limiter = RedisLimiter(redis)
    limit = [Limit("rpm", f"acct:micro-{uuid.uuid4().hex}:rpm", 100_000_000, 60.0)]
    found.append(await measure("rate limit: one EVALSHA (RedisLimiter.hit)", lambda: limiter.hit(limit), n)
                 | {"group": "other"})
    await redis.aclose()

    sink = logging.getLogger("bench.micro.sink")
    sink.propagate = False
    handler = logging.FileHandler("/dev/null")
    handler.setFormatter(JsonFormatter())
    sink.addHandler(handler)
    sink.setLevel(logging.INFO)

    async def log_line() -> None:
        sink.info('HTTP Request: %s %s "%s %d %s"', "POST", "http://127.0.0.1/api/chat", "HTTP/1.1", 200, "OK")

    found.append(await measure("one INFO log line (JSON formatter; httpx logs one per upstream call)", log_line, n)
                 | {"group": "other"})
    await raw.close()
    await raw_async_commit.close()
    await engine.dispose()
    return {"count": n, "results": found, "ledger_consistent_after": consistent, "held_after_pico": int(held)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--emulator", required=True, help="http://127.0.0.1:PORT of a fast emulator")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--account-id", required=True, help="an account of its own (it is charged and settled)")
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    for url in (args.database_url, args.emulator, args.redis_url):
        if "127.0.0.1" not in url:
            raise SystemExit(f"only 127.0.0.1 is allowed: {url}")
    import uvloop

    print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
