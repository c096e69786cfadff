"""Reporting a load test (`services.loadtest.run`): the measurements gathered into a
`LoadtestReport`, written as `summary.txt` (the text summary), `loadtest.json`, and the charts
`throughput.png` and `latency.png` (PNG charts need matplotlib, in the `dev` extra)."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.loadtest.checks import MISMATCHES_SHOWN_MAX
from services.loadtest.measurements import SAMPLE_INTERVAL_S, Sample, percentile

logger = logging.getLogger(__name__)

RATE_WINDOW_SAMPLES = 4  # rates are shown over 2 s
PERCENTILES = (50, 90, 95, 99)


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
    peak_events_per_s: float = 0.0
    publish_seconds: float = 0.0
    publish_per_s: float = 0.0
    cashout_seconds: float = 0.0
    total_seconds: float = 0.0
    lag_max: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_samples: int = 0
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
        document["sample_columns"] = ["t_s", "published", "consumed", "reports"]
        return document

    def summary(self) -> str:
        if self.predicted:
            verdict = "MATCHED" if self.matched else "NOT MATCHED"
            stream_line = f"{self.records} records, namespace {self.namespace}"
        else:
            verdict = "CONSISTENT" if self.matched else "NOT CONSISTENT"
            verdict += " (recorded stream: the end state was not predicted)"
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
            f"{self.main_seconds:.1f} s after the first send; peak {self.peak_events_per_s:,.0f}"
            f"/s over {RATE_WINDOW_SAMPLES * SAMPLE_INTERVAL_S:g} s; cash-out phase "
            f"{self.cashout_seconds:.1f} s; "
            f"total {self.total_seconds:.1f} s"
        )
        if self.latency_samples:
            figures = ", ".join(f"{name} {value:,.0f}" for name, value in self.latency_ms.items())
            lines.append(
                f"latency   send -> applied, ms ({self.latency_samples} samples): {figures}"
            )
        lines.append(f"lag       at most {self.lag_max} records published and not yet consumed")
        lines.append(
            f"records   consumed {self.consumed}: applied {self.applied}, duplicates "
            f"{self.duplicates}, dead-lettered {self.dead_lettered}, parked {self.parked} "
            "(then applied or dead-lettered)"
        )
        if self.cashouts:
            outcomes = ", ".join(f"{name} {count}" for name, count in self.cashouts.items())
            lines.append(f"cash-outs {outcomes}")
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


def write_charts(report: LoadtestReport, latencies: list[float], out_dir: Path) -> dict[str, str]:
    """throughput.png (consumed and published per second, and the lag) and latency.png (the
    histogram); nothing when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no charts (pip install matplotlib)")
        return {}
    files: dict[str, str] = {}
    rows = _rates(report.samples)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.plot([r[0] for r in rows], [r[1] for r in rows], label="consumed")
    top.plot([r[0] for r in rows], [r[2] for r in rows], label="published", alpha=0.6)
    top.set_ylabel(f"records / s ({RATE_WINDOW_SAMPLES * SAMPLE_INTERVAL_S:g} s window)")
    top.set_title(f"giftledger loadtest: {report.records} records, {report.events_per_s:,.0f}/s")
    top.legend()
    top.grid(alpha=0.3)
    bottom.plot([r[0] for r in rows], [r[3] for r in rows], color="tab:red")
    bottom.set_ylabel("lag (records)")
    bottom.set_xlabel(f"seconds since the first send (samples every {SAMPLE_INTERVAL_S} s)")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    path = out_dir / "throughput.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    files["throughput"] = str(path)
    if latencies:
        figure, axes = plt.subplots(figsize=(10, 5))
        axes.hist(latencies, bins=60, color="tab:blue")
        styles = iter(("-", "--", "-.", ":"))
        for name, value in report.latency_ms.items():
            if name.startswith("p"):
                axes.axvline(
                    value, linestyle=next(styles), color="tab:red", label=f"{name} {value:,.0f} ms"
                )
        axes.legend()
        axes.set_xlabel("send -> applied (ms)")
        axes.set_ylabel("sampled events")
        axes.set_title(f"latency, {len(latencies)} sampled events")
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
    rows = _rates(samples)
    report.peak_events_per_s = max((row[1] for row in rows), default=0.0)
    report.lag_max = max((max(s.published + s.reports - s.consumed, 0) for s in samples), default=0)
    report.latency_samples = len(latencies)
    if latencies:
        report.latency_ms = {f"p{share}": percentile(latencies, share) for share in PERCENTILES}
        report.latency_ms["max"] = latencies[-1]


def write_outputs(report: LoadtestReport, latencies: list[float], out_dir: Path) -> None:
    """summary.txt, loadtest.json and the charts, into `out_dir`."""
    report.files = write_charts(report, latencies, out_dir)
    summary_path = out_dir / "summary.txt"
    json_path = out_dir / "loadtest.json"
    report.files["summary"] = str(summary_path)
    report.files["json"] = str(json_path)
    summary_path.write_text(report.summary(), encoding="utf-8")
    json_path.write_text(json.dumps(report.to_document(), indent=1) + "\n", encoding="utf-8")
