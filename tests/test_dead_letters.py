"""Bad input never blocks a partition: it lands in `<topic>.dlq`, unchanged, with the reason."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CorruptRecordException,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerClosed,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from confluent_kafka import Producer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.queries import creator_balances
from schemas import topics
from services.api.queries import event_dead_letters
from services.app.consumer import refuses_the_letter
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.kafka_offsets import end_offsets
from tests import event_factory as make
from tests.console_http import Feed, cashout_state, new_creator_id
from tests.ingestion_fixtures import RunningConsumers, make_ingestor, wait_until

LIBRDKAFKA_FLUSH_S = 30.0
END_OFFSET_WAIT_S = 10.0


def _creator() -> str:
    return f"creator-{uuid.uuid4().hex[:10]}"


async def _recorded_error(
    engine: AsyncEngine, prefix: str, topic: str, partition: int, offset: int
) -> str:
    """The error stored in `dead_letters` for one source record."""
    async with engine.connect() as conn:
        row = await conn.execute(
            text(
                "SELECT error FROM dead_letters WHERE topic_prefix = :prefix AND topic = :topic"
                " AND kafka_partition = :partition AND kafka_offset = :offset"
            ),
            {"prefix": prefix, "topic": topic, "partition": partition, "offset": offset},
        )
        return str(row.scalar_one())


async def test_each_kind_of_bad_gift_goes_to_the_dead_letter_topic_with_its_reason(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    good = make.gift(creator, coins=2)
    too_small = {**make.gift(creator), "coins": 0}
    live_without_live_id = {**make.gift(creator, surface="live"), "live_id": None}
    as_text = {**make.gift(creator), "coins": "5"}
    extra_field = {**make.gift(creator), "bonus": 1}
    bad_inputs: list[tuple[bytes, str]] = [
        (b'{"event_id": "x", ', "malformed_json"),
        (b"\xff\xfe not utf-8", "invalid_utf8"),
        (b'{"event_id": "a", "event_id": "b"}', "malformed_json"),
        (b"[" * 40 + b"]" * 40, "malformed_json"),
        (json.dumps(too_small).encode(), "schema_violation"),
        (json.dumps(live_without_live_id).encode(), "schema_violation"),
        (json.dumps(as_text).encode(), "schema_violation"),
        (json.dumps(extra_field).encode(), "schema_violation"),
    ]
    for value, _ in bad_inputs:
        await consumers.publish(topics.GIFTS_SENT, value, key=creator, headers=[("trace", b"t-1")])
    await consumers.publish(topics.GIFTS_SENT, good)

    records = await consumers.read_topic(
        topics.dead_letter_topic(topics.GIFTS_SENT), len(bad_inputs)
    )
    assert sorted(record.value for record in records) == sorted(value for value, _ in bad_inputs)
    for record in records:
        headers = dict(record.headers)
        assert headers["trace"] == b"t-1"
        assert headers["dlq.source.topic"] == (consumers.prefix + topics.GIFTS_SENT).encode()
        assert int(headers["dlq.source.offset"]) >= 0
        expected = dict((value, error) for value, error in bad_inputs)[record.value]
        assert headers["dlq.error"].decode() == expected
        assert headers["dlq.detail"]

    async def good_applied() -> bool:
        async with engine.connect() as conn:
            return bool(await creator_balances(conn, creator))

    await wait_until(good_applied)
    for record in records:
        headers = dict(record.headers)
        partition = int(headers["dlq.source.partition"])
        offset = int(headers["dlq.source.offset"])
        stored = await _recorded_error(
            engine, consumers.prefix, topics.GIFTS_SENT, partition, offset
        )
        assert stored == headers["dlq.error"].decode()


async def test_headers_null_or_not_utf8_neither_lose_nor_block_their_batch(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    """A Kafka header's value is any bytes, or null. Gifts carrying such headers are applied
    with the gift of their batch that carries none, and a bad record carrying them reaches the
    dead-letter topic with its headers as they came (FastStream's own parser decodes header
    values as UTF-8: it refused such a batch before the handler ran, and the next batch's commit
    passed it, applied or not)."""
    odd_headers = [("trace", None), ("span", b"\xff\x00binary"), ("empty", b"")]
    creators = [_creator() for _ in range(3)]
    topic = consumers.prefix + topics.GIFTS_SENT
    bad = b'{"event_id": "' + uuid.uuid4().hex.encode() + b'", '
    sends = [
        await consumers.producer.send(
            topic,
            value=json.dumps(make.gift(creator, coins=2)).encode(),
            key=creator.encode(),
            partition=0,
            headers=odd_headers if index < 2 else [],
        )
        for index, creator in enumerate(creators)
    ]
    sends.append(
        await consumers.producer.send(
            topic, value=bad, key=creators[0].encode(), partition=0, headers=odd_headers
        )
    )
    await asyncio.gather(*sends)

    async def all_applied() -> bool:
        async with engine.connect() as conn:
            return all([await creator_balances(conn, creator) for creator in creators])

    await wait_until(all_applied)
    records = await consumers.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_SENT),
        lambda found: any(record.value == bad for record in found),
    )
    [letter] = [record for record in records if record.value == bad]
    assert letter.key == creators[0].encode()
    assert list(letter.headers[:3]) == odd_headers
    assert dict(letter.headers[3:])["dlq.error"] == b"malformed_json"


async def test_a_dead_letter_too_large_for_its_topic_goes_without_its_value(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    """A bad record just under the producer's size limit makes, with the dead letter's headers,
    a message over it: it is sent without its value, saying the value's size, and the partition
    goes on (it was refused at every try, and the batch rewound for ever)."""
    creator = _creator()
    topic = consumers.prefix + topics.GIFTS_SENT
    huge = b"not json " + uuid.uuid4().hex.encode() + b"x" * 1_048_300
    await consumers.producer.send_and_wait(
        topic, value=huge, key=creator.encode(), partition=1, headers=[("trace", b"t-1")]
    )
    await consumers.producer.send_and_wait(
        topic,
        value=json.dumps(make.gift(creator, coins=2)).encode(),
        key=creator.encode(),
        partition=1,
    )

    async def gift_applied() -> bool:
        async with engine.connect() as conn:
            return bool(await creator_balances(conn, creator))

    await wait_until(gift_applied)
    records = await consumers.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_SENT),
        lambda found: any(record.key == creator.encode() for record in found),
    )
    [letter] = [record for record in records if record.key == creator.encode()]
    headers = dict(letter.headers)
    assert letter.value is None
    assert "trace" not in headers
    assert headers["dlq.value_omitted"] == str(len(huge)).encode()
    assert headers["dlq.error"] == b"malformed_json"
    assert headers["dlq.source.partition"] == b"1"
    offset = int(headers["dlq.source.offset"])
    assert await _recorded_error(engine, consumers.prefix, topics.GIFTS_SENT, 1, offset) == (
        "malformed_json"
    )
    await wait_until(functools.partial(_all_committed, consumers, topics.GIFTS_SENT, 1))


async def test_a_dead_letter_too_large_for_its_key_goes_without_its_value_and_key(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    """A bad record whose key takes it near the size limit: its stand-in without the value is
    still too large with the key, so it goes keyed by the key's SHA-256, saying the key's size
    (with the key, it was refused at every try and the partition stalled for ever)."""
    creator = _creator()
    topic = consumers.prefix + topics.GIFTS_SENT
    huge_key = creator.encode().ljust(1_048_450, b"k")  # fits alone, not with our headers
    await consumers.producer.send_and_wait(topic, value=b"not json", key=huge_key, partition=2)
    await consumers.producer.send_and_wait(
        topic,
        value=json.dumps(make.gift(creator, coins=2)).encode(),
        key=creator.encode(),
        partition=2,
    )

    async def gift_applied() -> bool:
        async with engine.connect() as conn:
            return bool(await creator_balances(conn, creator))

    await wait_until(gift_applied)

    def stand_in_of(record: Any) -> bool:
        headers = dict(record.headers)
        return (
            record.key == hashlib.sha256(huge_key).hexdigest().encode()
            and headers.get("dlq.key_omitted") == str(len(huge_key)).encode()
        )

    records = await consumers.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_SENT),
        lambda found: any(stand_in_of(record) for record in found),
    )
    [letter] = [record for record in records if stand_in_of(record)]
    headers = dict(letter.headers)
    assert letter.value is None
    assert headers["dlq.value_omitted"] == b"8"
    assert headers["dlq.error"] == b"malformed_json"
    assert headers["dlq.source.partition"] == b"2"
    await wait_until(functools.partial(_all_committed, consumers, topics.GIFTS_SENT, 2))


def _produce_with_librdkafka(
    bootstrap_servers: str,
    topic: str,
    partition: int,
    records: list[tuple[bytes | None, bytes | None]],
) -> None:
    """Publish (key, value) records with librdkafka, which, unlike aiokafka, sends a record with
    neither key nor value (a keyless tombstone), as Kafka and the Java producer allow."""
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5})
    for key, value in records:
        producer.produce(topic, value=value, key=key, partition=partition)
    assert producer.flush(LIBRDKAFKA_FLUSH_S) == 0, "librdkafka did not deliver every record"


async def test_a_record_without_key_or_value_is_dead_lettered_and_its_partition_goes_on(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    """A keyless tombstone is dead-lettered `empty_value`: its dead letter keeps the null value
    and goes with an empty key, saying so (`dlq.key_null`), since no producer sends a record
    with neither. Sent as it was, the producer refused it at every try, the batch was rewound
    for ever, and its partition stalled."""
    creator = _creator()
    topic = consumers.prefix + topics.GIFTS_SENT
    gift = json.dumps(make.gift(creator, coins=2)).encode()
    await asyncio.to_thread(
        _produce_with_librdkafka,
        consumers.bootstrap_servers,
        topic,
        3,
        [(None, None), (creator.encode(), gift)],
    )

    async def gift_applied() -> bool:
        async with engine.connect() as conn:
            return bool(await creator_balances(conn, creator))

    await wait_until(gift_applied)
    await wait_until(functools.partial(_all_committed, consumers, topics.GIFTS_SENT, 3))

    def tombstone_letter(record: Any) -> bool:
        headers = dict(record.headers)
        return headers.get("dlq.source.partition") == b"3" and record.value is None

    records = await consumers.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_SENT),
        lambda found: any(tombstone_letter(record) for record in found),
    )
    [letter] = [record for record in records if tombstone_letter(record)]
    headers = dict(letter.headers)
    assert letter.key == b""
    assert headers["dlq.key_null"] == b"true"
    assert headers["dlq.error"] == b"empty_value"
    assert "dlq.value_omitted" not in headers
    offset = int(headers["dlq.source.offset"])
    recorded = await _recorded_error(engine, consumers.prefix, topics.GIFTS_SENT, 3, offset)
    assert recorded == "empty_value"


async def test_a_keyless_dead_letter_too_large_for_its_topic_goes_without_its_value(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    """A bad record without a key, just under the size limit: its stand-in without the value
    has an empty key (`dlq.key_null`). Keyless as the original, it had neither key nor value,
    the producer refused it at every try, and the partition stalled."""
    creator = _creator()
    topic = consumers.prefix + topics.GIFTS_SENT
    huge = b"not json " + uuid.uuid4().hex.encode() + b"x" * 1_048_300
    await consumers.producer.send_and_wait(topic, value=huge, key=None, partition=3)
    await consumers.producer.send_and_wait(
        topic,
        value=json.dumps(make.gift(creator, coins=2)).encode(),
        key=creator.encode(),
        partition=3,
    )

    async def gift_applied() -> bool:
        async with engine.connect() as conn:
            return bool(await creator_balances(conn, creator))

    await wait_until(gift_applied)
    await wait_until(functools.partial(_all_committed, consumers, topics.GIFTS_SENT, 3))

    def stand_in_of(record: Any) -> bool:
        headers = dict(record.headers)
        return headers.get("dlq.source.partition") == b"3" and "dlq.value_omitted" in headers

    records = await consumers.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_SENT),
        lambda found: any(stand_in_of(record) for record in found),
    )
    [letter] = [record for record in records if stand_in_of(record)]
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (b"", None)
    assert headers["dlq.value_omitted"] == str(len(huge)).encode()
    assert headers["dlq.key_null"] == b"true"
    assert headers["dlq.error"] == b"malformed_json"
    assert "dlq.key_omitted" not in headers


def test_only_a_refusal_of_the_letter_itself_sends_it_without_its_value() -> None:
    """What the same send would meet at every try (the record refused, or the producer's own
    refusal of its arguments) sends a stand-in; what a later try may get past (the broker or
    the topic unavailable, the producer stopped, not authorised) sends the batch again."""
    for error in (
        AssertionError("Need at least one: key or value"),
        TypeError("not bytes"),
        MessageSizeTooLargeError(),
        CorruptRecordException(),
    ):
        assert refuses_the_letter(error), error
    for error in (
        KafkaConnectionError(),
        KafkaTimeoutError(),
        ProducerClosed(),
        UnknownTopicOrPartitionError(),
        TopicAuthorizationFailedError(),
        OSError("connection reset"),
        TimeoutError(),
    ):
        assert not refuses_the_letter(error), error


async def _all_committed(consumers: RunningConsumers, topic: str, partition: int) -> bool:
    """Whether the consumers' group has committed the partition up to its end."""
    place = TopicPartition(consumers.prefix + topic, partition)
    reader = AIOKafkaConsumer(
        bootstrap_servers=consumers.bootstrap_servers,
        group_id=consumers.service.group_id(topic),
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        committed = await reader.committed(place)
        # Not ListOffsets alone, which on the embedded broker says less than the end once a
        # produce request carried several records of the partition.
        end = (await end_offsets(reader, [place], END_OFFSET_WAIT_S))[place]
    finally:
        await reader.stop()
    return bool(committed == end)


async def test_unknown_currency_is_dead_lettered(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    await consumers.publish(topics.TIPS_RECEIVED, {**make.tip(_creator()), "currency": "XXX"})
    records = await consumers.read_topic(topics.dead_letter_topic(topics.TIPS_RECEIVED), 1)
    assert dict(records[0].headers)["dlq.error"] == b"schema_violation"
    assert b"unsupported currency" in dict(records[0].headers)["dlq.detail"]


async def test_event_id_reused_with_a_different_payload_is_a_conflict(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    first = make.fund_reward(creator, 100)
    second = {**first, "amount": 999}
    await consumers.publish(topics.FUND_REWARDED, first)
    await consumers.publish(topics.FUND_REWARDED, second)
    records = await consumers.read_topic(topics.dead_letter_topic(topics.FUND_REWARDED), 1)
    assert json.loads(records[0].value)["amount"] == 999
    assert dict(records[0].headers)["dlq.error"] == b"event_id_conflict"
    assert dict(records[0].headers)["dlq.event_id"] == str(first["event_id"]).encode()
    async with engine.connect() as conn:
        balances = await creator_balances(conn, creator)
    assert [b.posted for b in balances] == [100]


async def test_reversals_that_cannot_apply_are_dead_lettered_with_the_reason(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator, other = _creator(), _creator()
    gift = make.gift(creator, coins=8)
    await consumers.publish(topics.GIFTS_SENT, gift)
    never_sent = make.reversal(creator, "evt-never-sent")
    wrong_creator = make.reversal(other, str(gift["event_id"]))
    first = make.reversal(creator, str(gift["event_id"]))
    second = make.reversal(creator, str(gift["event_id"]), reason="fraud")
    await consumers.publish(topics.GIFTS_REVERSED, never_sent)

    async def gift_applied() -> bool:
        async with engine.connect() as conn:
            return bool(await creator_balances(conn, creator))

    await wait_until(gift_applied)
    for reversal in (wrong_creator, first, second):
        await consumers.publish(topics.GIFTS_REVERSED, reversal)
    records = await consumers.read_topic(topics.dead_letter_topic(topics.GIFTS_REVERSED), 3)
    errors = {json.loads(r.value)["event_id"]: dict(r.headers)["dlq.error"] for r in records}
    keys = {json.loads(r.value)["event_id"]: r.key for r in records}
    assert keys[never_sent["event_id"]] == creator.encode()  # parked, then sent with its key
    assert errors == {
        never_sent["event_id"]: b"gift_not_found",
        wrong_creator["event_id"]: b"creator_mismatch",
        second["event_id"]: b"already_reversed",
    }
    async with engine.connect() as conn:
        balances = await creator_balances(conn, creator)
    assert [b.posted for b in balances] == [0]


async def test_every_consumed_record_is_accounted_for(consumers: RunningConsumers) -> None:
    counts = consumers.ingestor.counts
    assert counts.consumed > 0
    assert counts.still_parked == 0
    assert counts.balanced()
    assert (
        counts.consumed == counts.applied + counts.duplicates + counts.dead_lettered + counts.parked
    )


async def test_deployments_sharing_a_database_record_their_own_dead_letters(
    engine: AsyncEngine,
) -> None:
    """The same partition and offset of `gifts.sent` under two topic prefixes are two source
    records: each deployment's dead letter gets its row."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    offset = 10**12 + uuid.uuid4().int % 10**9  # far past any offset the other tests use
    bad = InputRecord(topics.GIFTS_SENT, 0, offset, None, b"{not json")
    prefixes = [f"a{uuid.uuid4().hex[:6]}.", f"b{uuid.uuid4().hex[:6]}."]
    for prefix in prefixes:
        ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix)
        report = await ingestor.process(topics.GIFTS_SENT, [bad])
        assert [letter.error for letter in report.dead_letters] == ["malformed_json"]
    for prefix in prefixes:
        assert await _recorded_error(engine, prefix, topics.GIFTS_SENT, 0, offset) == (
            "malformed_json"
        )


async def test_deployments_sharing_a_database_each_park_and_retry_a_reversal(
    engine: AsyncEngine,
) -> None:
    """Two deployments read the same reversal before its gift: each parks it in a row of its
    own and, once the gift is applied, each retries its own row; the ledger applies it once."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    creator = _creator()
    gift = make.gift(creator, coins=10)
    reversal = make.reversal(creator, str(gift["event_id"]))
    ingestors = [
        make_ingestor(engine, rate_cards, topic_prefix=f"{name}{uuid.uuid4().hex[:6]}.")
        for name in "ab"
    ]
    for offset, ingestor in enumerate(ingestors):
        record = InputRecord(topics.GIFTS_REVERSED, 0, offset, None, json.dumps(reversal).encode())
        report = await ingestor.process(topics.GIFTS_REVERSED, [record])
        assert (report.parked, report.applied, report.duplicates) == (1, 0, 0)
    assert await _parked_prefixes(engine, str(reversal["event_id"])) == sorted(
        ingestor.topic_prefix for ingestor in ingestors
    )

    gift_record = InputRecord(topics.GIFTS_SENT, 0, 0, None, json.dumps(gift).encode())
    assert (await ingestors[0].process(topics.GIFTS_SENT, [gift_record])).applied == 1
    first = await ingestors[0].retry_parked(topics.GIFTS_REVERSED)
    second = await ingestors[1].retry_parked(topics.GIFTS_REVERSED)
    assert (first.applied, first.duplicates) == (1, 0)
    assert (second.applied, second.duplicates) == (0, 1)
    assert await _parked_prefixes(engine, str(reversal["event_id"])) == []
    async with engine.connect() as conn:
        balances = await creator_balances(conn, creator)
    assert [(balance.name, balance.posted) for balance in balances] == [
        (f"creator:{creator}:DIAMOND:available", 0)
    ]


async def _parked_prefixes(engine: AsyncEngine, event_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT topic_prefix FROM parked_events WHERE event_id = :id"), {"id": event_id}
        )
        return sorted(row.topic_prefix for row in rows)


async def test_a_batch_that_comes_again_gives_its_dead_letters_their_verdict_again(
    engine: AsyncEngine,
) -> None:
    """A batch runs again after its dead letters were published (its offsets not committed: a
    rewind, a crash): a record it dead-lettered is dead-lettered again as it was, even though
    the ledger has moved on so that it would now apply. Here a bank's `returned` came before its
    `paid` in one batch: refused then, it would be taken after the `paid` was applied."""
    feed = await Feed.on(engine)
    creator = await feed.eligible_creator(new_creator_id("verdict"), 3_000)
    cashout_id = await feed.held_cashout(creator, 2_000)
    returned = make.payout_update(cashout_id, "returned", failure_code="R01")
    paid = make.payout_update(cashout_id, "paid")
    offset = uuid.uuid4().int % 2**40
    batch = [
        InputRecord(topics.PAYOUTS_UPDATED, 3, offset + index, creator.encode(), value)
        for index, value in enumerate(json.dumps(event).encode() for event in (returned, paid))
    ]
    first = await feed.ingestor.process(topics.PAYOUTS_UPDATED, batch)
    again = await feed.ingestor.process(topics.PAYOUTS_UPDATED, batch)
    assert [letter.record.offset for letter in first.dead_letters] == [offset]
    assert (first.applied, again.applied, again.duplicates) == (1, 0, 1)
    assert [
        (letter.record.offset, letter.error, letter.detail) for letter in again.dead_letters
    ] == [(letter.record.offset, letter.error, letter.detail) for letter in first.dead_letters]
    assert await cashout_state(engine, cashout_id) == ("paid", None)

    # The same place holding another record (a topic recreated) is decided as itself.
    other = make.payout_update(cashout_id, "returned", failure_code="R01")
    moved = [batch[0]._replace(value=json.dumps(other).encode())]
    assert (await feed.ingestor.process(topics.PAYOUTS_UPDATED, moved)).applied == 1
    assert await cashout_state(engine, cashout_id) == ("returned", "R01")


async def test_a_new_record_at_an_offset_an_old_dead_letter_holds_gets_a_row_of_its_own(
    engine: AsyncEngine,
) -> None:
    """A topic whose offsets start again (recreated, or the embedded broker restarted) puts a
    new record at an offset an old dead letter holds: dead-lettered too, it gets its own row
    (it had none: the row of the old one stood for it), while each of them delivered again at
    that offset keeps the one row it has, and gets its own verdict again."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    prefix = f"r{uuid.uuid4().hex[:8]}."
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    offset = 10**12 + uuid.uuid4().int % 10**9
    old = InputRecord(topics.GIFTS_SENT, 0, offset, b"creator-x", b"not json at all")
    event = {**make.gift("creator-x"), "coins": "ten"}
    new = old._replace(value=json.dumps(event).encode())
    keyless_tombstone = old._replace(key=None, value=None)
    verdicts = []
    for record in (old, new, new, old, keyless_tombstone, keyless_tombstone):
        report = await ingestor.process(topics.GIFTS_SENT, [record])
        verdicts += [(letter.error, letter.event_id) for letter in report.dead_letters]
    assert verdicts == [
        ("malformed_json", None),
        ("schema_violation", event["event_id"]),
        ("schema_violation", event["event_id"]),
        ("malformed_json", None),
        ("empty_value", None),
        ("empty_value", None),
    ]
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT kafka_offset, error, event_id FROM dead_letters"
                " WHERE topic_prefix = :prefix ORDER BY id"
            ),
            {"prefix": prefix},
        )
        assert [tuple(row) for row in rows] == [
            (offset, "malformed_json", None),
            (offset, "schema_violation", event["event_id"]),
            (offset, "empty_value", None),
        ]
        [shown] = await event_dead_letters(conn, prefix, event["event_id"], None)
    assert (shown["error"], shown["source"]) == (
        "schema_violation",
        {"partition": 0, "offset": offset},
    )
