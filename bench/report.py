"""RESULTS.md, the targets verdict, and the latest table in bench/README.md, from results.json's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.targets import (
    BASELINE_SOURCE,
    KIND_LABEL,
    KINDS,
    SQLITE_P99_OVER_P50,
    SQLITE_STALL_MS,
    also_checked,
    evaluate,
    find,
    median,
    per_core_capacity,
    ratio,
    replicas_needed,
    worst_stall,
)

NOTES = Path(__file__).resolve().parent / "notes" / "proposals.md"
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
MAIN_README_START = "<!-- bench:start -->"
MAIN_README_END = "<!-- bench:end -->"
TARGET_LABEL = {"direct": "direct (emulator)", "postgres": "gateway, PostgreSQL + Redis",
                "sqlite": "gateway, SQLite (embedded)", "scaleout": "scale-out gateways (PostgreSQL + Redis, 1 and 2 "
                                                                    "workers)"}
RATES = (100, 500, 1_000, 5_000, 10_000)  # req/s for the replica table
UTILISATION = 0.7  # each replica's core kept at 70% busy: headroom for bursts, GC and the usage writer


def _find(results: dict[str, Any], target: str, kind: str, concurrency: int) -> dict[str, Any] | None:
    return find(results, target, kind, concurrency)


def _median(results: dict[str, Any], target: str, kind: str, concurrency: int, name: str) -> float | None:
    return median(results, target, kind, concurrency, name)


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #16's goals (PostgreSQL + Redis unless named), then the earlier targets that still apply."""
    return evaluate(results) + also_checked(results)


def with_unit(value: float | int, unit: str) -> str:
    """A measured value as the targets table shows it: ratios as 2.5x, small times to the microsecond."""
    if isinstance(value, int):
        return f"{value:,} {unit}"
    if unit == "x":
        return f"{value:,.1f}x"
    digits = 3 if unit == "ms" and abs(value) < 10 else 1 if unit == "MiB" else 2
    return f"{value:,.{digits}f} {unit}"


def _measured(item: dict[str, Any]) -> str:
    if item["measured"] is None:
        return "–"
    return with_unit(item["measured"], item["unit"]) + (f" ({item['detail']})" if item.get("detail") else "")


def targets_table(results: dict[str, Any]) -> str:
    """Goal, the issue's "now" beside this run's value, met or not."""
    lines = ["| | goal | now (issue #16) | this run | met | gap |", "| --- | --- | --- | --- | --- | --- |"]
    for item in targets(results):
        met = {True: "yes", False: "**no**", None: "–"}[item["met"]]
        lines.append(f"| {item['target']} | {item.get('goal', '')} | {item.get('baseline', '')} | "
                     f"{_measured(item)} | {met} | {item['gap']} |")
    return "\n".join(lines)


def summary_lines(results: dict[str, Any]) -> str:
    """The goals in one line each, for the terminal at the end of a run (measured ones only)."""
    lines = []
    for item in targets(results):
        if item["measured"] is None:
            continue
        met = {True: "met", False: "MISSED", None: "?"}[item["met"]]
        lines.append(f"  {met:6} {item['target']}: {with_unit(item['measured'], item['unit'])} "
                     f"(goal {item.get('goal', '')}; now {item.get('baseline', '')})")
    return "\n".join(lines)


def _rss(mapping: dict[str, Any], name: str) -> float | None:
    """An RSS figure in MiB (older results.json named the same KiB ÷ 1024 "_mb")."""
    value = mapping.get(f"{name}_mib", mapping.get(f"{name}_mb"))
    return None if value is None else float(value)


def main_table(results: dict[str, Any]) -> str:
    lines = ["| scenario | path | c | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | CPU ms/req "
             "| req/s per CPU-second | PostgreSQL CPU ms/req | peak RSS MiB | DB xacts/req | DB rows written/req "
             "| DB connections opened/1k req | load avg |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: |"]
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
                    f"{_fmt(m['p50'], 2)} | {_fmt(m['p90'], 2)} | {_fmt(m['p99'], 2)} | "
                    f"{_fmt(worst_stall(results, target, kind, scenario['concurrency']), 2)} | {scenario['errors']} | "
                    f"{_fmt(m['cpu_ms_per_request'], 3)} | {_fmt(m.get('capacity'), 0)} | "
                    f"{_fmt(m.get('pg_cpu_ms_per_request'), 3)} | {_fmt(_rss(m, 'peak_rss'))} | "
                    f"{_fmt(xacts, 2)} | {_fmt(rows, 2)} | {_fmt(sessions, 1)} | {_fmt(m.get('load1'), 1)} |")
    return "\n".join(lines)


def added_latency_table(results: dict[str, Any]) -> str:
    lines = ["| scenario | direct p50 ms | PostgreSQL + Redis p50 ms | added | SQLite p50 ms | added |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        direct = _median(results, "direct", kind, 1, "p50")
        cells = [KIND_LABEL[kind], _fmt(direct, 2)]
        measured = direct is not None
        for target in ("postgres", "sqlite"):
            value = _median(results, target, kind, 1, "p50")
            measured = measured or value is not None
            cells += [_fmt(value, 2), _fmt(None if value is None or direct is None else value - direct, 2)]
        if measured:
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else "Not run."


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
    return "\n".join(lines) if len(lines) > 2 else "Not run."


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
    extra.append(f"gateway RSS {_rss(slow, 'rss_before')} MiB before, peak {_rss(slow, 'rss_peak')} MiB "
                 f"(+{_rss(slow, 'rss_added')} MiB)")
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
        scraped = [(TARGET_LABEL[name], backend.get("http_statuses"))] + [
            (f"scale-out, {scaleout_label(key)}", run.get("http_statuses"))
            for key, run in (backend.get("runs") or {}).items()]
        for label, stats in scraped:
            if not stats:
                continue
            if "error" in stats:
                out.append(f"- Answers by status ({label}): /metrics could not be read: `{stats['error']}`")
                continue
            out.append(f"- Answers by status ({label}): the gateway's `pr_http_requests_total` {stats['gateway']}, "
                       f"the clients saw {stats['clients']}; **{stats['unseen_5xx']}** 5xx no client saw "
                       "(499 = the client left first, as wrk does when a run ends; /health and /metrics add 2xx)")
    for name, backend in results["backends"].items():
        logged = backend.get("gateway_log")
        if logged:
            kinds = logged.get("kinds") or {line: 1 for line in logged.get("warnings_and_errors", [])}
            out.append(f"- Gateway log ({TARGET_LABEL[name]}): lines per level {logged['lines']}"
                       + ("; warnings and errors by kind: " + "; ".join(f"{count} × `{kind}`" for kind, count in
                                                                       kinds.items())
                          if kinds else "; no warning or error"))
        for workers, logged in (backend.get("gateway_logs") or {}).items():
            kinds = logged.get("kinds") or {}
            out.append(f"- Gateway log (scale-out, {scaleout_label(workers)}): lines per "
                       f"level {logged['lines']}"
                       + ("; warnings and errors by kind: " + "; ".join(f"{count} × `{kind}`" for kind, count in
                                                                       kinds.items())
                          if kinds else "; no warning or error"))
    return "\n".join(out) or "Not run."


def scaleout_label(key: str) -> str:
    """A scale-out configuration's name in prose (keys of bench/scaleout.py's configurations)."""
    return {"1": "1 worker on its own core", "1-shared": "1 worker on both cores",
            "2": "2 workers on both cores"}.get(key, key)


def cpu_section(results: dict[str, Any]) -> str:
    """CPU per request by scenario and concurrency, against the emulator's own (the upstream's floor)."""
    lines = ["| scenario | c | upstream (emulator) CPU ms/req | gateway CPU ms/req, PostgreSQL + Redis | × upstream "
             "| req/s per core | PostgreSQL server CPU ms/req | gateway CPU ms/req, SQLite | × upstream "
             "| wrk CPU ms/req |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    concurrencies = sorted({scenario["concurrency"] for scenario in results.get("scenarios", [])})
    for kind in KINDS:
        for concurrency in concurrencies:
            upstream = _median(results, "direct", kind, concurrency, "cpu_ms_per_request")
            pg = _median(results, "postgres", kind, concurrency, "cpu_ms_per_request")
            lite = _median(results, "sqlite", kind, concurrency, "cpu_ms_per_request")
            if upstream is None and pg is None and lite is None:
                continue
            server = _median(results, "postgres", kind, concurrency, "pg_cpu_ms_per_request")
            wrk = _wrk_cpu(results, "postgres", kind, concurrency)
            lines.append(f"| {KIND_LABEL[kind]} | {concurrency} | {_fmt(upstream, 3)} | {_fmt(pg, 3)} | "
                         f"{_times(ratio(pg, upstream))} | {_fmt(per_core_capacity(pg), 0)} | {_fmt(server, 3)} | "
                         f"{_fmt(lite, 3)} | {_times(ratio(lite, upstream))} | {_fmt(wrk, 3)} |")
    return ("CPU time (utime + stime from /proc) of each process over the measured runs ÷ requests completed, "
            "medians of the runs. *upstream* is the emulator's own CPU per request when wrk calls it directly at "
            "the same concurrency: the floor any gateway in front of it adds to. *PostgreSQL server* is the CPU of "
            "the PostgreSQL backends connected to the throwaway database (pg_stat_activity's pids, /proc), which a "
            "scaled-out deployment pays once per request on the database's own cores. *wrk* is the load "
            "generator's own CPU.\n\n" + "\n".join(lines))


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}x"


def _wrk_cpu(results: dict[str, Any], target: str, kind: str, concurrency: int) -> float | None:
    scenario = _find(results, target, kind, concurrency)
    if scenario is None:
        return None
    values = sorted(sample["other_cpu_ms_per_request"]["wrk"] for sample in scenario.get("samples", [])
                    if (sample.get("other_cpu_ms_per_request") or {}).get("wrk") is not None)
    return values[len(values) // 2] if values else None


def tail_section(results: dict[str, Any]) -> str:
    """p99 against p50 and the slowest request, per backend: the embedded default's stalls."""
    lines = ["| scenario | path | c | p50 ms | p99 ms | p99 ÷ p50 | p99.9 ms | slowest request ms |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        for target in ("postgres", "sqlite"):
            for scenario in results.get("scenarios", []):
                if scenario["kind"] != kind or scenario["target"] != target:
                    continue
                m, c = scenario["median"], scenario["concurrency"]
                lines.append(f"| {KIND_LABEL[kind]} | {TARGET_LABEL[target]} | {c} | {_fmt(m['p50'], 2)} | "
                             f"{_fmt(m['p99'], 2)} | {_times(ratio(m['p99'], m['p50']))} | "
                             f"{_fmt(m.get('p99_9'), 2)} | {_fmt(worst_stall(results, target, kind, c), 2)} |")
    return (f"Goal for the embedded default: p99 ≤ {SQLITE_P99_OVER_P50:g}x its p50 and no request slower than "
            f"{SQLITE_STALL_MS:g} ms (a stall). Percentiles are medians of the measured runs; the slowest request is "
            "the largest of wrk's per-run maximum over the measured runs (warm-ups excluded).\n\n" + "\n".join(lines))


def scaleout_section(results: dict[str, Any]) -> str:
    """One worker on one core against two workers on two cores."""
    found = results.get("backends", {}).get("scaleout")
    if not found or not found.get("runs"):
        return "Not run."
    lines = ["| workers | cores | req/s | p50 ms | p99 ms | errors | gateway CPU ms/req | req/s per core "
             "| CPU split between workers | emulator CPU ms/req | wrk CPU ms/req | other busy time on these cores "
             "| idle RSS MiB per worker |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for key in sorted(found["runs"]):
        run = found["runs"][key]
        m = run["median"]
        splits = [sample["worker_cpu_split"] for sample in run.get("samples", []) if sample.get("worker_cpu_split")]
        split = " / ".join(f"{100 * share:.0f}%" for share in splits[-1]) if splits else "–"
        others = [sample.get("other_cpu_ms_per_request") or {} for sample in run.get("samples", [])]
        emulator = _middle([item["emulator"] for item in others if "emulator" in item])
        wrk = _middle([item["wrk"] for item in others if "wrk" in item])
        lines.append(f"| {run['workers']} | {','.join(str(core) for core in run['cores'])} | {_fmt(m['rps'])} | "
                     f"{_fmt(m['p50'], 2)} | {_fmt(m['p99'], 2)} | {run['errors']} | "
                     f"{_fmt(m['cpu_ms_per_request'], 3)} | {_fmt(m.get('capacity'), 0)} | {split} | "
                     f"{_fmt(emulator, 3)} | {_fmt(wrk, 3)} | {_fmt(m.get('foreign_core_pct'), 0)}% | "
                     f"{', '.join(_fmt(value) for value in run.get('idle_rss_mib', []))} |")
    ratios = found.get("ratio") or {}
    text = (f"{KIND_LABEL.get(found.get('kind', 'chat'), found.get('kind'))}, wrk with {found.get('connections')} "
            "keep-alive connections on both, its own throwaway PostgreSQL database, Redis rate limits; "
            "`privaterouter serve` with `WORKERS=1` pinned to the gateway's core, then `WORKERS=2` (uvicorn's "
            "multiprocess mode: the supervisor binds the socket, both workers accept on it) on both cores; "
            "between them `WORKERS=1` on both cores, which shares them with the load as the two workers do. **This "
            "machine has 2 cores**: with two workers, wrk and the emulator (on the load core) share the cores with "
            "the gateway, so the throughput ratio understates two dedicated cores; the gateway's CPU per request is "
            "the figure that carries over (\"other busy time\" = the cores' busy time the gateway did not spend, "
            "in % of the cores' time).\n\n" + "\n".join(lines) + "\n\n")
    text += (f"- throughput, 2 workers ÷ 1 worker alone on its core (the goal's ratio): "
             f"**{_times(ratios.get('throughput'))}**\n"
             f"- throughput, 2 workers ÷ 1 worker on the same cores (both share them with wrk and the emulator): "
             f"{_times(ratios.get('throughput_same_cores'))}\n"
             f"- CPU per request, 2 workers ÷ 1: {_times(ratios.get('cpu_per_request'))} → two dedicated cores would "
             f"serve {_times(ratios.get('capacity'))} one core's requests (2 ÷ that ratio)\n")
    spied = found.get("profile") or {}
    if spied.get("concerns"):
        single = {row["name"]: row["pct"] for row in
                  (results.get("backends", {}).get("postgres", {}).get("profile", {}).get("chat", {})
                   .get("concerns") or [])}
        text += (f"\npy-spy on one of the two workers ({spied['samples']:,} samples over {spied['seconds']} s, "
                 f"{spied['rps_under_profiler']:,} req/s for both under the profiler; stacks in "
                 f"`bench/{spied['collapsed']}`), by concern, beside the one-worker profile of chat at c=16:\n\n"
                 "| concern | one of 2 workers | 1 worker |\n| --- | ---: | ---: |\n"
                 + "\n".join(f"| {row['name']} | {row['pct']}% | {_pct(single.get(row['name']))} |"
                              for row in spied["concerns"]) + "\n\nTop self-time functions of that worker:\n\n"
                 "| function | self |\n| --- | ---: |\n"
                 + "\n".join(f"| `{row['name']}` | {row['pct']}% |" for row in spied["self"][:10]) + "\n")
    elif spied.get("error"):
        text += f"\npy-spy on a worker failed: `{spied['error']}`\n"
    return text


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value}%"


def _middle(values: list[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def replicas_section(results: dict[str, Any]) -> str:
    """How many one-worker replicas (one core each) a request rate needs, from the measured CPU per request."""
    costs: dict[str, float] = {}
    for kind in KINDS:
        value = _median(results, "postgres", kind, 16, "cpu_ms_per_request")
        if value:
            costs[kind] = value
    scale = results.get("backends", {}).get("scaleout", {})
    two = (scale.get("runs", {}).get("2", {}).get("median", {}) or {}).get("cpu_ms_per_request")
    if two and scale.get("kind") in costs:
        costs[scale["kind"]] = max(costs[scale["kind"]], two)  # several workers may cost more each: take the worse
    if not costs:
        return "Not measured."
    lines = ["| request mix | gateway CPU ms/req | req/s per core | " + " | ".join(f"{rate:,} req/s" for rate in RATES)
             + " |", "| --- | ---: | ---: | " + " | ".join("---:" for _ in RATES) + " |"]
    for kind, cpu in costs.items():
        lines.append(f"| {KIND_LABEL[kind]} | {cpu:.3f} | {1000 / cpu:,.0f} | "
                     + " | ".join(str(replicas_needed(rate, cpu, UTILISATION)) for rate in RATES) + " |")
    server = _median(results, "postgres", "chat", 16, "pg_cpu_ms_per_request")
    note = (f"Replicas = ⌈rate × CPU per request ÷ {UTILISATION:.0%} busy⌉, one worker on one core each (or one "
            "replica with `WORKERS=N` on N cores); CPU per request at c=16 on PostgreSQL + Redis, the worse of the "
            "one- and two-worker figures where both were measured. Streams are counted per stream of 32 tokens; "
            "longer answers cost more per stream.")
    slow = results.get("backends", {}).get("postgres", {}).get("slow_streams") or {}
    if slow.get("gateway_cpu_ms_per_stream"):
        note += (f" The slow-stream test measured {slow['gateway_cpu_ms_per_stream']} ms of CPU per "
                 f"{slow['tokens']}-token stream (admission and relay, {slow['streams']:,} at once).")
    if server:
        note += (f" PostgreSQL itself spent {server:.3f} ms of CPU per chat request: one database core serves about "
                 f"{1000 / server:,.0f} req/s before it, not the gateways, is the limit.")
    return note + "\n\n" + "\n".join(lines)


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
        if item.get("thread_samples"):
            out.append(f"Not counted below: {item['thread_samples']:,} samples in background threads "
                       "(`asyncio.to_thread`'s pool; py-spy also samples a pool thread blocked in its queue or in "
                       "an fsync), innermost frames: "
                       + "; ".join(f"`{row['name']}` {row['samples']:,}" for row in item.get("threads", [])) + ".\n")
        if item.get("concerns"):
            out.append("By concern (a sample counts for the concern of its innermost frame that has one; stdlib "
                       "frames such as `json` count for their caller's, so the access log's `json.dumps` is "
                       "logging):\n")
            out.append("| concern | share |\n| --- | ---: |")
            out += [f"| {row['name']} | {row['pct']}% |" for row in item["concerns"]]
            out.append("")
        out.append("Self time by layer (where the CPU is when sampled):\n")
        out.append("| layer | share |\n| --- | ---: |")
        out += [f"| {row['name']} | {row['pct']}% |" for row in item["layers"][:20]]
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
    skipped = ", ".join(options.get("skip") or []) or "none"
    scenarios = ", ".join(options.get("scenarios") or KINDS)
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
        "req/s. **PostgreSQL CPU ms/req**: the same for the PostgreSQL backends connected to the throwaway "
        "database. **Peak RSS** (MiB): VmHWM, reset before each run. **max ms**: the slowest request of the "
        "measured runs (wrk's max). **load avg**: the machine's 1-minute load average at the end of the run "
        "(2 cores; other sessions' test suites share the machine).\n"
        f"- **Selection**: scenarios {scenarios}; phases left out: {skipped}.\n"
        "- **Scale-out**: after the backends, on a throwaway database of its own: one worker pinned to the "
        "gateway's core, one worker on both cores, two workers on both cores (wrk and the emulator stay on the "
        "load core, so on a 2-core machine they share the cores with the workers); see its section.\n"
        "- **DB xacts/req**: `pg_stat_database` (xact_commit + xact_rollback) of the throwaway database across "
        "the scenario (warm-up included) ÷ usage events written in it (= requests the gateway admitted); "
        "PostgreSQL reports statistics about once a second, so the window waits for it.",
        "## Targets (one worker on one core, PostgreSQL + Redis, unless named)\n\n"
        f"*now* = {BASELINE_SOURCE}.\n\n" + targets_table(results),
        "## CPU per request against the upstream\n\n" + cpu_section(results),
        "## Throughput and latency\n\n" + main_table(results),
        "## Tail latency and stalls (p99 against p50)\n\n" + tail_section(results),
        "## Added latency at concurrency 1\n\n" + added_latency_table(results),
        "## Time to first token at concurrency 1\n\nA streaming chat request on a fresh connection per stream "
        "(the clock starts when the request is written); first frame = first NDJSON line directly, first SSE "
        "`data:` frame through the gateway.\n\n" + ttft_table(results),
        "## Slow streams\n\n" + slow_section(pg.get("slow_streams", {})),
        "## Database round trips per request (PostgreSQL)\n\n" + round_trip_section(pg.get("round_trips", {})),
        "## Scale-out: two workers on two cores\n\n" + scaleout_section(results),
        "## Replicas for a request rate\n\n" + replicas_section(results),
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


def _replace_block(path: Path, start_marker: str, end_marker: str, body: str) -> bool:
    """Put `body` between the two markers of `path`; False when the file or a marker is missing."""
    if not path.exists():
        return False
    text = path.read_text()
    if start_marker not in text or end_marker not in text:
        return False
    start, end = text.index(start_marker), text.index(end_marker) + len(end_marker)
    path.write_text(text[:start] + f"{start_marker}\n{body}\n{end_marker}" + text[end:])
    return True


def update_readme(readme: Path, results: dict[str, Any]) -> None:
    """Replace bench/README.md's results block with the latest targets and table."""
    _replace_block(readme, README_START, README_END,
                   f"Latest run: {results['started']} (`{results['command']}`); details in [RESULTS.md](RESULTS.md)."
                   f"\n\n{targets_table(results)}\n\n{main_table(results)}")


def readme_block(results: dict[str, Any], results_link: str = "bench/RESULTS.md") -> str:
    """The project README's benchmark table: goals, the issue's "now" beside this run, CPU, scale-out, replicas."""
    source = results.get("source", {})
    scale = results.get("backends", {}).get("scaleout", {}).get("ratio") or {}
    passed = [name for name, backend in results.get("backends", {}).items()
              if backend.get("correctness", {}).get("passed")]
    failed = [name for name, backend in results.get("backends", {}).items()
              if backend.get("correctness") and not backend["correctness"].get("passed")]
    money = ("correctness after load (one usage event per 2xx, ledger = balance, no open holds): "
             + ("**FAILED** on " + ", ".join(failed) if failed else "passed on " + ", ".join(passed) or "not run"))
    parts = [
        f"Latest run: {results['started']} on commit `{source.get('commit', '?')}` (`{results['command']}`); "
        f"{money}. Details: [{results_link}]({results_link}). *now* = {BASELINE_SOURCE}.",
        targets_table(results),
        "CPU per request (gateway alone on one core; × upstream = ÷ the emulator's own CPU per request):",
        _cpu_summary(results),
    ]
    if scale:
        parts.append(f"Scale-out (chat, 2 workers on 2 cores ÷ 1 worker on 1 core): {_times(scale.get('throughput'))} "
                     f"the throughput ({_times(scale.get('throughput_same_cores'))} against one worker on the same "
                     f"cores), {_times(scale.get('cpu_per_request'))} the CPU per request; this machine has 2 "
                     "cores, so wrk and the emulator share them with the two workers.")
    parts.append("Replicas for a request rate, from the measured CPU per request: " + replicas_section(results))
    return "\n\n".join(parts)


def _cpu_summary(results: dict[str, Any]) -> str:
    lines = ["| scenario (c=16) | gateway CPU ms/req | × upstream | req/s per core | req/s measured | p50 ms | "
             "p99 ms |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        cpu = _median(results, "postgres", kind, 16, "cpu_ms_per_request")
        if cpu is None:
            continue
        upstream = _median(results, "direct", kind, 16, "cpu_ms_per_request")
        lines.append(f"| {KIND_LABEL[kind]} | {cpu:.3f} | {_times(ratio(cpu, upstream))} | "
                     f"{_fmt(per_core_capacity(cpu), 0)} | {_fmt(_median(results, 'postgres', kind, 16, 'rps'))} | "
                     f"{_fmt(_median(results, 'postgres', kind, 16, 'p50'), 2)} | "
                     f"{_fmt(_median(results, 'postgres', kind, 16, 'p99'), 2)} |")
    return "\n".join(lines)


def update_main_readme(readme: Path, results: dict[str, Any]) -> bool:
    """Replace the project README's benchmark block (between MAIN_README_START and MAIN_README_END)."""
    return _replace_block(readme, MAIN_README_START, MAIN_README_END, readme_block(results))
