"""The pipeline one load test drives (`services.loadtest.run`): the consumers and the simulated
bank it started, the replays of the stream into them (from a publisher process of their own,
`services.loadtest.publisher`), the counters sampled every `SAMPLE_INTERVAL_S`, and whether a
phase has settled: the consumers' own counters say every record was consumed and no reversal is
still parked, and the database confirms it (every event applied, the outbox drained, no cash-out
open). A wait gives up when nothing moves for `stall_s`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.app.consumer import ConsumerService
from services.loadtest.measurements import SAMPLE_INTERVAL_S, SAMPLES_MAX, Sample, SendTimes
from services.loadtest.publisher import PublishRequest, publish_from_process
from services.loadtest.replay import ReplayMode
from services.loadtest.stream_format import ExpectedState
from services.payout_rail.rail import PayoutRailService
from services.runtime.settings import Settings

ASSIGNMENT_WAIT_S = 90.0
POLL_INTERVAL_S = 0.2


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    signature: Callable[[], Awaitable[tuple[int, ...]]],
    stall_s: float,
) -> bool:
    """Until `condition` holds; False once `signature` (the progress) stays put for `stall_s`."""
    last = await signature()
    last_change = time.monotonic()
    while True:
        if await condition():
            return True
        await asyncio.sleep(POLL_INTERVAL_S)
        now = await signature()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return False


class StreamRun:
    """What both kinds of load test run share (`PipelineRun`, and `RecordedRun` of a recorded
    stream): publishing the stream into the pipeline at the run's pacing, counting what the
    outbox has still to send, and sampling the records published, those consumed and the bank's
    reports every `SAMPLE_INTERVAL_S` from `started` (at most `SAMPLES_MAX` samples). The
    dataclasses that derive from it hold these fields."""

    settings: Settings
    engine: AsyncEngine
    service: ConsumerService
    rail: PayoutRailService
    bootstrap_servers: str
    stream: Path
    out_dir: Path
    pacing: tuple[ReplayMode, float, int | None]
    send_times: SendTimes
    samples: list[Sample]
    started: float

    def take_sample(self) -> None:
        if len(self.samples) < SAMPLES_MAX:
            self.samples.append(
                Sample(
                    round(time.monotonic() - self.started, 3),
                    self.send_times.published,
                    self.service.ingestor.counts.consumed,
                    self.rail.reports_sent,
                )
            )

    async def sample_forever(self) -> None:
        while True:
            self.take_sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def publish(self, start: int = 0, stop: int | None = None) -> float:
        """Replay the stream's records from `start` up to `stop` (the end when None) from a
        publisher process of its own (`services.loadtest.publisher`), so that it does not
        compete with the consumers in this process; the seconds it took. `send_times` follows
        its progress, and gets its sampled send times and its timing."""
        mode, speed, rate_per_s = self.pacing
        timing = await publish_from_process(
            PublishRequest(
                stream=self.stream,
                bootstrap_servers=self.bootstrap_servers,
                topic_prefix=self.settings.kafka_topic_prefix,
                mode=mode,
                speed=speed,
                rate_per_s=rate_per_s,
                start=start,
                stop=stop,
                checkpoint_file=self.out_dir / "replay-checkpoint",
                send_times_file=self.out_dir / f"send-times-{start}.json",
            ),
            self.send_times,
        )
        return timing.elapsed_s

    async def unpublished(self) -> int:
        """Messages of the run's deployment still waiting in the outbox."""
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                text(
                    "SELECT count(*) FROM outbox"
                    " WHERE published_at IS NULL AND topic_prefix = :topic_prefix"
                ),
                {"topic_prefix": self.settings.kafka_topic_prefix},
            )
        return int(count or 0)


@dataclass
class PipelineRun(StreamRun):
    """One load test's running pipeline, against the stream's expected state."""

    settings: Settings
    engine: AsyncEngine
    service: ConsumerService
    rail: PayoutRailService
    bootstrap_servers: str
    expected: ExpectedState
    stream: Path
    out_dir: Path
    pacing: tuple[ReplayMode, float, int | None] = ("max", 1.0, None)
    send_times: SendTimes = field(default_factory=SendTimes)
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0

    async def open_cashouts(self) -> int:
        async with self.engine.connect() as conn:
            open_count = await conn.scalar(
                text(
                    "SELECT count(*) FROM cashouts WHERE starts_with(creator_id, :prefix)"
                    " AND status IN ('requested', 'held', 'submitted')"
                ),
                {"prefix": self.expected.namespace + "-"},
            )
        return int(open_count or 0) + await self.unpublished()

    async def applied_so_far(self) -> tuple[int, int]:
        """(events of the namespace applied, its cash-outs recorded), from the database."""
        prefix = self.expected.namespace + "-"
        async with self.engine.connect() as conn:
            applied = await conn.scalar(
                text("SELECT count(*) FROM applied_events WHERE starts_with(event_id, :prefix)"),
                {"prefix": prefix},
            )
            cashouts = await conn.scalar(
                text("SELECT count(*) FROM cashouts WHERE starts_with(creator_id, :prefix)"),
                {"prefix": prefix},
            )
        return int(applied or 0), int(cashouts or 0)

    def main_phase_applied(self) -> int:
        """Events of the main phase that the ledger applies: all but the cash-out requests and
        the bank's reports (the stream's own payout reports are all dead-lettered)."""
        expected = self.expected
        requests = expected.applied_by_topic.get(topics.CASHOUTS_REQUESTED, 0)
        return sum(expected.applied_by_topic.values()) - requests - expected.payout_reports

    async def main_phase_settled(self) -> bool:
        """The counters say every record was consumed and nothing is parked; the database
        confirms every event to apply is there (a redelivery also counts as consumed)."""
        counts = self.service.ingestor.counts
        if counts.consumed < self.expected.cashout_phase_from or counts.still_parked:
            return False
        applied, _ = await self.applied_so_far()
        return applied >= self.main_phase_applied()

    async def all_settled(self) -> bool:
        counts = self.service.ingestor.counts
        if counts.consumed < self.expected.records + self.rail.reports_sent:
            return False
        if counts.still_parked or self.rail.in_flight_count:
            return False
        if await self.open_cashouts():
            return False
        requests = self.expected.applied_by_topic.get(topics.CASHOUTS_REQUESTED, 0)
        _, recorded = await self.applied_so_far()
        return recorded >= requests

    async def progress(self) -> tuple[int, ...]:
        counts = self.service.ingestor.counts
        return (counts.consumed, counts.still_parked, self.rail.reports_sent)

    async def progress_with_cashouts(self) -> tuple[int, ...]:
        return (*await self.progress(), await self.open_cashouts())


async def wait_for_groups(
    service: ConsumerService, rail: PayoutRailService, partitions: int
) -> bool:
    deadline = time.monotonic() + ASSIGNMENT_WAIT_S
    while time.monotonic() < deadline:
        if (
            service.assigned_partition_count() >= len(service.topics) * partitions
            and rail.assigned_partition_count() >= partitions
        ):
            return True
        await asyncio.sleep(POLL_INTERVAL_S)
    return False
