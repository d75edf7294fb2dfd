"""bench/cli.py: the options other sessions use for short runs (no run is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import build_parser, options_from
from bench.system import BenchError


def _options(tmp_path: Path, *argv: str):  # type: ignore[no-untyped-def]
    return options_from(build_parser().parse_args([*argv, "--results-dir", str(tmp_path)]))


def test_scenarios_filter_keeps_the_report_order(tmp_path: Path) -> None:
    assert _options(tmp_path, "--scenarios", "embed,chat").scenarios == ("chat", "embed")


def test_unknown_scenario_or_phase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="unknown scenario"):
        _options(tmp_path, "--scenarios", "chat,images")
    with pytest.raises(BenchError, match="unknown phase"):
        _options(tmp_path, "--skip", "everything")


def test_zero_slow_streams_skips_the_phase(tmp_path: Path) -> None:
    options = _options(tmp_path, "--quick", "--slow-streams", "0")
    assert options.slow_streams == 0 and not options.runs("slow")
    assert options.runs("micro")


def test_skip_and_no_profile_leave_phases_out(tmp_path: Path) -> None:
    options = _options(tmp_path, "--skip", "micro,roundtrips", "--no-profile")
    assert not options.runs("micro") and not options.runs("roundtrips") and not options.runs("profile")


def test_ttft_runs_only_with_the_stream_scenario(tmp_path: Path) -> None:
    assert not _options(tmp_path, "--scenarios", "chat").runs("ttft")
    assert _options(tmp_path, "--scenarios", "stream").runs("ttft")


def test_scaleout_needs_the_postgres_backend(tmp_path: Path) -> None:
    assert not _options(tmp_path, "--backends", "sqlite").runs("scaleout")
