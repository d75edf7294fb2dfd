"""bench/scaleout.py: the ratios of two workers against one."""

from __future__ import annotations

from bench.scaleout import ratios


def _run(rps: float, cpu: float) -> dict:
    return {"median": {"rps": rps, "cpu_ms_per_request": cpu}}


def test_ratios_of_throughput_and_cpu_per_request() -> None:
    found = ratios({"1": _run(500, 1.0), "2": _run(900, 1.25)})
    assert found == {"throughput": 1.8, "cpu_per_request": 1.25, "capacity": 1.6}


def test_ratios_are_none_when_a_run_is_missing() -> None:
    assert ratios({"1": _run(500, 1.0)}) == {"throughput": None, "cpu_per_request": None, "capacity": None}
