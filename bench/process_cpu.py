"""CPU time of processes on this machine, read from /proc: one process's own, and a process
tree's (a PostgreSQL server: the postmaster, the backends and workers it runs now, and those
that already ended).

A process that ended and was waited for adds its time to its parent's `cutime` and `cstime`; the
postmaster waits for its children as they end, so the tree's figure keeps the time of backends
that came and went between two readings.

`cpu_snapshot` reads several named parts at once (a benchmark's own process, its consumer
processes, the server, the broker); `CpuSpan` is what each used between two snapshots, per item
and in cores kept busy.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's closing parenthesis (the state is the
    first), or None when the process is gone or not on this machine."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def own_cpu_seconds_of(pid: int) -> float | None:
    """CPU time (user and system) a process has used so far, or None when it cannot be read."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # utime is field 14 of the stat line and stime 15; here they are 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def cpu_seconds_of(pid: int) -> float:
    """CPU time (user and system) a process has used so far (0 once it is gone)."""
    return own_cpu_seconds_of(pid) or 0.0


def parent_pid_of(pid: int) -> int | None:
    """The parent of a process on this machine, or None when it cannot be read."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def children_of(pid: int) -> list[int]:
    """The running children of a process (none when it cannot be read)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                found += [int(child) for child in children]
    return found


def tree_cpu_seconds_of(pid: int | None) -> float | None:
    """CPU time used so far by a process and its children, the running ones and those it has
    waited for (None when the process cannot be read, or for no process: a server or broker
    that does not run on this machine)."""
    if pid is None:
        return None
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # utime, stime, cutime, cstime: fields 14 to 17 of the stat line.
    ticks = sum(int(value) for value in fields[11:15])
    for child in children_of(pid):
        child_fields = _stat_fields(child)
        if child_fields is not None:
            ticks += sum(int(value) for value in child_fields[11:15])
    return ticks / CLOCK_TICKS_PER_S


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds used so far by each named part (None: not readable on this machine), and when
    they were read (`time.monotonic()`)."""

    seconds: dict[str, float | None]
    at_s: float


def cpu_snapshot(parts: Mapping[str, Callable[[], float | None]]) -> CpuSnapshot:
    """Read every part's CPU seconds now."""
    return CpuSnapshot({name: read() for name, read in parts.items()}, time.monotonic())


@dataclass(frozen=True, slots=True)
class CpuSpan:
    """The CPU seconds each part used between two snapshots, over `wall_s` seconds of the clock,
    for `items` items (gifts, cash-outs)."""

    seconds: dict[str, float | None]
    wall_s: float
    items: int

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot, items: int) -> CpuSpan:
        used: dict[str, float | None] = {}
        for name, last in after.seconds.items():
            first = before.seconds.get(name)
            used[name] = None if first is None or last is None else max(last - first, 0.0)
        return cls(used, after.at_s - before.at_s, items)

    def plus(self, other: CpuSpan) -> CpuSpan:
        """Both spans as one: their CPU seconds, clock seconds and items summed (a part that
        either could not read is None)."""
        used: dict[str, float | None] = {}
        for name, mine in self.seconds.items():
            theirs = other.seconds.get(name)
            used[name] = None if mine is None or theirs is None else mine + theirs
        return CpuSpan(used, self.wall_s + other.wall_s, self.items + other.items)

    @property
    def total_s(self) -> float:
        return sum(seconds for seconds in self.seconds.values() if seconds is not None)

    def us_each(self, seconds: float | None) -> float | None:
        """Microseconds of CPU an item."""
        return None if seconds is None or not self.items else seconds / self.items * 1e6

    @property
    def all_us_each(self) -> float | None:
        """Microseconds of CPU an item, every part together."""
        return self.us_each(self.total_s)

    @property
    def cores_busy(self) -> float:
        return self.total_s / self.wall_s if self.wall_s > 0 else 0.0

    def line(self, label: str, label_width: int, per_item: Callable[[float | None], str]) -> str:
        """One row of a CPU table: `label`, each part's CPU an item and all of it (`per_item`
        writes microseconds, or None for a part not on this machine), and the cores kept busy."""
        parts = "  ".join(f"{name} {per_item(self.us_each(s))}" for name, s in self.seconds.items())
        return (
            f"  {label:<{label_width}} {parts}  all {per_item(self.all_us_each)}"
            f"  (cores busy {self.cores_busy:.2f} of {os.cpu_count() or 1})"
        )

    def rate_bound(self, cores: int) -> float:
        """Items a second were all `cores` busy all the time at this CPU an item (a bound: the
        processes also wait for one another)."""
        return self.items * cores / self.total_s if self.total_s > 0 else math.inf
