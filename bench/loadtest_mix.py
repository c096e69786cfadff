"""The load test's mixed stream beside a stream of gifts alone, through the same pipeline.

    python -m bench.loadtest_mix [--events 100000] [--seed 1] [--service-share 0.5] [--out DIR]

Three runs of `giftledger loadtest` (`services.loadtest.run.loadtest`), one after the other, each
with its own embedded broker (or `KAFKA_BOOTSTRAP_SERVERS`), fresh topics and consumer groups, on
one new database `giftledger_bench_<random>` (on `DATABASE_URL`, else 127.0.0.1:5432, else the
embedded PostgreSQL), dropped at the end:

1. **gift-only**: `--events` records of gifts alone (LIVE and video gifts, and each creator's
   first profile, which every stream sends when a creator first appears; no tips, rewards,
   payments, reversals, profile updates, duplicates, bad records or cash-outs), as fast as the
   publisher goes;
2. **mixed**: the load test's default stream of `--events` records (every topic, 0.5 % bad
   records, duplicates, reversals, profile updates, then the cash-out phase), as fast as the
   publisher goes;
3. **mixed, paced**: the mixed stream again (another namespace) paced at `--service-share` of
   run 2's rate, so that send -> applied is the service time rather than the wait behind a
   backlog (skipped with `--service-share 0`).

Each run: one load-test process holding the consumers of every topic and the simulated bank (one
consumer process, both streams), the publisher in a process of its own. The rate compared is the
load test's `events/s`: the main phase's records over the time from its first send until every
one of them is settled (the cash-out phase is timed apart). The gift-only run goes first, so the
mixed run meets the larger database: the ratio errs against the mixed stream.

Prints the machine (CPUs, load average, the time of a fixed Python loop) before and after, a row
per run (events/s, the peak, the main phase, the drain and the cash-out phase in seconds, the
consumers' process CPU time a record, the publisher's CPU time, the largest lag, the database's
transactions committed and deadlocks during the run, send -> applied p50 / p99 and whether that
is the service time), the per-topic batches of runs 1 and 2 (batches, records a batch, ms a
batch), and `loadtest mixed/gift-only ratio: 0.NN` on its own line.
Each run's `summary.txt`, `loadtest.json` and charts are under `--out`. Exit 1 when a run does
not reach its expected end state.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr
from sqlalchemy import text

from bench.harness import admin_url, fresh_database, machine_line
from ledger.database import create_engine
from services.cli_text import positive_int, table
from services.loadtest.replay import ReplayMode
from services.loadtest.report import LoadtestReport
from services.loadtest.run import loadtest
from services.loadtest.stream_format import StreamShape
from services.runtime.settings import Settings, get_settings

EVENTS_DEFAULT = 100_000
SERVICE_SHARE_DEFAULT = 0.5
STALL_S = 120.0

GIFT_ONLY = StreamShape(
    duplicate_rate=0.0,
    out_of_order_rate=0.0,
    bad_rate=0.0,
    conflict_rate=0.0,
    reversal_rate=0.0,
    tip_rate=0.0,
    fund_rate=0.0,
    marketplace_rate=0.0,
    profile_update_rate=0.0,
    cashout_share=0.0,
)
MIXED = StreamShape()


@dataclass(frozen=True, slots=True)
class DatabaseCounters:
    """The bench database's transactions committed and its deadlocks, as `pg_stat_database`
    counts them (every backend of a run has flushed its counts by the end of the run, when its
    connections close). Rollbacks are left out: the connection pool rolls back every read-only
    use of a connection when it takes it back."""

    commits: int
    deadlocks: int

    def __sub__(self, other: DatabaseCounters) -> DatabaseCounters:
        return DatabaseCounters(self.commits - other.commits, self.deadlocks - other.deadlocks)


async def database_counters(url: str) -> DatabaseCounters:
    engine = create_engine(url, pool_size=1, pool_overflow_max=0)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT xact_commit, deadlocks FROM pg_stat_database"
                        " WHERE datname = current_database()"
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    return DatabaseCounters(int(row.xact_commit), int(row.deadlocks))


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    report: LoadtestReport
    database: DatabaseCounters  # during the run


async def one_run(
    settings: Settings,
    name: str,
    run_dir: Path,
    *,
    events: int,
    seed: int,
    shape: StreamShape,
    mode: ReplayMode = "max",
    rate_per_s: int | None = None,
) -> Run:
    url = settings.database_url
    assert url is not None
    before = await database_counters(url.get_secret_value())
    report = await loadtest(
        settings,
        events=events,
        file=None,
        out_dir=run_dir,
        seed=seed,
        mode=mode,
        rate_per_s=rate_per_s,
        shape=shape,
        stall_s=STALL_S,
    )
    if not report.matched:
        sys.stderr.write(f"{name}: NOT MATCHED\n{report.summary()}")
    after = await database_counters(url.get_secret_value())
    return Run(name, report, after - before)


def run_row(run: Run) -> list[str]:
    report = run.report
    latency = report.latency_ms
    kind = "service" if report.latency_is_service_time else "queueing"
    return [
        run.name,
        f"{report.main_records:,}",
        f"{report.events_per_s:,.0f}",
        f"{report.peak_events_per_s:,.0f}",
        f"{report.main_seconds:.1f}",
        f"{report.drain_seconds:.1f}",
        f"{report.cashout_seconds:.1f}",
        f"{report.consumer_cpu_s * 1e6 / max(report.main_records, 1):,.0f}",
        f"{report.publisher_cpu_s:.1f}",
        f"{report.lag_max:,}",
        f"{run.database.commits:,} / {run.database.deadlocks:,}",
        f"{latency.get('p50', 0):,.0f} / {latency.get('p99', 0):,.0f} ({kind})",
        "yes" if report.matched else "NO",
    ]


def topic_rows(gifts: LoadtestReport, mixed: LoadtestReport) -> list[list[str]]:
    rows = [
        [
            "topic",
            "gift-only batches",
            "records/batch",
            "ms/batch",
            "mixed batches",
            "records/batch",
            "ms/batch",
            "mixed s in batches",
        ]
    ]
    for topic in sorted(set(gifts.topics) | set(mixed.topics)):
        cells = [topic]
        for report in (gifts, mixed):
            timing = report.topics.get(topic)
            if timing is None:
                cells += ["", "", ""]
            else:
                cells += [
                    f"{timing['batches']:,.0f}",
                    f"{timing['records_per_batch']:,.1f}",
                    f"{timing['ms_per_batch']:,.1f}",
                ]
        mixed_timing = mixed.topics.get(topic)
        cells.append("" if mixed_timing is None else f"{mixed_timing['seconds']:,.1f}")
        rows.append(cells)
    return rows


async def run_all(options: argparse.Namespace, out: TextIO) -> int:
    out.write(machine_line() + "\n")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir: Path = options.out or get_settings().data_dir / "loadtest-mix" / stamp
    async with admin_url() as (maintenance_url, source), fresh_database(maintenance_url) as url:
        out.write(f"database: a new database on {source}; runs under {out_dir}\n")
        settings = get_settings().model_copy(update={"database_url": SecretStr(url)})
        gifts_run = await one_run(
            settings,
            "gift-only, as fast as possible",
            out_dir / "gift-only",
            events=options.events,
            seed=options.seed,
            shape=GIFT_ONLY,
        )
        mixed_run = await one_run(
            settings,
            "mixed, as fast as possible",
            out_dir / "mixed",
            events=options.events,
            seed=options.seed,
            shape=MIXED,
        )
        runs = [gifts_run, mixed_run]
        if options.service_share > 0:
            rate_per_s = max(int(mixed_run.report.events_per_s * options.service_share), 1)
            runs.append(
                await one_run(
                    settings,
                    f"mixed, paced at {rate_per_s:,}/s",
                    out_dir / "mixed-paced",
                    events=options.events,
                    seed=options.seed + 1,
                    shape=MIXED,
                    mode="rate",
                    rate_per_s=rate_per_s,
                )
            )
    gifts, mixed = gifts_run.report, mixed_run.report
    header = [
        "run",
        "main records",
        "events/s",
        "peak/s",
        "main s",
        "drain s",
        "cash-out s",
        "consumer CPU µs/record",
        "publisher CPU s",
        "lag max",
        "transactions committed / deadlocks",
        "send -> applied p50 / p99 ms",
        "matched",
    ]
    rows = [header] + [run_row(run) for run in runs]
    out.write("\n".join(table(rows, right_aligned=set(range(1, 11)))) + "\n")
    out.write("per topic, the consumers' batches (as fast as possible):\n")
    out.write("\n".join(table(topic_rows(gifts, mixed), right_aligned=set(range(1, 8)))) + "\n")
    ratio = mixed.events_per_s / gifts.events_per_s if gifts.events_per_s else 0.0
    out.write(f"loadtest mixed/gift-only ratio: {ratio:.2f}\n")
    out.write(machine_line() + " (after the runs)\n")
    return 0 if all(run.report.matched for run in runs) else 1


def _share(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return number


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadtest_mix",
        description="the load test's mixed stream beside gifts alone, through the same pipeline",
    )
    parser.add_argument(
        "--events",
        type=positive_int,
        default=EVENTS_DEFAULT,
        metavar="N",
        help=f"records in each stream (default {EVENTS_DEFAULT})",
    )
    parser.add_argument("--seed", type=int, default=1, help="the streams' seed (default 1)")
    parser.add_argument(
        "--service-share",
        type=_share,
        default=SERVICE_SHARE_DEFAULT,
        metavar="SHARE",
        help="the paced run's rate, as a share of the mixed run's; 0: no paced run "
        f"(default {SERVICE_SHARE_DEFAULT:g})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where each run writes its stream, summary and charts "
        "(default <data dir>/loadtest-mix/<UTC time>)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_arguments(argv)
    return asyncio.run(run_all(options, sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
