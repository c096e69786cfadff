"""The soak benchmark for a few seconds (`bench/soak.py`): `giftledger run` processes, its own
embedded PostgreSQL, the test session's broker. The end state must match the generator's expected
state, verify must hold, and a line per window must be printed. And the soak's retiming of
`occurred_at` keeps what the expected state rests on."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from bench.soak_stream import retime

REPO_ROOT = Path(__file__).resolve().parent.parent
SOAK_TIMEOUT_S = 240.0
WINDOW_LINE = re.compile(
    r"^minute +\d+ \( *[\d.]+- *[\d.]+ +s\) +applied/s +[\d,]+ +commit p50 +[\d,]+ ms +"
    r"p99 +[\d,]+ ms +consumer RSS +[\d,.]+ MiB +database +[\d,.]+ MiB"
    # the consumers' cores over the window; the broker's only when the soak started it; the
    # soak's own PostgreSQL's (no restart here, so always read)
    r"  CPU consumers \d+\.\d\d broker (-|\d+\.\d\d) database \d+\.\d\d"
)


async def start_soak(kafka_bootstrap: str, out: Path, minutes: str) -> asyncio.subprocess.Process:
    """`bench.soak` for `minutes` at 200 records a second, a line every 6 s, no consumer killed or
    restarted, writing into `out`, on the test session's broker; its output on stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.soak",
        "--minutes",
        minutes,
        "--rate",
        "200",
        "--interval-s",
        "6",
        "--no-kill",
        "--no-restart",
        "--out",
        str(out),
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_SESSION_TIMEOUT_MS": "6000",  # the groups form sooner
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def test_a_short_soak_reaches_the_expected_end_state_and_prints_each_window(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    process = await start_soak(kafka_bootstrap, tmp_path, "0.2")
    output, _ = await asyncio.wait_for(process.communicate(), SOAK_TIMEOUT_S)
    text = output.decode()
    lines = text.splitlines()
    assert process.returncode == 0, text
    windows = [line for line in lines if WINDOW_LINE.match(line)]
    assert len(windows) == 2, text  # 12 s in windows of 6 s
    assert any(line.startswith("end state: matched") for line in lines), text
    assert "consumed: every record of every topic, by every consumer group" in lines, text
    assert "verify: every invariant holds (giftledger verify exit 0)" in lines, text
    assert "lost: 0" in lines, text
    assert "doubled: 0" in lines, text
    ratios = [line for line in lines if re.match(r"^rss last/first third ratio: \d+\.\d\d$", line)]
    assert len(ratios) == 1, text
    cpu_ratio = r"^consumer cpu/record last/first third ratio: \d+\.\d\d$"
    assert len([line for line in lines if re.match(cpu_ratio, line)]) == 1, text
    database_ratio = r"^database cpu last/first third ratio: \d+\.\d\d$"
    assert len([line for line in lines if re.match(database_ratio, line)]) == 1, text
    for moment in ("start", "end"):  # the machine's calibration, to tell its drift apart
        machine = rf"^machine: .*; python_loop_5m_additions_s \d+\.\d\d\d \(at the {moment}\)$"
        assert len([line for line in lines if re.match(machine, line)]) == 1, text


def _occurred_at(value: bytes) -> bytes:
    found = re.search(rb'"occurred_at":"([^"]+)"', value)
    assert found is not None, value
    return found.group(1)


def test_retiming_keeps_the_order_of_events_and_the_bytes_of_duplicates() -> None:
    start_us = 1_796_256_000_000_000  # 2026-12-03T00:00:00Z
    stamps = [
        "2026-10-31T23:59:59.999Z",  # a profile dated back, before the stream's start
        "2026-11-02T00:00:00.000Z",
        "2026-11-02T00:00:00.001Z",
        "2026-11-02T00:00:00.002Z",
        "2026-11-02T07:30:00.500Z",
    ]
    for stretch in (0.001, 0.7, 1.0, 3.3):
        moved = [
            retime(f'{{"event_id":"e{n}","occurred_at":"{stamp}"}}'.encode(), start_us, stretch)
            for n, stamp in enumerate(stamps)
        ]
        times = [_occurred_at(value) for value in moved]
        assert times == sorted(times), times
        assert len(set(times)) == len(times), times
        again = f'{{"event_id":"e2","occurred_at":"{stamps[2]}"}}'.encode()
        assert retime(again, start_us, stretch) == moved[2]
    at_start = b'{"event_id":"e","occurred_at":"2026-11-02T00:00:00.000Z"}'
    assert retime(at_start, start_us, 1.0) == (
        b'{"event_id":"e","occurred_at":"2026-12-03T00:00:00.000000Z"}'
    )
    not_generated = b'{"event_id":"e","occurred_at":"2026-11-02T00:00:00+01:00"}'
    assert retime(not_generated, start_us, 1.0) == not_generated
