"""Cash-out benchmark: eligible creators earn Diamonds from gifts, then cash them out through the
simulated bank until every cash-out is `paid`, end to end, twice in one run: the desk applying
each batch's items one at a time (the baseline), then applying each batch at once.

One broker (the embedded Tansu, or `KAFKA_BOOTSTRAP_SERVERS`) and one fresh database
(`giftledger_bench_<random>` on `DATABASE_URL`, else 127.0.0.1:5432, else the embedded PostgreSQL;
migrated to head, dropped at the end). Topics get a unique prefix and
`Settings.kafka_partition_count` partitions. The consumers are the product's `ConsumerService`
and `Ingestor`, built as `services.app.bootstrap.start_consumers` builds them (same `Ledger` and
`CashoutDesk` settings; the collector settled as `giftledger run` settles it), with subclasses
that only note times; the bank is `services.payout_rail.simulated_rail` in a process of its own
(`bench.bank_process`, its collector settled too), as the bank is not in giftledger's process in
production.

1. gifts: a `creators.updated` profile per creator (eligible: US, 25,000 followers, 50,000 views
   and 12 posts in 30 days, good standing, verified, a payout account ref) and `--gifts` gifts,
   round robin over the creators, each creator's gifts worth the Diamonds for its cash-outs plus
   `SPARE_CASHOUTS` more. Published as a backlog, then drained by the consumers: gifts/s from the
   first gifts batch handed to the ingestor to the last gift applied.
2. cash-outs, per mode (`MODES`) in `--rounds` rounds (2 by default), the modes taking turns in
   ABBA order (one at a time, batched, batched, one at a time, ...), so that a machine whose
   speed drifts during the run weighs on both modes alike: with the bank running
   (`paid_delay_ms` 20, nothing failed or returned), the round's share of `--cashouts`
   `cashouts.requested` of 2,000 diamonds (10 USD), round robin over the creators, published at
   once; the round's clock runs from the first publish until every cash-out of the round is
   `paid`, and a mode's rate is its cash-outs over the seconds of its rounds; each round's
   rate is printed too, beside the calibration read just before it. Latency per cash-out from
   `cashout_transitions`; CPU per cash-out over the same clocks, of this process, the bank's,
   the PostgreSQL server and the embedded broker (from /proc, when they run on this machine:
   `bench/process_cpu.py`). The same ingestor, desk and relay serve both modes; the desk
   differs: "one at a time" applies each request and each payout result of a batch by itself,
   in order, inside the batch's transaction (`CashoutDesk.requests` / `payout_results` with
   one item), "batched" applies the batch at once. The relay's submissions (`mark_submitted`)
   are applied at once in both.
   Before each round the consumers start again with that mode's bound on the cash-out topics'
   batches (`cashout_batch_size_max`: 50 one at a time, as that path ran; batched, the
   settings' `consumer_cashout_batch_size_max`, 250 by default), untimed; then the
   calibration (`bench.harness.python_loop_s`) is read, untimed, and printed in the machine
   line (`..._before_one_at_a_time_round_1`, ...): a batched round lasts seconds, so its rate is
   that of the machine's speed at that moment. Beside it, the median `SELECT 1`
   round trip through the bench's engine (`bench.harness.statement_round_trip_us`,
   `select_1_round_trip_us_before_...`): what each statement costs before its own work, which
   one at a time pays per request and batched per batch.
3. checks: every cash-out paid; `ledger.verify.verify` finds nothing; for every creator, Diamonds
   available plus Diamonds paid out equal what its gifts gave, and nothing is left held; nothing
   is left in `payouts_payable`, and 10 USD per cash-out left `cash_at_bank`.

With `--statement-times`, each mode also prints where its database time went, statement by
statement (`bench.statement_clock`: wall time from send to answer, by the topic of the batch that
ran it, or "outside batches" for the consumer service's own tasks: the outbox relay, with the
submissions it posts, and the parked events' sweep; "other" for the benchmark's own queries);
the listeners cost a little CPU.

Run: python -m bench.cashout_bench [--creators 2000] [--cashouts 5000] [--gifts 100000]
                                   [--paid-delay-ms 20] [--rounds 2] [--statement-times]
                                   [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.bank_process import BankOptions, BankProcess
from bench.harness import (
    CALIBRATION_NAME,
    ROUND_TRIP_NAME,
    admin_url,
    fresh_database,
    load_average,
    postmaster_pid,
    python_loop_s,
    server_version,
    statement_round_trip_us,
    verify_ledger,
)
from bench.ingest_bench import kafka, new_producer, percentiles, say
from bench.process_cpu import CpuSnapshot, CpuSpan, cpu_snapshot, tree_cpu_seconds_of
from bench.statement_clock import STEP, StatementClock
from ledger.chart import AccountKind
from ledger.database import create_engine
from ledger.service import CONFLICT_KINDS, Ledger, LedgerTransaction
from schemas import topics
from schemas.events import (
    COINS_PER_GIFT_MAX,
    GIFT_COUNT_MAX,
    CashoutRequested,
    PayoutUpdated,
)
from schemas.topics import all_topics
from services.app.consumer import ConsumerService
from services.cashout.desk import CashoutDesk, CashoutLimits
from services.cashout.outbox import (
    OUTBOX_BATCH_SIZE_MAX,
    OUTBOX_CLAIM_WINDOW_ROWS,
    OUTBOX_MARKS_IN_FLIGHT_MAX,
    OUTBOX_POLL_INTERVAL_S,
)
from services.cashout.store import Cashout
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import BatchReport, InputRecord
from services.rates.rate_cards import RateCardBook, load_rate_cards
from services.runtime import metrics
from services.runtime.collector import settle_collector
from services.runtime.creator_locks import lock_creators
from services.runtime.embedded_broker import create_topics
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import EligibilitySettings, Settings

SEED = 20_251_128
CASHOUT_DIAMONDS = 2_000
DIAMONDS_PER_USD = 200  # the contract's default rate card
MILLI_PER_DIAMOND = 1_000
MILLI_DIAMONDS_PER_COIN = 500  # the contract's default rate card: creator share 50 %
COINS_PER_DIAMOND = 2
SPARE_CASHOUTS = 2  # each creator earns the Diamonds for its cash-outs and this many more
ONE_AT_A_TIME = "one at a time"
BATCHED = "batched"
MODES = (ONE_AT_A_TIME, BATCHED)  # on the same creators, in the order `round_order` gives
ROUNDS_DEFAULT = 2
ROUNDS_MAX = 10
# Records per batch of the cash-out topics one at a time: the bound that path ran with. Each
# batch holds its creators' locks while its requests are applied one after the other, and at
# 250 a batch held them for seconds and deadlocked (5 deadlocks, 1,000 requests run again, 56
# cash-outs/s against 80 at 50). Batched, the settings' `consumer_cashout_batch_size_max`.
ONE_AT_A_TIME_CASHOUT_BATCH_SIZE_MAX = 50
COIN_PRICES = (1, 5, 10, 99, 199, 499, 1_000)
PROFILE = {
    "birth_date": "1999-04-02",
    "country": "US",
    "followers": 25_000,
    "video_views_30d": 50_000,
    "posts_30d": 12,
    "in_good_standing": True,
    "identity_verified": True,
}

SESSION_TIMEOUT_MS = 6_000  # a fresh group joins in about half of it on the embedded broker
PAID_DELAY_MS_DEFAULT = 20
PUBLISH_CHUNK = 10_000
ASSIGNMENT_WAIT_S = 60.0
STALL_S = 60.0
POLL_S = 0.05
PROGRESS_EVERY_S = 15.0
CREATOR_COUNT_MAX = 1_000_000
CASHOUT_COUNT_MAX = 1_000_000
GIFT_COUNT_TOTAL_MAX = 10_000_000

# FastStream's loggers (the consumers' broker logs through "giftledger.kafka") and aiokafka's.
LOG_LINE_LENGTH_MAX = 160
LOG_LINES_SHOWN_MAX = 5
STATEMENT_LINES_MAX = 25  # per mode, with --statement-times
OUTSIDE_BATCHES = "outside batches"  # the step of the consumer service's own tasks
QUIET_LOGGERS = ("aiokafka", "faststream", "faststream.access.kafka", "giftledger.kafka")


@dataclass(frozen=True, slots=True)
class Options:
    creators: int
    cashouts: int
    gifts: int
    paid_delay_ms: int
    json_path: Path | None
    statement_times: bool = False
    rounds: int = ROUNDS_DEFAULT


def daily_cashouts_max(settings: Settings) -> int:
    """How many cash-outs of CASHOUT_DIAMONDS one creator may make in one UTC day."""
    cashout_usd_cents = CASHOUT_DIAMONDS * 100 // DIAMONDS_PER_USD
    return settings.cashout_daily_limit_usd_cents // cashout_usd_cents


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.cashout_bench", description=__doc__)
    parser.add_argument("--creators", type=int, default=2_000)
    parser.add_argument("--cashouts", type=int, default=5_000)
    parser.add_argument("--gifts", type=int, default=100_000)
    parser.add_argument(
        "--paid-delay-ms", type=int, default=PAID_DELAY_MS_DEFAULT, help="the bank's answer time"
    )
    parser.add_argument(
        "--statement-times",
        action="store_true",
        help="time each SQL statement, by the topic of its batch (bench.statement_clock)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS_DEFAULT,
        help="rounds per mode, the modes taking turns (ABBA: one at a time, batched, batched,"
        " one at a time, ...); each round has its share of --cashouts",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.rounds <= ROUNDS_MAX:
        parser.error(f"--rounds must be between 1 and {ROUNDS_MAX}")
    if not 1 <= arguments.creators <= CREATOR_COUNT_MAX:
        parser.error(f"--creators must be between 1 and {CREATOR_COUNT_MAX:,}")
    if not arguments.rounds <= arguments.cashouts <= CASHOUT_COUNT_MAX:
        parser.error(f"--cashouts must be between --rounds and {CASHOUT_COUNT_MAX:,}")
    if not arguments.creators <= arguments.gifts <= GIFT_COUNT_TOTAL_MAX:
        parser.error(f"--gifts must be between --creators and {GIFT_COUNT_TOTAL_MAX:,}")
    if not 0 <= arguments.paid_delay_ms <= 60_000:
        parser.error("--paid-delay-ms must be between 0 and 60000")
    per_creator = math.ceil(arguments.cashouts / arguments.creators) * len(MODES)
    allowed = daily_cashouts_max(Settings())
    if per_creator > allowed:
        parser.error(
            f"{per_creator} cash-outs of {CASHOUT_DIAMONDS:,} diamonds for one creator (all"
            f" modes) would pass the daily limit ({allowed} a day): add --creators"
        )
    return Options(
        creators=arguments.creators,
        cashouts=arguments.cashouts,
        gifts=arguments.gifts,
        paid_delay_ms=arguments.paid_delay_ms,
        json_path=arguments.json,
        statement_times=arguments.statement_times,
        rounds=arguments.rounds,
    )


def round_order(rounds: int) -> list[tuple[int, str]]:
    """(round, mode) in the order they run: the modes take turns, each pair of rounds in the
    opposite order of the one before (ABBA), so that a machine slowing or speeding up steadily
    over the run weighs on both modes alike."""
    order: list[tuple[int, str]] = []
    for round_index in range(rounds):
        modes = MODES if round_index % 2 == 0 else tuple(reversed(MODES))
        order.extend((round_index, mode) for mode in modes)
    return order


def round_numbers(options: Options, round_index: int) -> range:
    """The cash-out numbers of one round of a mode: each round takes the next share of
    `--cashouts`, so that the creators are spread over the rounds as over one run."""
    first = sum(share(options.cashouts, options.rounds, r) for r in range(round_index))
    return range(first, first + share(options.cashouts, options.rounds, round_index))


# The workload.


def creator_name(index: int) -> str:
    return f"bench-creator-{index:07d}"


def share(total: int, parts: int, index: int) -> int:
    """Round robin: how many of `total` items fall on part `index` of `parts`."""
    return total // parts + (1 if index < total % parts else 0)


def stamp() -> str:
    return datetime.now(UTC).isoformat()


def profile_event(run_id: str, index: int) -> dict[str, Any]:
    return {
        "event_id": f"bench-profile-{run_id}-{index:07d}",
        "occurred_at": stamp(),
        "creator_id": creator_name(index),
        **PROFILE,
        "payout_account_ref": f"pa_bench_{index:07d}",
    }


class GiftPlan:
    """Gift `g` goes to creator `g % creators`; each gift is worth at least its share of what the
    creator needs, so every creator can pay its cash-outs of every mode and SPARE_CASHOUTS
    more."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.rng = random.Random(SEED)
        self.milli_diamonds_by_creator = [0] * options.creators
        self._per_gift_coins_min = [
            math.ceil(
                (share(options.cashouts, options.creators, index) * len(MODES) + SPARE_CASHOUTS)
                * CASHOUT_DIAMONDS
                * COINS_PER_DIAMOND
                / share(options.gifts, options.creators, index)
            )
            for index in range(options.creators)
        ]

    def gift(self, run_id: str, number: int) -> tuple[bytes, bytes]:
        """(value, key) of gift `number`; its Diamonds are added to its creator's due."""
        index = number % self.options.creators
        needed = self._per_gift_coins_min[index]
        coins = self.rng.choice(COIN_PRICES)
        count = math.ceil(needed / coins)
        if count > GIFT_COUNT_MAX:
            count = GIFT_COUNT_MAX
            coins = math.ceil(needed / count)
        assert coins <= COINS_PER_GIFT_MAX, coins
        self.milli_diamonds_by_creator[index] += coins * count * MILLI_DIAMONDS_PER_COIN
        creator = creator_name(index)
        event = {
            "event_id": f"bench-gift-{run_id}-{number:08d}",
            "occurred_at": stamp(),
            "sender_id": f"fan-{self.rng.randrange(1_000_000)}",
            "creator_id": creator,
            "surface": "video",
            "video_id": f"video-{creator}",
            "gift_id": f"gift-{coins}",
            "coins": coins,
            "count": count,
        }
        return json.dumps(event).encode(), creator.encode()


def cashout_prefix(run_id: str, mode: str) -> str:
    """The start of the cash-out ids of one mode of the run."""
    return f"bench-cashout-{run_id}-{mode.replace(' ', '-')}-"


def cashout_round_prefix(run_id: str, mode: str, round_index: int) -> str:
    """The start of the cash-out ids of one round of a mode."""
    return f"{cashout_prefix(run_id, mode)}r{round_index}-"


def cashout_event(
    run_id: str, mode: str, round_index: int, number: int, creators: int
) -> tuple[bytes, bytes]:
    """(value, key) of cash-out `number` of `mode`, for creator `number % creators`."""
    creator = creator_name(number % creators)
    event = {
        "event_id": f"{cashout_round_prefix(run_id, mode, round_index)}{number:07d}",
        "occurred_at": stamp(),
        "creator_id": creator,
        "asset": "DIAMOND",
        "amount": CASHOUT_DIAMONDS,
        "payout_currency": "USD",
    }
    return json.dumps(event).encode(), creator.encode()


async def send_all(
    producer: Any, topic: str, numbers: range, make: Callable[[int], tuple[bytes, bytes]]
) -> None:
    """Send the records `make` gives for `numbers`, a chunk at a time; a chunk's deliveries are
    awaited after the next chunk is queued, to keep the producer busy."""
    pending: list[asyncio.Future[Any]] = []
    for start in range(numbers.start, numbers.stop, PUBLISH_CHUNK):
        sends = []
        for number in range(start, min(start + PUBLISH_CHUNK, numbers.stop)):
            value, key = make(number)
            sends.append(await producer.send(topic, value=value, key=key))
        await asyncio.gather(*pending)
        pending = sends
    await asyncio.gather(*pending)


# The consumers, with clocks.


@dataclass
class TopicClock:
    """What the ingestor did with one topic: batches, records, applied, seconds inside
    `process` (parse, database transaction, commit), and when the first batch came in and the
    last one returned (perf_counter)."""

    batches: int = 0
    records: int = 0
    applied: int = 0
    busy_s: float = 0.0
    first_at: float | None = None
    last_at: float | None = None


class ClockedIngestor(Ingestor):
    """The product's ingestor; notes a `TopicClock` per topic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clocks: dict[str, TopicClock] = {}

    @property
    def clocked_desk(self) -> ClockedDesk:
        assert isinstance(self.desk, ClockedDesk)
        return self.desk

    def clock(self, topic: str) -> TopicClock:
        return self.clocks.setdefault(topic, TopicClock())

    async def process(self, topic: str, records: Sequence[InputRecord]) -> BatchReport:
        clock = self.clock(topic)
        started = time.perf_counter()
        if clock.first_at is None:
            clock.first_at = started
        step = STEP.set(topic)  # whose statements these are (--statement-times)
        try:
            report = await super().process(topic, records)
        finally:
            STEP.reset(step)
        clock.last_at = time.perf_counter()
        clock.busy_s += clock.last_at - started
        clock.batches += 1
        clock.records += len(records)
        clock.applied += report.applied
        return report


class ClockedDesk(CashoutDesk):
    """The product's cash-out desk; counts the items it is handed and the seconds spent on them.
    With `one_at_a_time` set, it applies a batch's requests and payout results by themselves,
    one after the other in the batch's transaction: the baseline. The relay's submissions are
    applied at once in both modes (they were one post per relay round already). Items are
    counted again when their batch runs again: after a conflict (a deadlock), or after the
    batch failed (a statement timeout, say) and the consumer rewound it."""

    def __init__(
        self, limits: CashoutLimits, eligibility: EligibilitySettings, topic_prefix: str
    ) -> None:
        super().__init__(limits, eligibility, topic_prefix)
        self.one_at_a_time = False
        self.request_count = 0
        self.result_count = 0
        self.request_s = 0.0
        self.result_s = 0.0

    async def requests(
        self,
        tx: LedgerTransaction,
        events: Sequence[CashoutRequested],
        rate_cards: RateCardBook,
        account_ids: dict[str, int],
    ) -> list[Cashout]:
        started = time.perf_counter()
        try:
            if not self.one_at_a_time:
                return await super().requests(tx, events, rate_cards, account_ids)
            # As the batch did before: all its creators' locks first, in key order.
            await lock_creators(tx.connection, [event.creator_id for event in events])
            cashouts: list[Cashout] = []
            for event in events:
                cashouts += await super().requests(tx, [event], rate_cards, account_ids)
            return cashouts
        finally:
            self.request_count += len(events)
            self.request_s += time.perf_counter() - started

    async def payout_results(
        self,
        tx: LedgerTransaction,
        ledger: Ledger,
        events: Sequence[PayoutUpdated],
        rate_cards: RateCardBook,
    ) -> list[str | None]:
        started = time.perf_counter()
        try:
            if not self.one_at_a_time:
                return await super().payout_results(tx, ledger, events, rate_cards)
            refusals: list[str | None] = []
            for event in events:
                refusals += await super().payout_results(tx, ledger, [event], rate_cards)
            return refusals
        finally:
            self.result_count += len(events)
            self.result_s += time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class OutboxClock:
    """What this process's outbox relay has done so far, from its metrics: rounds, rows sent
    and the rounds' seconds, each from its claim to its mark's commit (claim, send to Kafka,
    mark published, mark the payouts submitted; a pass overlaps its rounds)."""

    rounds: int
    rows: int
    busy_s: float

    @classmethod
    def now(cls) -> OutboxClock:
        """Read from the two metrics alone (the whole registry reads /proc each time)."""
        samples = {
            sample.name: sample.value
            for metric in (metrics.OUTBOX_ROUND_SECONDS, metrics.OUTBOX_ROWS_PUBLISHED)
            for family in metric.collect()
            for sample in family.samples
        }
        return cls(
            int(samples["giftledger_outbox_round_seconds_count"]),
            int(samples["giftledger_outbox_rows_published_total"]),
            samples["giftledger_outbox_round_seconds_sum"],
        )


def cashout_batch_size_max(settings: Settings, mode: str) -> int:
    """The bound on the cash-out topics' batches the consumers run `mode` with."""
    if mode == ONE_AT_A_TIME:
        return ONE_AT_A_TIME_CASHOUT_BATCH_SIZE_MAX
    return settings.consumer_cashout_batch_size_max


def consumer_settings(prefix: str) -> Settings:
    return Settings(
        kafka_topic_prefix=prefix,
        kafka_consumer_group=f"giftledger-{prefix}",
        kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
    )


def new_consumers(
    settings: Settings, engine: AsyncEngine, bootstrap_servers: str, rate_cards: RateCardBook
) -> tuple[ConsumerService, ClockedIngestor]:
    """As the composition root (`services.app.bootstrap`) builds them, with clocks; not
    started."""
    desk = ClockedDesk(
        CashoutLimits(settings.cashout_minimum_usd_cents, settings.cashout_daily_limit_usd_cents),
        settings.eligibility,
        settings.kafka_topic_prefix,
    )
    ingestor = ClockedIngestor(
        build_ledger(settings, engine),
        rate_cards,
        desk,
        park_s=settings.reversal_park_s,
        payout_park_s=settings.payout_park_s,
        payout_park_count_max=settings.payout_park_count_max,
    )
    return ConsumerService(settings, ingestor, bootstrap_servers), ingestor


def bank_options(settings: Settings, bootstrap_servers: str, paid_delay_ms: int) -> BankOptions:
    """The simulated bank: answers `paid` after `paid_delay_ms`, never fails or returns."""
    return BankOptions(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=settings.kafka_topic_prefix,
        consumer_group=settings.kafka_consumer_group,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        fetch_wait_ms_max=settings.consumer_cashout_fetch_wait_ms_max,
        in_flight_max=settings.payout_rail_in_flight_max,
        seed=SEED,
        paid_delay_ms=paid_delay_ms,
    )


async def wait_until(
    condition: Callable[[], bool], progress: Callable[[], int], what: str, stall_s: float = STALL_S
) -> None:
    """Poll `condition`; give up when `progress` has not moved for `stall_s` seconds."""
    last, last_moved = progress(), time.monotonic()
    while not condition():
        await asyncio.sleep(POLL_S)
        if progress() != last:
            last, last_moved = progress(), time.monotonic()
        elif time.monotonic() - last_moved > stall_s:
            raise AssertionError(f"{what}: no progress for {stall_s:g} s (at {last})")


# Measurements.


@dataclass(frozen=True, slots=True)
class Measurement:
    path: str
    items: int
    seconds: float

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds


# The processes whose CPU a mode is charged, by the name the report gives them.
THIS_PROCESS, BANK, POSTGRESQL, BROKER = "this process", "bank", "postgresql", "broker"
CPU_DOCUMENT_KEYS = {
    THIS_PROCESS: "this_process_s",
    BANK: "bank_s",
    POSTGRESQL: "postgres_s",
    BROKER: "broker_s",
}


@dataclass(frozen=True, slots=True)
class CpuMeter:
    """Reads the CPU seconds used so far by this process (the consumers, the relay and the
    publisher: one event loop), the bank's process, the PostgreSQL server (None when it is not
    on this machine) and the embedded broker (None with `KAFKA_BOOTSTRAP_SERVERS`)."""

    bank_pid: int | None
    postmaster_pid: int | None
    broker_pid: int | None

    def read(self) -> CpuSnapshot:
        return cpu_snapshot(
            {
                THIS_PROCESS: time.process_time,
                BANK: lambda: tree_cpu_seconds_of(self.bank_pid),
                POSTGRESQL: lambda: tree_cpu_seconds_of(self.postmaster_pid),
                BROKER: lambda: tree_cpu_seconds_of(self.broker_pid),
            }
        )


def spent(seconds: float, count: int, unit: str) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "count": count,
        "unit": unit,
        "ms_each": round(seconds * 1000 / max(count, 1), 3),
    }


@dataclass
class Figures:
    publish: dict[str, float] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    gifts_first_batch_s: float = 0.0
    # Per mode (`MODES`):
    latency_ms: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    paths: dict[str, dict[str, int]] = field(default_factory=dict)
    time_spent: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    cpu: dict[str, CpuSpan] = field(default_factory=dict)
    checked: str = ""
    conflicts: dict[str, int] = field(default_factory=dict)
    # Per mode, the ledger's units of work run again after a lost race, by kind.
    runs_again: dict[str, dict[str, int]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    bank_warnings_logged: int = 0
    # Per mode and round, with --statement-times: the statements that took the most time
    # (`as_dict`).
    statement_times: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Each round of each mode, in the order they ran.
    rounds: list[RoundFigures] = field(default_factory=list)

    def rate(self, path: str) -> float:
        return next(m.items_per_s for m in self.measurements if m.path == path)

    def add_round(self, one: RoundFigures) -> None:
        """Add a round to its mode's figures: the mode's rate is its cash-outs over the
        seconds of all its rounds, its CPU a cash-out likewise."""
        self.rounds.append(one)
        mode = one.mode
        path = f"cash-outs {mode}"
        earlier = next((m for m in self.measurements if m.path == path), None)
        if earlier is None:
            self.measurements.append(one.measurement)
            self.cpu[mode] = one.cpu
            self.time_spent[mode] = one.time_spent
            self.runs_again[mode] = one.runs_again
            self.publish[f"cashouts_seconds {mode}"] = one.publish_s
        else:
            index = self.measurements.index(earlier)
            self.measurements[index] = Measurement(
                path,
                earlier.items + one.measurement.items,
                earlier.seconds + one.measurement.seconds,
            )
            self.cpu[mode] = self.cpu[mode].plus(one.cpu)
            self.time_spent[mode] = {
                name: spent(
                    step["seconds"] + one.time_spent[name]["seconds"],
                    step["count"] + one.time_spent[name]["count"],
                    step["unit"],
                )
                for name, step in self.time_spent[mode].items()
            }
            self.runs_again[mode] = {
                kind: n + one.runs_again[kind] for kind, n in self.runs_again[mode].items()
            }
            self.publish[f"cashouts_seconds {mode}"] += one.publish_s
        if one.statement_times is not None:
            self.statement_times[f"{mode}, round {one.round_index + 1}"] = one.statement_times


@dataclass(frozen=True, slots=True)
class RoundFigures:
    """What one round of one mode measured."""

    mode: str
    round_index: int
    measurement: Measurement
    cpu: CpuSpan
    time_spent: dict[str, dict[str, Any]]
    runs_again: dict[str, int]
    publish_s: float
    calibration_s: float
    statement_times: list[dict[str, Any]] | None


async def phase_gifts(
    options: Options,
    figures: Figures,
    producer: Any,
    service: ConsumerService,
    ingestor: ClockedIngestor,
    plan: GiftPlan,
    run_id: str,
) -> None:
    """Publish the profiles and the gifts as a backlog, start the consumers, time the drain."""
    prefix = service.settings.kafka_topic_prefix
    started = time.perf_counter()
    await send_all(
        producer,
        prefix + topics.CREATORS_UPDATED,
        range(options.creators),
        lambda index: (
            json.dumps(profile_event(run_id, index)).encode(),
            creator_name(index).encode(),
        ),
    )
    await send_all(
        producer,
        prefix + topics.GIFTS_SENT,
        range(options.gifts),
        lambda number: plan.gift(run_id, number),
    )
    published_s = time.perf_counter() - started
    figures.publish["backlog_records"] = options.creators + options.gifts
    figures.publish["backlog_seconds"] = published_s
    say(
        f"published {options.creators:,} profiles and {options.gifts:,} gifts in"
        f" {published_s:.1f} s"
    )
    gifts, profiles = ingestor.clock(topics.GIFTS_SENT), ingestor.clock(topics.CREATORS_UPDATED)
    counts = ingestor.counts
    started = time.perf_counter()
    starting = asyncio.create_task(service.start())
    try:
        await wait_until(
            lambda: (
                gifts.applied >= options.gifts
                or counts.dead_lettered > 0
                or (starting.done() and starting.exception() is not None)
            ),
            lambda: counts.consumed,
            "gifts",
        )
        await starting
        assert counts.dead_lettered == 0, f"dead letters: {counts.dead_letter_errors}"
        await wait_until(
            lambda: profiles.applied >= options.creators, lambda: counts.consumed, "profiles"
        )
    except BaseException:
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        raise
    assert gifts.first_at is not None
    assert gifts.last_at is not None
    assert gifts.applied == options.gifts, f"applied {gifts.applied} of {options.gifts} gifts"
    figures.gifts_first_batch_s = gifts.first_at - started
    drain = Measurement("gifts -> ledger", options.gifts, gifts.last_at - gifts.first_at)
    figures.measurements.append(drain)
    figures.time_spent["gifts"] = {
        "gifts.sent": spent(gifts.busy_s, gifts.batches, "batches"),
        "  per gift": spent(gifts.busy_s, gifts.records, "gifts"),
    }
    say(f"gifts: {drain.items_per_s:,.0f}/s over {drain.seconds:.1f} s")


async def wait_for_assignment(service: ConsumerService, rail: BankProcess) -> None:
    partitions = service.settings.kafka_partition_count
    expected = len(service.topics) * partitions
    deadline = time.monotonic() + ASSIGNMENT_WAIT_S
    while (
        service.assigned_partition_count() < expected
        or rail.assigned_partition_count() < partitions
    ):
        assert time.monotonic() < deadline, (
            f"not assigned within {ASSIGNMENT_WAIT_S:g} s: consumers"
            f" {service.assigned_partition_count()}/{expected},"
            f" bank {rail.assigned_partition_count()}/{partitions}"
        )
        await asyncio.sleep(POLL_S)


_PROGRESS = text(
    "SELECT count(*) FILTER (WHERE status = 'paid' AND cashout_id LIKE :mode_ids) AS paid,"
    " count(*) FILTER (WHERE status IN ('rejected', 'failed', 'returned')) AS refused"
    " FROM cashouts"
)

_OUTBOX_LEFT = text(
    "SELECT count(*) FROM outbox WHERE topic_prefix = :prefix AND published_at IS NULL"
)


@dataclass(frozen=True, slots=True)
class Counts:
    """The cumulative counters a mode's figures are the difference of."""

    requests: TopicClock
    results: TopicClock
    request_items: int
    result_items: int
    request_s: float
    result_s: float
    outbox_rounds: int
    outbox_rows: int
    outbox_s: float

    @classmethod
    def now(cls, ingestor: ClockedIngestor) -> Counts:
        desk = ingestor.clocked_desk
        outbox = OutboxClock.now()
        return cls(
            dataclasses.replace(ingestor.clock(topics.CASHOUTS_REQUESTED)),
            dataclasses.replace(ingestor.clock(topics.PAYOUTS_UPDATED)),
            desk.request_count,
            desk.result_count,
            desk.request_s,
            desk.result_s,
            outbox.rounds,
            outbox.rows,
            outbox.busy_s,
        )


def time_spent_between(before: Counts, after: Counts) -> dict[str, dict[str, Any]]:
    requests, results = after.requests, after.results
    return {
        "cashouts.requested": spent(
            requests.busy_s - before.requests.busy_s,
            requests.batches - before.requests.batches,
            "batches",
        ),
        "  desk per request": spent(
            after.request_s - before.request_s, after.request_items - before.request_items, "items"
        ),
        "payouts.updated": spent(
            results.busy_s - before.results.busy_s,
            results.batches - before.results.batches,
            "batches",
        ),
        "  desk per result": spent(
            after.result_s - before.result_s, after.result_items - before.result_items, "items"
        ),
        "outbox": spent(
            after.outbox_s - before.outbox_s, after.outbox_rounds - before.outbox_rounds, "rounds"
        ),
        "  outbox rows": spent(
            after.outbox_s - before.outbox_s, after.outbox_rows - before.outbox_rows, "rows"
        ),
    }


async def outbox_drained(engine: AsyncEngine, prefix: str) -> None:
    """Wait until the relay has published every outbox row (the last `paid` updates), so that
    the next mode starts with nothing left over."""
    deadline = time.monotonic() + STALL_S
    async with engine.connect() as conn:
        while (await conn.execute(_OUTBOX_LEFT, {"prefix": prefix})).scalar_one():
            await conn.rollback()  # a fresh snapshot for the next poll
            assert time.monotonic() < deadline, f"outbox not drained within {STALL_S:g} s"
            await asyncio.sleep(POLL_S)


async def phase_cashouts(
    options: Options,
    figures: Figures,
    engine: AsyncEngine,
    producer: Any,
    service: ConsumerService,
    ingestor: ClockedIngestor,
    rail: BankProcess,
    cpu_meter: CpuMeter,
    run_id: str,
    mode: str,
    round_index: int,
    calibration_s: float,
    statement_clock: StatementClock | None = None,
) -> RoundFigures:
    """With the desk in `mode`, publish the round's cash-out requests at once; time until every
    one is paid, and the CPU the processes used meanwhile (and, with `statement_clock`, the
    time of each statement)."""
    await wait_for_assignment(service, rail)
    prefix = service.settings.kafka_topic_prefix
    await outbox_drained(engine, prefix)
    if statement_clock is not None:
        statement_clock.reset()
    desk = ingestor.clocked_desk
    desk.one_at_a_time = mode == ONE_AT_A_TIME
    before = Counts.now(ingestor)
    numbers = round_numbers(options, round_index)
    count = len(numbers)
    mode_ids = cashout_round_prefix(run_id, mode, round_index) + "%"
    paid = refused = 0

    def progress() -> int:
        return desk.request_count + desk.result_count + OutboxClock.now().rows + paid

    runs_again_before = ledger_runs_again()
    cpu_before = cpu_meter.read()
    started = time.perf_counter()
    await send_all(
        producer,
        prefix + topics.CASHOUTS_REQUESTED,
        numbers,
        lambda number: cashout_event(run_id, mode, round_index, number, options.creators),
    )
    publish_s = time.perf_counter() - started
    results_before = desk.result_count
    async with engine.connect() as conn:
        last_moved, last_progress, last_said = time.monotonic(), -1, time.monotonic()
        while paid < count:
            await asyncio.sleep(POLL_S)
            rail.check_alive()  # a bank that died would otherwise show as a stall
            # The database is asked only once the desk was handed a result for every cash-out
            # (a batch that ran again counts twice): counting the paid ones meanwhile would
            # put the bench's own scans on the machine being measured.
            if desk.result_count - results_before >= count:
                row = (await conn.execute(_PROGRESS, {"mode_ids": mode_ids})).one()
                await conn.rollback()  # a fresh snapshot for the next poll
                paid, refused = int(row.paid), int(row.refused)
                assert refused == 0, f"{refused} cash-outs rejected, failed or returned"
            now = time.monotonic()
            if progress() != last_progress:
                last_moved, last_progress = now, progress()
            if now - last_moved >= STALL_S:
                row = (await conn.execute(_PROGRESS, {"mode_ids": mode_ids})).one()
                raise AssertionError(
                    f"cash-outs {mode}: no progress for {STALL_S:g} s ({row.paid} of"
                    f" {count} paid, {row.refused} rejected, failed or returned)"
                )
            if now - last_said >= PROGRESS_EVERY_S:
                last_said = now
                say(
                    f"  {time.perf_counter() - started:5.0f} s: {desk.request_count:,} requests,"
                    f" {OutboxClock.now().rows - before.outbox_rows:,} outbox rows sent,"
                    f" {rail.reports_sent:,} bank reports,"
                    f" {desk.result_count - results_before:,} results ({mode},"
                    f" round {round_index + 1})"
                )
    elapsed_s = time.perf_counter() - started
    cpu = CpuSpan.between(cpu_before, cpu_meter.read(), count)
    statement_times = (
        None
        if statement_clock is None
        else [tally.as_dict() for tally in statement_clock.tallies(STATEMENT_LINES_MAX)]
    )
    measurement = Measurement(f"cash-outs {mode}", count, elapsed_s)
    say(
        f"cash-outs {mode}, round {round_index + 1}: {measurement.items_per_s:,.0f}/s over"
        f" {measurement.seconds:.1f} s"
    )
    runs_again_after = ledger_runs_again()
    figures.machine["bank_reports"] = rail.reports_sent
    return RoundFigures(
        mode=mode,
        round_index=round_index,
        measurement=measurement,
        cpu=cpu,
        time_spent=time_spent_between(before, Counts.now(ingestor)),
        runs_again={
            kind: runs_again_after[kind] - runs_again_before[kind] for kind in CONFLICT_KINDS
        },
        publish_s=publish_s,
        calibration_s=calibration_s,
        statement_times=statement_times,
    )


_TIMELINE = text(
    """
    WITH t AS (
        SELECT cashout_id,
               min(at) FILTER (WHERE status = 'requested') AS requested_at,
               min(at) FILTER (WHERE status = 'held') AS held_at,
               min(at) FILTER (WHERE status = 'submitted') AS submitted_at,
               min(at) FILTER (WHERE status = 'paid') AS paid_at
        FROM cashout_transitions WHERE cashout_id LIKE :mode_ids GROUP BY cashout_id
    ), sent AS (
        SELECT convert_from(payload, 'UTF8')::jsonb ->> 'cashout_id' AS cashout_id,
               min(published_at) AS published_at
        FROM outbox WHERE topic = :payouts GROUP BY 1
    )
    SELECT c.occurred_at, t.requested_at, t.held_at, t.submitted_at, t.paid_at,
           sent.published_at
    FROM cashouts c JOIN t USING (cashout_id) LEFT JOIN sent USING (cashout_id)
    """
)


def ms_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() * 1000


async def cashout_latency(
    engine: AsyncEngine, figures: Figures, count: int, mode: str, mode_ids: str
) -> None:
    """Per cash-out of `mode`, from its transitions (clock_timestamp() as each was stored,
    inside the transaction, before its commit), its request's occurred_at (the publish time)
    and the published_at of its `payouts.requested` outbox row (set once the broker
    acknowledged the send, in the transaction that marks the rows sent)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                _TIMELINE, {"payouts": topics.PAYOUTS_REQUESTED, "mode_ids": mode_ids}
            )
        ).all()
    assert len(rows) == count, f"{len(rows)} cash-outs with transitions, expected {count}"
    assert all(row.paid_at is not None and row.published_at is not None for row in rows)
    stages = {
        "requested -> paid": [ms_between(r.requested_at, r.paid_at) for r in rows],
        "publish -> paid": [ms_between(r.occurred_at, r.paid_at) for r in rows],
        "publish -> requested": [ms_between(r.occurred_at, r.requested_at) for r in rows],
        "requested -> held": [ms_between(r.requested_at, r.held_at) for r in rows],
        "held -> payout sent": [ms_between(r.held_at, r.published_at) for r in rows],
        "payout sent -> paid": [ms_between(r.published_at, r.paid_at) for r in rows],
    }
    figures.latency_ms[mode] = {name: percentiles(values) for name, values in stages.items()}
    submitted_first = sum(
        1 for r in rows if r.submitted_at is not None and r.submitted_at < r.paid_at
    )
    figures.paths[mode] = {
        "held -> submitted -> paid": submitted_first,
        "held -> paid (bank answered before submitted was stored)": len(rows) - submitted_first,
    }


# Checks.


async def counts_by(conn: AsyncConnection, sql: str, **params: Any) -> dict[str, int]:
    """{first column: second column} of a query whose second column is an integer."""
    return {str(row[0]): int(row[1]) for row in await conn.execute(text(sql), params)}


async def check_ledger(
    engine: AsyncEngine, url: str, options: Options, plan: GiftPlan, ingestor: ClockedIngestor
) -> str:
    """Every cash-out paid, every creator's Diamonds accounted for, verify() clean."""
    async with engine.connect() as conn:
        statuses = await counts_by(conn, "SELECT status, count(*) FROM cashouts GROUP BY 1")
        applied = await counts_by(conn, "SELECT topic, count(*) FROM applied_events GROUP BY 1")
        available = await counts_by(
            conn,
            "SELECT creator_id, credits_posted - debits_posted - debits_pending FROM accounts"
            " WHERE kind = :kind",
            kind=AccountKind.CREATOR_DIAMONDS_AVAILABLE.value,
        )
        paid_out = await counts_by(
            conn,
            "SELECT creator_id, CAST(sum(amount) AS bigint) FROM cashouts WHERE status = 'paid'"
            " GROUP BY 1",
        )
        held_left = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM accounts WHERE kind = :kind AND (credits_posted"
                    " <> debits_posted OR credits_pending <> 0 OR debits_pending <> 0)"
                ),
                {"kind": AccountKind.CREATOR_DIAMONDS_HELD.value},
            )
        ).scalar_one()
        money: dict[AccountKind, int] = {}
        for kind in (AccountKind.PAYOUTS_PAYABLE, AccountKind.CASH_AT_BANK):
            money[kind] = (
                await conn.execute(
                    text("SELECT credits_posted - debits_posted FROM accounts WHERE name = :name"),
                    {"name": f"platform:USD:{kind.value}"},
                )
            ).scalar_one()
        payable = money[AccountKind.PAYOUTS_PAYABLE]
        paid_from_bank = money[AccountKind.CASH_AT_BANK]
    cashouts = options.cashouts * len(MODES)
    assert statuses == {"paid": cashouts}, f"cash-outs by status: {statuses}"
    expected_applied = {
        topics.CREATORS_UPDATED: options.creators,
        topics.GIFTS_SENT: options.gifts,
        topics.CASHOUTS_REQUESTED: cashouts,
        topics.PAYOUTS_UPDATED: cashouts,
    }
    assert applied == expected_applied, f"applied_events by topic: {applied}"
    assert ingestor.counts.dead_lettered == 0, ingestor.counts.dead_letter_errors
    creators = [creator_name(index) for index in range(options.creators)]
    accounted = {c: available.get(c, 0) + paid_out.get(c, 0) for c in creators}
    given = dict(zip(creators, plan.milli_diamonds_by_creator, strict=True))
    wrong = {c: (accounted[c], given[c]) for c in creators if accounted[c] != given[c]}
    assert not wrong, f"available + paid != gifts for {len(wrong)} creators: {list(wrong)[:5]}"
    assert set(available) == set(creators), "creators with Diamonds differ from the workload's"
    assert held_left == 0, f"{held_left} creators still have Diamonds held"
    usd_cents = cashouts * CASHOUT_DIAMONDS * 100 // DIAMONDS_PER_USD
    assert payable == 0, f"payouts_payable holds {payable} cents, expected none"
    assert paid_from_bank == usd_cents, f"{paid_from_bank} cents left the bank, not {usd_cents}"
    verify_s = await verify_ledger(url)
    total = sum(plan.milli_diamonds_by_creator)
    paid_total = cashouts * CASHOUT_DIAMONDS * MILLI_PER_DIAMOND
    return (
        f"{cashouts:,} cash-outs paid (no other status); every event applied once; for"
        f" each of {options.creators:,} creators available + paid out = what its gifts gave"
        f" ({total / MILLI_PER_DIAMOND:,.0f} diamonds in all, {paid_total / MILLI_PER_DIAMOND:,.0f}"
        f" paid out), nothing held or payable; {usd_cents / 100:,.2f} USD left the bank;"
        f" verify() found nothing ({verify_s:.1f} s)"
    )


def ledger_runs_again() -> dict[str, int]:
    """The units of work this process's ledger ran again so far, by kind of lost race
    (`giftledger_ledger_conflicts_retried_total`: the consumers' and the relay's)."""
    found: dict[str, int] = {}
    for kind in CONFLICT_KINDS:
        value = REGISTRY.get_sample_value(
            "giftledger_ledger_conflicts_retried_total", {"kind": kind}
        )
        found[kind] = int(value or 0)
    return found


async def conflicts(
    engine: AsyncEngine, ingestor: ClockedIngestor, options: Options
) -> dict[str, int]:
    """Deadlocks in the bench database (PostgreSQL's statistics, flushed about once a second),
    and the items the desk was handed beyond one per cash-out (batches run again after a
    conflict)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            )
        ).one()
    desk = ingestor.clocked_desk
    return {
        "deadlocks": int(row.deadlocks),
        "requests_repeated": desk.request_count - options.cashouts * len(MODES),
        "results_repeated": desk.result_count - options.cashouts * len(MODES),
    }


# The run.


async def run(options: Options) -> Figures:
    figures = Figures()
    async with (
        kafka() as (bootstrap_servers, broker_source, broker_pid),
        admin_url() as (maintenance_url, database_source),
        fresh_database(maintenance_url) as url,
    ):
        run_id = uuid.uuid4().hex[:8]
        settings = consumer_settings(f"c{run_id}.")
        await create_topics(
            bootstrap_servers,
            all_topics(settings.kafka_topic_prefix),
            settings.kafka_partition_count,
        )
        engine = create_engine(
            url,
            pool_size=settings.db_pool_size,
            pool_overflow_max=settings.db_pool_overflow_max,
            statement_timeout_ms=settings.db_statement_timeout_ms,
        )
        producer = new_producer(bootstrap_servers)
        statement_clock = StatementClock() if options.statement_times else None
        if statement_clock is not None:
            statement_clock.attach(engine)
        rail: BankProcess | None = None
        service: ConsumerService | None = None
        try:
            async with engine.connect() as conn:
                rate_cards = await load_rate_cards(conn)
            card = rate_cards.in_force_at(datetime.now(UTC))
            assert card.diamonds_per_usd == DIAMONDS_PER_USD, card
            assert card.milli_diamonds_per_coin == MILLI_DIAMONDS_PER_COIN, card
            figures.machine = {
                "cpus": os.cpu_count(),
                "load_average_at_start": load_average(),
                f"{CALIBRATION_NAME}_at_start": round(python_loop_s(), 3),
                "postgresql": await server_version(engine),
                "database": database_source,
                "broker": broker_source,
                "partitions": settings.kafka_partition_count,
                "consumer_batch_size_max": settings.consumer_batch_size_max,
                "consumer_batch_wait_ms": settings.consumer_batch_wait_ms,
                "cashout_fetch_wait_ms": settings.consumer_cashout_fetch_wait_ms_max,
                "cashout_batch_size_max": ", ".join(
                    f"{mode} {cashout_batch_size_max(settings, mode)}" for mode in MODES
                ),
                "outbox_poll_s": OUTBOX_POLL_INTERVAL_S,
                "outbox_batch_max": OUTBOX_BATCH_SIZE_MAX,
                "outbox_marks_in_flight_max": OUTBOX_MARKS_IN_FLIGHT_MAX,
                "outbox_claim_window_rows": OUTBOX_CLAIM_WINDOW_ROWS,
                "bank_paid_delay_ms": options.paid_delay_ms,
            }
            await producer.start()
            # Its group forms while the gifts are published and drained.
            rail = BankProcess.start(
                bank_options(settings, bootstrap_servers, options.paid_delay_ms)
            )
            await rail.wait_started()
            cpu_meter = CpuMeter(rail.pid, await postmaster_pid(engine), broker_pid)
            settle_collector()  # as `giftledger run` does before it starts its consumers
            service, ingestor = new_consumers(settings, engine, bootstrap_servers, rate_cards)
            plan = GiftPlan(options)
            await phase_gifts(options, figures, producer, service, ingestor, plan, run_id)
            for round_index, mode in round_order(options.rounds):
                # The same ingestor and desk (their counts go on); consumers of the mode's
                # batch bound, joining the same groups where the last ones left off.
                await service.stop()
                service = None
                mode_settings = settings.model_copy(
                    update={
                        "consumer_cashout_batch_size_max": cashout_batch_size_max(settings, mode)
                    }
                )
                service = ConsumerService(mode_settings, ingestor, bootstrap_servers)
                # Its tasks (the relay's among them) keep this step; batches set their topic.
                outside = STEP.set(OUTSIDE_BATCHES)
                try:
                    await service.start()
                finally:
                    STEP.reset(outside)
                # The machine's speed just before the mode's clock starts (untimed): a batched
                # run lasts seconds, so its rate is that of the moment it ran in.
                mode_name = f"{mode.replace(' ', '_')}_round_{round_index + 1}"
                calibration_s = python_loop_s()
                figures.machine[f"{CALIBRATION_NAME}_before_{mode_name}"] = round(calibration_s, 3)
                figures.machine[f"{ROUND_TRIP_NAME}_before_{mode_name}"] = round(
                    await statement_round_trip_us(engine), 1
                )
                one_round = await phase_cashouts(
                    options,
                    figures,
                    engine,
                    producer,
                    service,
                    ingestor,
                    rail,
                    cpu_meter,
                    run_id,
                    mode,
                    round_index,
                    calibration_s,
                    statement_clock,
                )
                figures.add_round(one_round)
            for mode in MODES:
                await cashout_latency(
                    engine, figures, options.cashouts, mode, cashout_prefix(run_id, mode) + "%"
                )
            await service.stop()
            service = None
            await rail.stop()
            figures.bank_warnings_logged = rail.warnings_logged
            say("checking the ledger")
            figures.checked = await check_ledger(engine, url, options, plan, ingestor)
            figures.conflicts = await conflicts(engine, ingestor, options)
            figures.machine[f"{CALIBRATION_NAME}_at_end"] = round(python_loop_s(), 3)
        finally:
            if service is not None:
                await service.stop()
            if rail is not None:
                await rail.stop()
            await producer.stop()
            await engine.dispose()
    return figures


# Report.


class LogTally(logging.Handler):
    """Keeps log records off the console: counts those at WARNING and above by level and
    logger, and writes them to a file. FastStream's loggers may print by themselves and reset
    their level when a broker starts, so they also get a filter that counts and drops."""

    def __init__(self, path: Path) -> None:
        super().__init__(level=logging.WARNING)
        self.path = path
        self.counts: Counter[tuple[str, str]] = Counter()
        self.messages: Counter[str] = Counter()
        self._file = logging.FileHandler(path)
        self._file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname, record.name] += 1
        first_line = record.getMessage().splitlines()[0] if record.getMessage() else ""
        self.messages[f"{record.levelname} {record.name}: {first_line[:LOG_LINE_LENGTH_MAX]}"] += 1
        self._file.handle(record)

    def count_and_drop(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.handle(record)
        return False

    def install(self) -> None:
        logging.basicConfig(level=logging.WARNING, handlers=[self], force=True)
        for name in QUIET_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            logger.addFilter(self.count_and_drop)


def ratio(figures: Figures) -> float:
    """Cash-outs a second batched over one at a time, measured in the same run."""
    return figures.rate(f"cash-outs {BATCHED}") / figures.rate(f"cash-outs {ONE_AT_A_TIME}")


def print_rounds(figures: Figures) -> None:
    """Each round's rate beside the calibration read just before it, and each round's batched
    rate over the one at a time rounds' rate of the same round: how far the machine moved the
    ratio within the run."""
    print(f"rounds, in the order they ran ({CALIBRATION_NAME} read just before each):")
    for one in figures.rounds:
        m = one.measurement
        print(
            f"  round {one.round_index + 1} {one.mode:<14} {m.items:>7,} in {m.seconds:6.2f} s"
            f" {m.items_per_s:>7,.0f} /s  calibration {one.calibration_s:.3f} s"
        )
    rates = {(one.round_index, one.mode): one.measurement.items_per_s for one in figures.rounds}
    for round_index in sorted({one.round_index for one in figures.rounds}):
        print(
            f"  round {round_index + 1}: batched/one at a time"
            f" {rates[round_index, BATCHED] / rates[round_index, ONE_AT_A_TIME]:.1f}"
        )


def print_cpu(figures: Figures) -> None:
    """CPU a cash-out per process and mode; what the machine's cores would allow at that cost."""
    cores = os.cpu_count() or 1

    def ms(us: float | None) -> str:
        return "   n/a" if us is None else f"{us / 1000:6.2f}"

    print(
        "cpu a cash-out (ms; this process runs the consumers, the relay and the publisher, the"
        " bank runs in its own; n/a: not on this machine):"
    )
    for mode, span in figures.cpu.items():
        print(span.line(mode, 14, ms))
    batched, one = figures.cpu.get(BATCHED), figures.cpu.get(ONE_AT_A_TIME)
    if batched is not None and one is not None:
        bound = batched.rate_bound(cores)
        print(
            f"  batched, every core busy at this cpu a cash-out: at most {bound:,.0f} /s,"
            f" {bound / figures.rate(f'cash-outs {ONE_AT_A_TIME}'):.1f} times one at a time's"
            " rate"
        )
        one_us, batched_us = one.all_us_each, batched.all_us_each
        assert one_us is not None  # every mode pays its cash-outs
        assert batched_us is not None
        one_ms, batched_ms = one_us / 1000, batched_us / 1000
        print(
            f"  cpu a cash-out, one at a time over batched: {one_ms:.2f} / {batched_ms:.2f} ms ="
            f" {one_ms / batched_ms:.1f} (the two modes' rates over each other, were they to keep"
            " as many cores busy)"
        )


def cpu_document(span: CpuSpan) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "wall_s": round(span.wall_s, 3),
        **{CPU_DOCUMENT_KEYS[name]: rounded(s) for name, s in span.seconds.items()},
        "ms_each": rounded(None if span.all_us_each is None else span.all_us_each / 1000),
        "cores_busy": round(span.cores_busy, 3),
    }


def report(figures: Figures, options: Options, tally: LogTally) -> dict[str, Any]:
    print()
    print(f"{'path':<26} {'items':>9} {'seconds':>8} {'items/s':>9}")
    for m in figures.measurements:
        print(f"{m.path:<26} {m.items:>9,} {m.seconds:>8.2f} {m.items_per_s:>9,.0f}")
    print(f"cashouts batched/one-at-a-time ratio: {ratio(figures):.1f}")
    print_rounds(figures)
    p99 = {mode: figures.latency_ms[mode]["requested -> paid"]["p99"] for mode in MODES}
    print(
        "requested -> paid p99: "
        + ", ".join(f"{mode} {value:,.0f} ms" for mode, value in p99.items())
    )
    print(
        f"  gifts: {options.creators:,} profiles and {options.gifts:,} gifts published as a"
        f" backlog in {figures.publish['backlog_seconds']:.1f} s; first gifts batch"
        f" {figures.gifts_first_batch_s:.1f} s after the consumers started (group join); clock"
        " from that batch to the last gift applied"
    )
    for mode in MODES:
        print(
            f"  cash-outs {mode}: {options.cashouts:,} requests of {CASHOUT_DIAMONDS:,} diamonds"
            f" in {options.rounds} round(s), each published at once (in all"
            f" {figures.publish[f'cashouts_seconds {mode}']:.2f} s); each round's clock from its"
            " first publish until all its cash-outs are paid, the mode's rate over their sum"
        )
    for mode in MODES:
        print(f"cash-out latency, {mode} (ms; nearest rank):")
        for name, values in figures.latency_ms[mode].items():
            print(
                f"  {name:<22} "
                + "  ".join(f"{key} {value:>8,.0f}" for key, value in values.items())
            )
        print(
            "  paths: "
            + "; ".join(f"{name} {count:,}" for name, count in figures.paths[mode].items())
        )
    print(
        "  (transition times are clock_timestamp() when each was stored, inside its transaction;"
        " publish = the request's occurred_at; payout sent = published_at of its outbox row)"
    )
    print("time spent (seconds inside each step; steps overlap, and a repeated call is counted):")
    for phase, steps in figures.time_spent.items():
        print(f"  {phase}:")
        for name, step in steps.items():
            print(
                f"    {name:<22} {step['seconds']:>7.2f} s, {step['count']:>7,} {step['unit']:<7}"
                f" {step['ms_each']:>8.2f} ms each"
            )
    print_cpu(figures)
    print_statement_times(figures)
    print(
        "conflicts: "
        + ", ".join(
            f"{key.replace('_', ' ')} {value:,}" for key, value in figures.conflicts.items()
        )
        + " (deadlocks: pg_stat_database of the bench database)"
    )
    print(
        "  units of work run again, by lost race: "
        + "; ".join(
            f"{mode}: "
            + ", ".join(f"{kind.replace('_', ' ')} {n:,}" for kind, n in runs_again.items())
            for mode, runs_again in figures.runs_again.items()
        )
    )
    print(f"checks: {figures.checked}")
    logged = ", ".join(f"{n} {level} {name}" for (level, name), n in tally.counts.most_common())
    print(f"log: {logged or 'nothing at WARNING or above'} (in {tally.path})")
    print(
        f"bank log: {figures.bank_warnings_logged} records at WARNING or above"
        " (in the temporary directory, cashout_bench-bank-<pid>.log)"
    )
    for message, count in tally.messages.most_common(LOG_LINES_SHOWN_MAX):
        print(f"  {count:>4} x {message}")
    print("machine: " + ", ".join(f"{key} {value}" for key, value in figures.machine.items()))
    return {
        "options": {
            "creators": options.creators,
            "cashouts": options.cashouts,
            "gifts": options.gifts,
            "paid_delay_ms": options.paid_delay_ms,
            "rounds": options.rounds,
        },
        "measurements": [
            {
                "path": m.path,
                "items": m.items,
                "seconds": round(m.seconds, 3),
                "items_per_s": round(m.items_per_s, 1),
            }
            for m in figures.measurements
        ],
        "cashouts_batched_over_one_at_a_time": round(ratio(figures), 2),
        "rounds": [
            {
                "round": one.round_index + 1,
                "mode": one.mode,
                "items": one.measurement.items,
                "seconds": round(one.measurement.seconds, 3),
                "items_per_s": round(one.measurement.items_per_s, 1),
                "calibration_s": round(one.calibration_s, 3),
                "cpu": cpu_document(one.cpu),
            }
            for one in figures.rounds
        ],
        "publish_seconds": {key: round(value, 3) for key, value in figures.publish.items()},
        "gifts_first_batch_s": round(figures.gifts_first_batch_s, 3),
        "latency_ms": {
            mode: {
                name: {key: round(value, 1) for key, value in values.items()}
                for name, values in stages.items()
            }
            for mode, stages in figures.latency_ms.items()
        },
        "paths": figures.paths,
        "time_spent": {
            phase: {name.strip(): step for name, step in steps.items()}
            for phase, steps in figures.time_spent.items()
        },
        "cpu": {mode: cpu_document(use) for mode, use in figures.cpu.items()},
        "conflicts": figures.conflicts,
        "runs_again": figures.runs_again,
        "checks": figures.checked,
        "machine": figures.machine,
        "statement_times": figures.statement_times,
        "log": {f"{level} {name}": n for (level, name), n in tally.counts.items()},
        "bank_log_warnings": figures.bank_warnings_logged,
        "log_lines": dict(tally.messages.most_common(LOG_LINES_SHOWN_MAX)),
    }


def print_statement_times(figures: Figures) -> None:
    for mode, tallies in figures.statement_times.items():
        print(
            f"statement times, {mode} (wall ms from send to answer, by the topic of the batch"
            f" that ran it; the {STATEMENT_LINES_MAX} largest):"
        )
        for tally in tallies:
            print(
                f"  {tally['step']:<20} {tally['calls']:>6,} calls {tally['ms']:>9,.1f} ms"
                f" {tally['ms_a_call']:>7.2f} ms a call  {tally['statement']}"
            )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    tally = LogTally(Path(tempfile.gettempdir()) / f"cashout_bench-{os.getpid()}.log")
    tally.install()
    figures = asyncio.run(run(options))
    document = report(figures, options, tally)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
