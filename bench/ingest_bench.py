"""Gift ingestion benchmark: Kafka `gifts.sent` into the ledger, end to end, in one run.

One broker (the embedded Tansu, or `KAFKA_BOOTSTRAP_SERVERS`) and one fresh database
(`giftledger_bench_<random>` on `DATABASE_URL`, else 127.0.0.1:5432, else the embedded PostgreSQL;
migrated to head, dropped at the end). Topics get a unique prefix and
`Settings.kafka_partition_count` partitions.

1. publish: N gifts, generated from a seeded `random.Random`: creators Zipf-distributed over
   `CREATOR_COUNT` creators, plus one LIVE creator who gets 30 % of all gifts; coins from the usual
   price points, count mostly 1; key = creator_id. aiokafka producer, linger 20 ms, 256 KB batches.
2. ceiling: a raw aiokafka consumer reads all N without decoding them. Then the consumers' floor
   (`bench/consumer_floor.py`): the CPU a gift of fetching the first 200,000 records, and of
   fetching and parsing them as the ingestor does, below what a consumer process spends a gift
   whatever it does after the parse; printed beside what a drain's consumers could spend a gift
   for `ingest xP/ledger` 0.7 with every core busy (`consumer floor/0.7 budget ratio`).
3. baseline: what a naive consumer does, per record: parse, one database transaction (applied
   event, creator account upsert, one transfer and its key, two account updates), commit the
   Kafka offset. It runs on the first `--baseline-events` records, under its own topic label in
   `applied_events` and its own transfer ids, so it does not hide events from giftledger. Its
   coins are posted in one transfer after its clock stops, as giftledger posts them per batch.
4. giftledger: consumer processes (`bench/consumer_workers.py`), each a `ConsumerService` over the
   product's `Ingestor`, one fresh group between them, on a backlog of their own: one drain per
   count in `--consumer-processes`, each timed from its first batch, and from the moment every
   partition is assigned (the group join is reported apart), to the last gift applied. Before
   them, one process drains N/10 on topics of their own, to show what memory a consumer needs
   for a backlog ten times smaller (run first, because Python seldom gives memory back to the
   system).
   Just before the last drain, the ledger batch alone (`bench/ledger_alone.py`): the same N gifts
   (event ids of their own) turned into the handler's transfers before the clock starts, then
   posted with `Ledger.transactions()` + `tx.post_new` in batches of the consumers' batch size by
   `LEDGER_WRITERS` (2) concurrent tasks: no Kafka, no parsing, no applied events. Printed as
   `ingest xP/ledger ratio` (each drain's rate over it). The CPU a gift of each process over
   each rate's clock (`bench/process_cpu.py`: the consumer processes, the PostgreSQL server and
   the embedded broker when they run on this machine, this process), and what a drain's would
   allow with every core busy, over the ledger alone's rate.
5. latency: with the last drain's consumers still running, gifts at `--latency-rate` per second
   for `--latency-seconds`, `occurred_at` = send time.

Checks: every event applied once, `verify()` finds nothing, and the creators' DIAMOND balances
add up to 500 milli-diamonds per coin sent. A run that loses or doubles an event fails.

Run: python -m bench.ingest_bench [--events 500000] [--baseline-events 5000]
                                  [--latency-rate 5000] [--latency-seconds 20]
                                  [--consumer-processes 1,2] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.consumer_floor import FETCH_TIMEOUT_MS, Floor, measure_floor, raw_consumer
from bench.consumer_workers import (
    APPLIED,
    ASSIGNED,
    CONSUMED,
    DEAD_LETTERED,
    DUPLICATES,
    STARTED,
    Workers,
)
from bench.harness import (
    CALIBRATION_NAME,
    admin_url,
    fresh_database,
    load_average,
    postmaster_pid,
    python_loop_s,
    server_version,
    verify_ledger,
)
from bench.ledger_alone import LedgerAlone, post_batches, prepare_batches
from bench.log_tally import LogTally
from bench.process_cpu import (
    CpuSnapshot,
    CpuSpan,
    cpu_seconds_of,
    cpu_snapshot,
    own_cpu_seconds_of,
    tree_cpu_seconds_of,
)
from ledger import chart
from ledger.chain import append_link
from ledger.chart import AccountKind
from ledger.database import create_engine
from ledger.ids import timed_transfer_id
from ledger.model import PostResult, StoredTransfer, Transfer, TransferCode
from ledger.service import Ledger
from schemas import topics
from schemas.events import GiftSent
from schemas.topics import all_topics
from services.ingestion.event_transfers import batch_coin_leg
from services.rates.rate_cards import RateCardBook, load_rate_cards
from services.runtime.collector import settle_collector
from services.runtime.embedded_broker import EmbeddedBroker, create_topics
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import Settings

SEED = 20_251_103
CREATOR_COUNT = 50_000
ZIPF_EXPONENT = 1.1
LIVE_CREATOR_ID = "creator-live-star"
LIVE_CREATOR_SHARE = 0.3
VIDEO_SHARE = 0.7
COIN_PRICES = (1, 5, 10, 99, 199, 499, 1_000, 29_999)
COIN_PRICE_WEIGHTS = (40, 20, 15, 12, 6, 4, 2.5, 0.5)
GIFT_NAMES = {
    1: "rose",
    5: "finger-heart",
    10: "doughnut",
    99: "hand-hearts",
    199: "sunglasses",
    499: "galaxy",
    1_000: "lion-cub",
    29_999: "universe",
}
MULTI_GIFT_SHARE = 0.1
MULTI_GIFT_COUNTS = (2, 3, 5, 10)
MILLI_DIAMONDS_PER_COIN = 500  # the contract's default rate card: creator share 50 %
BACKLOG_START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

PRODUCER_LINGER_MS = 20
PRODUCER_BATCH_BYTES = 256 * 1024
PUBLISH_CHUNK = 10_000
RAW_FETCH_RECORDS_MAX = 10_000
BASELINE_FETCH_RECORDS_MAX = 500
BASELINE_TOPIC = "bench.baseline.gifts.sent"
SESSION_TIMEOUT_MS = 6_000
ASSIGNMENT_WAIT_S = 120.0
STALL_S = 60.0
POLL_S = 0.05
RSS_SAMPLE_S = 0.5
PACE_TICK_S = 0.002
PROCESSES_MAX = 16
LEDGER_WRITERS = 2  # concurrent writers of the ledger-alone measurement
LEDGER_ALONE_TAG = "l"  # event ids of the ledger-alone gifts: gift-l-<index>

TARGET_GIFTS_PER_S = 20_000
TARGET_LEDGER_RATIO = 0.7  # a drain's rate over the ledger batch alone's that the goal asks for
TARGET_RATIO = 10.0
TARGET_P99_MS = 500.0
TARGET_RATE = 5_000


@dataclass(frozen=True, slots=True)
class Options:
    events: int
    baseline_events: int
    latency_rate: int
    latency_seconds: float
    consumer_processes: list[int]
    json_path: Path | None


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--baseline-events", type=int, default=5_000)
    parser.add_argument("--latency-rate", type=int, default=5_000, help="gifts per second")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--consumer-processes",
        default="1,2",
        help="comma-separated: one drain of --events with each number of consumer processes;"
        " the latency run uses the last",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    arguments = parser.parse_args(argv)
    if arguments.events < 10:
        parser.error("--events must be at least 10")
    if not 1 <= arguments.baseline_events <= arguments.events:
        parser.error("--baseline-events must be between 1 and --events")
    if arguments.latency_rate < 1 or arguments.latency_seconds <= 0:
        parser.error("--latency-rate and --latency-seconds must be positive")
    try:
        processes = [int(part) for part in arguments.consumer_processes.split(",")]
    except ValueError:
        parser.error("--consumer-processes takes numbers separated by commas, e.g. 1,2")
    if not processes or not all(1 <= count <= PROCESSES_MAX for count in processes):
        parser.error(f"--consumer-processes: each between 1 and {PROCESSES_MAX}")
    return Options(
        events=arguments.events,
        baseline_events=arguments.baseline_events,
        latency_rate=arguments.latency_rate,
        latency_seconds=arguments.latency_seconds,
        consumer_processes=processes,
        json_path=arguments.json,
    )


# The workload.


class GiftMaker:
    """Deterministic `gifts.sent` events: the same seed gives the same gifts, in the same order."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, CREATOR_COUNT + 1)]
        self._cumulative = list(itertools.accumulate(weights))
        self._coin_weights = list(itertools.accumulate(COIN_PRICE_WEIGHTS))

    def _creator(self) -> str:
        """Zipf: the creator of rank k gets a share proportional to 1 / k**ZIPF_EXPONENT."""
        point = self._rng.random() * self._cumulative[-1]
        rank = bisect.bisect_left(self._cumulative, point) + 1
        return f"creator-{min(rank, CREATOR_COUNT)}"

    def gift(self, event_id: str, occurred_at: datetime) -> tuple[bytes, bytes, int]:
        """(value, key, coins sent) of one gift."""
        rng = self._rng
        if rng.random() < LIVE_CREATOR_SHARE:
            creator_id = LIVE_CREATOR_ID
            place = {"surface": "live", "live_id": "live-star-1"}
        else:
            creator_id = self._creator()
            if rng.random() < VIDEO_SHARE:
                place = {"surface": "video", "video_id": f"video-{creator_id}-{rng.randrange(20)}"}
            else:
                place = {"surface": "live", "live_id": f"live-{creator_id}-{rng.randrange(5)}"}
        coins = rng.choices(COIN_PRICES, cum_weights=self._coin_weights)[0]
        count = rng.choice(MULTI_GIFT_COUNTS) if rng.random() < MULTI_GIFT_SHARE else 1
        event = {
            "event_id": event_id,
            "occurred_at": occurred_at.isoformat(),
            "sender_id": f"fan-{rng.randrange(2_000_000)}",
            "creator_id": creator_id,
            **place,
            "gift_id": GIFT_NAMES[coins],
            "coins": coins,
            "count": count,
        }
        return json.dumps(event).encode(), creator_id.encode(), coins * count


@dataclass(frozen=True, slots=True)
class Published:
    events: int
    coins: int
    seconds: float
    generating_seconds: float


def new_producer(bootstrap_servers: str) -> Any:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id="ingest-bench",
        linger_ms=PRODUCER_LINGER_MS,
        max_batch_size=PRODUCER_BATCH_BYTES,
        compression_type=None,
    )


async def publish_backlog(
    producer: Any, topic: str, maker: GiftMaker, count: int, tag: str
) -> Published:
    """Generate and send `count` gifts a chunk at a time, so they never all sit in memory.

    A chunk's deliveries are awaited after the next chunk is queued, to keep the producer busy.
    """
    coins = 0
    generating_s = 0.0
    pending: list[asyncio.Future[Any]] = []
    started = time.perf_counter()
    for start in range(0, count, PUBLISH_CHUNK):
        generating = time.perf_counter()
        chunk = [
            maker.gift(
                f"gift-{tag}-{index:09d}", datetime.fromtimestamp(BACKLOG_START + index / 1000, UTC)
            )
            for index in range(start, min(start + PUBLISH_CHUNK, count))
        ]
        generating_s += time.perf_counter() - generating
        sends = [await producer.send(topic, value=value, key=key) for value, key, _ in chunk]
        coins += sum(gift_coins for _, _, gift_coins in chunk)
        await asyncio.gather(*pending)
        pending = sends
    await asyncio.gather(*pending)
    return Published(count, coins, time.perf_counter() - started, generating_s)


# Measurements.


@dataclass(frozen=True, slots=True)
class Measurement:
    path: str
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


async def measure_ceiling(bootstrap_servers: str, topic: str, count: int) -> Measurement:
    """Records/s of a raw aiokafka consumer that does nothing with them."""
    consumer = raw_consumer(bootstrap_servers, topic, f"bench-ceiling-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        seen = first = 0
        started = 0.0
        while seen < count:
            batches = await consumer.getmany(
                timeout_ms=FETCH_TIMEOUT_MS, max_records=RAW_FETCH_RECORDS_MAX
            )
            fetched = sum(len(batch) for batch in batches.values())
            if fetched and not seen:
                started, first = time.perf_counter(), fetched
            seen += fetched
        # The first fetch is the clock's start: its records are not counted.
        return Measurement("kafka ceiling (raw)", seen - first, time.perf_counter() - started)
    finally:
        await consumer.stop()


_BASELINE_APPLIED = text(
    """
    INSERT INTO applied_events (topic, event_id, payload_sha256, creator_id, occurred_at,
                                kafka_partition, kafka_offset)
    VALUES (:topic, :event_id, :sha256, :creator_id, :occurred_at, :partition, :offset)
    """
)
_BASELINE_CREATOR = text(
    """
    INSERT INTO accounts (name, asset, kind, creator_id)
    VALUES (:name, 'DIAMOND', :kind, :creator_id)
    ON CONFLICT (name) DO UPDATE SET name = excluded.name
    RETURNING id
    """
)
_BASELINE_KEY = text("INSERT INTO transfer_keys (id, created_at) VALUES (:id, now())")
_BASELINE_DEBIT = text(
    "UPDATE accounts SET debits_posted = debits_posted + :amount WHERE id = :id"
    " RETURNING credits_posted - debits_posted"
)
_BASELINE_CREDIT = text(
    "UPDATE accounts SET credits_posted = credits_posted + :amount WHERE id = :id"
    " RETURNING credits_posted - debits_posted"
)
_BASELINE_TRANSFER = text(
    """
    INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, asset, code, flags,
                           rate_card_version, event_id, debit_balance_after,
                           credit_balance_after, created_at)
    VALUES (:id, :debit_account_id, :credit_account_id, :amount, 'DIAMOND', :code, 0,
            :rate_card_version, :event_id, :debit_balance_after, :credit_balance_after, now())
    RETURNING created_at
    """
)


async def apply_one(
    conn: AsyncConnection, record: Any, issuance_id: int, rate_cards: RateCardBook
) -> tuple[int, int]:
    """One gift in one transaction, the plain way: (rate card version, coins)."""
    gift = GiftSent.model_validate_json(record.value)
    card = rate_cards.in_force_at(gift.occurred_at)
    amount = card.gift_milli_diamonds(gift.coins, gift.count)
    creator = chart.creator_diamonds_available(gift.creator_id)
    async with conn.begin():
        await conn.execute(
            _BASELINE_APPLIED,
            {
                "topic": BASELINE_TOPIC,
                "event_id": gift.event_id,
                "sha256": hashlib.sha256(record.value).digest(),
                "creator_id": gift.creator_id,
                "occurred_at": gift.occurred_at,
                "partition": record.partition,
                "offset": record.offset,
            },
        )
        creator_id = (
            await conn.execute(
                _BASELINE_CREATOR,
                {"name": creator.name, "kind": creator.kind.value, "creator_id": gift.creator_id},
            )
        ).scalar_one()
        transfer = timed_transfer_id(BASELINE_TOPIC, gift.event_id, "diamonds", gift.occurred_at)
        await conn.execute(_BASELINE_KEY, {"id": transfer})
        debit_after = (
            await conn.execute(_BASELINE_DEBIT, {"id": issuance_id, "amount": amount})
        ).scalar_one()
        credit_after = (
            await conn.execute(_BASELINE_CREDIT, {"id": creator_id, "amount": amount})
        ).scalar_one()
        fields = {
            "id": transfer,
            "debit_account_id": issuance_id,
            "credit_account_id": creator_id,
            "amount": amount,
            "code": int(TransferCode.GIFT_DIAMONDS),
            "rate_card_version": card.version,
            "event_id": gift.event_id,
            "debit_balance_after": debit_after,
            "credit_balance_after": credit_after,
        }
        created_at = (await conn.execute(_BASELINE_TRANSFER, fields)).scalar_one()
        # The same tamper evidence as giftledger: each transaction links into the hash chain.
        stored = StoredTransfer(
            **fields,
            seq=0,
            asset="DIAMOND",
            flags=0,
            pending_id=None,
            timeout_s=None,
            expires_at=None,
            metadata=None,
            created_at=created_at,
        )
        await append_link(conn, [stored])
    return card.version, gift.coins * gift.count


async def settle_coins(ledger: Ledger, gifts_by_version: dict[int, tuple[int, int]]) -> None:
    """The baseline's coins, in one transfer per rate card, as giftledger posts them per batch:
    `verify()` reconciles the coins with the diamonds of each rate card."""
    transfers = []
    for version, (coins, gift_count) in gifts_by_version.items():
        leg = batch_coin_leg(coins, gift_count)
        ids = await ledger.account_ids([leg.debit, leg.credit])
        transfers.append(
            Transfer(
                id=uuid.uuid4(),
                debit_account_id=ids[leg.debit.name],
                credit_account_id=ids[leg.credit.name],
                amount=leg.amount,
                code=leg.code,
                rate_card_version=version,
                metadata=leg.metadata,
            )
        )
    results = await ledger.post(transfers)
    assert all(result is PostResult.OK for result in results), results


async def measure_baseline(
    bootstrap_servers: str, topic: str, engine: AsyncEngine, count: int
) -> tuple[Measurement, int]:
    """The naive consumer on the first `count` records: (measurement, coins it applied).

    Its coins are posted after the clock stops, in one transfer."""
    ledger = Ledger(engine)
    issuance_id = await ledger.account_id(chart.platform(AccountKind.DIAMOND_ISSUANCE, "DIAMOND"))
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    consumer = raw_consumer(bootstrap_servers, topic, f"bench-baseline-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    gifts_by_version: dict[int, tuple[int, int]] = {}
    applied = 0
    started = 0.0
    try:
        async with engine.connect() as conn:
            while applied < count:
                batches = await consumer.getmany(
                    timeout_ms=FETCH_TIMEOUT_MS, max_records=BASELINE_FETCH_RECORDS_MAX
                )
                if batches and not applied:
                    started = time.perf_counter()
                for partition, records in batches.items():
                    for record in records:
                        if applied == count:
                            break
                        version, coins = await apply_one(conn, record, issuance_id, rate_cards)
                        total, gift_count = gifts_by_version.get(version, (0, 0))
                        gifts_by_version[version] = (total + coins, gift_count + 1)
                        await consumer.commit({partition: record.offset + 1})
                        applied += 1
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    await settle_coins(ledger, gifts_by_version)
    coins = sum(total for total, _ in gifts_by_version.values())
    return Measurement("baseline (per event)", applied, seconds), coins


def gifts_for_ledger(count: int) -> list[GiftSent]:
    """The first drain's gifts (same seed, same order), under event ids of their own, parsed."""
    maker = GiftMaker(SEED)
    return [
        GiftSent.model_validate_json(
            maker.gift(
                f"gift-{LEDGER_ALONE_TAG}-{index:09d}",
                datetime.fromtimestamp(BACKLOG_START + index / 1000, UTC),
            )[0]
        )
        for index in range(count)
    ]


# The parts of `CpuParts.read`'s snapshots.
CONSUMERS, POSTGRESQL, BROKER, THIS_PROCESS = "consumers", "postgresql", "broker", "this process"


@dataclass(frozen=True, slots=True)
class CpuParts:
    """The processes whose CPU the benchmark reads (from /proc): the PostgreSQL server and the
    embedded broker when they run on this machine (None otherwise), and this process."""

    postmaster_pid: int | None
    broker_pid: int | None

    def read(self, workers: Workers | None = None) -> CpuSnapshot:
        """A snapshot of this process, the consumer processes (with `workers`), the server and
        the broker."""
        parts: dict[str, Callable[[], float | None]] = {}
        if workers is not None:
            parts[CONSUMERS] = lambda: sum(
                cpu_seconds_of(process.pid) for process in workers.processes if process.pid
            )
        parts[POSTGRESQL] = lambda: tree_cpu_seconds_of(self.postmaster_pid)
        parts[BROKER] = lambda: tree_cpu_seconds_of(self.broker_pid)
        parts[THIS_PROCESS] = lambda: own_cpu_seconds_of(os.getpid())
        return cpu_snapshot(parts)


async def measure_ledger_alone(
    engine: AsyncEngine, settings: Settings, count: int, cpu_parts: CpuParts
) -> tuple[LedgerAlone, Measurement, CpuSpan]:
    """The gifts through the ledger's path for new transfers alone, `LEDGER_WRITERS` writers,
    with the CPU each process used over its clock.

    Everything but the posting (generating, parsing, planning, creating the accounts) happens
    before the clock starts."""
    ledger = build_ledger(settings, engine)
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    batches, events, coins = await prepare_batches(
        ledger, gifts_for_ledger(count), rate_cards, settings.consumer_batch_size_max
    )
    settle_collector()  # as `giftledger run` does, and the consumer processes (consumer_workers)
    before = cpu_parts.read()
    seconds = await post_batches(ledger, batches, LEDGER_WRITERS)
    cpu = CpuSpan.between(before, cpu_parts.read(), events)
    alone = LedgerAlone(events, coins, len(batches), LEDGER_WRITERS, seconds)
    return alone, Measurement(f"ledger batch alone x{LEDGER_WRITERS}", events, seconds), cpu


def consumer_settings(prefix: str) -> Settings:
    """The defaults, but for topics and groups of their own and a 6 s session timeout: the
    embedded broker forms a consumer group in about half of it (5 s with the default 10 s)."""
    return Settings(
        kafka_topic_prefix=prefix,
        kafka_consumer_group=f"giftledger-{prefix}",
        kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
    )


@dataclass
class RssPeak:
    """The largest consumer process's resident memory, sampled every RSS_SAMPLE_S while it runs:
    at the start, the highest, and at each quarter of the time."""

    workers: Workers
    start: int = 0
    peak: int = 0
    samples: list[int] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def _take(self) -> None:
        self.samples.append(max(self.workers.rss_bytes(), default=0))
        self.peak = max(self.peak, self.samples[-1])

    async def _sample(self) -> None:
        while True:
            self._take()
            await asyncio.sleep(RSS_SAMPLE_S)

    def quarters(self) -> list[int]:
        count = len(self.samples)
        return [self.samples[max(count * quarter // 4 - 1, 0)] for quarter in (1, 2, 3, 4)]

    def begin(self) -> None:
        self.start = self.peak = max(self.workers.rss_bytes(), default=0)
        self._task = asyncio.create_task(self._sample())

    async def end(self) -> None:
        self._take()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def wait_until(condition: Callable[[], bool], progress: Callable[[], int], what: str) -> None:
    """Poll `condition`; give up when `progress` has not moved for STALL_S seconds."""
    last, last_moved = progress(), time.monotonic()
    while not condition():
        await asyncio.sleep(POLL_S)
        if progress() != last:
            last, last_moved = progress(), time.monotonic()
        elif time.monotonic() - last_moved > STALL_S:
            raise AssertionError(f"{what}: no progress for {STALL_S} s (at {last})")


@dataclass
class Drain:
    """Times from the consumers' start (`ConsumerService.start()` called in every process): the
    first batch handed to an ingestor, every partition of every topic assigned (None if the
    drain ended first: "settled") and the last gift applied. `cpu`: what each process used from
    settling to the last gift, for the gifts applied then (from the start when it never
    settled, for all of them)."""

    events: int
    processes: int
    first_consumed_s: float
    settled_s: float | None
    done_s: float
    applied_before_settled: int
    redelivered: int
    memory: RssPeak
    cpu: CpuSpan

    @property
    def label(self) -> str:
        return f"giftledger x{self.processes}"

    def from_first_record(self) -> Measurement:
        return Measurement(
            f"{self.label}, 1st record", self.events, self.done_s - self.first_consumed_s
        )

    def after_settling(self) -> Measurement | None:
        """Only the gifts applied once the group had settled; None if none were left then."""
        if self.settled_s is None or self.applied_before_settled == self.events:
            return None
        return Measurement(
            f"{self.label}, settled",
            self.events - self.applied_before_settled,
            self.done_s - self.settled_s,
        )


async def drain(
    url: str,
    bootstrap_servers: str,
    settings: Settings,
    count: int,
    processes: int,
    cpu_parts: CpuParts,
) -> tuple[Drain, Workers]:
    """Start `processes` consumer processes (one group) on a published backlog and time them
    until all `count` are applied. The workers are left running for the caller to stop."""
    workers = Workers.start(url, bootstrap_servers, settings, processes)
    partitions = len(topics.CONSUMED_TOPICS) * settings.kafka_partition_count
    try:
        await wait_until(
            lambda: all(slots[STARTED] for slots in workers.slots),
            lambda: sum(bool(slots[STARTED]) for slots in workers.slots),
            "consumer processes starting",
        )
        started = min(slots[STARTED] for slots in workers.slots)
        memory = RssPeak(workers)
        memory.begin()
        cpu_from = cpu_parts.read(workers)
        settled: float | None = None
        applied_before_settled = 0
        consumed, moved = 0, time.time()
        while workers.total(APPLIED) + workers.total(DEAD_LETTERED) < count:
            workers.check_alive()
            now = time.time()
            if settled is None and workers.total(ASSIGNED) == partitions:
                settled, applied_before_settled = now, workers.total(APPLIED)
                cpu_from = cpu_parts.read(workers)
            if workers.total(CONSUMED) != consumed:
                consumed, moved = workers.total(CONSUMED), now
            assert now - moved < STALL_S, f"nothing consumed for {STALL_S} s (at {consumed})"
            await asyncio.sleep(POLL_S)
        done = time.time()
        cpu = CpuSpan.between(cpu_from, cpu_parts.read(workers), count - applied_before_settled)
        await memory.end()
        # Batches redelivered after a rebalance come back as duplicates: those are fine.
        assert workers.total(DEAD_LETTERED) == 0, "dead letters in the drain"
        applied = workers.total(APPLIED)
        assert applied == count, f"applied {applied} of {count}"
    except BaseException:
        workers.kill()
        raise
    first_batch_at = workers.first_batch_at()
    assert first_batch_at is not None
    result = Drain(
        events=count,
        processes=processes,
        first_consumed_s=first_batch_at - started,
        settled_s=None if settled is None else settled - started,
        done_s=done - started,
        applied_before_settled=applied_before_settled,
        redelivered=workers.total(DUPLICATES),
        memory=memory,
        cpu=cpu,
    )
    return result, workers


@dataclass(frozen=True, slots=True)
class Latency:
    events: int
    coins: int
    processes: int
    sent_per_s: float
    applied_at_ms: dict[str, float]
    committed_ms: dict[str, float]


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50, p95, p99 and the maximum."""
    ordered = sorted(values)
    picked = {
        f"p{round(q * 100)}": ordered[max(math.ceil(q * len(ordered)) - 1, 0)]
        for q in (0.5, 0.95, 0.99)
    }
    return {**picked, "max": ordered[-1]}


async def publish_paced(
    producer: Any, topic: str, maker: GiftMaker, rate: int, seconds: float
) -> tuple[int, int, float]:
    """Send `rate` gifts a second, stamped with the send time: (events, coins, seconds taken)."""
    total = round(rate * seconds)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = coins = 0
    pending: list[asyncio.Future[Any]] = []
    while sent < total:
        due = min(total, int((loop.time() - started) * rate))
        while sent < due:
            value, key, gift_coins = maker.gift(f"gift-latency-{sent:09d}", datetime.now(UTC))
            pending.append(await producer.send(topic, value=value, key=key))
            coins += gift_coins
            sent += 1
        await asyncio.sleep(PACE_TICK_S)
    elapsed = loop.time() - started
    await asyncio.gather(*pending)
    return sent, coins, elapsed


async def measure_latency(
    engine: AsyncEngine, producer: Any, topic: str, workers: Workers, options: Options
) -> Latency:
    """Paced gifts into running workers; stops them (to collect their commit times)."""
    workers.timing.set()
    target = workers.total(APPLIED) + round(options.latency_rate * options.latency_seconds)
    maker = GiftMaker(SEED + 2)
    events, coins, elapsed = await publish_paced(
        producer, topic, maker, options.latency_rate, options.latency_seconds
    )
    await wait_until(
        lambda: workers.total(APPLIED) >= target, lambda: workers.total(CONSUMED), "latency"
    )
    workers.timing.clear()
    await workers.stop()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT kafka_partition, kafka_offset, occurred_at, applied_at"
                    " FROM applied_events WHERE topic = :topic AND event_id LIKE 'gift-latency-%'"
                ),
                {"topic": topics.GIFTS_SENT},
            )
        ).all()
    assert len(rows) == events, f"{len(rows)} latency events applied of {events}"
    applied_at_ms = [(row.applied_at - row.occurred_at).total_seconds() * 1000 for row in rows]
    committed_ms = [
        (workers.committed_at(row.kafka_partition, row.kafka_offset) - row.occurred_at.timestamp())
        * 1000
        for row in rows
    ]
    return Latency(
        events,
        coins,
        len(workers.processes),
        events / elapsed,
        percentiles(applied_at_ms),
        percentiles(committed_ms),
    )


# Checks.


async def check_ledger(engine: AsyncEngine, url: str, events: int, coins: int) -> None:
    """Every event applied once, the creators' diamonds match the coins, verify() is clean."""
    async with engine.connect() as conn:
        applied = (await conn.execute(text("SELECT count(*) FROM applied_events"))).scalar_one()
        diamonds = (
            await conn.execute(
                text(
                    "SELECT CAST(sum(credits_posted - debits_posted) AS bigint) FROM accounts"
                    " WHERE kind = :kind AND asset = 'DIAMOND'"
                ),
                {"kind": AccountKind.CREATOR_DIAMONDS_AVAILABLE.value},
            )
        ).scalar_one()
    assert applied == events, f"applied_events holds {applied}, expected {events}"
    expected = coins * MILLI_DIAMONDS_PER_COIN
    assert diamonds == expected, f"creators hold {diamonds} milli-diamonds, expected {expected}"
    await verify_ledger(url)


# The run.


@contextlib.asynccontextmanager
async def kafka() -> AsyncIterator[tuple[str, str, int | None]]:
    """(bootstrap servers, where the broker comes from, the embedded broker's process id: None
    when the broker is `KAFKA_BOOTSTRAP_SERVERS`)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, "KAFKA_BOOTSTRAP_SERVERS", None
        return
    async with EmbeddedBroker(topics=[]) as broker:
        yield broker.bootstrap_servers, "embedded Tansu", broker.pid


def mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def say(message: str) -> None:
    print(message, flush=True)


@dataclass
class Figures:
    published: Published | None = None
    measurements: list[Measurement] = field(default_factory=list)
    drains: list[Drain] = field(default_factory=list)
    ledger_alone: LedgerAlone | None = None
    ledger_alone_cpu: CpuSpan | None = None
    floor: Floor | None = None
    latency: Latency | None = None
    worker_log: Counter[tuple[str, str]] = field(default_factory=Counter)
    checked: str = ""
    machine: dict[str, Any] = field(default_factory=dict)


async def run(options: Options) -> Figures:
    figures = Figures()
    async with (
        kafka() as (bootstrap_servers, broker_source, broker_pid),
        admin_url() as (maintenance_url, database_source),
        fresh_database(maintenance_url) as url,
    ):
        run_id = uuid.uuid4().hex[:8]
        small = consumer_settings(f"s{run_id}.")
        bigs = [
            consumer_settings(f"b{index}{run_id}.")
            for index, _ in enumerate(options.consumer_processes)
        ]
        for settings in (small, *bigs):
            await create_topics(
                bootstrap_servers,
                all_topics(settings.kafka_topic_prefix),
                settings.kafka_partition_count,
            )
        engine = create_engine(
            url,
            pool_size=small.db_pool_size,
            pool_overflow_max=small.db_pool_overflow_max,
            statement_timeout_ms=small.db_statement_timeout_ms,
        )
        producer = new_producer(bootstrap_servers)
        await producer.start()
        try:
            figures.machine = {
                "cpus": os.cpu_count(),
                "load_average_at_start": load_average(),
                "postgresql": await server_version(engine),
                "database": database_source,
                "broker": broker_source,
                "partitions": small.kafka_partition_count,
                "consumer_batch_size_max": small.consumer_batch_size_max,
                "consumer_batch_wait_ms": small.consumer_batch_wait_ms,
                CALIBRATION_NAME: round(python_loop_s(), 3),
            }
            cpu_parts = CpuParts(await postmaster_pid(engine), broker_pid)
            await run_phases(
                options, figures, engine, url, producer, bootstrap_servers, bigs, small, cpu_parts
            )
        finally:
            await producer.stop()
            await engine.dispose()
    return figures


async def run_phases(
    options: Options,
    figures: Figures,
    engine: AsyncEngine,
    url: str,
    producer: Any,
    bootstrap_servers: str,
    bigs: list[Settings],
    small: Settings,
    cpu_parts: CpuParts,
) -> None:
    first_topic = bigs[0].kafka_topic_prefix + topics.GIFTS_SENT
    published = await publish_backlog(producer, first_topic, GiftMaker(SEED), options.events, "b0")
    figures.published = published
    say(
        f"published {published.events:,} gifts in {published.seconds:.1f} s"
        f" ({published.events / published.seconds:,.0f}/s; generating them took"
        f" {published.generating_seconds:.1f} s of it)"
    )
    ceiling = await measure_ceiling(bootstrap_servers, first_topic, options.events)
    figures.measurements.append(ceiling)
    say(f"ceiling: {ceiling.events_per_s:,.0f} records/s")
    settle_collector()  # as the consumer processes do before they consume
    figures.floor = await measure_floor(
        bootstrap_servers,
        first_topic,
        options.events,
        bigs[0].consumer_batch_size_max,
        cpu_parts.read,
    )
    say(f"consumers' floor: {figures.floor.fetch_and_parse.items:,} gifts fetched and parsed")
    baseline, baseline_coins = await measure_baseline(
        bootstrap_servers, first_topic, engine, options.baseline_events
    )
    figures.measurements.append(baseline)
    say(f"baseline: {baseline.events_per_s:,.0f} events/s")
    events, coins = baseline.events, baseline_coins

    small_count = max(options.events // 10, 1)
    small_published = await publish_backlog(
        producer,
        small.kafka_topic_prefix + topics.GIFTS_SENT,
        GiftMaker(SEED + 1),
        small_count,
        "s",
    )
    small_drain, workers = await drain(url, bootstrap_servers, small, small_count, 1, cpu_parts)
    await workers.stop()
    figures.worker_log.update(workers.log_counts)
    figures.drains.append(small_drain)
    events, coins = events + small_count, coins + small_published.coins
    say(f"giftledger x1 drained {small_count:,} in {small_drain.done_s:.1f} s from start")

    for index, (settings, processes) in enumerate(
        zip(bigs, options.consumer_processes, strict=True)
    ):
        gifts_topic = settings.kafka_topic_prefix + topics.GIFTS_SENT
        if index > 0:  # the same gifts again, under event ids of their own
            published = await publish_backlog(
                producer, gifts_topic, GiftMaker(SEED), options.events, f"b{index}"
            )
        if index == len(bigs) - 1:
            # Just before the last drain, on the same database, with nothing else running.
            alone, alone_measurement, alone_cpu = await measure_ledger_alone(
                engine, settings, options.events, cpu_parts
            )
            figures.ledger_alone, figures.ledger_alone_cpu = alone, alone_cpu
            figures.measurements.append(alone_measurement)
            coins += alone.coins
            say(f"ledger batch alone: {alone.events_per_s:,.0f} gifts/s")
        events, coins = events + published.events, coins + published.coins
        big_drain, workers = await drain(
            url, bootstrap_servers, settings, options.events, processes, cpu_parts
        )
        figures.drains.append(big_drain)
        figures.measurements.append(big_drain.from_first_record())
        settled = big_drain.after_settling()
        if settled is not None:
            figures.measurements.append(settled)
        say(f"{big_drain.label} drained {options.events:,} in {big_drain.done_s:.1f} s from start")
        if index < len(bigs) - 1:
            await workers.stop()
        else:
            try:
                figures.latency = await measure_latency(
                    engine, producer, gifts_topic, workers, options
                )
            finally:
                workers.kill()  # after stop(), only strays
        figures.worker_log.update(workers.log_counts)
    assert figures.latency is not None
    say("checking the ledger")
    events += figures.latency.events
    coins += figures.latency.coins
    await check_ledger(engine, url, events, coins)
    figures.checked = (
        f"{events:,} events applied once each, creators hold 500 milli-diamonds per coin sent"
        f" ({coins * MILLI_DIAMONDS_PER_COIN:,}), verify() found nothing"
    )


# Report.


def headline(figures: Figures) -> Measurement:
    """The fastest drain: giftledger once its group had settled, or from its first record if
    nothing was left by then."""
    by_path = {m.path: m for m in figures.measurements}
    candidates = [
        by_path.get(f"{d.label}, settled") or by_path[f"{d.label}, 1st record"]
        for d in figures.drains[1:]
    ]
    return max(candidates, key=lambda m: m.events_per_s)


def drain_rate(figures: Figures, drained: Drain) -> Measurement:
    """A drain's rate once its group had settled, or from its first record if none was left."""
    by_path = {m.path: m for m in figures.measurements}
    return by_path.get(f"{drained.label}, settled") or by_path[f"{drained.label}, 1st record"]


def ledger_ratios(figures: Figures) -> dict[str, float]:
    """Each big drain's rate over the ledger batch alone's: `ingest xP/ledger`."""
    alone = figures.ledger_alone
    assert alone is not None
    return {
        f"ingest x{d.processes}/ledger": drain_rate(figures, d).events_per_s / alone.events_per_s
        for d in figures.drains[1:]
    }


def cpu_spans(figures: Figures) -> dict[str, CpuSpan]:
    """The CPU of each rate, by the rate's label: the ledger batch alone, then each drain (its
    settled part when it settled)."""
    assert figures.ledger_alone_cpu is not None
    spans = {f"ledger batch alone x{LEDGER_WRITERS}": figures.ledger_alone_cpu}
    for drained in figures.drains:
        settled = "settled" if drained.settled_s is not None else "from start"
        spans[f"{drained.label}, {settled}"] = drained.cpu
    return spans


def print_cpu(spans: dict[str, CpuSpan], figures: Figures) -> None:
    """CPU a gift per process and the cores kept busy, then what each big drain's CPU a gift
    allows with every core busy, against the ledger batch alone's rate."""
    cores = os.cpu_count() or 1

    def us(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:6.1f}"

    print(
        "cpu a gift (µs, from /proc over each rate's clock; consumers: the consumer processes;"
        " n/a: not on this machine):"
    )
    for label, span in spans.items():
        print(span.line(label, 27, us))
    alone = figures.ledger_alone
    alone_span = figures.ledger_alone_cpu
    assert alone is not None
    assert alone_span is not None
    for drained in figures.drains[1:]:
        if not drained.cpu.items:  # every gift applied before the group settled
            continue
        bound = drained.cpu.rate_bound(cores)
        print(
            f"  {drained.label}, every core busy at this cpu a gift: at most {bound:,.0f} gifts/s,"
            f" {bound / alone.events_per_s:.2f} of the ledger batch alone"
            f" (its cpu a gift is {us(drained.cpu.all_us_each).strip()} µs"
            f" against {us(alone_span.all_us_each).strip()})"
        )
    floor = figures.floor
    assert floor is not None
    print(
        f"  consumers' floor (bench/consumer_floor.py, {floor.fetch.items:,} gifts, raw aiokafka in"
        " this process):"
    )
    print(floor.fetch.line("fetch", 25, us))
    print(floor.fetch_and_parse.line("fetch and parse", 25, us))
    for label, (budget_us, floor_us) in floor_budgets(figures).items():
        print(
            f"  {label}: {TARGET_LEDGER_RATIO:g} of the ledger alone with every core busy leaves"
            f" the consumers {budget_us:.1f} µs a gift beside this drain's PostgreSQL and broker;"
            f" fetching and parsing alone take {floor_us:.1f}"
        )
        print(f"{floor_ratio_name(label)} ratio: {floor_ratio(budget_us, floor_us):.2f}")


def floor_budgets(figures: Figures) -> dict[str, tuple[float, float]]:
    """Per big drain (its label), the consumers' budget for `TARGET_LEDGER_RATIO` and the
    floor's CPU a gift in its process, in microseconds."""
    alone, floor = figures.ledger_alone, figures.floor
    assert alone is not None
    assert floor is not None
    floor_us = floor.fetch_and_parse.us_each(floor.fetch_and_parse.seconds[THIS_PROCESS])
    assert floor_us is not None
    cores = os.cpu_count() or 1
    return {
        drained.label: (consumer_budget_us(cores, alone.events_per_s, drained.cpu), floor_us)
        for drained in figures.drains[1:]
        if drained.cpu.items
    }


def floor_ratio_name(drain_label: str) -> str:
    processes = drain_label.removeprefix("giftledger ")
    return f"ingest {processes} consumer floor/{TARGET_LEDGER_RATIO:g} budget"


def floor_ratio(budget_us: float, floor_us: float) -> float:
    return floor_us / budget_us if budget_us > 0 else math.inf


def consumer_budget_us(cores: int, ledger_alone_per_s: float, drain: CpuSpan) -> float:
    """Microseconds of CPU a gift the consumer processes could spend for a drain to apply
    `TARGET_LEDGER_RATIO` times the ledger alone's rate with every core busy all the time, the
    server's and the broker's CPU a gift as this drain measured them (the benchmark's own
    process, which only watches, is left out)."""
    all_us = cores * 1e6 / (TARGET_LEDGER_RATIO * ledger_alone_per_s)
    return all_us - sum(drain.us_each(drain.seconds[part]) or 0.0 for part in (POSTGRESQL, BROKER))


def cpu_document(span: CpuSpan) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "us_each": {name: rounded(span.us_each(s)) for name, s in span.seconds.items()},
        "all_us_each": rounded(span.all_us_each),
        "cores_busy": round(span.cores_busy, 3),
        "wall_s": round(span.wall_s, 3),
        "gifts": span.items,
    }


def report(figures: Figures, options: Options, tally: LogTally) -> dict[str, Any]:
    by_path = {m.path: m for m in figures.measurements}
    baseline = by_path["baseline (per event)"].events_per_s
    big_drains = figures.drains[1:]
    latency, published, floor = figures.latency, figures.published, figures.floor
    assert latency is not None
    assert floor is not None
    assert published is not None
    print()
    print(
        f"published {published.events:,} gifts at {published.events / published.seconds:,.0f}/s"
        f" (generating the JSON took {published.generating_seconds:.1f} of"
        f" {published.seconds:.1f} s)"
    )
    print(f"{'path':<27} {'events':>9} {'seconds':>8} {'events/s':>9} {'vs baseline':>11}")
    for m in figures.measurements:
        print(
            f"{m.path:<27} {m.events:>9,} {m.seconds:>8.2f} {m.events_per_s:>9,.0f}"
            f" {m.events_per_s / baseline:>10.1f}x"
        )
    print("(giftledger xN: N consumer processes in one group; each drain has its own topics)")
    alone = figures.ledger_alone
    assert alone is not None
    print(
        f"(ledger batch alone x{alone.writers}: the same {alone.events:,} gifts as transfers,"
        f" {alone.batches:,} batches of the consumers' batch size through Ledger.transactions()"
        f" + tx.post_new, {alone.writers} asyncio writers in one process; no Kafka, no parsing,"
        " no applied events)"
    )
    ratios = ledger_ratios(figures)
    for name, ratio in ratios.items():
        print(f"{name} ratio: {ratio:.2f}")
    cpu = cpu_spans(figures)
    print_cpu(cpu, figures)
    for big_drain in big_drains:
        settled_s = "never" if big_drain.settled_s is None else f"{big_drain.settled_s:.1f} s"
        print(
            f"{big_drain.label} on {big_drain.events:,}: first record"
            f" {big_drain.first_consumed_s:.1f} s after start, group settled (all partitions"
            f" assigned) {settled_s} after start with {big_drain.applied_before_settled:,} gifts"
            f" applied, last gift {big_drain.done_s:.1f} s after start;"
            f" {big_drain.redelivered:,} redelivered after rebalances (found applied)"
        )
    print(
        f"latency at {options.latency_rate:,} gifts/s for {options.latency_seconds:g} s"
        f" ({latency.events:,} gifts, sent at {latency.sent_per_s:,.0f}/s,"
        f" {latency.processes} consumer processes):"
    )
    for label, values in (
        ("applied_at - occurred_at", latency.applied_at_ms),
        ("commit - occurred_at", latency.committed_ms),
    ):
        print(
            f"  {label:<25} "
            + "  ".join(f"{name} {value:,.0f} ms" for name, value in values.items())
        )
    print(
        "  (applied_at is now() in the batch's transaction: when it started, before its ledger"
        " statements and its commit. commit is when the ingestor returned after the database"
        " commit, matched to each gift by partition and offset)"
    )
    for drained in figures.drains:
        print(
            f"memory, {drained.label} draining {drained.events:>9,}:"
            f" start {mib(drained.memory.start)},"
            f" peak {mib(drained.memory.peak)}"
            f" (+{mib(drained.memory.peak - drained.memory.start)});"
            f" at each quarter of the drain: {', '.join(mib(q) for q in drained.memory.quarters())}"
        )
    print("  (VmRSS of the largest consumer process)")
    print(f"checks: {figures.checked}")
    logs = tally.counts + figures.worker_log
    logged = ", ".join(f"{n} {level} {name}" for (level, name), n in logs.most_common())
    print(
        f"library log: {logged or 'nothing at WARNING or above'} (in {tally.path}, and the"
        " consumer processes' in ingest_bench-worker-<pid>.log beside it)"
    )
    print("machine: " + ", ".join(f"{key} {value}" for key, value in figures.machine.items()))
    gifts_per_s = headline(figures).events_per_s
    p99 = latency.committed_ms["p99"]
    targets = {
        f">= {TARGET_GIFTS_PER_S:,} gifts/s": gifts_per_s >= TARGET_GIFTS_PER_S,
        f">= {TARGET_RATIO:g}x the baseline": gifts_per_s / baseline >= TARGET_RATIO,
        f"commit p99 < {TARGET_P99_MS:g} ms at {TARGET_RATE:,} gifts/s": (
            options.latency_rate >= TARGET_RATE and p99 < TARGET_P99_MS
        ),
    }
    print(
        f"targets ({headline(figures).path}): "
        + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets.items())
    )
    return {
        "published": {
            "events": published.events,
            "seconds": round(published.seconds, 3),
            "events_per_s": round(published.events / published.seconds),
            "generating_seconds": round(published.generating_seconds, 3),
        },
        "measurements": [
            {
                "path": m.path,
                "events": m.events,
                "seconds": round(m.seconds, 3),
                "events_per_s": round(m.events_per_s),
                "over_baseline": round(m.events_per_s / baseline, 2),
            }
            for m in figures.measurements
        ],
        "drains": [
            {
                "events": d.events,
                "processes": d.processes,
                "first_consumed_s": round(d.first_consumed_s, 3),
                "settled_s": None if d.settled_s is None else round(d.settled_s, 3),
                "done_s": round(d.done_s, 3),
                "applied_before_settled": d.applied_before_settled,
                "redelivered": d.redelivered,
                "rss_start_bytes": d.memory.start,
                "rss_peak_bytes": d.memory.peak,
                "rss_quarters_bytes": d.memory.quarters(),
            }
            for d in figures.drains
        ],
        "latency": {
            "rate": options.latency_rate,
            "seconds": options.latency_seconds,
            "events": latency.events,
            "processes": latency.processes,
            "applied_at_ms": {key: round(value, 1) for key, value in latency.applied_at_ms.items()},
            "commit_ms": {key: round(value, 1) for key, value in latency.committed_ms.items()},
        },
        "ledger_alone": {
            "events": alone.events,
            "batches": alone.batches,
            "writers": alone.writers,
            "seconds": round(alone.seconds, 3),
            "events_per_s": round(alone.events_per_s),
        },
        "ratios": {name: round(ratio, 2) for name, ratio in ratios.items()},
        "cpu_a_gift": {label: cpu_document(span) for label, span in cpu.items()},
        "consumer_floor": {
            "fetch": cpu_document(floor.fetch),
            "fetch_and_parse": cpu_document(floor.fetch_and_parse),
            "budget_ratios": {
                floor_ratio_name(label): round(floor_ratio(budget_us, floor_us), 2)
                for label, (budget_us, floor_us) in floor_budgets(figures).items()
            },
        },
        "machine": figures.machine,
        "library_log": {f"{level} {name}": n for (level, name), n in logs.items()},
        "targets": targets,
    }


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    tally = LogTally(Path(tempfile.gettempdir()) / f"ingest_bench-{os.getpid()}.log")
    tally.install()
    figures = asyncio.run(run(options))
    document = report(figures, options, tally)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
