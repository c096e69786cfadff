"""giftledger's consumers in processes of their own, for the ingestion benchmark.

Each worker process runs what `giftledger run` runs for ingestion: a `ConsumerService` (one
consumer group per topic) over an `Ingestor`, here a `TimedIngestor` that also notes its counts
in shared memory and, while timing is on, when each batch of `gifts.sent` was committed. Several
workers with the same settings form one consumer group and share the partitions, as several
`giftledger run` processes do; each has its own event loop, its own connections and its own core
to run Python on.

The parent reads the counts at any moment (`Workers.total`), reads each worker's resident memory
from /proc, switches timing on and off, and on `stop()` gets back each worker's commit times and
the count of library log records at WARNING and above.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path

from faststream.kafka import KafkaMessage

from bench.log_tally import LogTally
from ledger.database import create_engine
from ledger.service import Ledger
from schemas import topics
from services.app.bootstrap import build_desk
from services.app.consumer import ConsumerService
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import BatchReport, InputRecord
from services.rates.rate_cards import RateCardBook, load_rate_cards
from services.runtime.collector import settle_collector
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import Settings

# The slots of a worker's shared array of doubles.
APPLIED, CONSUMED, DEAD_LETTERED, DUPLICATES, ASSIGNED, FIRST_BATCH_AT, STARTED = range(7)
SLOT_COUNT = 7
SLOT_REFRESH_S = 0.05
WORKER_STOP_TIMEOUT_S = 120.0
# A directory to write each worker's batch step times into (bench.drain_sampler reads them).
BATCH_TIMES_DIR = "BATCH_TIMES_DIR"

# Commit times of gifts.sent batches: partition -> [(last offset of the batch, time.time())].
Commits = dict[int, list[tuple[int, float]]]


class TimedIngestor(Ingestor):
    """The product's ingestor; after each batch it copies its counts into the worker's shared
    slots, and while `timing` is set it notes when each batch of gifts.sent was committed
    (`process` returns after the database commit), by partition and last offset."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        rate_cards: RateCardBook,
        slots: SynchronizedArray[float],
        timing: multiprocessing.synchronize.Event,
    ) -> None:
        super().__init__(ledger, rate_cards, build_desk(settings), park_s=settings.reversal_park_s)
        self.slots = slots
        self.timing = timing
        self.commits: Commits = {}
        self.process_span = (0.0, 0.0)

    async def process(self, topic: str, records: Sequence[InputRecord]) -> BatchReport:
        if topic == topics.GIFTS_SENT and self.slots[FIRST_BATCH_AT] == 0:
            self.slots[FIRST_BATCH_AT] = time.time()
        started = time.time()
        report = await super().process(topic, records)
        self.process_span = (started, time.time())
        if topic == topics.GIFTS_SENT and self.timing.is_set():
            done = time.time()
            last: dict[int, int] = {}
            for record in records:
                last[record.partition] = max(last.get(record.partition, -1), record.offset)
            for partition, offset in last.items():
                self.commits.setdefault(partition, []).append((offset, done))
        counts = self.counts
        self.slots[APPLIED] = counts.applied
        self.slots[CONSUMED] = counts.consumed
        self.slots[DEAD_LETTERED] = counts.dead_lettered
        self.slots[DUPLICATES] = counts.duplicates
        return report


class StepTimedConsumerService(ConsumerService):
    """With `BATCH_TIMES_DIR` set, notes for each batch of gifts when its handler started, when
    the ingestor's `process` started and returned, and when the offsets were committed; the
    time from one batch's commit to the next one's start is the wait for the next fetch."""

    def __init__(self, settings: Settings, ingestor: TimedIngestor, servers: str) -> None:
        super().__init__(settings, ingestor, servers)
        self.timed = ingestor
        self.batch_times: list[tuple[float, float, float, float, int]] = []

    async def _handle_batch(self, topic: str, msg: KafkaMessage) -> None:
        started = time.time()
        await super()._handle_batch(topic, msg)
        if topic == topics.GIFTS_SENT:
            raw = msg.raw_message
            size = len(raw) if isinstance(raw, tuple) else 1
            process_start, process_end = self.timed.process_span
            self.batch_times.append((started, process_start, process_end, time.time(), size))


@dataclass(frozen=True, slots=True)
class WorkerResult:
    commits: Commits
    log_counts: dict[tuple[str, str], int]


def _worker_main(
    url: str,
    bootstrap_servers: str,
    settings_json: str,
    slots: SynchronizedArray[float],
    timing: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    results: multiprocessing.queues.Queue[WorkerResult],
) -> None:
    tally = LogTally(Path(tempfile.gettempdir()) / f"ingest_bench-worker-{os.getpid()}.log")
    tally.install()
    settings = Settings.model_validate_json(settings_json)
    commits = asyncio.run(_consume(url, bootstrap_servers, settings, slots, timing, stop))
    results.put(WorkerResult(commits, dict(tally.counts)))


async def _consume(
    url: str,
    bootstrap_servers: str,
    settings: Settings,
    slots: SynchronizedArray[float],
    timing: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> Commits:
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        pool_overflow_max=settings.db_pool_overflow_max,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    try:
        async with engine.connect() as conn:
            rate_cards = await load_rate_cards(conn)
        ingestor = TimedIngestor(
            settings, build_ledger(settings, engine), rate_cards, slots, timing
        )
        service = StepTimedConsumerService(settings, ingestor, bootstrap_servers)
        settle_collector()  # as `giftledger run` does before it starts its consumers
        slots[STARTED] = time.time()
        # start() returns once the consumers have joined their groups; they consume meanwhile.
        starting = asyncio.create_task(service.start())
        try:
            while not stop.is_set():
                if starting.done():
                    starting.result()  # raises what start() raised
                slots[ASSIGNED] = service.assigned_partition_count()
                await asyncio.sleep(SLOT_REFRESH_S)
            await starting
        finally:
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
            await service.stop()
            times_dir = os.environ.get(BATCH_TIMES_DIR)
            if times_dir:
                path = Path(times_dir) / f"batches-{os.getpid()}.json"
                path.write_text(json.dumps(service.batch_times))
        return ingestor.commits
    finally:
        await engine.dispose()


def rss_bytes_of(pid: int) -> int:
    """Resident memory of a process now (0 once it is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Workers:
    """`count` worker processes consuming with `settings`, one consumer group between them."""

    processes: Sequence[multiprocessing.process.BaseProcess]
    slots: list[SynchronizedArray[float]]
    timing: multiprocessing.synchronize.Event
    stop_event: multiprocessing.synchronize.Event
    results: multiprocessing.queues.Queue[WorkerResult]
    commits: Commits = field(default_factory=dict)
    log_counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def start(cls, url: str, bootstrap_servers: str, settings: Settings, count: int) -> Workers:
        context = multiprocessing.get_context("spawn")
        timing, stop_event = context.Event(), context.Event()
        results: multiprocessing.queues.Queue[WorkerResult] = context.Queue()
        slots = [context.Array("d", SLOT_COUNT) for _ in range(count)]
        processes = [
            context.Process(
                target=_worker_main,
                args=(
                    url,
                    bootstrap_servers,
                    # The URL travels apart: a SecretStr is written out masked.
                    settings.model_dump_json(exclude={"database_url"}),
                    worker_slots,
                    timing,
                    stop_event,
                    results,
                ),
                name=f"giftledger-consumer-{index}",
                daemon=True,
            )
            for index, worker_slots in enumerate(slots)
        ]
        for process in processes:
            process.start()
        return cls(processes, slots, timing, stop_event, results)

    def total(self, slot: int) -> int:
        return round(sum(worker_slots[slot] for worker_slots in self.slots))

    def first_batch_at(self) -> float | None:
        """When the first batch of gifts reached any worker's ingestor (time.time())."""
        times = [worker_slots[FIRST_BATCH_AT] for worker_slots in self.slots]
        return min((t for t in times if t), default=None)

    def rss_bytes(self) -> list[int]:
        return [rss_bytes_of(process.pid) for process in self.processes if process.pid]

    def check_alive(self) -> None:
        for process in self.processes:
            if process.exitcode is not None:
                raise AssertionError(f"{process.name} exited with {process.exitcode}")

    async def stop(self) -> None:
        """Stop every worker cleanly and collect their commit times and log counts."""
        self.stop_event.set()
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        for _ in self.processes:
            remaining_s = max(deadline - time.monotonic(), 0.1)
            result: WorkerResult = await asyncio.to_thread(self.results.get, True, remaining_s)
            for partition, batches in result.commits.items():
                self.commits.setdefault(partition, []).extend(batches)
            self.log_counts.update(result.log_counts)
        for process in self.processes:
            await asyncio.to_thread(process.join, max(deadline - time.monotonic(), 0.1))
        for batches in self.commits.values():
            batches.sort()

    def kill(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()

    def committed_at(self, partition: int, offset: int) -> float:
        """When the batch holding this record was committed to the database (after `stop()`)."""
        batches = self.commits[partition]
        index = bisect.bisect_left(batches, (offset, -math.inf))
        return batches[index][1]
