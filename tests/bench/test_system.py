"""bench/system.py: the /proc readers the scale-out run relies on."""

from __future__ import annotations

import os
import subprocess
import sys

from bench import system


def test_children_finds_a_child_process_and_its_cpu() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert child.pid in system.children(os.getpid())
        ticks = system.cpu_ticks_of([child.pid, 2**22 + 7])  # the second pid does not exist: left out
        assert list(ticks) == [child.pid]
    finally:
        child.communicate(b"")


def test_ticks_spent_counts_a_new_process_from_zero() -> None:
    assert system.ticks_spent({1: 10, 2: 5}, {1: 15, 3: 4}) == {1: 5, 3: 4}


def test_core_times_sums_several_cores() -> None:
    one, both = system.core_times(0), system.core_times((0,))
    assert both.total >= one.total > 0
    if system.cores() > 1:
        assert system.core_times((0, 1)).total > system.core_times(1).total
