"""The outbox relay with several processes: claims in short transactions, sends outside them,
each key's messages in order however many relays run, every message at least once, and the
claim of a relay that died sent again once its lease has run out."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.service import Ledger
from schemas import topics
from schemas.events import PayoutRequested
from schemas.payout_cancel import PayoutCancelRequested
from schemas.topics import all_topics
from services.cashout.desk import CashoutDesk, CashoutLimits
from services.cashout.outbox import (
    OUTBOX_BATCH_SIZE_MAX,
    OUTBOX_CLAIM_LEASE_S,
    OUTBOX_CLAIM_WINDOW_ROWS,
    OutboxClaim,
    OutboxRelay,
    RelayPass,
    submitted_cashout_id,
)
from services.cashout.store import Cashout
from services.runtime.embedded_broker import create_topics
from services.runtime.outbox_rows import queue
from services.runtime.settings import EligibilitySettings
from tests.ingestion_fixtures import wait_until

WRITER = "giftledger_writer"
PARTITION_COUNT = 4
RELAY_COUNT = 3
CREATOR_COUNT = 6
CASHOUT_COUNT = 60
STATES = ("requested", "held", "submitted", "paid")
WRITES_PER_TRANSACTION_MAX = 8
BACKLOG_ROWS = 120
RELAY_ROUND_ROWS_MAX = 7  # small rounds: a key's rows are often split between rounds
SMALL_CLAIM_WINDOW_ROWS = 10
RELAY_IDLE_PAUSE_S = 0.02
DRAIN_WAIT_S = 120.0
READ_WAIT_S = 60.0


@pytest_asyncio.fixture(loop_scope="session")
async def writer_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The relays write as the services do."""
    engine = create_engine(database_url, pool_size=6, role=WRITER)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def prefix(kafka_bootstrap: str) -> str:
    """A deployment of its own: its topics, and outbox rows no other test's relay sends."""
    name = f"relay{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(name), PARTITION_COUNT)
    return name


@pytest_asyncio.fixture(loop_scope="session")
async def producers(kafka_bootstrap: str) -> AsyncIterator[list[AIOKafkaProducer]]:
    """One producer per relay, as each `giftledger run` process has its own."""
    started: list[AIOKafkaProducer] = []
    try:
        for _ in range(RELAY_COUNT):
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            await producer.start()
            started.append(producer)
        yield started
    finally:
        for producer in started:
            await producer.stop()


def _relay(
    engine: AsyncEngine,
    prefix: str,
    producer: AIOKafkaProducer,
    claim_lease_s: float = OUTBOX_CLAIM_LEASE_S,
    claim_window_rows: int = OUTBOX_CLAIM_WINDOW_ROWS,
) -> OutboxRelay:
    desk = CashoutDesk(CashoutLimits(), EligibilitySettings(), prefix)
    return OutboxRelay(
        Ledger(engine),
        desk,
        producer,
        claim_lease_s=claim_lease_s,
        claim_window_rows=claim_window_rows,
    )


def _cashout(cashout_id: str, creator_id: str, status: str) -> Cashout:
    return Cashout(
        cashout_id=cashout_id,
        creator_id=creator_id,
        asset="DIAMOND",
        amount=2_000_000,
        payout_currency="USD",
        payout_amount=1_000,
        usd_value_micros=10_000_000,
        rate_card_version=1,
        fx_numerator=1,
        fx_denominator=1,
        status=status,
        rejected_rule=None,
        failure_code=None,
        payout_account_ref="pa_demo_1",
        occurred_at=datetime.now(UTC),
    )


async def _queue_updates(engine: AsyncEngine, prefix: str, cashouts: list[Cashout]) -> list[str]:
    """The outbox rows of state changes, as the desk writes them, in one transaction; returns
    their event ids in the order written."""
    event_ids: list[str] = []
    async with engine.begin() as conn:
        for cashout in cashouts:
            event = cashout.updated_event(datetime.now(UTC))
            payload = event.model_dump_json()
            await queue(conn, prefix, topics.CASHOUTS_UPDATED, cashout.creator_id, payload)
            event_ids.append(event.event_id)
    return event_ids


async def _queue_update(engine: AsyncEngine, prefix: str, cashout: Cashout) -> str:
    return (await _queue_updates(engine, prefix, [cashout]))[0]


async def _unpublished_count(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM outbox WHERE topic_prefix = :p AND published_at IS NULL"),
            {"p": prefix},
        )
    return int(count or 0)


async def _read_updates(
    bootstrap_servers: str, prefix: str, wanted: set[str]
) -> dict[int, list[dict[str, object]]]:
    """The `cashouts.updated` records of the deployment, per partition in partition order, read
    from the start until every wanted event_id is there (or a deadline passes)."""
    consumer = AIOKafkaConsumer(
        topics.prefixed(prefix, topics.CASHOUTS_UPDATED),
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    by_partition: dict[int, list[dict[str, object]]] = {}
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + READ_WAIT_S
        while not wanted <= seen and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for partition, records in batches.items():
                for record in records:
                    update = json.loads(record.value)
                    assert record.key == str(update["creator_id"]).encode()
                    by_partition.setdefault(partition.partition, []).append(update)
                    seen.add(str(update["event_id"]))
    finally:
        await consumer.stop()
    return by_partition


def _event_ids_of(received: dict[int, list[dict[str, object]]], creator: str) -> list[str]:
    """The event ids of one creator's records as read back (a creator's records share one
    partition, so this is the order they arrived in)."""
    return [
        str(update["event_id"])
        for records in received.values()
        for update in records
        if update["creator_id"] == creator
    ]


@pytest.mark.parametrize("rounds", ["one at a time", "overlapping", "overlapping, small window"])
async def test_three_relays_keep_each_keys_order_and_send_every_message(
    engine: AsyncEngine,
    writer_engine: AsyncEngine,
    kafka_bootstrap: str,
    prefix: str,
    producers: list[AIOKafkaProducer],
    rounds: str,
) -> None:
    """Cash-outs move through their states while three relays publish at once, each a round at
    a time (`publish_once`) or in passes whose rounds overlap (`publish_all`, as the service
    runs it), their claims looking at the oldest rows up to the window (the default, or a
    window of a round and a half, which the rows the other relays hold often fill); read back
    from the broker, each creator's messages never go back in the order they were written,
    and every message is there."""
    creators = [f"creator-{uuid.uuid4().hex[:8]}" for _ in range(CREATOR_COUNT)]
    cashouts = {
        f"cashout-{uuid.uuid4().hex[:10]}": creators[index % CREATOR_COUNT]
        for index in range(CASHOUT_COUNT)
    }
    written: list[str] = []  # event ids in the order their rows were committed
    backlog_written, writing_done = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        """Each transaction moves a few random cash-outs on by one state. The relays start once
        a backlog is there, so that they find several rows of a creator at once."""
        shuffle = random.Random(7)
        next_state = dict.fromkeys(cashouts, 0)
        while next_state:
            chosen = shuffle.sample(
                sorted(next_state), min(WRITES_PER_TRANSACTION_MAX, len(next_state))
            )
            changes = [
                _cashout(cashout_id, cashouts[cashout_id], STATES[next_state[cashout_id]])
                for cashout_id in chosen
            ]
            written.extend(await _queue_updates(engine, prefix, changes))
            for cashout_id in chosen:
                next_state[cashout_id] += 1
                if next_state[cashout_id] == len(STATES):
                    del next_state[cashout_id]
            if len(written) >= BACKLOG_ROWS:
                backlog_written.set()
            await asyncio.sleep(0)
        backlog_written.set()
        writing_done.set()

    async def run(relay: OutboxRelay) -> int:
        """Rounds until the writer is done and nothing is left to publish; returns rows sent."""
        await backlog_written.wait()
        sent = 0
        deadline = time.monotonic() + DRAIN_WAIT_S
        while time.monotonic() < deadline:
            if rounds.startswith("overlapping"):
                count = (await relay.publish_all(RELAY_ROUND_ROWS_MAX)).rows
            else:
                count = await relay.publish_once(RELAY_ROUND_ROWS_MAX)
            sent += count
            if count:
                continue
            if writing_done.is_set() and await _unpublished_count(engine, prefix) == 0:
                return sent
            await asyncio.sleep(RELAY_IDLE_PAUSE_S)
        raise AssertionError("the outbox was not drained in time")

    small = rounds.endswith("small window")
    window = SMALL_CLAIM_WINDOW_ROWS if small else OUTBOX_CLAIM_WINDOW_ROWS
    relays = [
        _relay(writer_engine, prefix, producer, claim_window_rows=window) for producer in producers
    ]
    writing = asyncio.ensure_future(write())
    sent_counts = await asyncio.gather(*(run(relay) for relay in relays))
    await writing
    assert sum(sent_counts) >= len(written) == CASHOUT_COUNT * len(STATES)

    received = await _read_updates(kafka_bootstrap, prefix, set(written))
    position = {event_id: index for index, event_id in enumerate(written)}
    arrived: set[str] = set()
    for records in received.values():
        last_by_creator: dict[str, int] = {}
        for update in records:
            event_id, creator = str(update["event_id"]), str(update["creator_id"])
            assert position[event_id] >= last_by_creator.get(creator, -1), (
                f"{event_id} arrived after a later message of {creator}"
            )
            last_by_creator[creator] = position[event_id]
            arrived.add(event_id)
    assert arrived == set(written)
    for cashout_id in cashouts:
        states = [
            str(update["status"])
            for records in received.values()
            for update in records
            if update["cashout_id"] == cashout_id
        ]
        assert list(dict.fromkeys(states)) == list(STATES)


async def test_a_live_claim_keeps_other_relays_off_its_keys_rows_and_later_ones(
    engine: AsyncEngine,
    writer_engine: AsyncEngine,
    prefix: str,
    producers: list[AIOKafkaProducer],
) -> None:
    first, second = (_relay(writer_engine, prefix, producer) for producer in producers[:2])
    held_creator, other_creator = (f"creator-{uuid.uuid4().hex[:8]}" for _ in range(2))
    held_cashout, other_cashout = (f"cashout-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for status in STATES[:2]:
        await _queue_update(engine, prefix, _cashout(held_cashout, held_creator, status))
    await _queue_update(engine, prefix, _cashout(other_cashout, other_creator, "requested"))

    claim = await first.claim(limit=2)  # the held creator's two rows, oldest first
    assert [row.message_key for row in claim.rows] == [held_creator, held_creator]
    later = await _queue_update(engine, prefix, _cashout(held_cashout, held_creator, "submitted"))

    assert await second.publish_once() == 1  # the other creator's row only
    assert (await second.claim()).rows == []
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT message_key, claimed_by, published_at IS NOT NULL AS published"
                " FROM outbox WHERE topic_prefix = :p AND message_key IN (:a, :b) ORDER BY id"
            ),
            {"p": prefix, "a": held_creator, "b": other_creator},
        )
        state = [(row.message_key, row.claimed_by, row.published) for row in rows]
    assert state[:2] == [(held_creator, claim.claim_id, False)] * 2
    assert state[2][0] == other_creator
    assert state[2][1] is not None
    assert state[2][1].startswith(second.relay_id)
    assert state[2][2] is True
    assert state[3] == (held_creator, None, False)  # `later` waits for the claim before it

    assert await first.mark_sent(claim) == 2
    assert await second.publish_once() == 1  # now `later` leaves
    async with engine.connect() as conn:
        published = await conn.scalar(
            text(
                "SELECT published_at IS NOT NULL FROM outbox WHERE topic_prefix = :p"
                " AND convert_from(payload, 'UTF8')::jsonb->>'event_id' = :e"
            ),
            {"p": prefix, "e": later},
        )
    assert published is True


async def test_the_claim_of_a_relay_that_died_is_sent_again_after_its_lease(
    engine: AsyncEngine,
    writer_engine: AsyncEngine,
    kafka_bootstrap: str,
    prefix: str,
    producers: list[AIOKafkaProducer],
) -> None:
    creator = f"creator-{uuid.uuid4().hex[:8]}"
    cashout_id = f"cashout-{uuid.uuid4().hex[:10]}"
    event_ids = [
        await _queue_update(engine, prefix, _cashout(cashout_id, creator, status))
        for status in STATES[:2]
    ]
    dying = _relay(writer_engine, prefix, producers[0], claim_lease_s=1.0)
    claim = await dying.claim()
    assert {row.message_key for row in claim.rows} == {creator}
    # The relay dies here: nothing sent, nothing marked, the claim left to run out.

    survivor = _relay(writer_engine, prefix, producers[1])

    async def survivor_sent_them() -> bool:
        await survivor.publish_once()
        async with engine.connect() as conn:
            left = await conn.scalar(
                text(
                    "SELECT count(*) FROM outbox WHERE topic_prefix = :p AND message_key = :k"
                    " AND published_at IS NULL"
                ),
                {"p": prefix, "k": creator},
            )
        return bool(left == 0)

    await wait_until(survivor_sent_them)
    assert await dying.mark_sent(claim) == 0  # a claim that passed on marks nothing
    received = await _read_updates(kafka_bootstrap, prefix, set(event_ids))
    assert _event_ids_of(received, creator) == event_ids
    async with engine.connect() as conn:
        holders = await conn.execute(
            text(
                "SELECT DISTINCT claimed_by FROM outbox"
                " WHERE topic_prefix = :p AND message_key = :k"
            ),
            {"p": prefix, "k": creator},
        )
        assert {row.claimed_by.rsplit("#", 1)[0] for row in holders} == {survivor.relay_id}


def _relay_metrics() -> tuple[float, float]:
    """Rows published and rounds timed so far by this process's relays (`/metrics`)."""
    return (
        REGISTRY.get_sample_value("giftledger_outbox_rows_published_total") or 0.0,
        REGISTRY.get_sample_value("giftledger_outbox_round_seconds_count") or 0.0,
    )


class SlowMarkingRelay(OutboxRelay):
    """A relay whose marks take a while, so that the next round is claimed while one is in
    flight; it notes how many marks ran at once and which claims overlapped one."""

    MARK_DELAY_S = 0.3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks_in_flight = 0
        self.most_marks_at_once = 0
        self.claims_during_a_mark = 0

    async def claim(self, limit: int = OUTBOX_BATCH_SIZE_MAX) -> OutboxClaim:
        claim = await super().claim(limit)
        self.claims_during_a_mark += self.marks_in_flight > 0
        return claim

    async def mark_sent(self, claim: OutboxClaim) -> int:
        self.marks_in_flight += 1
        self.most_marks_at_once = max(self.most_marks_at_once, self.marks_in_flight)
        try:
            await asyncio.sleep(self.MARK_DELAY_S)
            return await super().mark_sent(claim)
        finally:
            self.marks_in_flight -= 1


@pytest.mark.parametrize("marks_in_flight_max", [1, 2])
async def test_a_pass_overlaps_its_rounds_and_ends_only_when_nothing_is_left(
    engine: AsyncEngine,
    writer_engine: AsyncEngine,
    kafka_bootstrap: str,
    prefix: str,
    producers: list[AIOKafkaProducer],
    marks_in_flight_max: int,
) -> None:
    """One creator's five rows in rounds of two: while a round is marked, the next claim finds
    only that creator's rows, held by the round being marked, and comes back empty; the pass
    goes on (a short round with a mark in flight is not the end), one mark of the key at a
    time however many may be in flight, and ends with every row sent once, in order."""
    creator = f"creator-{uuid.uuid4().hex[:8]}"
    first, second = (f"cashout-{uuid.uuid4().hex[:10]}" for _ in range(2))
    changes = [(first, status) for status in STATES] + [(second, "requested")]
    event_ids = [
        await _queue_update(engine, prefix, _cashout(cashout_id, creator, status))
        for cashout_id, status in changes
    ]
    desk = CashoutDesk(CashoutLimits(), EligibilitySettings(), prefix)
    relay = SlowMarkingRelay(
        Ledger(writer_engine), desk, producers[0], marks_in_flight_max=marks_in_flight_max
    )

    rows_before, rounds_before = _relay_metrics()
    sent = await relay.publish_all(limit=2)

    assert sent == RelayPass(rounds=3, rows=len(changes))
    rows_after, rounds_after = _relay_metrics()
    assert (rows_after - rows_before, rounds_after - rounds_before) == (len(changes), 3)
    assert await _unpublished_count(engine, prefix) == 0
    assert relay.claims_during_a_mark >= 2  # the rounds did overlap
    assert relay.most_marks_at_once == 1
    received = await _read_updates(kafka_bootstrap, prefix, set(event_ids))
    assert [str(update["event_id"]) for records in received.values() for update in records] == (
        event_ids
    )
    # The relay builds its own batches: its messages land on the partition the producer's
    # `send` picks for the key, as other producers of the topic would.
    probe = await producers[1].send_and_wait(
        topics.prefixed(prefix, topics.CASHOUTS_UPDATED), value=b"{}", key=creator.encode()
    )
    assert list(received) == [probe.partition]


async def test_rounds_of_other_keys_are_marked_at_once_up_to_the_bound(
    engine: AsyncEngine,
    writer_engine: AsyncEngine,
    kafka_bootstrap: str,
    prefix: str,
    producers: list[AIOKafkaProducer],
) -> None:
    """Three creators' rows, written in turns, in rounds of two with two marks allowed in
    flight: each round takes one creator's two oldest rows, two rounds are marked at once and
    the third waits for the first; every row leaves once, each creator's in order."""
    creators = [f"creator-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    cashouts = [f"cashout-{uuid.uuid4().hex[:10]}" for _ in creators]
    written: dict[str, list[str]] = {creator: [] for creator in creators}
    for statuses in (STATES[:2], STATES[2:]):
        for creator, cashout_id in zip(creators, cashouts, strict=True):
            for status in statuses:
                event_id = await _queue_update(
                    engine, prefix, _cashout(cashout_id, creator, status)
                )
                written[creator].append(event_id)
    desk = CashoutDesk(CashoutLimits(), EligibilitySettings(), prefix)
    relay = SlowMarkingRelay(Ledger(writer_engine), desk, producers[0], marks_in_flight_max=2)

    sent = await relay.publish_all(limit=2)

    assert sent.rows == 12
    assert await _unpublished_count(engine, prefix) == 0
    assert relay.most_marks_at_once == 2
    everything = {event_id for event_ids in written.values() for event_id in event_ids}
    received = await _read_updates(kafka_bootstrap, prefix, everything)
    for creator, event_ids in written.items():
        assert _event_ids_of(received, creator) == event_ids


def test_a_payout_request_row_submits_its_cash_out_and_a_cancellation_none() -> None:
    moment = datetime.now(UTC)
    request = PayoutRequested(
        event_id="cashout-7:payout",
        occurred_at=moment,
        cashout_id="cashout-7",
        creator_id="creator-7",
        amount=1_000,
        currency="USD",
        payout_account_ref="pa_7",
    )
    cancel = PayoutCancelRequested(
        event_id="cashout-7:cancel",
        occurred_at=moment,
        cashout_id="cashout-7",
        creator_id="creator-7",
        cancel=True,
    )
    assert submitted_cashout_id(request.model_dump_json().encode()) == "cashout-7"
    assert submitted_cashout_id(cancel.model_dump_json().encode()) is None
    with pytest.raises(ValidationError, match="PayoutRequested"):
        submitted_cashout_id(b'{"cashout_id": "cashout-7"}')
