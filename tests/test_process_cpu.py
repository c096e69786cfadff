"""A process tree's CPU time from /proc (the cash-out bench reads the PostgreSQL server's this
way): children that run count, and so do children that ended and were waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.process_cpu import (
    CpuSpan,
    cpu_snapshot,
    own_cpu_seconds_of,
    parent_pid_of,
    tree_cpu_seconds_of,
)

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"
GONE_PID = 2**22 + 12_345


def others_s(pid: int) -> float:
    """The tree's CPU less the process's own: its children's."""
    tree, own = tree_cpu_seconds_of(pid), own_cpu_seconds_of(pid)
    assert tree is not None
    assert own is not None
    return tree - own


def test_a_child_that_ended_and_was_waited_for_still_counts() -> None:
    before = others_s(os.getpid())
    subprocess.run([sys.executable, "-c", BURN.format(seconds=0.4)], check=True)
    assert others_s(os.getpid()) >= before + 0.3


def test_a_running_child_counts_while_it_runs() -> None:
    before = others_s(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=0.4) + "time.sleep(30)\n"])
    try:
        deadline = time.monotonic() + 20
        while others_s(os.getpid()) < before + 0.3:
            assert child.poll() is None, "the child ended early"
            assert time.monotonic() < deadline, "the running child's CPU never showed"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()


def test_parents_and_processes_that_are_gone() -> None:
    assert parent_pid_of(os.getpid()) == os.getppid()
    assert parent_pid_of(GONE_PID) is None
    assert tree_cpu_seconds_of(GONE_PID) is None
    assert tree_cpu_seconds_of(None) is None  # a server or broker on another machine
    assert own_cpu_seconds_of(GONE_PID) is None


def test_a_span_gives_each_part_per_item_and_the_cores_it_kept_busy() -> None:
    parts = {
        "this process": lambda: own_cpu_seconds_of(os.getpid()),
        "gone": lambda: tree_cpu_seconds_of(GONE_PID),
    }
    before = cpu_snapshot(parts)
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    span = CpuSpan.between(before, cpu_snapshot(parts), items=1_000)

    burned = span.seconds["this process"]
    assert burned is not None
    assert burned >= 0.25
    assert span.seconds["gone"] is None
    assert span.total_s == burned
    assert span.us_each(burned) == burned / 1_000 * 1e6
    assert span.us_each(None) is None
    assert span.all_us_each == span.us_each(burned)
    # One thread: its CPU cannot outrun the clock (but for /proc's ticks of 10 ms).
    assert span.wall_s >= burned - 0.02
    assert span.cores_busy == burned / span.wall_s
    assert span.rate_bound(cores=2) == 1_000 * 2 / burned
    row = span.line("run", 5, lambda us: "n/a" if us is None else f"{us:.1f}")
    assert row.startswith(f"  run   this process {burned / 1_000 * 1e6:.1f}  gone n/a  all ")
    assert row.endswith(f"(cores busy {span.cores_busy:.2f} of {os.cpu_count()})")
