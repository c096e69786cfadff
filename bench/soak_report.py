"""The soak's figures: memory samples, one line per window of time, and the first third of the
soak against the last (`first/last third ratio` lines, and whether memory and latency stayed flat).

Memory is sampled every `SAMPLE_INTERVAL_S`: the sum of the consumer processes' resident memory,
and that of consumer-0 alone, which is never killed (the sum drops when the killed process starts
again with empty caches, which would hide growth). A third's memory is the mean of its samples.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.soak_database import Window

SAMPLE_INTERVAL_S = 1.0
SAMPLES_MAX = 200_000
RSS_RATIO_FLAT_MAX = 1.10
P99_RATIO_FLAT_MAX = 1.50


@dataclass(frozen=True, slots=True)
class MemorySample:
    at_s: float  # since the soak started
    rss_bytes: int  # every consumer process
    first_rss_bytes: int  # consumer-0, never killed
    consumers_cpu_s: float = 0.0  # CPU time of every consumer process so far
    broker_cpu_s: float | None = None  # the embedded broker's so far (None: not ours to read)
    # The database server's so far, its postmaster and every backend (None: not readable), and
    # that postmaster's pid: a restart starts the count again under another pid.
    database_cpu_s: float | None = None
    database_pid: int | None = None


@dataclass(frozen=True, slots=True)
class Thirds:
    """The first and the last third of the soak."""

    rss_ratio: float | None
    first_rss_ratio: float | None
    p99_ratio: float | None
    applied_ratio: float | None

    def memory_flat(self) -> bool | None:
        ratios = [ratio for ratio in (self.rss_ratio, self.first_rss_ratio) if ratio is not None]
        return None if not ratios else max(ratios) <= RSS_RATIO_FLAT_MAX

    def latency_flat(self) -> bool | None:
        return None if self.p99_ratio is None else self.p99_ratio <= P99_RATIO_FLAT_MAX


def mib(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:,.1f} MiB"


def milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def window_line(
    number: int,
    start_s: float,
    stop_s: float,
    window: Window,
    rss_bytes: int,
    database_bytes: int,
    notes: Sequence[str],
    cpu: CpuShare | None = None,
) -> str:
    seconds = max(stop_s - start_s, 1e-9)
    line = (
        f"minute {number:>2} ({start_s:>5.0f}-{stop_s:<5.0f} s)  "
        f"applied/s {window.applied / seconds:>8,.0f}  "
        f"commit p50 {milliseconds(window.p50_ms):>8}  p99 {milliseconds(window.p99_ms):>9}  "
        f"consumer RSS {mib(rss_bytes):>11}  database {mib(database_bytes):>11}"
    )
    if cpu is not None:
        line += (
            f"  CPU consumers {cores_text(cpu.consumers)} broker {cores_text(cpu.broker)}"
            f" database {cores_text(cpu.database)}"
        )
    return line + "".join(f"  [{note}]" for note in notes)


@dataclass(frozen=True, slots=True)
class CpuShare:
    """Cores used on average over a stretch of the soak (None: not read)."""

    consumers: float | None
    broker: float | None
    database: float | None = None  # None also across a restart of the server


def cores_text(cores: float | None) -> str:
    return "-" if cores is None else f"{cores:.2f}"


def cpu_share(samples: Sequence[MemorySample], start_s: float, stop_s: float) -> CpuShare:
    """The consumers', the broker's and the database server's cores from `start_s` to `stop_s`,
    between the samples nearest those moments (at or before them, else the first); the
    database's only when one postmaster ran from one sample to the other."""
    if not samples:
        return CpuShare(None, None)
    first = _sample_at(samples, start_s)
    last = _sample_at(samples, stop_s)
    seconds = last.at_s - first.at_s
    if seconds <= 0:
        return CpuShare(None, None)
    broker = _cores(first.broker_cpu_s, last.broker_cpu_s, seconds)
    database = (
        _cores(first.database_cpu_s, last.database_cpu_s, seconds)
        if first.database_pid == last.database_pid
        else None
    )
    return CpuShare((last.consumers_cpu_s - first.consumers_cpu_s) / seconds, broker, database)


def _cores(first_cpu_s: float | None, last_cpu_s: float | None, seconds: float) -> float | None:
    if first_cpu_s is None or last_cpu_s is None:
        return None
    return (last_cpu_s - first_cpu_s) / seconds


def _sample_at(samples: Sequence[MemorySample], at_s: float) -> MemorySample:
    before = [sample for sample in samples if sample.at_s <= at_s]
    return before[-1] if before else samples[0]


def cpu_lines(
    samples: Sequence[MemorySample], duration_s: float, first: Window, last: Window
) -> list[str]:
    """The consumers' CPU a record applied, the broker's and the database server's cores, first
    third against last: what the pipeline's own cost did, apart from the broker and the database
    it was measured with."""
    third_s = duration_s / 3
    early = cpu_share(samples, 0.0, third_s)
    late = cpu_share(samples, duration_s - third_s, duration_s)
    lines = []
    if (
        early.consumers is not None
        and late.consumers is not None
        and first.applied
        and last.applied
        and early.consumers > 0
    ):
        early_us = early.consumers * third_s / first.applied * 1e6
        late_us = late.consumers * third_s / last.applied * 1e6
        lines.append(
            f"consumers' CPU a record applied: first third {early_us:,.0f} µs, last third "
            f"{late_us:,.0f} µs"
        )
        lines.append(f"consumer cpu/record last/first third ratio: {late_us / early_us:.2f}")
    lines += _cores_lines("broker", early.broker, late.broker)
    lines += _cores_lines("database", early.database, late.database)
    return lines


def _cores_lines(name: str, early: float | None, late: float | None) -> list[str]:
    """A process's cores in the first and the last third, and their ratio (none unread)."""
    if early is None or late is None or early <= 0:
        return []
    return [
        f"{name}'s cores: first third {early:.2f}, last third {late:.2f}",
        f"{name} cpu last/first third ratio: {late / early:.2f}",
    ]


def _mean(values: list[int]) -> float | None:
    return statistics.fmean(values) if values else None


def _ratio(last: float | None, first: float | None) -> float | None:
    if last is None or first is None or first <= 0:
        return None
    return last / first


def thirds(
    samples: Sequence[MemorySample], duration_s: float, first: Window, last: Window
) -> Thirds:
    """`first` and `last` are the windows of the first and last third of `duration_s`."""
    third_s = duration_s / 3
    early = [sample for sample in samples if 0 <= sample.at_s < third_s]
    late = [sample for sample in samples if sample.at_s >= duration_s - third_s]
    return Thirds(
        rss_ratio=_ratio(
            _mean([sample.rss_bytes for sample in late]),
            _mean([sample.rss_bytes for sample in early]),
        ),
        first_rss_ratio=_ratio(
            _mean([sample.first_rss_bytes for sample in late]),
            _mean([sample.first_rss_bytes for sample in early]),
        ),
        p99_ratio=_ratio(last.p99_ms, first.p99_ms),
        applied_ratio=_ratio(float(last.applied), float(first.applied)),
    )


def ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def verdict(flat: bool | None) -> str:
    return "unknown" if flat is None else ("yes" if flat else "no")


def thirds_lines(result: Thirds) -> list[str]:
    return [
        f"rss last/first third ratio: {ratio_text(result.rss_ratio)}",
        f"rss consumer-0 last/first third ratio: {ratio_text(result.first_rss_ratio)}",
        f"commit p99 last/first third ratio: {ratio_text(result.p99_ratio)}",
        f"applied/s last/first third ratio: {ratio_text(result.applied_ratio)}",
        f"memory flat: {verdict(result.memory_flat())} "
        f"(both rss ratios at most {RSS_RATIO_FLAT_MAX:.2f})",
        f"latency flat: {verdict(result.latency_flat())} "
        f"(commit p99 ratio at most {P99_RATIO_FLAT_MAX:.2f})",
    ]
