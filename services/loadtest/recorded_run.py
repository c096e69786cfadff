"""`giftledger loadtest FILE` on a recorded stream (`giftledger record`): no
`FILE.expected.json`, so the end state is not predicted; the run checks what holds without one.

The stream is replayed whole (one phase: a recorded stream has no separate cash-out phase) into
the run's fresh topics, consumers and simulated bank (`services.loadtest.run` sets them up), and
the run waits until every record and every report of the bank is consumed, no event is still
parked, the run's outbox is drained and the bank has nothing in flight. Then:

- the consumers' counters add up: every consumed record was applied, a duplicate or
  dead-lettered (or parked, then one of those), and every record of the file was consumed;
- `verify` holds, which includes that gift coins reconcile with the diamonds credited;
- the dead letters in the run's DLQ topics are those the consumers counted (a difference is a
  warning: a DLQ record may be published twice).

The records naming events this database applied before the run (the stream loaded into a
database that holds it) are counted (`applied_before_run`) and named in the verdict: they applied
nothing again, and their latency is not measured.

Balances are not compared: nothing says what they should be.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.app.consumer import ConsumerService
from services.loadtest.checks import read_dead_letter_topics
from services.loadtest.measurements import Sample, SendTimes, applied_before_run
from services.loadtest.pipeline import StreamRun, wait_until
from services.loadtest.replay import ReplayMode
from services.loadtest.report import LoadtestReport
from services.payout_rail.rail import PayoutRailService
from services.runtime.settings import Settings
from services.verification import verify_and_record

NOT_PREDICTED = (
    "the end state was not predicted (a recorded stream has no FILE.expected.json): checked that "
    "every record was applied, a duplicate or dead-lettered, that verify holds (gift coins "
    "reconcile with diamonds) and the dead letters; balances were not compared"
)
DLQ_READ_WAIT_S = 10.0


@dataclass
class RecordedRun(StreamRun):
    """One load test of a recorded stream: its running pipeline and what it measured."""

    settings: Settings
    engine: AsyncEngine
    service: ConsumerService
    rail: PayoutRailService
    bootstrap_servers: str
    stream: Path
    records: int
    out_dir: Path
    pacing: tuple[ReplayMode, float, int | None]
    send_times: SendTimes = field(default_factory=SendTimes)
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0

    async def settled(self) -> bool:
        counts = self.service.ingestor.counts
        if counts.consumed < self.records + self.rail.reports_sent:
            return False
        if counts.still_parked or self.rail.in_flight_count:
            return False
        return await self.unpublished() == 0

    async def progress(self) -> tuple[int, ...]:
        counts = self.service.ingestor.counts
        return (
            counts.consumed,
            counts.still_parked,
            self.rail.reports_sent,
            await self.unpublished(),
        )


async def run_recorded(run: RecordedRun, report: LoadtestReport, stall_s: float) -> None:
    """Replay the whole stream and wait until it has settled."""
    report.predicted = False
    report.publish_seconds = await run.publish()
    if not await wait_until(run.settled, run.progress, stall_s):
        report.mismatches.append(f"the stream did not settle: nothing moved for {stall_s:g} s")
    report.main_seconds = time.monotonic() - run.started


async def check_recorded(run: RecordedRun, report: LoadtestReport, since: datetime) -> None:
    """The checks that hold without an expected end state (see the module's docstring);
    `since`: when the run started (its cash-outs are those requested after)."""
    counts = run.service.ingestor.counts
    problems = (await verify_and_record(run.engine, full=True)).problems
    report.verify_problems = [f"{problem.check}: {problem.detail}" for problem in problems]
    report.consumed = counts.consumed
    report.applied = counts.applied + counts.unparked_applied
    report.duplicates = counts.duplicates + counts.unparked_duplicates
    report.dead_lettered = counts.dead_lettered + counts.unparked_dead_lettered
    report.parked = counts.parked
    if not counts.balanced():
        report.mismatches.append(
            f"the counters do not add up: consumed {counts.consumed}, applied {report.applied}, "
            f"duplicates {report.duplicates}, dead-lettered {report.dead_lettered}, still parked "
            f"{counts.still_parked}"
        )
    if counts.still_parked:
        report.mismatches.append(f"{counts.still_parked} events still parked")
    expected_consumed = run.records + run.rail.reports_sent
    if counts.consumed < expected_consumed:
        report.mismatches.append(
            f"consumed {counts.consumed} of {expected_consumed} records (the file's and the "
            "bank's reports)"
        )
    dead_letters = await read_dead_letter_topics(
        run.bootstrap_servers,
        run.settings.kafka_topic_prefix,
        report.dead_lettered,
        DLQ_READ_WAIT_S,
    )
    in_topics = sum(sum(reasons.values()) for reasons in dead_letters.values())
    if in_topics != report.dead_lettered:
        report.warnings.append(
            f"the DLQ topics hold {in_topics} dead letters, the consumers counted "
            f"{report.dead_lettered}"
        )
    async with run.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT status, count(*) AS n FROM cashouts WHERE cashout_id IN"
                " (SELECT event_id FROM applied_events WHERE topic = 'cashouts.requested'"
                " AND applied_at >= :since) GROUP BY status"
            ),
            {"since": since},
        )
        report.cashouts = {row.status: row.n for row in rows}
    report.already_applied = await applied_before_run(run.engine, run.stream, since)
    if report.already_applied:
        report.warnings.append(
            f"{report.already_applied} of the stream's {run.records} records name events this "
            "database applied before the run: each was a duplicate (or, with another payload, a "
            "conflict), applied nothing again, and has no latency; load the stream into a "
            "database without its events to measure applying it"
        )
    report.warnings.append(NOT_PREDICTED)
    report.matched = not report.mismatches and not report.verify_problems
