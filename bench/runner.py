"""One benchmark run: the phases, in order, and the numbers each one records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench import checks, httpstats, profile, scaleout
from bench.procs import REPO, Child, privaterouter, run_checked
from bench.proxy import TurnProxy
from bench.stack import (
    CHAT_MODEL,
    EMBED_MODEL,
    SLOW_MODEL,
    Backend,
    create_database,
    create_tenant,
    drop_database,
    gateway_env,
    new_secret,
    registry_text,
)
from bench.streams import StreamSpec, run_streams
from bench.system import (
    BenchError,
    core_times,
    cores,
    cpu_ticks,
    cpu_ticks_of,
    free_port,
    load_average,
    peak_rss_kib,
    raise_nofile,
    require_tools,
    reset_peak_rss,
    rss_kib,
    source_state,
    ticks_spent,
    ticks_to_ms,
)
from bench.wrk import KINDS, Scenario, direct_scenarios, gateway_scenarios, run_wrk

# Phases `--skip` can leave out (the throughput runs and the correctness check always run).
PHASES = ("ttft", "micro", "profile", "slow", "roundtrips", "scaleout")


@dataclass
class Options:
    quick: bool = False
    duration: float = 5.0
    warmup: float = 2.0
    reps: int = 3
    concurrency: tuple[int, ...] = (1, 16, 64)
    backends: tuple[str, ...] = ("postgres", "sqlite")
    slow_streams: int = 1000
    slow_tokens: int = 200
    slow_delay_ms: float = 20.0
    slow_ramp_s: float = 2.0
    ttft_streams: int = 200
    rt_requests: int = 40
    profile_seconds: int = 10
    micro_count: int = 300
    profile: bool = True
    scenarios: tuple[str, ...] = KINDS  # chat, stream, embed: which wrk scenarios run (and TTFT only with stream)
    skip: tuple[str, ...] = ()  # phases of PHASES left out
    scaleout_connections: int = 32  # wrk connections for the 1- and 2-worker comparison (16 per worker)
    admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/13"
    gateway_core: int = 1
    load_core: int = 0
    results_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent)
    keep: bool = False

    def runs(self, phase: str) -> bool:
        """Whether an optional phase runs (the slow streams also need a count above zero)."""
        if phase == "profile" and not self.profile:
            return False
        if phase == "slow" and self.slow_streams <= 0:
            return False
        if phase == "ttft" and "stream" not in self.scenarios:
            return False
        if phase == "scaleout" and ("postgres" not in self.backends or self.gateway_core == self.load_core):
            return False
        return phase not in self.skip

    @classmethod
    def quick_defaults(cls) -> Options:
        return cls(quick=True, duration=1, warmup=0, reps=1, slow_streams=200, slow_tokens=50, slow_ramp_s=0.5,
                   ttft_streams=30, rt_requests=10, profile_seconds=3, micro_count=30)


@dataclass
class Sample:
    """One measured wrk run."""

    rps: float
    requests: int
    ok: int
    errors: int
    p50: float
    p90: float
    p99: float
    cpu_ms_per_request: float | None  # the process(es) under test: the gateway's, or the emulator's for direct rows
    peak_rss_mib: float | None  # VmHWM in MiB, summed over the processes under test
    foreign_core_pct: float | None  # busy time on the gateway's core(s) not spent by the gateway, % of their time
    load1: float = 0.0  # the machine's 1-minute load average at the end of the run
    max_ms: float | None = None  # wrk's slowest request of the run: the largest stall
    p99_9: float | None = None
    pg_cpu_ms_per_request: float | None = None  # PostgreSQL's backends serving the throwaway database
    worker_cpu_split: list[float] | None = None  # each worker's share of the gateway's CPU (several workers)
    other_cpu_ms_per_request: dict[str, float] | None = None  # wrk, and the emulator behind a gateway

    @property
    def capacity(self) -> float | None:
        """Requests per second one fully busy core would serve at this CPU cost (robust to a busy machine)."""
        return 1000.0 / self.cpu_ms_per_request if self.cpu_ms_per_request else None


@dataclass
class ScenarioResult:
    target: str
    kind: str
    label: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    db: dict[str, float] = field(default_factory=dict)

    def median(self, name: str) -> float | None:
        values = [getattr(sample, name) for sample in self.samples if getattr(sample, name) is not None]
        return statistics.median(values) if values else None

    def as_json(self) -> dict[str, Any]:
        medians = {name: self.median(name) for name in ("rps", "p50", "p90", "p99", "p99_9", "max_ms",
                                                          "cpu_ms_per_request", "pg_cpu_ms_per_request",
                                                          "peak_rss_mib", "foreign_core_pct", "capacity", "load1")}
        stalls = [sample.max_ms for sample in self.samples if sample.max_ms is not None]
        return {"target": self.target, "kind": self.kind, "label": self.label, "concurrency": self.concurrency,
                "median": medians, "max_ms": max(stalls, default=None),
                "errors": sum(sample.errors for sample in self.samples),
                "requests": sum(sample.requests for sample in self.samples),
                "samples": [{**asdict(sample), "capacity": sample.capacity} for sample in self.samples],
                "db": self.db}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Run:
    def __init__(self, options: Options, command: str) -> None:
        self.o = options
        self.command = command
        self.tmp = Path(tempfile.mkdtemp(prefix="pr-bench-"))
        self.results: dict[str, Any] = {"command": command, "options": _jsonable(asdict(options)),
                                        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "scenarios": [],
                                        "backends": {}}
        self.children: list[Child] = []
        self.bodies: dict[tuple[str, str], Path] = {}
        # What the clients saw from the gateway under test, by status class (reset when one starts).
        self.seen: Counter[str] = Counter()

    # --- processes ---------------------------------------------------------------------------------

    def start(self, name: str, args: list[str], *, core: int | str | None,
              env: dict[str, str] | None = None) -> Child:
        child = Child(name, args, core=core, log=self.tmp / f"{name.replace(' ', '-')}.log", env=env, cwd=self.tmp)
        self.children.append(child)
        return child

    async def stop(self, child: Child) -> None:
        await asyncio.to_thread(child.stop)
        if child in self.children:
            self.children.remove(child)

    def body_file(self, scenario: Scenario) -> Path:
        key = (scenario.target, scenario.kind)
        if key not in self.bodies:
            path = self.tmp / f"body-{scenario.target}-{scenario.kind}.json"
            path.write_text(json.dumps(scenario.body))
            self.bodies[key] = path
        return self.bodies[key]

    # --- one wrk measurement -----------------------------------------------------------------------

    async def measure(self, base_url: str, scenario: Scenario, connections: int, seconds: float,
                      pids: list[int], *, ids_file: Path | None, headers: tuple[str, ...],
                      cores: tuple[int, ...] | None, pg_database: str | None = None,
                      others: dict[str, list[int]] | None = None) -> Sample:
        """One wrk run; CPU and peak RSS summed over `pids` (the gateway's workers, or the emulator).

        `others` names further processes whose CPU per request is recorded too (the emulator behind the
        gateway); wrk's own CPU comes from this process's reaped children (wrk is the only one reaped here).
        """
        pg_before = await self.pg_ticks(pg_database)
        others_before = {name: cpu_ticks_of(group) for name, group in (others or {}).items()}
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        ticks_before = cpu_ticks_of(pids)
        core_before = core_times(cores) if cores else None
        for pid in pids:
            reset_peak_rss(pid)
        result = await run_wrk(base_url + scenario.path, self.body_file(scenario), connections=connections,
                               seconds=seconds, core=self.o.load_core, ids_file=ids_file, headers=headers)
        httpstats.tally(self.seen, ok=result.ok, statuses=result.statuses)
        spent = ticks_spent(ticks_before, cpu_ticks_of(pids))
        ticks = sum(spent.values())
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_ms = 1000 * (children_after.ru_utime + children_after.ru_stime - children_before.ru_utime
                         - children_before.ru_stime)
        pg_spent = sum(ticks_spent(pg_before, await self.pg_ticks(pg_database)).values()) if pg_database else None
        foreign = None
        if core_before is not None and cores:
            core_after = core_times(cores)
            total = core_after.total - core_before.total
            foreign = round(max(0.0, 100 * (core_after.busy - core_before.busy - ticks) / total), 1) if total else None
        latency = result.latency_ms

        def per_request(ticks: int) -> float | None:
            return round(ticks_to_ms(ticks) / result.requests, 4) if result.requests else None

        peak = 0
        for pid in pids:
            with contextlib.suppress(OSError, BenchError):
                peak += peak_rss_kib(pid)
        split = [round(spent.get(pid, 0) / ticks, 3) if ticks else 0.0 for pid in pids] if len(pids) > 1 else None
        other: dict[str, float] = {}
        if result.requests:
            other["wrk"] = round(wrk_ms / result.requests, 4)
            for name, group in (others or {}).items():
                other[name] = per_request(sum(ticks_spent(others_before[name], cpu_ticks_of(group)).values())) or 0.0
        return Sample(rps=round(result.rps, 1), requests=result.requests, ok=result.ok, errors=result.errors,
                      p50=latency["50"], p90=latency["90"], p99=latency["99"], p99_9=latency.get("99.9"),
                      max_ms=latency.get("max"), cpu_ms_per_request=per_request(ticks),
                      pg_cpu_ms_per_request=per_request(pg_spent) if pg_spent is not None else None,
                      peak_rss_mib=round(peak / 1024, 1), foreign_core_pct=foreign, load1=load_average(),
                      worker_cpu_split=split, other_cpu_ms_per_request=other or None)

    async def pg_ticks(self, database: str | None) -> dict[int, int]:
        """CPU ticks of the PostgreSQL backends connected to `database` (same machine: /proc is readable)."""
        if database is None:
            return {}
        try:
            return cpu_ticks_of(await checks.backend_pids(self.o.admin_dsn, database))
        except (OSError, asyncpg.PostgresError):  # informational: a failed look-up leaves the column empty
            return {}

    async def scenario(self, base_url: str, scenario: Scenario, connections: int, pids: list[int], *,
                       ids_dir: Path | None = None, headers: tuple[str, ...] = (),
                       cores: tuple[int, ...] | None = None, pg_database: str | None = None,
                       ids_prefix: str = "", others: dict[str, list[int]] | None = None,
                       warmup: float | None = None) -> ScenarioResult:
        """Warm-up (default `--warmup`), then `--reps` measured runs of one scenario at one concurrency."""
        result = ScenarioResult(scenario.target, scenario.kind, scenario.label, connections)
        warmup = self.o.warmup if warmup is None else warmup
        runs = ([("warmup", warmup)] if warmup > 0 else []) + [
            (f"rep{rep}", self.o.duration) for rep in range(1, self.o.reps + 1)]
        for name, seconds in runs:
            ids_file = ids_dir / f"{ids_prefix}{scenario.kind}-c{connections}-{name}.ids" if ids_dir else None
            sample = await self.measure(base_url, scenario, connections, seconds, pids, ids_file=ids_file,
                                        headers=headers, cores=cores, pg_database=pg_database, others=others)
            if name != "warmup":
                result.samples.append(sample)
        last = result.samples[-1]
        log(f"{scenario.target:8} {scenario.label:24} c={connections:<4} {result.median('rps'):9.1f} req/s  "
            f"p50 {result.median('p50'):7.2f} ms  p99 {result.median('p99'):7.2f} ms  errors "
            f"{sum(s.errors for s in result.samples)}  cpu/req {last.cpu_ms_per_request} ms")
        return result

    # --- phases ------------------------------------------------------------------------------------

    async def main(self) -> dict[str, Any]:
        require_tools()
        if cores() < 2:
            log("fewer than 2 cores: the gateway and the load share core 0 (numbers are not comparable)")
            self.o.gateway_core = self.o.load_core = 0
        os.sched_setaffinity(0, {self.o.load_core})  # this orchestrator and its helpers stay off the gateway's core
        self.results["nofile"] = raise_nofile(65536)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # stop cleanly: children stopped, database dropped
            if task is not None:
                loop.add_signal_handler(signum, task.cancel)
        self.results["source"] = source_state(str(REPO))
        try:
            await self.phases()
        finally:
            for child in list(self.children):
                await self.stop(child)
            if not self.o.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                log(f"kept {self.tmp}")
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        if source_state(str(REPO)) != self.results["source"]:
            self.results["source"]["changed_during_run"] = "yes: the code under test changed while the run went on"
        return self.results

    async def phases(self) -> None:
        o = self.o
        fast_port, slow_port = free_port(), free_port()
        fast = self.start("emulator", [*privaterouter(), "fake-ollama", "--port", str(fast_port), "--tokens", "32"],
                          core=o.load_core)
        slow = self.start("slow-emulator", [*privaterouter(), "fake-ollama", "--port", str(slow_port), "--tokens",
                                            str(o.slow_tokens), "--token-delay-ms", str(o.slow_delay_ms)],
                          core=o.load_core)
        await asyncio.to_thread(fast.wait_http, f"http://127.0.0.1:{fast_port}/api/version")
        await asyncio.to_thread(slow.wait_http, f"http://127.0.0.1:{slow_port}/api/version")
        self.fast_port, self.slow_port, self.fast_pid = fast_port, slow_port, fast.pid
        self.models_file = self.tmp / "models.yaml"
        self.models_file.write_text(registry_text(f"http://127.0.0.1:{fast_port}", f"http://127.0.0.1:{slow_port}"))

        log(f"direct: the emulator on core {o.load_core} (pid {fast.pid})")
        direct_ttft: dict[str, Any] | None = None
        for scenario in self.selected(direct_scenarios()):
            for connections in o.concurrency:
                result = await self.scenario(f"http://127.0.0.1:{fast_port}", scenario, connections, [fast.pid])
                self.results["scenarios"].append(result.as_json())
        if o.runs("ttft"):
            direct_ttft = await self.ttft_probe(StreamSpec(fast_port, "/api/chat", direct_scenarios()[1].body,
                                                           b'"done":', b'"done":true'), None)
            self.results["ttft_direct"] = direct_ttft
        for name in o.backends:
            await self.backend(name)
        if o.runs("scaleout"):
            self.results["backends"]["scaleout"] = await scaleout.run(self)

    def tally_streams(self, run: Any) -> None:
        """Count a stream client run's answers in `seen` (a stream that never got a status line: none)."""
        statuses = Counter(str(stream.status) for stream in run.streams if stream.status)
        httpstats.tally(self.seen, ok=sum(count for status, count in statuses.items() if status.startswith("2")),
                        statuses={status: count for status, count in statuses.items() if not status.startswith("2")})

    async def http_statuses(self, base: str, env: dict[str, str]) -> dict[str, Any]:
        """The gateway's pr_http_requests_total by status class against `seen` (see bench/httpstats.py)."""
        try:
            counted = await asyncio.to_thread(httpstats.scrape, base, env["METRICS_TOKEN"])
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        found = httpstats.compare(counted, dict(self.seen))
        log(f"status counts: gateway {found['gateway']}, clients {found['clients']}, "
            f"5xx no client saw: {found['unseen_5xx']}")
        return found

    def selected(self, scenarios: list[Scenario]) -> list[Scenario]:
        """The scenarios `--scenarios` asked for, in the usual order."""
        return [scenario for scenario in scenarios if scenario.kind in self.o.scenarios]

    async def backend(self, name: str) -> None:
        o = self.o
        data_dir = self.tmp / f"data-{name}"
        ids_dir = self.tmp / f"ids-{name}"
        ids_dir.mkdir(parents=True)
        app_secret, jwt_secret = new_secret(), new_secret()
        port = free_port()
        pg_database = None
        if name == "postgres":
            pg_database = await create_database(o.admin_dsn)
            host = o.admin_dsn.split("@", 1)[1].split("/", 1)[0]
            database_url = f"postgresql+asyncpg://postgres@{host}/{pg_database}"
            redis_url: str | None = o.redis_url
        else:
            database_url = f"sqlite+aiosqlite:///{data_dir / 'privaterouter.db'}"
            redis_url = None
        env = gateway_env(dict(os.environ), models_file=self.models_file, data_dir=data_dir, port=port,
                          database_url=database_url if name == "postgres" else None, redis_url=redis_url,
                          app_secret=app_secret, jwt_secret=jwt_secret)
        backend = Backend(name, database_url, env, data_dir, pg_database=pg_database, ids_dir=ids_dir)
        summary: dict[str, Any] = {
            "database": "PostgreSQL (throwaway database)" if pg_database else "SQLite (embedded)",
            "redis": redis_url or "none (in-process limiter)"}
        self.results["backends"][name] = summary
        try:
            await asyncio.to_thread(run_checked, [*privaterouter(), "migrate"], env=env, cwd=self.tmp)
            backend.tenant = await create_tenant(database_url, app_secret)
            gateway = self.start(f"gateway-{name}", [*privaterouter(), "serve", "--no-migrate"], core=o.gateway_core,
                                 env=env)
            base = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(gateway.wait_http, base + "/health")
            self.seen = Counter()
            await asyncio.sleep(1.0)
            summary["idle_rss_mib_at_start"] = round(rss_kib(gateway.pid) / 1024, 1)
            log(f"{name}: gateway pid {gateway.pid} on core {o.gateway_core}, idle RSS "
                f"{summary['idle_rss_mib_at_start']} MiB")
            await self.throughput(backend, base, gateway)
            summary["idle_rss_mib_after_load"] = round(rss_kib(gateway.pid) / 1024, 1)
            headers = (("Authorization", f"Bearer {backend.tenant.api_key}"),)
            stream_body = gateway_scenarios(name, CHAT_MODEL, EMBED_MODEL)[1].body
            if o.runs("ttft"):
                summary["ttft"] = await self.ttft_probe(StreamSpec(port, "/v1/chat/completions", stream_body,
                                                                   b"data: ", b"[DONE]", headers), ids_dir / "ttft.ids")
            if name == "postgres":
                if o.runs("micro"):
                    summary["micro"] = await self.micro(backend)
                if o.runs("profile"):  # before the slow streams, whose idle upstream connections linger in the pool
                    summary["profile"] = await self.profile(backend, base, gateway)
                if o.runs("slow"):
                    summary["slow_streams"] = await self.slow_streams(backend, port, gateway)
            engine = _engine(database_url)
            try:
                settle_s = await checks.wait_settled(engine, backend.tenant.account_id,
                                                     at_least=len(checks.seen_ids(ids_dir)))
            finally:
                await engine.dispose()
            summary["settle_wait_s"] = round(settle_s, 2)
            summary["http_statuses"] = await self.http_statuses(base, env)
            summary["gateway_exit"] = (await asyncio.to_thread(gateway.stop))
            self.children.remove(gateway)
            summary["gateway_log"] = _log_summary(gateway.log)
            if name == "postgres" and o.runs("roundtrips"):
                summary["round_trips"] = await self.round_trips(backend)
            engine = _engine(database_url)
            try:
                summary["correctness"] = await checks.correctness(engine, backend.tenant.account_id,
                                                                  checks.seen_ids(ids_dir))
            finally:
                await engine.dispose()
            verdict = "PASSED" if summary["correctness"]["passed"] else "FAILED"
            log(f"{name}: correctness check {verdict}: {summary['correctness']['client_2xx']} client 2xx, "
                f"{summary['correctness']['usage_events']} usage events")
        finally:
            if pg_database and not o.keep:
                await drop_database(o.admin_dsn, pg_database)
            if backend.tenant is not None and redis_url:
                await _forget_redis_keys(redis_url, backend.tenant.account_id)

    async def throughput(self, backend: Backend, base: str, gateway: Child) -> None:
        assert backend.tenant is not None
        headers = (f"Authorization: Bearer {backend.tenant.api_key}",)
        engine = _engine(backend.database_url)
        try:
            for scenario in self.selected(gateway_scenarios(backend.name, CHAT_MODEL, EMBED_MODEL)):
                for connections in self.o.concurrency:
                    # Each scenario starts from a quiet gateway: the previous one's settlements are written.
                    await checks.wait_settled(engine, backend.tenant.account_id, at_least=0)
                    before = await self.db_counters(backend, engine)
                    result = await self.scenario(base, scenario, connections, [gateway.pid], ids_dir=backend.ids_dir,
                                                 headers=headers, cores=(self.o.gateway_core,),
                                                 pg_database=backend.pg_database,
                                                 others={"emulator": [self.fast_pid]})
                    after = await self.db_counters(backend, engine)
                    if before and after and after["events"] > before["events"]:
                        admitted = after["events"] - before["events"]
                        result.db = {"admitted": admitted, **{
                            f"{key}_per_request": round((after[key] - before[key]) / admitted, 4)
                            for key in ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted",
                                        "sessions")}}
                    self.results["scenarios"].append(result.as_json())
        finally:
            await engine.dispose()

    async def db_counters(self, backend: Backend, engine: Any) -> dict[str, int]:
        """pg_stat_database and the usage-event count, once the writer and the statistics have caught up."""
        if engine is None or backend.pg_database is None or backend.tenant is None:
            return {}
        await asyncio.sleep(1.2)  # usage writer: 50 ms; each backend reports its statistics about once a second
        events = await checks.usage_event_count(engine, backend.tenant.account_id)
        await asyncio.sleep(1.1)
        return {"events": events, **await checks.pg_stats(self.o.admin_dsn, backend.pg_database)}

    async def ttft_probe(self, spec: StreamSpec, ids_file: Path | None) -> dict[str, Any]:
        """Time to first token at concurrency 1 (fresh connection per stream, clock starts at the request)."""
        warm = await run_streams(spec, count=max(3, self.o.ttft_streams // 10), concurrency=1)
        run = await run_streams(spec, count=self.o.ttft_streams, concurrency=1)
        for done in (warm, run):
            self.tally_streams(done)
        if ids_file is not None:
            _write_ids(warm, ids_file.with_suffix(".warmup.ids"))
            _write_ids(run, ids_file)
        summary = run.summary()
        log(f"TTFT c=1 on :{spec.port}: p50 {summary['ttft_ms'].get('p50')} ms over {summary['complete']} streams")
        return summary

    async def micro(self, backend: Backend) -> dict[str, Any]:
        """bench/micro.py on the gateway's core while the gateway idles, with an account of its own."""
        tenant = await create_tenant(backend.database_url, backend.env["APP_SECRET_KEY"])
        args = ["taskset", "-c", str(self.o.gateway_core), sys.executable, "-m", "bench.micro",
                "--database-url", backend.database_url, "--emulator", f"http://127.0.0.1:{self.fast_port}",
                "--redis-url", self.o.redis_url, "--account-id", tenant.account_id, "--count", str(self.o.micro_count)]
        process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE, env=backend.env)
        out, err = await asyncio.wait_for(process.communicate(), timeout=300)
        if process.returncode != 0:
            log(f"micro-benchmarks failed: {err.decode(errors='replace')[-800:]}")
            return {"error": err.decode(errors="replace")[-800:]}
        found: dict[str, Any] = json.loads(out)
        for row in found["results"]:
            log(f"micro {row['cpu_ms']:8.3f} ms CPU {row['wall_ms']:8.3f} ms wall  {row['name']}")
        return found

    async def slow_streams(self, backend: Backend, port: int, gateway: Child) -> dict[str, Any]:
        """Many concurrent slow streams, direct then through the gateway: completion, TTFT, gaps, memory."""
        assert backend.tenant is not None
        o = self.o
        timeout = o.slow_tokens * o.slow_delay_ms / 1000 * 10 + 60
        direct = StreamSpec(self.slow_port, "/api/chat", {"model": "gemma4:latest", "messages": _prompt(),
                                                            "stream": True}, b'"done":', b'"done":true')
        log(f"slow streams: {o.slow_streams} direct ({o.slow_tokens} tokens, {o.slow_delay_ms} ms apart)")
        direct_run = await run_streams(direct, count=o.slow_streams, concurrency=o.slow_streams, ramp_s=o.slow_ramp_s,
                                       timeout=timeout)
        headers = (("Authorization", f"Bearer {backend.tenant.api_key}"),)
        via = StreamSpec(port, "/v1/chat/completions", {"model": SLOW_MODEL, "messages": _prompt(), "stream": True},
                         b"data: ", b"[DONE]", headers)
        await asyncio.sleep(1.0)
        reset_peak_rss(gateway.pid)
        before_rss = rss_kib(gateway.pid)
        ticks = cpu_ticks(gateway.pid)
        log(f"slow streams: {o.slow_streams} through the gateway")
        via_run = await run_streams(via, count=o.slow_streams, concurrency=o.slow_streams, ramp_s=o.slow_ramp_s,
                                    timeout=timeout)
        cpu_ms = ticks_to_ms(cpu_ticks(gateway.pid) - ticks)
        peak = peak_rss_kib(gateway.pid)
        self.tally_streams(via_run)
        _write_ids(via_run, backend.ids_dir / "slow.ids")
        result: dict[str, Any] = {"streams": o.slow_streams, "tokens": o.slow_tokens, "token_delay_ms": o.slow_delay_ms,
                  "ramp_s": o.slow_ramp_s, "direct": direct_run.summary(), "gateway": via_run.summary(),
                  "rss_before_mib": round(before_rss / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
                  "rss_added_mib": round((peak - before_rss) / 1024, 1),
                  "gateway_cpu_ms_per_stream": round(cpu_ms / max(1, o.slow_streams), 2)}
        log(f"slow streams: gateway {result['gateway']['complete']}/{o.slow_streams} complete, "
            f"TTFT p50 {result['gateway']['ttft_ms'].get('p50')} ms (direct {result['direct']['ttft_ms'].get('p50')}),"
            f" gap p50 {result['gateway']['gap_ms'].get('p50')} ms (direct {result['direct']['gap_ms'].get('p50')}),"
            f" RSS +{result['rss_added_mib']} MiB")
        return result

    async def profile(self, backend: Backend, base: str, gateway: Child) -> dict[str, Any]:
        """py-spy on the gateway while wrk drives one scenario at concurrency 16 (not part of the measured runs)."""
        assert backend.tenant is not None
        headers = (f"Authorization: Bearer {backend.tenant.api_key}",)
        found: dict[str, Any] = {}
        for scenario in self.selected(gateway_scenarios(backend.name, CHAT_MODEL, EMBED_MODEL)[:2]):
            output = self.tmp / f"profile-{scenario.kind}.txt"
            seconds = self.o.profile_seconds
            ticks = cpu_ticks(gateway.pid)
            began = time.monotonic()
            spy = asyncio.create_task(profile.record(gateway.pid, seconds, output, core=self.o.load_core))
            await asyncio.sleep(0.5)
            load = await run_wrk(base + scenario.path, self.body_file(scenario), connections=16, seconds=seconds,
                                 core=self.o.load_core, ids_file=backend.ids_dir / f"profile-{scenario.kind}.ids",
                                 headers=headers)
            spy_output = await spy
            httpstats.tally(self.seen, ok=load.ok, statuses=load.statuses)
            cpu_share = ticks_to_ms(cpu_ticks(gateway.pid) - ticks) / 1000 / (time.monotonic() - began)
            if not output.exists():
                found[scenario.kind] = {"error": spy_output.strip()[-500:]}
                continue
            keep = self.o.results_dir / f"profile-{scenario.kind}-c16.collapsed.txt"
            shutil.copyfile(output, keep)
            found[scenario.kind] = {"rps_under_profiler": round(load.rps, 1), "collapsed": keep.name,
                                    "rate_hz": profile.RATE, "seconds": seconds,
                                    "gateway_cpu_share": round(cpu_share, 3), **profile.summarise(output)}
            log(f"profile {scenario.kind}: {found[scenario.kind]['samples']} samples -> {keep}")
        return found

    async def round_trips(self, backend: Backend) -> dict[str, Any]:
        """Count database and Redis round trips per request through counting relays (sequential requests)."""
        assert backend.tenant is not None
        pg_proxy, redis_proxy = TurnProxy(5432, postgres=True), TurnProxy(6379, postgres=False)
        pg_port, redis_port = await pg_proxy.start(), await redis_proxy.start()
        env = dict(backend.env)
        env["DATABASE_URL"] = backend.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{pg_port}")
        env["REDIS_URL"] = self.o.redis_url.replace("127.0.0.1:6379", f"127.0.0.1:{redis_port}")
        port = free_port()
        env["PORT"] = str(port)
        gateway = self.start("gateway-postgres-roundtrips", [*privaterouter(), "serve", "--no-migrate"],
                             core=self.o.gateway_core, env=env)
        found: dict[str, Any] = {"method": "counting relays between the gateway and PostgreSQL/Redis; "
                                           "sequential requests 150 ms apart"}
        try:
            await asyncio.to_thread(gateway.wait_http, f"http://127.0.0.1:{port}/health")
            headers = (("Authorization", f"Bearer {backend.tenant.api_key}"),)
            for scenario in self.selected(gateway_scenarios(backend.name, CHAT_MODEL, EMBED_MODEL)):
                marker, terminal = ((b"data: ", b"[DONE]") if scenario.kind == "stream"
                                    else (b'"object"', b'"usage"'))
                spec = StreamSpec(port, scenario.path, scenario.body, marker, terminal, headers)
                warm = await run_streams(spec, count=5, concurrency=1)  # connections, prepared statements
                _write_ids(warm, backend.ids_dir / f"roundtrips-{scenario.kind}-warmup.ids")
                await asyncio.sleep(0.3)
                first_turn = len(pg_proxy.turns), len(redis_proxy.turns)
                windows: list[tuple[float, float]] = []
                ids: list[str] = []
                for _ in range(self.o.rt_requests):
                    run = await run_streams(spec, count=1, concurrency=1)
                    timing = run.streams[0]
                    if timing.head is not None:
                        windows.append((timing.sent_at, timing.sent_at + timing.head))
                    if timing.complete:
                        ids.append(timing.request_id)
                    await asyncio.sleep(0.15)
                await asyncio.sleep(0.3)
                (backend.ids_dir / f"roundtrips-{scenario.kind}.ids").write_text("".join(f"{i}\n" for i in ids))
                found[scenario.kind] = _attribute(pg_proxy.turns[first_turn[0]:], redis_proxy.turns[first_turn[1]:],
                                                  windows)
                log(f"round trips {scenario.kind}: {found[scenario.kind]['summary']}")
            await asyncio.to_thread(gateway.stop)
            self.children.remove(gateway)
        finally:
            if gateway in self.children:
                await self.stop(gateway)
            await pg_proxy.aclose()
            await redis_proxy.aclose()
        found["pg_connections"] = pg_proxy.connections
        return found


def _attribute(pg_turns: list[Any], redis_turns: list[Any], windows: list[tuple[float, float]]) -> dict[str, Any]:
    """Turns inside a request's window (request sent -> first byte back) are on its critical path."""
    per_request_pg: list[int] = []
    per_request_redis: list[int] = []
    sequences: Counter[tuple[str, ...]] = Counter()
    for start, end in windows:
        inside = [turn for turn in pg_turns if turn.is_query and start <= turn.at <= end]
        per_request_pg.append(len(inside))
        per_request_redis.append(sum(1 for turn in redis_turns if start <= turn.at <= end))
        sequences[tuple(_sql(turn.statements) for turn in inside)] += 1
    n = max(1, len(windows))
    total_pg = sum(1 for turn in pg_turns if turn.is_query)
    common = [{"requests": count, "round_trips": list(sequence)} for sequence, count in sequences.most_common(3)]
    pg_hist = dict(sorted(Counter(per_request_pg).items()))
    summary = (f"PostgreSQL {statistics.median(per_request_pg) if per_request_pg else 0} on the critical path "
               f"(median; histogram {pg_hist}), {round(total_pg / n, 2)} per request in all; Redis "
               f"{statistics.median(per_request_redis) if per_request_redis else 0}")
    return {"requests": len(windows),
            "pg_critical_median": statistics.median(per_request_pg) if per_request_pg else None,
            "pg_critical_mean": round(sum(per_request_pg) / n, 2), "pg_critical_histogram": pg_hist,
            "pg_total_per_request": round(total_pg / n, 2),
            "redis_critical_median": statistics.median(per_request_redis) if per_request_redis else None,
            "redis_total_per_request": round(len(redis_turns) / n, 2), "critical_sequences": common,
            "summary": summary}


def _log_summary(path: Path) -> dict[str, Any]:
    """Lines per level in the gateway's JSON log, and the first few warnings and errors (not access lines)."""
    levels: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    notable: list[str] = []
    with path.open(errors="replace") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                levels["not json"] += 1
                continue
            level = str(entry.get("level", "access" if "status" in entry else "?"))
            levels[level] += 1
            if level in {"warning", "error", "critical"}:
                exception = str(entry.get("exception") or "").strip().splitlines()
                text = f"{level}: {entry.get('logger')}: {str(entry.get('message'))[:200]}"
                if exception:
                    text += f" [{exception[-1][:200]}]"
                kinds[text.split(" (request_id=")[0] + (f" [{exception[-1][:200]}]" if exception else "")] += 1
                if len(notable) < 5:
                    notable.append(text)
    return {"lines": dict(levels), "warnings_and_errors": notable, "kinds": dict(kinds.most_common(10))}


def _sql(statements: list[str]) -> str:
    if not statements:
        return "(prepare/sync)"
    return " + ".join(" ".join(statement.split())[:90] for statement in statements)


def _prompt() -> list[dict[str, str]]:
    return [{"role": "user", "content": "Write a long note about streaming through an API gateway."}]


def _write_ids(run: Any, path: Path | None) -> None:
    if path is not None:
        path.write_text("".join(f"{s.request_id}\n" for s in run.streams if s.complete and 200 <= s.status < 300))


def _engine(url: str) -> Any:
    from gateway.db.engine import create_engine

    return create_engine(url, pool_size=2)


async def _forget_redis_keys(redis_url: str, account_id: str) -> None:
    """Delete the bench account's rate-limit keys (bounded SCAN; nothing else in that database is touched)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{account_id}*", count=1000)]
        if keys:
            await client.delete(*keys[:10_000])
    finally:
        await client.aclose()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
