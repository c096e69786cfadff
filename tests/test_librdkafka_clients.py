"""A second real Kafka client, librdkafka (the `confluent-kafka` wheel), on the broker the tests
run on, beside giftledger's own aiokafka.

librdkafka's default partitioner (`consistent_random`) puts a key where CRC32 says; giftledger's
producers, aiokafka's and Java's default put it where murmur2 says. The same mixed stream of two
creators is published twice: the newest profile update and a reversal first, then the older
profile updates, the gifts, a copy of a gift, tips and a malformed record, then a cash-out
request. Once by aiokafka alone, so each creator's events are on one partition per topic; once
by librdkafka's idempotent producer, with two of the first creator's gifts from a murmur2
publisher beside it, so that creator's gifts are on two partitions and a gift's copy is on
another partition than the gift. Both end in the same state. giftledger's output topics are
then read with librdkafka.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest_asyncio
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.queries import creator_balances
from schemas import topics
from schemas.events import CashoutUpdated, PayoutRequested
from services.cashout.profiles import creator_profile
from services.runtime.metrics import IngestCounts
from tests import creator_events as ce
from tests.ingestion_fixtures import EFFECT_WAIT_S, PARTITION_COUNT, RunningConsumers, wait_until
from tests.ledger_helpers import ledger_problems

CREATOR_ID_TRY_COUNT_MAX = 1_000
DELIVERY_WAIT_S = 30.0
POLL_WAIT_S = 0.5
READ_BATCH_SIZE_MAX = 500
LIBRDKAFKA_LOGGER = logging.getLogger("tests.librdkafka")

# The first creator's events, in the order they are published once its reversal is parked and
# its newest profile applied; the second creator sends a profile, a gift and a tip.
FIRST_CREATOR_LABELS = (
    "profile-tie",
    "profile-old",
    "gift-1",
    "gift-2",
    "gift-3",
    ce.DUPLICATE_LABEL,
    ce.TIP_LABEL,
)
SECOND_CREATOR_LABELS = (ce.NEWEST_PROFILE, "gift-1", ce.TIP_LABEL)
# In the run with librdkafka, these come from a murmur2 publisher (aiokafka).
MURMUR2_LABELS_WHEN_MIXED = frozenset({"gift-3", ce.DUPLICATE_LABEL})
CASHOUT_LABEL = "cashout-1"


def crc32_partition(key: bytes) -> int:
    """Where librdkafka's `consistent_random` partitioner puts a key."""
    return zlib.crc32(key) % PARTITION_COUNT


def murmur2_partition(key: bytes) -> int:
    """Where murmur2 (aiokafka's and Java's default partitioner) puts a key."""
    return int((murmur2(key) & 0x7FFFFFFF) % PARTITION_COUNT)


def spread_creator_id() -> str:
    """A creator whose key the two partitioners put on different partitions."""
    for _ in range(CREATOR_ID_TRY_COUNT_MAX):
        creator_id = f"creator-{uuid.uuid4().hex[:10]}"
        key = creator_id.encode()
        if crc32_partition(key) != murmur2_partition(key):
            return creator_id
    raise AssertionError("no creator id found whose partitions differ")


@dataclass(frozen=True, slots=True)
class Sent:
    """A published record and where the broker put it."""

    topic: str
    key: bytes
    value: bytes
    partition: int
    offset: int
    client: str


class LibrdkafkaPublisher:
    """librdkafka's idempotent producer with its default partitioner. `publish` blocks until
    the broker has the record: run it in a thread."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": "upstream-librdkafka",
                "enable.idempotence": True,
                "partitioner": "consistent_random",
                "linger.ms": 5,
                "message.timeout.ms": int(DELIVERY_WAIT_S * 1000),
                "logger": LIBRDKAFKA_LOGGER,
            }
        )

    def publish(self, topic: str, key: bytes, value: bytes) -> Sent:
        reports: list[tuple[KafkaError | None, Message]] = []
        self._producer.produce(
            topic, value=value, key=key, on_delivery=lambda e, m: reports.append((e, m))
        )
        left = self._producer.flush(DELIVERY_WAIT_S)
        assert left == 0, f"{left} records not delivered within {DELIVERY_WAIT_S} s"
        [(error, message)] = reports
        assert error is None, error
        partition, offset = message.partition(), message.offset()
        assert partition is not None
        assert offset is not None
        return Sent(topic, key, value, partition, offset, "librdkafka")


def read_with_librdkafka(
    bootstrap_servers: str, topic: str, enough: Callable[[list[Message]], bool]
) -> list[Message]:
    """Every record of `topic` from the start of each partition, read by librdkafka (no group
    membership: the partitions are assigned), until `enough` of them or `EFFECT_WAIT_S`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "logger": LIBRDKAFKA_LOGGER,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=DELIVERY_WAIT_S)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Message] = []
        deadline = time.monotonic() + EFFECT_WAIT_S
        while not enough(records) and time.monotonic() < deadline:
            for message in consumer.consume(READ_BATCH_SIZE_MAX, POLL_WAIT_S):
                error = message.error()
                assert error is None or error.code() == KafkaError._PARTITION_EOF, error
                if error is None:
                    records.append(message)
        return records
    finally:
        consumer.close()


@dataclass(frozen=True)
class EndState:
    """What a run left, with creators named by role (`first`, `second`) and events by label."""

    balances: dict[str, dict[str, tuple[int, int]]]
    profiles: dict[str, tuple[str, int, str | None]]
    counts: dict[str, int]
    dead_letter_errors: dict[str, int]
    cashout: tuple[str, str | None, int | None, str | None]


@dataclass
class Run:
    creators: dict[str, str]
    events: dict[str, dict[str, ce.LabelledEvent]]
    sent: dict[tuple[str, str], Sent] = field(default_factory=dict)
    malformed: Sent | None = None
    end: EndState | None = None

    @property
    def cashout_id(self) -> str:
        return self.events["first"][CASHOUT_LABEL].event_id


def _counts_since(now: IngestCounts, before: IngestCounts) -> dict[str, int]:
    return {
        "consumed": now.consumed - before.consumed,
        "applied": now.applied + now.unparked_applied - before.applied - before.unparked_applied,
        "duplicates": now.duplicates - before.duplicates,
        "dead_lettered": now.dead_lettered - before.dead_lettered,
        "parked": now.parked - before.parked,
        "still_parked": now.still_parked - before.still_parked,
    }


async def _applied_count(engine: AsyncEngine, event_ids: list[str]) -> int:
    async with engine.connect() as conn:
        count = await conn.execute(
            text("SELECT count(*) FROM applied_events WHERE event_id = ANY(:ids)"),
            {"ids": event_ids},
        )
        return int(count.scalar_one())


async def _cashout_status(engine: AsyncEngine, cashout_id: str) -> str | None:
    async with engine.connect() as conn:
        status = await conn.execute(
            text("SELECT status FROM cashouts WHERE cashout_id = :id"), {"id": cashout_id}
        )
        return status.scalar_one_or_none()


class StreamPublisher:
    """Publishes one run's records, each through librdkafka or aiokafka as the run says."""

    def __init__(self, consumers: RunningConsumers, run: Run, *, mixed: bool) -> None:
        self.consumers = consumers
        self.run = run
        self.mixed = mixed
        self.librdkafka = LibrdkafkaPublisher(consumers.bootstrap_servers) if mixed else None

    async def send(self, role: str, label: str) -> None:
        item = self.run.events[role][label]
        client = "librdkafka"
        if not self.mixed or (role == "first" and label in MURMUR2_LABELS_WHEN_MIXED):
            client = "aiokafka"
        key = self.run.creators[role].encode()
        self.run.sent[(role, label)] = await self.raw(item.topic, key, item.encode(), client)

    async def raw(self, topic: str, key: bytes, value: bytes, client: str) -> Sent:
        name = self.consumers.prefix + topic
        if client == "librdkafka":
            assert self.librdkafka is not None
            return await asyncio.to_thread(self.librdkafka.publish, name, key, value)
        metadata = await self.consumers.producer.send_and_wait(name, value=value, key=key)
        return Sent(name, key, value, metadata.partition, metadata.offset, client)


async def stream_run(consumers: RunningConsumers, engine: AsyncEngine, *, mixed: bool) -> Run:
    now = datetime.now(UTC)
    creators = {"first": spread_creator_id(), "second": f"creator-{uuid.uuid4().hex[:10]}"}
    run = Run(creators, {role: ce.creator_events(c, now) for role, c in creators.items()})
    publisher = StreamPublisher(consumers, run, mixed=mixed)
    counts = consumers.ingestor.counts
    before = dataclasses.replace(counts, dead_letter_errors=dict(counts.dead_letter_errors))

    first_arrivals = [ce.REVERSAL_LABEL, ce.NEWEST_PROFILE]
    newest_id = run.events["first"][ce.NEWEST_PROFILE].event_id

    async def arrived() -> bool:
        parked = _counts_since(counts, before)["parked"] == 1
        return parked and await _applied_count(engine, [newest_id]) == 1

    for label in first_arrivals:
        await publisher.send("first", label)
    await wait_until(arrived)
    for label in FIRST_CREATOR_LABELS:
        await publisher.send("first", label)
    for label in SECOND_CREATOR_LABELS:
        await publisher.send("second", label)
    malformed = b'{"event_id": "' + creators["first"].encode() + b'.bad", "amount": '
    client = "librdkafka" if mixed else "aiokafka"
    run.malformed = await publisher.raw(
        topics.TIPS_RECEIVED, creators["first"].encode(), malformed, client
    )
    published_ids = [
        run.events[role][label].event_id for role, label in run.sent if label != ce.DUPLICATE_LABEL
    ]

    async def settled() -> bool:
        since = _counts_since(counts, before)
        applied = await _applied_count(engine, published_ids)
        return (
            since["consumed"] == len(run.sent) + 1
            and since["still_parked"] == 0
            and applied == len(published_ids)
        )

    await wait_until(settled)
    await publisher.send("first", CASHOUT_LABEL)

    async def decided() -> bool:
        status = await _cashout_status(engine, run.cashout_id)
        return status in ("rejected", "submitted")  # a held one is submitted once published

    await wait_until(decided)
    run.end = await end_state(engine, run, _counts_since(counts, before), counts, before)
    return run


async def end_state(
    engine: AsyncEngine,
    run: Run,
    counts: dict[str, int],
    now: IngestCounts,
    before: IngestCounts,
) -> EndState:
    balances: dict[str, dict[str, tuple[int, int]]] = {}
    profiles: dict[str, tuple[str, int, str | None]] = {}
    async with engine.connect() as conn:
        for role, creator_id in run.creators.items():
            balances[role] = {
                b.name.split(":", 2)[2]: (b.posted, b.pending)
                for b in await creator_balances(conn, creator_id)
            }
            profile = await creator_profile(conn, creator_id)
            assert profile is not None
            labels = {item.event_id: label for label, item in run.events[role].items()}
            profiles[role] = (
                labels[profile.event_id],
                profile.followers,
                profile.payout_account_ref,
            )
        row = (
            await conn.execute(
                text(
                    "SELECT status, rejected_rule, payout_amount, payout_account_ref"
                    " FROM cashouts WHERE cashout_id = :id"
                ),
                {"id": run.cashout_id},
            )
        ).one()
    errors = {
        error: count - before.dead_letter_errors.get(error, 0)
        for error, count in now.dead_letter_errors.items()
        if count != before.dead_letter_errors.get(error, 0)
    }
    return EndState(balances, profiles, counts, errors, tuple(row))


@dataclass(frozen=True)
class Runs:
    murmur2: Run
    mixed: Run


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def runs(consumers: RunningConsumers, engine: AsyncEngine) -> AsyncIterator[Runs]:
    murmur2_run = await stream_run(consumers, engine, mixed=False)
    mixed_run = await stream_run(consumers, engine, mixed=True)
    yield Runs(murmur2_run, mixed_run)


def _partitions(run: Run, role: str, topic: str) -> set[int]:
    return {
        sent.partition
        for (sent_role, label), sent in run.sent.items()
        if sent_role == role and run.events[role][label].topic == topic
    }


async def test_librdkafka_puts_a_key_by_crc32_and_aiokafka_by_murmur2(runs: Runs) -> None:
    for run in (runs.murmur2, runs.mixed):
        for sent in [*run.sent.values(), run.malformed]:
            assert sent is not None
            place = crc32_partition if sent.client == "librdkafka" else murmur2_partition
            assert sent.partition == place(sent.key), sent
    assert {sent.client for sent in runs.mixed.sent.values()} == {"librdkafka", "aiokafka"}


async def test_one_creators_gifts_on_two_partitions_end_as_in_murmur2_order(runs: Runs) -> None:
    first_key = runs.mixed.creators["first"].encode()
    assert _partitions(runs.mixed, "first", topics.GIFTS_SENT) == {
        crc32_partition(first_key),
        murmur2_partition(first_key),
    }
    original = runs.mixed.sent[("first", "gift-1")]
    copy = runs.mixed.sent[("first", ce.DUPLICATE_LABEL)]
    assert original.partition != copy.partition
    assert len(_partitions(runs.murmur2, "first", topics.GIFTS_SENT)) == 1

    assert runs.mixed.end is not None
    assert runs.mixed.end == runs.murmur2.end
    end = runs.mixed.end
    cashed_out = ce.CASHOUT_MILLI_DIAMONDS  # submitted: the hold posted, the Diamonds redeemed
    assert end.balances["first"] == {
        "DIAMOND:available": (ce.DIAMONDS_POSTED_MILLI - cashed_out, 0),
        "DIAMOND:held": (0, 0),
        "USD:wallet": (ce.TIP_USD_CENTS, 0),
    }
    assert end.profiles["first"] == (
        ce.NEWEST_PROFILE,
        ce.NEWEST_FOLLOWERS,
        ce.NEWEST_PAYOUT_ACCOUNT_REF,
    )
    assert end.cashout == ("submitted", None, ce.CASHOUT_USD_CENTS, ce.NEWEST_PAYOUT_ACCOUNT_REF)


async def test_every_record_of_both_streams_is_accounted_for_and_the_ledger_verifies(
    runs: Runs, engine: AsyncEngine
) -> None:
    for run in (runs.murmur2, runs.mixed):
        assert run.end is not None
        published = len(run.sent) + 1  # and the malformed record
        assert run.end.counts == {
            "consumed": published,
            "applied": published - 2,  # all but the copy of gift-1 and the malformed record
            "duplicates": 1,
            "dead_lettered": 1,
            "parked": 1,
            "still_parked": 0,
        }
        assert run.end.dead_letter_errors == {"malformed_json": 1}
    assert await ledger_problems(engine) == []


def _headers(message: Message) -> dict[str, bytes]:
    """A consumed record's headers (librdkafka hands them over as a list of pairs)."""
    headers = message.headers() or []
    assert isinstance(headers, list), headers
    return {
        key: value.encode() if isinstance(value, str) else value or b"" for key, value in headers
    }


async def test_librdkafka_reads_the_dead_letter_as_published_with_its_headers(
    runs: Runs, consumers: RunningConsumers
) -> None:
    dlq = consumers.prefix + topics.dead_letter_topic(topics.TIPS_RECEIVED)
    wanted = [run.malformed for run in (runs.murmur2, runs.mixed)]

    def source(message: Message) -> tuple[bytes, bytes]:
        headers = _headers(message)
        return headers.get("dlq.source.partition", b""), headers.get("dlq.source.offset", b"")

    wanted_sources = {
        (str(sent.partition).encode(), str(sent.offset).encode()) for sent in wanted if sent
    }

    def enough(records: list[Message]) -> bool:
        return wanted_sources <= {source(record) for record in records}

    records = await asyncio.to_thread(
        read_with_librdkafka, consumers.bootstrap_servers, dlq, enough
    )
    for sent in wanted:
        assert sent is not None
        where = (str(sent.partition).encode(), str(sent.offset).encode())
        # A dead letter is published at least once: every copy must be the same.
        letters = [record for record in records if source(record) == where]
        assert letters
        for letter in letters:
            assert (letter.key(), letter.value()) == (sent.key, sent.value)
            headers = _headers(letter)
            assert headers["dlq.error"] == b"malformed_json"
            assert headers["dlq.source.topic"] == sent.topic.encode()
            # giftledger publishes by the record's key, with murmur2.
            assert letter.partition() == murmur2_partition(sent.key)


async def test_librdkafka_reads_each_state_of_the_cash_out_and_its_payout_request(
    runs: Runs, consumers: RunningConsumers
) -> None:
    for run in (runs.murmur2, runs.mixed):
        key = run.creators["first"].encode()
        updates = await _read_events(consumers, topics.CASHOUTS_UPDATED, key, 3)
        states = [
            CashoutUpdated.model_validate_json(value)
            for _, value in updates
            if json.loads(value)["cashout_id"] == run.cashout_id
        ]
        # Published at least once, in order on the creator's partition: the first copy of each
        # state counts.
        statuses = list(dict.fromkeys(state.status for state in states))
        assert statuses == ["requested", "held", "submitted"]
        assert {partition for partition, _ in updates} == {murmur2_partition(key)}
        payouts = await _read_events(consumers, topics.PAYOUTS_REQUESTED, key, 1)
        [value] = {value for _, value in payouts}
        payout = PayoutRequested.model_validate_json(value)
        assert (payout.cashout_id, payout.amount, payout.currency) == (
            run.cashout_id,
            ce.CASHOUT_USD_CENTS,
            "USD",
        )
        assert payout.payout_account_ref == ce.NEWEST_PAYOUT_ACCOUNT_REF


async def _read_events(
    consumers: RunningConsumers, topic: str, key: bytes, count: int
) -> list[tuple[int, bytes]]:
    """(partition, value) of the records of `topic` with `key`, once `count` are there."""

    def keyed(records: list[Message]) -> list[tuple[int, bytes]]:
        found: list[tuple[int, bytes]] = []
        for record in records:
            partition, value = record.partition(), record.value()
            if record.key() == key and partition is not None and value is not None:
                found.append((partition, value))
        return found

    records = await asyncio.to_thread(
        read_with_librdkafka,
        consumers.bootstrap_servers,
        consumers.prefix + topic,
        lambda records: len(keyed(records)) >= count,
    )
    return keyed(records)
