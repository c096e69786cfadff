"""Reporting a load test (`services.loadtest.run`): the measurements gathered into a
`LoadtestReport`, written as `summary.txt` (the text summary), `loadtest.json`, and the charts
(PNG charts need matplotlib, in the `dev` extra): `throughput.png`, records consumed and
published per second with the phases shaded and named, and the lag; `latency.png`, send ->
applied of each sampled event against its send time beside the backlog at that moment, and the
histogram. When the publisher was paced and the consumers kept up with it (the drain after the
main phase's last send took at most `KEPT_UP_DRAIN_S`), send -> applied is the service time;
otherwise it includes the wait behind the backlog, and the summary says which."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.loadtest.checks import MISMATCHES_SHOWN_MAX
from services.loadtest.measurements import SAMPLE_INTERVAL_S, Latency, Sample, percentile

logger = logging.getLogger(__name__)

RATE_WINDOW_SAMPLES = 4  # rates are shown over 2 s
PERCENTILES = (50, 90, 95, 99)
KEPT_UP_DRAIN_S = 2.0
PHASE_COLOURS = {"main phase": "tab:green", "drain": "tab:orange", "cash-out phase": "tab:purple"}


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of the run, in seconds since it started (the samples' clock)."""

    name: str  # "main phase" (the publisher sending), "drain", "cash-out phase"
    start_s: float
    end_s: float


@dataclass
class LoadtestReport:
    matched: bool
    mismatches: list[str]
    stream: str
    namespace: str
    records: int
    mode: str
    speed: float
    rate_per_s: int | None
    bootstrap_servers: str = ""
    topic_prefix: str = ""
    database: str = ""
    main_records: int = 0
    main_seconds: float = 0.0  # first send to every main-phase record settled
    events_per_s: float = 0.0
    peak_events_per_s: float = 0.0  # `peak_rate`: never below events_per_s
    publish_seconds: float = 0.0
    publish_per_s: float = 0.0
    cashout_seconds: float = 0.0
    total_seconds: float = 0.0
    drain_seconds: float = 0.0  # the main phase's last send to every record settled
    publisher_cpu_s: float = 0.0  # the publisher process, main phase
    consumer_cpu_s: float = 0.0  # the load test's process (consumers, bank), main phase
    phases: list[Phase] = field(default_factory=list)
    latency_is_service_time: bool = False  # paced, and the consumers kept up
    topics: dict[str, dict[str, float]] = field(default_factory=dict)  # per-topic batches
    lag_max: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_samples: int = 0
    # Records of a recorded stream naming events this database applied before the run: they
    # applied nothing again (duplicates, or conflicts), and their latency is not measured.
    already_applied: int = 0
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    parked: int = 0
    cashouts: dict[str, int] = field(default_factory=dict)
    verify_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    predicted: bool = True  # False: a recorded stream, with no expected end state to compare

    def to_document(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["samples"] = [dataclasses.astuple(sample) for sample in self.samples]
        document["phases"] = [dataclasses.astuple(phase) for phase in self.phases]
        document["sample_columns"] = ["t_s", "published", "consumed", "reports"]
        return document

    def summary(self) -> str:
        if self.predicted:
            verdict = "MATCHED" if self.matched else "NOT MATCHED"
            stream_line = f"{self.records} records, namespace {self.namespace}"
        else:
            verdict = "CONSISTENT" if self.matched else "NOT CONSISTENT"
            verdict += " (recorded stream: the end state was not predicted)"
            if self.already_applied:
                verdict += (
                    f"; ALREADY APPLIED: {self.already_applied} of its {self.records} records "
                    "name events this database applied before the run"
                )
            stream_line = f"{self.records} records, recorded"
        lines = [f"giftledger loadtest: {verdict}"]
        lines.append(f"stream    {self.stream}: {stream_line}")
        if self.bootstrap_servers:
            lines.append(f"broker    {self.bootstrap_servers}, topics {self.topic_prefix}*")
            lines.append(f"database  {self.database}")
        pacing = {"recorded": f"recorded timing x{self.speed:g}", "rate": f"{self.rate_per_s}/s"}
        lines.append(
            f"publish   {self.main_records} main-phase records in {self.publish_seconds:.1f} s "
            f"({self.publish_per_s:,.0f}/s, {pacing.get(self.mode, 'as fast as possible')})"
        )
        lines.append(
            f"ledger    {self.events_per_s:,.0f} events/s: {self.main_records} records settled "
            f"{self.main_seconds:.1f} s after the first send (drain after the last send "
            f"{self.drain_seconds:.1f} s); peak {self.peak_events_per_s:,.0f}/s (the highest "
            f"rate over a {RATE_WINDOW_SAMPLES * SAMPLE_INTERVAL_S:g} s window, or events/s if "
            f"higher); cash-out phase {self.cashout_seconds:.1f} s; "
            f"total {self.total_seconds:.1f} s"
        )
        lines.append(
            f"cpu       main phase: publisher process {self.publisher_cpu_s:.1f} s, "
            f"consumers' process {self.consumer_cpu_s:.1f} s "
            f"({self.consumer_cpu_s * 1e6 / max(self.main_records, 1):,.0f} µs a record)"
        )
        if self.latency_samples:
            figures = ", ".join(f"{name} {value:,.0f}" for name, value in self.latency_ms.items())
            kind = (
                "service time (paced, and the consumers kept up)"
                if self.latency_is_service_time
                else "includes the wait behind the backlog (pace with --rate N to see the "
                "service time)"
            )
            lines.append(
                f"latency   send -> applied, ms ({self.latency_samples} samples): {figures}; {kind}"
            )
        else:
            lines.append("latency   none: no sampled event was applied during the run")
        lines.append(f"lag       at most {self.lag_max} records published and not yet consumed")
        lines.append(
            f"records   consumed {self.consumed}: applied {self.applied}, duplicates "
            f"{self.duplicates}, dead-lettered {self.dead_lettered}, parked {self.parked} "
            "(then applied or dead-lettered)"
        )
        if self.cashouts:
            outcomes = ", ".join(f"{name} {count}" for name, count in self.cashouts.items())
            lines.append(f"cash-outs {outcomes}")
        if self.topics:
            lines.append("topics    batches applied (records, records a batch, ms a batch, s):")
            for topic, timing in self.topics.items():
                lines.append(
                    f"  {topic:<20} {timing['batches']:>7,.0f} batches  "
                    f"{timing['records']:>9,.0f}  {timing['records_per_batch']:>7,.1f}  "
                    f"{timing['ms_per_batch']:>7,.1f}  {timing['seconds']:>7,.1f}"
                )
        lines.append(
            "verify    " + ("every invariant holds" if not self.verify_problems else "BROKEN")
        )
        lines += [f"  {problem}" for problem in self.verify_problems[:MISMATCHES_SHOWN_MAX]]
        if self.predicted:
            agreed = "the ledger matches the expected end state"
        else:
            agreed = "no expected end state; the counters add up and every record was consumed"
        lines.append("compare   " + (agreed if not self.mismatches else ""))
        lines += [f"  {line}" for line in self.mismatches]
        if self.warnings:
            lines.append("warnings")
            lines += [f"  {line}" for line in self.warnings]
        for name, path in self.files.items():
            lines.append(f"{name:<9} {path}")
        return "\n".join(lines) + "\n"


def _rates(
    samples: list[Sample], window: int = RATE_WINDOW_SAMPLES
) -> list[tuple[float, float, float, int]]:
    """(t, consumed/s, published/s, lag) over a moving window of `window` sample intervals:
    the consumers count a whole batch at once, so rates over one interval are spiky."""
    rows = []
    for before, after in zip(samples, samples[window:], strict=False):
        span = after.t_s - before.t_s
        if span <= 0:
            continue
        rows.append(
            (
                after.t_s,
                (after.consumed - before.consumed) / span,
                (after.published - before.published) / span,
                max(after.published + after.reports - after.consumed, 0),
            )
        )
    return rows


def peak_rate(samples: list[Sample], events_per_s: float) -> float:
    """The peak events/s: the highest rate of records consumed over a window of
    `RATE_WINDOW_SAMPLES` sample intervals (2 s), or `events_per_s` (the main phase's records
    over its time) where that is higher. The main phase is a window of its own: shorter than 2 s,
    it is the run's shortest (the 2 s windows, longer, hold idle time too, and a run of fewer
    samples has none), and the consumers count a whole batch at once, so on a short phase the 2 s
    windows may cut its few batches apart; either way, a peak below the average is no peak."""
    return max(max((row[1] for row in _rates(samples)), default=0.0), events_per_s)


def _shade_phases(axes: Any, phases: list[Phase]) -> None:
    """Each phase as a shaded, named stretch of the x axis."""
    for phase in phases:
        axes.axvspan(
            phase.start_s,
            phase.end_s,
            color=PHASE_COLOURS.get(phase.name, "tab:gray"),
            alpha=0.12,
            label=f"{phase.name} ({phase.end_s - phase.start_s:.1f} s)",
        )


def _backlog_at(samples: list[Sample]) -> tuple[list[float], list[int]]:
    """(t, records published and not yet consumed) of every sample."""
    return (
        [sample.t_s for sample in samples],
        [max(sample.published + sample.reports - sample.consumed, 0) for sample in samples],
    )


def write_charts(report: LoadtestReport, points: list[Latency], out_dir: Path) -> dict[str, str]:
    """throughput.png (consumed and published per second with the phases named, and the lag)
    and latency.png (send -> applied of each sampled event against its send time, in seconds
    since the run started, beside the backlog; and the histogram); nothing when matplotlib is
    not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no charts (pip install matplotlib)")
        return {}
    files: dict[str, str] = {}
    rows = _rates(report.samples)
    backlog_t, backlog = _backlog_at(report.samples)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    _shade_phases(top, report.phases)
    top.plot([r[0] for r in rows], [r[1] for r in rows], label="consumed")
    top.plot([r[0] for r in rows], [r[2] for r in rows], label="published", alpha=0.6)
    top.set_ylabel(f"records / s ({RATE_WINDOW_SAMPLES * SAMPLE_INTERVAL_S:g} s window)")
    top.set_title(f"giftledger loadtest: {report.records} records, {report.events_per_s:,.0f}/s")
    top.legend(loc="upper right", fontsize="small")
    top.grid(alpha=0.3)
    _shade_phases(bottom, report.phases)
    bottom.plot(backlog_t, backlog, color="tab:red")
    bottom.set_ylabel("lag (records)")
    bottom.set_xlabel(f"seconds since the run started (samples every {SAMPLE_INTERVAL_S} s)")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    path = out_dir / "throughput.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    files["throughput"] = str(path)
    if points:
        kind = "service time" if report.latency_is_service_time else "with queueing"
        figure, (over_time, histogram) = plt.subplots(2, 1, figsize=(10, 8))
        _shade_phases(over_time, report.phases)
        over_time.scatter(
            [point.sent_at for point in points],
            [point.ms for point in points],
            s=4,
            color="tab:blue",
            label=f"send -> applied ({kind})",
        )
        over_time.set_xlabel("sent, seconds since the run started")
        over_time.set_ylabel("send -> applied (ms)")
        over_time.grid(alpha=0.3)
        backlog_axes = over_time.twinx()
        backlog_axes.plot(backlog_t, backlog, color="tab:red", alpha=0.7, label="backlog")
        backlog_axes.set_ylabel("backlog (records published, not yet consumed)")
        handles, labels = over_time.get_legend_handles_labels()
        more_handles, more_labels = backlog_axes.get_legend_handles_labels()
        over_time.legend(
            handles + more_handles, labels + more_labels, loc="upper left", fontsize="small"
        )
        over_time.set_title(f"latency, {len(points)} sampled events")
        values = [point.ms for point in points]
        histogram.hist(values, bins=60, color="tab:blue")
        styles = iter(("-", "--", "-.", ":"))
        for name, value in report.latency_ms.items():
            if name.startswith("p"):
                histogram.axvline(
                    value, linestyle=next(styles), color="tab:red", label=f"{name} {value:,.0f} ms"
                )
        histogram.legend()
        histogram.set_xlabel(f"send -> applied (ms), {kind}")
        histogram.set_ylabel("sampled events")
        figure.tight_layout()
        path = out_dir / "latency.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        files["latency"] = str(path)
    return files


def add_measurements(report: LoadtestReport, samples: list[Sample], latencies: list[float]) -> None:
    """The rates, the lag and the latency percentiles (`latencies`: ms, sorted)."""
    report.samples = samples
    if report.main_seconds > 0:
        report.events_per_s = report.main_records / report.main_seconds
    if report.publish_seconds > 0:
        report.publish_per_s = report.main_records / report.publish_seconds
    report.peak_events_per_s = peak_rate(samples, report.events_per_s)
    report.lag_max = max((max(s.published + s.reports - s.consumed, 0) for s in samples), default=0)
    report.drain_seconds = sum(
        phase.end_s - phase.start_s for phase in report.phases if phase.name == "drain"
    )
    report.latency_is_service_time = (
        report.mode != "max" and report.drain_seconds <= KEPT_UP_DRAIN_S
    )
    report.latency_samples = len(latencies)
    if latencies:
        report.latency_ms = {f"p{share}": percentile(latencies, share) for share in PERCENTILES}
        report.latency_ms["max"] = latencies[-1]


def write_outputs(report: LoadtestReport, points: list[Latency], out_dir: Path) -> None:
    """summary.txt, loadtest.json and the charts, into `out_dir` (`points`: the sampled
    latencies, sent in seconds since the run started)."""
    report.files = write_charts(report, points, out_dir)
    summary_path = out_dir / "summary.txt"
    json_path = out_dir / "loadtest.json"
    report.files["summary"] = str(summary_path)
    report.files["json"] = str(json_path)
    summary_path.write_text(report.summary(), encoding="utf-8")
    json_path.write_text(json.dumps(report.to_document(), indent=1) + "\n", encoding="utf-8")
