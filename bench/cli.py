"""`python -m bench`: run the whole benchmark and write RESULTS.md and results.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import report
from bench.runner import PHASES, Options, Run
from bench.system import BenchError, machine
from bench.wrk import KINDS


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _names(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated selection, in `known`'s order; BenchError names what is unknown."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = wanted - set(known)
    if unknown:
        raise BenchError(f"unknown {what}(s): {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    if not wanted:
        raise BenchError(f"no {what} given")
    return tuple(name for name in known if name in wanted)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run of about a minute (1 s per scenario, one repetition, small stream tests); "
                             "writes into the run's own folder unless --results-dir is given")
    parser.add_argument("--duration", type=float, help="seconds of each measured run (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each scenario (default 2; 0 = none)")
    parser.add_argument("--reps", type=int, help="measured repetitions per scenario; medians are reported (default 3)")
    parser.add_argument("--concurrency", type=_ints, help="comma-separated connection counts (default 1,16,64)")
    parser.add_argument("--backends", help="comma-separated: postgres,sqlite (default both)")
    parser.add_argument("--scenarios", help="comma-separated: chat,stream,embed (default all; TTFT runs with stream)")
    parser.add_argument("--skip", help=f"comma-separated phases to leave out: {','.join(PHASES)} "
                                       "(the throughput runs and the correctness check always run)")
    parser.add_argument("--scaleout-connections", type=int,
                        help="wrk connections for the 1- vs 2-worker comparison (default 32)")
    parser.add_argument("--slow-streams", type=int, help="concurrent slow streams (default 1000; 0 = skip)")
    parser.add_argument("--slow-tokens", type=int, help="tokens per slow stream (default 200)")
    parser.add_argument("--slow-delay-ms", type=float, help="delay between slow tokens (default 20)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--admin-dsn", help="PostgreSQL server to create the throwaway database on "
                                            "(default postgresql://postgres@127.0.0.1:5432/postgres)")
    parser.add_argument("--redis-url", help="Redis database for the rate limits (default redis://127.0.0.1:6379/13)")
    parser.add_argument("--results-dir", type=Path, help="where RESULTS.md, results.json and profiles go "
                                                         "(default bench/; for --quick a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and the database")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite RESULTS.md (and the README table) from the results.json already there")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    options = Options.quick_defaults() if args.quick else Options()
    for name in ("duration", "warmup", "reps", "concurrency", "slow_streams", "slow_tokens", "slow_delay_ms",
                 "admin_dsn", "redis_url", "scaleout_connections"):
        value = getattr(args, name)
        if value is not None:
            setattr(options, name, value)
    if args.backends:
        options.backends = tuple(part.strip() for part in args.backends.split(",") if part.strip())
        unknown = set(options.backends) - {"postgres", "sqlite"}
        if unknown:
            raise BenchError(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.scenarios:
        options.scenarios = _names(args.scenarios, KINDS, "scenario")
    if args.skip:
        options.skip = _names(args.skip, PHASES, "phase")
    options.profile = not args.no_profile
    options.keep = args.keep
    for url in (options.admin_dsn, options.redis_url):
        if "@127.0.0.1:" not in url and "//127.0.0.1:" not in url:
            raise BenchError(f"only services on 127.0.0.1 are allowed: {url}")
    if args.results_dir is not None:
        options.results_dir = args.results_dir.resolve()
    elif args.quick:
        import tempfile

        options.results_dir = Path(tempfile.mkdtemp(prefix="pr-bench-quick-"))
    options.results_dir.mkdir(parents=True, exist_ok=True)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report_only:
        folder = (args.results_dir or Path(__file__).resolve().parent).resolve()
        results = json.loads((folder / "results.json").read_text())
        results["targets"] = report.targets(results)
        _write(folder, results)
        return 0
    command = "python -m bench" + ("".join(f" {shlex.quote(arg)}" for arg in (sys.argv[1:] if argv is None
                                                                                  else argv)))
    try:
        options = options_from(args)
        if not options.quick and options.results_dir == Path(__file__).resolve().parent and (
                options.scenarios != KINDS or options.skip or not options.profile):
            print("bench: note: a partial run writes bench/RESULTS.md; pass --results-dir for trial runs",
                  file=sys.stderr)
        results = asyncio.run(Run(options, command).main())
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; children stopped and the throwaway database dropped", file=sys.stderr)
        return 130
    results["machine"] = machine()
    results["targets"] = report.targets(results)
    _write(options.results_dir, results)
    failed = [name for name, backend in results["backends"].items()
              if not backend.get("correctness", {}).get("passed", False)]
    if failed:
        print(f"bench: correctness check FAILED on {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


def _write(folder: Path, results: dict[str, Any]) -> None:
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "RESULTS.md").write_text(report.markdown(results))
    if folder == Path(__file__).resolve().parent:
        report.update_readme(folder / "README.md", results)
        report.update_main_readme(folder.parent / "README.md", results)
    print(f"wrote {folder / 'RESULTS.md'} and results.json")
    summary = report.summary_lines(results)
    if summary:
        print("goals of issue #16 (this run; details in RESULTS.md):\n" + summary)
