"""Scale-out: one worker on one core against two workers on two cores, same database, same load.

Both gateways run `privaterouter serve --no-migrate` on PostgreSQL + Redis (several workers need Redis:
the gateway refuses `WORKERS` > 1 without it), against a throwaway database of their own with one
tenant. The one-worker gateway is pinned to the gateway's core as in the main runs; the two-worker
gateway (uvicorn's multiprocess mode, `WORKERS=2`) gets both cores, which on a 2-core machine it shares
with wrk and the emulator (they stay on the load core). Each worker's CPU is read from /proc, so the
report gives CPU per request beside the throughput: with the load generator on the same cores the
throughput ratio understates what two dedicated cores give, the CPU per request does not. The money
check runs on this database afterwards, like on every backend.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import checks, httpstats, profile
from bench.procs import Child, privaterouter, run_checked
from bench.stack import (
    CHAT_MODEL,
    EMBED_MODEL,
    Backend,
    create_database,
    create_tenant,
    drop_database,
    gateway_env,
    new_secret,
)
from bench.system import BenchError, children, cpu_ticks_of, free_port, rss_kib
from bench.wrk import gateway_scenarios, run_wrk

if TYPE_CHECKING:
    from bench.runner import Run

WORKER_START_TIMEOUT_S = 60.0
MIN_WARMUP_S = 2.0  # fresh workers open their database and Redis pools on their first requests, even in --quick


def configurations(gateway_core: int, all_cores: tuple[int, ...]) -> list[tuple[str, int, tuple[int, ...]]]:
    """(key, workers, cores): the goal's comparison, 1 worker on its own core against 2 workers on all cores,
    and between them 1 worker on all cores, which shares them with the load exactly as the 2 workers do."""
    return [("1", 1, (gateway_core,)), ("1-shared", 1, all_cores), ("2", 2, all_cores)]


async def run(bench: Run) -> dict[str, Any]:
    """Measure 1 worker / 1 core, then 2 workers / 2 cores; check the money; return the section's data."""
    from bench.runner import _engine, _forget_redis_keys, _log_summary, log

    o = bench.o
    kind = "chat" if "chat" in o.scenarios else o.scenarios[0]
    scenario = next(s for s in gateway_scenarios("scaleout", CHAT_MODEL, EMBED_MODEL) if s.kind == kind)
    all_cores = tuple(sorted({o.load_core, o.gateway_core}))
    pg_database = await create_database(o.admin_dsn)
    host = o.admin_dsn.split("@", 1)[1].split("/", 1)[0]
    database_url = f"postgresql+asyncpg://postgres@{host}/{pg_database}"
    ids_dir = bench.tmp / "ids-scaleout"
    ids_dir.mkdir(parents=True)
    app_secret, jwt_secret = new_secret(), new_secret()
    found: dict[str, Any] = {"database": "PostgreSQL (throwaway database)", "redis": o.redis_url,
                             "kind": kind, "connections": o.scaleout_connections, "runs": {}}
    backend: Backend | None = None
    try:
        for key, workers, cores in configurations(o.gateway_core, all_cores):
            port = free_port()
            data_dir = bench.tmp / f"data-scaleout-{key}"
            env = gateway_env(dict(os.environ), models_file=bench.models_file, data_dir=data_dir, port=port,
                              database_url=database_url, redis_url=o.redis_url, app_secret=app_secret,
                              jwt_secret=jwt_secret, workers=workers)
            if backend is None:
                await asyncio.to_thread(run_checked, [*privaterouter(), "migrate"], env=env, cwd=bench.tmp)
                backend = Backend("scaleout", database_url, env, data_dir, pg_database=pg_database, ids_dir=ids_dir)
                backend.tenant = await create_tenant(database_url, app_secret)
            assert backend.tenant is not None
            gateway = bench.start(f"gateway-scaleout-{key}", [*privaterouter(), "serve", "--no-migrate"],
                                  core=",".join(str(core) for core in cores), env=env)
            try:
                base = f"http://127.0.0.1:{port}"
                await asyncio.to_thread(gateway.wait_http, base + "/health")
                bench.seen = Counter()
                pids = await _workers(gateway, workers)
                idle = [round(rss_kib(pid) / 1024, 1) for pid in pids]
                log(f"scale-out: {workers} worker(s) {pids} on cores {cores}, idle RSS {idle} MiB")
                result = await bench.scenario(
                    base, scenario, o.scaleout_connections, pids, ids_dir=ids_dir,
                    headers=(f"Authorization: Bearer {backend.tenant.api_key}",), cores=cores,
                    pg_database=pg_database, ids_prefix=f"{key}-", others={"emulator": [bench.fast_pid]},
                    warmup=max(o.warmup, MIN_WARMUP_S))
                found["runs"][key] = {"workers": workers, "cores": list(cores), "idle_rss_mib": idle,
                                      **result.as_json()}
                if workers > 1 and o.runs("profile"):
                    found["profile"] = await _profile(bench, base + scenario.path, bench.body_file(scenario),
                                                      pids[0], ids_dir / f"{key}-profile.ids",
                                                      f"Authorization: Bearer {backend.tenant.api_key}")
                await asyncio.sleep(0.5)  # cut requests finish (counted 499, not 5xx) before the count
                found["runs"][key]["http_statuses"] = await bench.http_statuses(base, env)
            finally:
                await bench.stop(gateway)
            found.setdefault("gateway_logs", {})[key] = _log_summary(gateway.log)
        found["ratio"] = ratios(found["runs"])
        log(f"scale-out: {found['ratio']}")
        engine = _engine(database_url)
        try:
            assert backend is not None and backend.tenant is not None
            found["settle_wait_s"] = round(await checks.wait_settled(
                engine, backend.tenant.account_id, at_least=len(checks.seen_ids(ids_dir))), 2)
            found["correctness"] = await checks.correctness(engine, backend.tenant.account_id,
                                                            checks.seen_ids(ids_dir))
        finally:
            await engine.dispose()
        verdict = "PASSED" if found["correctness"]["passed"] else "FAILED"
        log(f"scale-out: correctness check {verdict}: {found['correctness']['client_2xx']} client 2xx, "
            f"{found['correctness']['usage_events']} usage events")
    finally:
        if not o.keep:
            await drop_database(o.admin_dsn, pg_database)
        if backend is not None and backend.tenant is not None:
            await _forget_redis_keys(o.redis_url, backend.tenant.account_id)
    return found


async def _profile(bench: Run, url: str, body: Path, pid: int, ids_file: Path, header: str) -> dict[str, Any]:
    """py-spy on one of the two workers under the same load (what a second worker changes per request:
    e.g. prometheus_client's multiprocess files, which the gateway uses with WORKERS > 1)."""
    o = bench.o
    output = bench.tmp / "profile-scaleout-2w.txt"
    spy = asyncio.create_task(profile.record(pid, o.profile_seconds, output, core=o.load_core))
    await asyncio.sleep(0.5)
    load = await run_wrk(url, body, connections=o.scaleout_connections, seconds=o.profile_seconds, core=o.load_core,
                         ids_file=ids_file, headers=(header,))
    said = await spy
    httpstats.tally(bench.seen, ok=load.ok, statuses=load.statuses)
    if not output.exists():
        return {"error": said.strip()[-500:]}
    keep = o.results_dir / "profile-scaleout-2w.collapsed.txt"
    shutil.copyfile(output, keep)
    return {"worker_pid": pid, "rps_under_profiler": round(load.rps, 1), "collapsed": keep.name,
            "rate_hz": profile.RATE, "seconds": o.profile_seconds, **profile.summarise(output)}


def ratios(runs: dict[str, Any]) -> dict[str, float | None]:
    """Two workers against one: throughput, CPU per request, and the capacity two dedicated cores would give.

    `throughput` is the goal's ratio (2 workers on all cores ÷ 1 worker alone on its core);
    `throughput_same_cores` divides by 1 worker on the same cores instead, sharing them with the load as
    the 2 workers do. `capacity` = 2 × (CPU ms per request with one worker ÷ with two): 2.0 when a second
    worker adds no cost per request (no lock or connection contention), whoever else shares the cores.
    """
    one, two = runs.get("1", {}).get("median", {}), runs.get("2", {}).get("median", {})
    shared = runs.get("1-shared", {}).get("median", {})
    cpu_one, cpu_two = one.get("cpu_ms_per_request"), two.get("cpu_ms_per_request")
    cpu = cpu_two / cpu_one if cpu_one and cpu_two else None
    return {"throughput": _ratio(two.get("rps"), one.get("rps")),
            "throughput_same_cores": _ratio(two.get("rps"), shared.get("rps")),
            "cpu_per_request": None if cpu is None else round(cpu, 2),
            "capacity": None if cpu is None else round(2 / cpu, 2)}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 2) if numerator and denominator else None


async def _workers(gateway: Child, count: int) -> list[int]:
    """The processes serving requests: the gateway itself with one worker, else its `count` children, once idle.

    uvicorn's supervisor answers nothing itself; /health answers as soon as one worker is up, so wait
    until all `count` exist and none is still busy importing (their CPU stops moving).
    """
    if count == 1:
        return [gateway.pid]
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    last: dict[int, int] = {}
    while time.monotonic() < deadline:
        pids = children(gateway.pid)
        ticks = cpu_ticks_of(pids)
        if len(pids) == count and ticks == last:
            return pids
        last = ticks
        await asyncio.sleep(0.5)
    raise BenchError(f"{gateway.name}: {count} workers did not start within {WORKER_START_TIMEOUT_S:.0f}s; "
                     f"see {Path(gateway.log)}")
