"""`giftledger loadtest compare A.json B.json`: exit 1 when B is worse than A beyond the
threshold, 0 otherwise, 2 when a report cannot be read; through the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.cli import main


def report(
    events_per_s: float = 1_000.0, p99_ms: float = 200.0, lag_max: int = 500
) -> dict[str, Any]:
    return {
        "matched": True,
        "events_per_s": events_per_s,
        "peak_events_per_s": events_per_s * 1.5,
        "publish_per_s": events_per_s * 2,
        "latency_ms": {"p50": 40.0, "p90": 120.0, "p95": 150.0, "p99": p99_ms, "max": 900.0},
        "lag_max": lag_max,
    }


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


def compare(a: Path, b: Path, *options: str) -> int:
    return main(["loadtest", "compare", str(a), str(b), *options])


def test_a_run_within_the_threshold_is_not_worse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write(tmp_path / "a.json", report())
    b = write(tmp_path / "b.json", report(events_per_s=950.0, p99_ms=215.0, lag_max=540))
    assert compare(a, b) == 0
    out = capsys.readouterr().out
    assert "events/s" in out
    assert "-5.0 %" in out
    assert "+7.5 %" in out
    assert "not worse" in out


def test_lower_throughput_beyond_the_threshold_is_worse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write(tmp_path / "a.json", report())
    b = write(tmp_path / "b.json", report(events_per_s=850.0))
    assert compare(a, b) == 1
    assert "worse than A beyond 10 %: events/s" in capsys.readouterr().out
    assert compare(a, b, "--threshold-pct", "20") == 0


def test_higher_latency_or_lag_is_worse(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", report())
    assert compare(a, write(tmp_path / "slow.json", report(p99_ms=260.0))) == 1
    assert compare(a, write(tmp_path / "lag.json", report(lag_max=700))) == 1
    # Better is never worse, however far it moves.
    assert compare(a, write(tmp_path / "fast.json", report(1_900.0, 50.0, 10))) == 0


def test_an_unreadable_report_exits_2(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", report())
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    lacking = write(tmp_path / "lacking.json", {"events_per_s": 1.0})
    assert compare(a, broken) == 2
    assert compare(a, lacking) == 2
    assert compare(a, tmp_path / "missing.json") == 2
    assert main(["loadtest", "compare", str(a)]) == 2


def test_a_report_without_latency_samples_is_compared_on_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that applied no sampled event (a recorded stream the database held already) writes
    no percentiles: the rest is compared, and the latency is said to be missing (it was exit 2,
    unreadable)."""
    a = write(tmp_path / "a.json", report())
    without = report(events_per_s=800.0)
    without["latency_ms"], without["latency_samples"] = {}, 0
    b = write(tmp_path / "b.json", without)
    assert compare(a, b) == 1  # events/s down by 20 %
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert any(line.split()[:3] == ["latency", "p99", "ms"] and "n/a" in line for line in lines)
    assert f"latency is not available for B ({b}): no latency samples" in lines
    assert "B is worse than A beyond 10 %: events/s" in lines
    assert compare(b, write(tmp_path / "c.json", report(events_per_s=800.0))) == 0
    assert f"latency is not available for A ({b}): no latency samples" in (
        capsys.readouterr().out.splitlines()
    )
    # A report whose latency is not an object at all is still unreadable.
    broken = report()
    broken["latency_ms"] = [1, 2]
    assert compare(a, write(tmp_path / "broken.json", broken)) == 2
