"""bench/report.py: RESULTS.md, the README blocks, and re-rendering an older results.json."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report
from tests.bench.results_fixture import correctness, results

COMMITTED_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results.json"


def test_targets_table_shows_the_issue_baseline_beside_this_run() -> None:
    table = report.targets_table(results())
    header, rule, first = table.splitlines()[:3]
    assert header == "| | goal | now (issue #16) | this run | met | gap |"
    assert "| 2.85 ms | 0.900 ms" in first and "| yes |" in first
    assert "| **no** |" in table  # the stream CPU and the SQLite stall miss


def test_markdown_has_every_section_of_a_run() -> None:
    text = report.markdown(results())
    for heading in ("## Targets", "## CPU per request against the upstream", "## Throughput and latency",
                    "## Tail latency and stalls", "## Scale-out: two workers on two cores",
                    "## Replicas for a request rate", "## Correctness after load"):
        assert heading in text
    assert "LiteLLM" in text  # the baseline's source is named
    generated = text.split("## Findings and proposed changes")[0]  # the hand-written notes follow
    assert "peak RSS MiB" in generated and " MB " not in generated


def test_cpu_section_gives_the_ratio_to_the_upstream() -> None:
    lines = report.cpu_section(results()).splitlines()
    row = next(line for line in lines if line.startswith("| chat, non-stream | 16"))
    assert "| 0.100 | 0.900 | 9.0x | 1,111 | 0.400 |" in row


def test_tail_section_lists_the_slowest_request() -> None:
    row = next(line for line in report.tail_section(results()).splitlines() if "SQLite" in line)
    assert row.endswith("| 4.00 | 12.00 | 3.0x | 18.00 | 300.00 |")


def test_scaleout_section_says_the_load_shares_the_cores() -> None:
    text = report.scaleout_section(results())
    assert "2 cores" in text and "50% / 50%" in text and "**1.8x**" in text
    assert report.scaleout_section({"backends": {}}) == "Not run."


def test_replicas_take_the_worse_of_one_and_two_workers() -> None:
    row = next(line for line in report.replicas_section(results()).splitlines() if line.startswith("| chat"))
    assert row.startswith("| chat, non-stream | 1.000 | 1,000 |")  # 2 workers: 1.0 ms > 0.9 ms
    assert "| 15 |" in row  # 10,000 req/s × 1 ms ÷ 70% = 14.3 → 15


def test_correctness_section_covers_the_scaleout_run() -> None:
    data = results()
    data["backends"]["scaleout"]["correctness"] = correctness(passed=False)
    text = report.correctness_section(data)
    assert "scale-out" in text and "**FAILED**" in text


def test_readme_block_names_run_baseline_and_money_check() -> None:
    block = report.readme_block(results())
    assert "commit `abc1234`" in block and "passed on postgres, sqlite, scaleout" in block
    assert "| 2.85 ms |" in block and "Replicas" in block


def test_update_main_readme_replaces_only_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{report.MAIN_README_START}\nold table\n{report.MAIN_README_END}\nafter\n")
    assert report.update_main_readme(readme, results()) is True
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old table" not in text
    assert "| 2.85 ms |" in text


def test_update_main_readme_leaves_a_readme_without_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert report.update_main_readme(readme, results()) is False
    assert readme.read_text() == "no markers\n"


def _older(data: dict) -> dict:
    """`data` as results.json looked before MiB and the slowest request: "_mb" keys, no max_ms, no scale-out."""
    data["backends"].pop("scaleout")
    data["backends"]["postgres"]["idle_rss_mb_at_start"] = data["backends"]["postgres"].pop("idle_rss_mib_at_start")
    for scenario in data["scenarios"]:
        scenario.pop("max_ms")
        for part in (scenario["median"], *scenario["samples"]):
            part.pop("max_ms")
            part["peak_rss_mb"] = part.pop("peak_rss_mib")
    return data


def test_an_older_results_json_still_renders() -> None:
    old = _older(results())
    text = report.markdown(old)
    assert "## Targets" in text and "not measured" in text  # no slowest request, no scale-out
    assert "| 58.0 MiB |" in text and "| 50.0 |" in text  # RSS read from the "_mb" keys
    assert report.readme_block(old)


def test_the_committed_results_json_renders() -> None:
    committed = json.loads(COMMITTED_RESULTS.read_text())
    assert "## Targets" in report.markdown(committed) and report.readme_block(committed)


def test_summary_lines_list_the_measured_goals_only() -> None:
    data = results()
    data["backends"].pop("scaleout")
    text = report.summary_lines(data)
    assert "  met    gateway CPU per non-streaming chat (c=16): 0.900 ms (goal ≤ 1 ms" in text
    assert "MISSED gateway CPU per stream" in text
    assert "2 workers" not in text


def test_scaleout_section_puts_the_worker_profile_beside_the_single_one() -> None:
    data = results()
    concerns = [{"name": "metrics", "samples": 30, "pct": 30.0}, {"name": "middleware", "samples": 70, "pct": 70.0}]
    data["backends"]["scaleout"]["profile"] = {
        "samples": 100, "seconds": 3, "rps_under_profiler": 900.0, "collapsed": "profile-scaleout-2w.collapsed.txt",
        "concerns": concerns, "self": [{"name": "f (gateway/metrics.py)", "samples": 30, "pct": 30.0}]}
    data["backends"]["postgres"]["profile"] = {"chat": {"concerns": [{"name": "metrics", "samples": 5, "pct": 5.0}]}}
    text = report.scaleout_section(data)
    assert "| metrics | 30.0% | 5.0% |" in text and "| middleware | 70.0% | – |" in text
    assert "`f (gateway/metrics.py)`" in text


def test_tables_of_phases_that_did_not_run_say_so() -> None:
    partial = {"scenarios": [], "backends": {"postgres": {}}}
    assert report.added_latency_table(partial) == "Not run."
    assert report.ttft_table(partial) == "Not run."
    assert report.added_latency_table(results()).count("\n") == 3  # header, rule, chat and stream rows
