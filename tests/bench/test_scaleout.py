"""bench/scaleout.py: the ratios of two workers against one."""

from __future__ import annotations

from bench.scaleout import configurations, ratios


def _run(rps: float, cpu: float) -> dict:
    return {"median": {"rps": rps, "cpu_ms_per_request": cpu}}


def test_ratios_of_throughput_and_cpu_per_request() -> None:
    found = ratios({"1": _run(500, 1.0), "1-shared": _run(450, 1.1), "2": _run(900, 1.25)})
    assert found == {"throughput": 1.8, "throughput_same_cores": 2.0, "cpu_per_request": 1.25, "capacity": 1.6}


def test_ratios_are_none_when_a_run_is_missing() -> None:
    assert ratios({"1": _run(500, 1.0)}) == {"throughput": None, "throughput_same_cores": None,
                                             "cpu_per_request": None, "capacity": None}


def test_the_goal_compares_one_worker_alone_with_two_on_all_cores() -> None:
    assert configurations(1, (0, 1)) == [("1", 1, (1,)), ("1-shared", 1, (0, 1)), ("2", 2, (0, 1))]
