"""RESULTS.md, the targets verdict, and the latest table in bench/README.md, from results.json's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

NOTES = Path(__file__).resolve().parent / "notes" / "proposals.md"
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
KINDS = ("chat", "stream", "embed")
KIND_LABEL = {"chat": "chat, non-stream", "stream": "chat, stream (32 tokens)", "embed": "embeddings"}
TARGET_LABEL = {"direct": "direct (emulator)", "postgres": "gateway, PostgreSQL + Redis",
                "sqlite": "gateway, SQLite (embedded)"}


def _find(results: dict[str, Any], target: str, kind: str, concurrency: int) -> dict[str, Any] | None:
    for scenario in results["scenarios"]:
        if (scenario["target"], scenario["kind"], scenario["concurrency"]) == (target, kind, concurrency):
            return dict(scenario)
    return None


def _median(results: dict[str, Any], target: str, kind: str, concurrency: int, name: str) -> float | None:
    scenario = _find(results, target, kind, concurrency)
    return None if scenario is None else scenario["median"].get(name)


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _verdict(name: str, value: float | None, limit: float, unit: str, *, at_least: bool) -> dict[str, Any]:
    if value is None:
        return {"target": name, "measured": None, "unit": unit, "met": None, "gap": "not measured"}
    met = value >= limit if at_least else value <= limit
    if met:
        gap = f"met with {abs(value - limit):,.2f} {unit} to spare"
    else:
        miss = limit - value if at_least else value - limit
        gap = f"missed by {miss:,.2f} {unit} ({100 * miss / limit:.0f}% of the target)"
    return {"target": name, "measured": round(value, 3), "unit": unit, "met": met, "gap": gap}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for the full production path (PostgreSQL + Redis), each met or missed by how much."""
    pg = results["backends"].get("postgres", {})
    found = [
        _verdict("non-streaming chat ≥ 1,000 req/s at c=16", _median(results, "postgres", "chat", 16, "rps"),
                 1000, "req/s", at_least=True),
        _verdict("embeddings ≥ 1,500 req/s at c=16", _median(results, "postgres", "embed", 16, "rps"), 1500,
                 "req/s", at_least=True),
        _verdict("streaming chat (32 tokens) ≥ 500 streams/s at c=16",
                 _median(results, "postgres", "stream", 16, "rps"), 500, "streams/s", at_least=True),
    ]
    for item, kind in zip(found, ("chat", "embed", "stream"), strict=True):
        item["capacity"] = _median(results, "postgres", kind, 16, "capacity")
    for kind in KINDS:
        gateway = _median(results, "postgres", kind, 1, "p50")
        direct = _median(results, "direct", kind, 1, "p50")
        added = None if gateway is None or direct is None else gateway - direct
        found.append(_verdict(f"added p50 latency at c=1 ≤ 1 ms ({KIND_LABEL[kind]})", added, 1.0, "ms",
                              at_least=False))
    gateway_ttft = pg.get("ttft", {}).get("ttft_ms", {}).get("p50")
    direct_ttft = results.get("ttft_direct", {}).get("ttft_ms", {}).get("p50")
    found.append(_verdict("time-to-first-token overhead ≤ 1 ms (p50, c=1)",
                          None if gateway_ttft is None or direct_ttft is None else gateway_ttft - direct_ttft, 1.0,
                          "ms", at_least=False))
    found.append(_verdict("idle RSS ≤ 80 MB", pg.get("idle_rss_mb_at_start"), 80, "MB", at_least=False))
    slow = pg.get("slow_streams", {})
    found.append(_verdict(f"{slow.get('streams', 1000):,} concurrent slow streams within +150 MB",
                          slow.get("rss_added_mb"), 150, "MB", at_least=False))
    if slow:
        complete = slow["gateway"]["complete"]
        found.append({"target": f"{slow['streams']:,} concurrent slow streams all complete",
                      "measured": complete, "unit": "streams", "met": complete == slow["streams"],
                      "gap": "all complete" if complete == slow["streams"]
                      else f"{slow['streams'] - complete} did not complete"})
    trips = pg.get("round_trips", {})
    worst = max((trips[kind]["pg_critical_median"] for kind in KINDS if kind in trips
                 and trips[kind]["pg_critical_median"] is not None), default=None)
    found.append(_verdict("≤ 2 database round trips on a request's critical path (median)", worst, 2, "round trips",
                          at_least=False))
    return found


def targets_table(results: dict[str, Any]) -> str:
    lines = ["| target | measured | met | gap |", "| --- | --- | --- | --- |"]
    for item in results.get("targets") or targets(results):
        measured = "–" if item["measured"] is None else f"{item['measured']:,} {item['unit']}"
        if item.get("capacity"):
            measured += f" ({item['capacity']:,.0f} per CPU-second)"
        met = {True: "yes", False: "**no**", None: "–"}[item["met"]]
        lines.append(f"| {item['target']} | {measured} | {met} | {item['gap']} |")
    return "\n".join(lines)


def main_table(results: dict[str, Any]) -> str:
    lines = ["| scenario | path | c | req/s | p50 ms | p90 ms | p99 ms | errors | CPU ms/req | req/s per CPU-second "
             "| peak RSS MB | DB xacts/req | DB rows written/req | DB connections opened/1k req | load avg |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        for target in ("direct", "postgres", "sqlite"):
            for scenario in results["scenarios"]:
                if scenario["kind"] != kind or scenario["target"] != target:
                    continue
                m, db = scenario["median"], scenario.get("db") or {}
                xacts = (db["xact_commit_per_request"] + db["xact_rollback_per_request"]) if db else None
                rows = (db["tup_inserted_per_request"] + db["tup_updated_per_request"]
                        + db["tup_deleted_per_request"]) if db else None
                sessions = 1000 * db["sessions_per_request"] if "sessions_per_request" in db else None
                lines.append(
                    f"| {KIND_LABEL[kind]} | {TARGET_LABEL[target]} | {scenario['concurrency']} | {_fmt(m['rps'])} | "
                    f"{_fmt(m['p50'], 2)} | {_fmt(m['p90'], 2)} | {_fmt(m['p99'], 2)} | {scenario['errors']} | "
                    f"{_fmt(m['cpu_ms_per_request'], 3)} | {_fmt(m.get('capacity'), 0)} | {_fmt(m['peak_rss_mb'])} | "
                    f"{_fmt(xacts, 2)} | {_fmt(rows, 2)} | {_fmt(sessions, 1)} | {_fmt(m.get('load1'), 1)} |")
    return "\n".join(lines)


def added_latency_table(results: dict[str, Any]) -> str:
    lines = ["| scenario | direct p50 ms | PostgreSQL + Redis p50 ms | added | SQLite p50 ms | added |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        direct = _median(results, "direct", kind, 1, "p50")
        cells = [KIND_LABEL[kind], _fmt(direct, 2)]
        for target in ("postgres", "sqlite"):
            value = _median(results, target, kind, 1, "p50")
            cells += [_fmt(value, 2), _fmt(None if value is None or direct is None else value - direct, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pcts(summary: dict[str, Any], key: str) -> str:
    values = summary.get(key) or {}
    return " / ".join(_fmt(values.get(name), 2) for name in ("p50", "p90", "p99")) if values else "–"


def ttft_table(results: dict[str, Any]) -> str:
    lines = ["| path | streams complete | TTFT p50 / p90 / p99 ms |", "| --- | ---: | ---: |"]
    direct = results.get("ttft_direct")
    if direct:
        lines.append(f"| direct (emulator) | {direct['complete']}/{direct['streams']} | {_pcts(direct, 'ttft_ms')} |")
    for name, backend in results["backends"].items():
        ttft = backend.get("ttft")
        if ttft:
            lines.append(f"| {TARGET_LABEL[name]} | {ttft['complete']}/{ttft['streams']} | {_pcts(ttft, 'ttft_ms')} |")
    return "\n".join(lines)


def slow_section(slow: dict[str, Any]) -> str:
    if not slow:
        return "Not run."
    head = (f"{slow['streams']:,} concurrent streams of {slow['tokens']} tokens, {slow['token_delay_ms']:g} ms "
            f"apart (a second emulator), all started within {slow['ramp_s']:g} s; one connection per stream.\n\n")
    lines = ["| path | complete | errors | wall s | TTFT p50 / p90 / p99 ms | mean gap between tokens p50 / p90 / "
             "p99 ms |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for label, key in (("direct (emulator)", "direct"), ("gateway, PostgreSQL + Redis", "gateway")):
        run = slow[key]
        lines.append(f"| {label} | {run['complete']}/{run['streams']} | {run['errors'] or 'none'} | {run['wall_s']} | "
                     f"{_pcts(run, 'ttft_ms')} | {_pcts(run, 'gap_ms')} |")
    gateway, direct = slow["gateway"], slow["direct"]
    extra = []
    if gateway.get("ttft_ms") and direct.get("ttft_ms"):
        extra.append(f"TTFT overhead (p50): {gateway['ttft_ms']['p50'] - direct['ttft_ms']['p50']:,.2f} ms — streams "
                     "wait to be admitted while the gateway's one core also relays the streams already running")
    if gateway.get("gap_ms") and direct.get("gap_ms"):
        extra.append("inter-token gap through the gateway (p50 of per-stream means): "
                     f"{gateway['gap_ms']['p50']:.2f} ms, "
                     f"{gateway['gap_ms']['p50'] - slow['token_delay_ms']:+.2f} ms against the emulator's configured "
                     f"{slow['token_delay_ms']:g} ms and {gateway['gap_ms']['p50'] - direct['gap_ms']['p50']:+.2f} ms "
                     "against the direct run. The direct run is no clean baseline here: the emulator and the stream "
                     "client share core 0 and serving all streams at once stretches their own gaps; through the "
                     "gateway, admission spreads the streams out in time")
    extra.append(f"gateway RSS {slow['rss_before_mb']} MB before, peak {slow['rss_peak_mb']} MB "
                 f"(+{slow['rss_added_mb']} MB)")
    extra.append(f"gateway CPU {slow['gateway_cpu_ms_per_stream']} ms per stream")
    for reason, example in (gateway.get("error_examples") or {}).items():
        extra.append(f"{reason} through the gateway, for example: `{' '.join(example.split())[:300]}`")
    return head + "\n".join(lines) + "\n\n" + "".join(f"- {item}\n" for item in extra)


def round_trip_section(trips: dict[str, Any]) -> str:
    if not trips:
        return "Not run."
    out = [f"Method: {trips['method']}. A round trip is a turn of the conversation (the client sends, then waits "
           "for the server), counted by a relay between the gateway and the server; a turn inside a request's window "
           "(request sent → first byte of the answer) is on its critical path. The API-key cache (1 s) makes "
           "one request in a few also look the key up; under load that lookup is once a second per key.\n",
           "| scenario | PostgreSQL on the critical path (median; histogram) | PostgreSQL per request in all "
           "| Redis on the critical path |", "| --- | --- | ---: | ---: |"]
    for kind in KINDS:
        if kind in trips:
            item = trips[kind]
            out.append(f"| {KIND_LABEL[kind]} | {item['pg_critical_median']} ({item['pg_critical_histogram']}) | "
                       f"{item['pg_total_per_request']} | {item['redis_critical_median']} |")
    chat = trips.get("chat", {})
    if chat.get("critical_sequences"):
        out.append("\nThe critical-path round trips of a non-streaming chat request (most common sequence):\n")
        for number, statement in enumerate(chat["critical_sequences"][0]["round_trips"], start=1):
            out.append(f"{number}. `{statement}`")
    return "\n".join(out)


def correctness_section(results: dict[str, Any]) -> str:
    out = []
    for name, backend in results["backends"].items():
        check = backend.get("correctness")
        if not check:
            continue
        verdict = "**passed**" if check["passed"] else "**FAILED**"
        out.append(
            f"- {TARGET_LABEL[name]}: {verdict}. {check['client_2xx']:,} answers the clients saw as 2xx "
            f"(wrk's Lua response() and the stream client, warm-ups included); {check['client_2xx_without_event']} "
            f"of them without a usage event, {check['client_2xx_event_not_success']} with an event that is not "
            f"`success`, {check['duplicate_events']} duplicated events; {check['usage_events']:,} usage events in "
            f"all (the {sum(check['events_not_seen_by_client'].values()):,} the clients never saw: "
            f"{check['events_not_seen_by_client'] or 'none'}, requests cut when wrk stops at the end of each run). "
            f"{check['accounts_checked']} account{'s' if check['accounts_checked'] != 1 else ''} (the bench tenant"
            f"{' and the micro-benchmarks’ own' if check['accounts_checked'] > 1 else ''}): ledger sum = balance and "
            "nothing held on every one"
            f"{'' if not check['accounts_unbalanced'] else ' EXCEPT ' + str(check['accounts_unbalanced'])}; "
            f"open holds {check['open_holds']}; usage events' cost = usage ledger debits "
            f"({check['usage_cost_pico']:,} pico-USD = {check['usage_ledger_debits_pico']:,}). Waited "
            f"{backend.get('settle_wait_s')} s for the usage writer.")
    for name, backend in results["backends"].items():
        logged = backend.get("gateway_log")
        if logged:
            kinds = logged.get("kinds") or {line: 1 for line in logged.get("warnings_and_errors", [])}
            out.append(f"- Gateway log ({TARGET_LABEL[name]}): lines per level {logged['lines']}"
                       + ("; warnings and errors by kind: " + "; ".join(f"{count} × `{kind}`" for kind, count in
                                                                       kinds.items())
                          if kinds else "; no warning or error"))
    return "\n".join(out) or "Not run."


def profile_section(found: dict[str, Any]) -> str:
    if not found:
        return "Not run."
    out = []
    for kind, item in found.items():
        if "error" in item:
            out.append(f"### {KIND_LABEL[kind]}\n\npy-spy failed: `{item['error']}`\n")
            continue
        possible = item.get("rate_hz", 250) * item.get("seconds", 0)
        out.append(f"### {KIND_LABEL[kind]}, c=16\n\n{item['samples']:,} samples at {item.get('rate_hz', 250)} Hz "
                   f"over {item.get('seconds')} s ({100 * item['samples'] / possible:.0f}% of the possible samples "
                   f"found the gateway's thread running or runnable; its measured CPU was "
                   f"{100 * item.get('gateway_cpu_share', 0):.0f}% of a core: the difference is time it waited for "
                   f"its core, which py-spy attributes to the event loop's `Runner.run`); "
                   f"{item['rps_under_profiler']:,} req/s under the profiler; stacks in `bench/{item['collapsed']}`.\n")
        out.append("Self time by layer (where the CPU is when sampled):\n")
        out.append("| layer | share |\n| --- | ---: |")
        out += [f"| {row['name']} | {row['pct']}% |" for row in item["layers"][:14]]
        out.append("\nPipeline stages, inclusive (a stage's own code and everything it calls):\n")
        out.append("| stage | share |\n| --- | ---: |")
        out += [f"| {row['name']} | {row['pct']}% |" for row in item["stages"]]
        out.append("\nTop self-time functions:\n")
        out.append("| function | self |\n| --- | ---: |")
        out += [f"| `{row['name']}` | {row['pct']}% |" for row in item["self"][:20]]
        out.append("")
    return "\n".join(out)


def micro_section(micro: dict[str, Any]) -> str:
    if not micro or "results" not in micro:
        return "Not run." if not micro else f"Failed: `{micro.get('error', '')}`"
    lines = ["`bench/micro.py`, pinned to the gateway's core while the gateway idled, against the same PostgreSQL, "
             f"Redis and emulator ({micro['count']} operations each after a warm-up; an account of its own). The "
             "*proposed* rows are prototypes in `bench/micro.py` that price a change; they are not the gateway's "
             f"code. Ledger of that account still sums to its balance afterwards: {micro['ledger_consistent_after']}.",
             "", "| piece of the hot path | CPU ms per request | wall ms per request |", "| --- | ---: | ---: |"]
    lines += [f"| {row['name']} | {row['cpu_ms']:.3f} | {row['wall_ms']:.3f} |" for row in micro["results"]]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    options = results["options"]
    pg = results["backends"].get("postgres", {})
    notes = NOTES.read_text().strip() if NOTES.exists() else "_No notes yet._"
    foreign = [s["median"]["foreign_core_pct"] for s in results["scenarios"]
               if s["median"].get("foreign_core_pct") is not None]
    sections = [
        "# PrivateRouter benchmark results",
        f"Run on {results['started']} (finished {results.get('finished', '?')}) with\n\n```\n{results['command']}\n```"
        f"\n\n{_source(results.get('source', {}))}",
        "## Machine\n\n"
        f"- CPU: {machine.get('cpu')} ({machine.get('cores')} cores visible, {machine.get('cpu_mhz')} MHz)\n"
        f"- kernel {machine.get('kernel')}, Python {machine.get('python')}, {machine.get('wrk')}, "
        f"{machine.get('postgresql')}, {machine.get('redis')}\n\n```\n{machine.get('memory')}\n```",
        "## How it was measured\n\n"
        f"- **Pinning** (`taskset`): the gateway alone on core {options['gateway_core']}; wrk, the two emulators, "
        f"the orchestrator and py-spy on core {options['load_core']}. PostgreSQL and Redis are the machine's shared "
        "services and are not pinned (the scheduler puts them on either core); the busy time on the gateway's core "
        "that the gateway did not spend was at most "
        f"{max(foreign, default=0):.0f}% of that core in any scenario (median {_median_of(foreign):.0f}%): "
        "PostgreSQL and Redis working for the gateway, and other processes on this shared machine (compare "
        "the SQLite rows, where neither service runs).\n"
        "- **Production shape**: one uvicorn worker (`privaterouter migrate`, then `privaterouter serve "
        "--no-migrate`), PostgreSQL in a throwaway database, Redis database "
        f"`{options['redis_url'].rsplit('/', 1)[-1]}`, INFO logs as JSON to a file; for comparison the embedded "
        "default (SQLite, in-process limiter).\n"
        "- **Registry**: the shipped `models.yaml` with its node pointed at the emulator (32 tokens a reply, no "
        "delay) and `max_concurrency: 4096`, plus a `bench` plan (`models: all`, `rpm: 100000000`) for the "
        "tenant (the shipped plans stop at 1,000 RPM).\n"
        f"- **Load**: wrk, one thread, keep-alive connections, `bench/lua/post.lua` (counts 2xx and non-2xx in "
        f"`response()`, keeps every 2xx's `X-Request-ID`). Each scenario: {options['warmup']:g} s warm-up, then "
        f"{options['reps']} × {options['duration']:g} s; the table shows medians of the {options['reps']} runs. "
        "Errors = non-2xx + socket errors, summed over the runs.\n"
        "- **CPU ms/req**: utime+stime of the process under test (`/proc/<pid>/stat`) over the run ÷ completed "
        "requests (for direct rows: the emulator's). **req/s per CPU-second** = 1000 ÷ CPU ms/req: the rate one "
        "core would sustain at that cost, which other load on the machine does not distort the way it distorts "
        "req/s. **Peak RSS**: VmHWM, reset before each run. **load avg**: the machine's 1-minute load average at "
        "the end of the run (2 cores; other sessions' test suites share the machine).\n"
        "- **DB xacts/req**: `pg_stat_database` (xact_commit + xact_rollback) of the throwaway database across "
        "the scenario (warm-up included) ÷ usage events written in it (= requests the gateway admitted); "
        "PostgreSQL reports statistics about once a second, so the window waits for it.",
        "## Targets (one worker on one core, PostgreSQL + Redis)\n\n" + targets_table(results),
        "## Throughput and latency\n\n" + main_table(results),
        "## Added latency at concurrency 1\n\n" + added_latency_table(results),
        "## Time to first token at concurrency 1\n\nA streaming chat request on a fresh connection per stream "
        "(the clock starts when the request is written); first frame = first NDJSON line directly, first SSE "
        "`data:` frame through the gateway.\n\n" + ttft_table(results),
        "## Slow streams\n\n" + slow_section(pg.get("slow_streams", {})),
        "## Database round trips per request (PostgreSQL)\n\n" + round_trip_section(pg.get("round_trips", {})),
        "## Correctness after load\n\n" + correctness_section(results),
        "## Profile (py-spy, PostgreSQL + Redis)\n\n" + profile_section(pg.get("profile", {})),
        "## What each piece costs (micro-benchmarks)\n\n" + micro_section(pg.get("micro", {})),
        "## Findings and proposed changes\n\n" + notes,
    ]
    return "\n\n".join(sections) + "\n"


def _source(source: dict[str, str]) -> str:
    if not source:
        return ""
    text = f"Code under test: commit `{source.get('commit')}`"
    if source.get("uncommitted"):
        text += f" plus uncommitted changes ({source['uncommitted'].replace(chr(10), '; ')})"
    if source.get("changed_during_run"):
        text += f". Changed during the run: {source['changed_during_run']}"
    return text + "."


def _median_of(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def update_readme(readme: Path, results: dict[str, Any]) -> None:
    """Replace the README's results block with the latest targets and table."""
    if not readme.exists():
        return
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return
    block = (f"{README_START}\nLatest run: {results['started']} (`{results['command']}`); details in "
             f"[RESULTS.md](RESULTS.md).\n\n{targets_table(results)}\n\n{main_table(results)}\n{README_END}")
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + block + text[end:])
