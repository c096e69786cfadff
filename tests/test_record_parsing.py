"""A batch of records parsed at once is parsed as each record alone would be, and an applied
event is recorded with the hash of its canonical form, whatever the spelling.

`parse_records` validates the plain records of a batch (ASCII, no backslash) in one pydantic call
and skips the separate duplicate-key parse where counting quotes proves it would pass. These tests
hold every outcome (event, payload hash, dead letter with its reason and detail) equal to the
reference below, the record-by-record parse as the ingestion always did it, for valid events in
several spellings, hostile mutations, bytes that are not events, and records cut so that only
their concatenation is valid JSON. Then, against a real database: an event applied with a hash
written the old way (`sha256(model_dump_json())`) is a duplicate when delivered again in another
spelling, and a conflict with another payload.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import jiter
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from schemas.events import CONSUMED_EVENT_MODELS, GiftSent
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import (
    JSON_DEPTH_MAX,
    DeadLetter,
    InputRecord,
    ParsedEvent,
    parse_record,
    parse_records,
)
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
from tests import hostile_strategies as hs
from tests.ingestion_fixtures import make_ingestor

# Plain ids: what most producers send (no quote or backslash to escape).
plain_ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_:.{}[],", min_size=1, max_size=20
)
parse_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def reference(topic: str, record: InputRecord) -> tuple[Any, ...]:
    """How the ingestion parsed one record before batches were parsed at once: UTF-8, a JSON
    parse refusing repeated keys, the depth, then validation; the hash of the canonical form."""
    value = record.value
    if value is None:
        return ("dead", "empty_value", "the record has no value", None)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return ("dead", "invalid_utf8")
    try:
        decoded = jiter.from_json(value, catch_duplicate_keys=True, cache_mode="keys")
    except (ValueError, RecursionError):
        return ("dead", "malformed_json")
    if depth(decoded) > JSON_DEPTH_MAX:
        return ("dead", "malformed_json", f"nested deeper than {JSON_DEPTH_MAX}", None)
    model = CONSUMED_EVENT_MODELS[topic]
    try:
        event = model.model_validate_json(value)
    except ValidationError:
        return ("dead", "schema_violation")
    canonical = event.model_dump_json().encode("utf-8")
    return ("event", event, hashlib.sha256(canonical).digest())


def depth(value: Any) -> int:
    """How deep containers nest (a scalar 0, a flat object 1), level by level."""
    level, frontier = 0, [value]
    while frontier:
        level += 1
        frontier = [
            child
            for item in frontier
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return level - 1


def summary(outcome: ParsedEvent | DeadLetter, like: tuple[Any, ...]) -> tuple[Any, ...]:
    """The outcome in the reference's shape (a dead letter's detail where the reference has it)."""
    if isinstance(outcome, DeadLetter):
        if len(like) == 4:
            return ("dead", outcome.error, outcome.detail, outcome.event_id)
        return ("dead", outcome.error)
    return ("event", outcome.event, outcome.payload_sha256)


def records_of(topic: str, values: list[bytes | None]) -> list[InputRecord]:
    return [InputRecord(topic, 0, offset, None, value) for offset, value in enumerate(values)]


def assert_parsed_as_reference(topic: str, values: list[bytes | None]) -> None:
    records = records_of(topic, values)
    expected = [reference(topic, record) for record in records]
    batch = parse_records(topic, records)
    assert [summary(got, like) for got, like in zip(batch, expected, strict=True)] == expected
    alone = [parse_record(topic, record) for record in records]
    assert [summary(got, like) for got, like in zip(alone, expected, strict=True)] == expected
    # The dead letters of the batch are the record-by-record ones, detail and event id included.
    assert [
        (letter.error, letter.detail, letter.event_id)
        for letter in batch
        if isinstance(letter, DeadLetter)
    ] == [
        (letter.error, letter.detail, letter.event_id)
        for letter in alone
        if isinstance(letter, DeadLetter)
    ]


@st.composite
def plain_event(draw: st.DrawFn, topic: str) -> dict[str, Any]:
    """A valid event of `topic` whose ids need no escaping."""
    event = draw(hs.valid_event(topic, draw(plain_ids), event_id=draw(plain_ids)))
    for name in ("sender_id", "video_id", "live_id", "gift_id", "gift_event_id", "charge_id"):
        if name in event:
            event[name] = draw(plain_ids)
    return event


@st.composite
def spelled(draw: st.DrawFn, topic: str) -> bytes:
    """A valid event, or one broken by the hostile mutations, in one of several spellings."""
    event = draw(plain_event(topic))
    if draw(st.booleans()):
        event = hs.mutate(event, draw(st.lists(hs.mutations(topic), min_size=1, max_size=2)))
    style = draw(st.sampled_from(["compact", *hs.ENCODINGS]))
    if style == "compact":
        return json.dumps(event, separators=(",", ":")).encode()
    return hs.encode(event, style)


@st.composite
def batch_values(draw: st.DrawFn, topic: str) -> list[bytes | None]:
    """Records of one batch: events in several spellings, garbage around a valid event, and
    valid events concatenated and cut again anywhere (at commas, mostly)."""
    values: list[bytes | None] = draw(st.lists(spelled(topic), min_size=0, max_size=6))
    if draw(st.booleans()):
        valid = hs.encode(draw(plain_event(topic)))
        values.append(draw(hs.garbage(valid)))
    if draw(st.booleans()):
        joined = b",".join(
            json.dumps(event, separators=(",", ":")).encode()
            for event in draw(st.lists(plain_event(topic), min_size=2, max_size=3))
        )
        commas = [index for index, byte in enumerate(joined) if byte == ord(",")]
        cuts = sorted(
            set(draw(st.lists(st.sampled_from(commas), min_size=1, max_size=3)))
            | set(draw(st.lists(st.integers(1, len(joined) - 1), max_size=1)))
        )
        pieces = [
            joined[start:end] for start, end in zip([0, *cuts], [*cuts, len(joined)], strict=True)
        ]
        # A piece cut at a comma loses it: the batch joins its records with one again.
        values += [piece.removeprefix(b",") for piece in pieces]
    return draw(st.permutations(values))


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
@parse_settings
@given(data=st.data())
def test_a_batch_is_parsed_as_each_record_alone_was(topic: str, data: st.DataObject) -> None:
    assert_parsed_as_reference(topic, data.draw(batch_values(topic)))


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
@parse_settings
@given(data=st.data())
def test_hostile_records_are_parsed_as_each_record_alone_was(
    topic: str, data: st.DataObject
) -> None:
    raw = data.draw(st.lists(hs.mutated_record(topic, "c-hostile"), min_size=1, max_size=4))
    assert_parsed_as_reference(topic, [item.value for item in raw])


def gift_json(event_id: str, **changes: Any) -> bytes:
    return json.dumps({**make.gift("c-parse"), "event_id": event_id, **changes}).encode()


def test_records_valid_only_together_are_dead_letters_each() -> None:
    """Two records, each a piece of JSON, that together read as two gifts: each is refused
    with the reason it has alone, and the valid records around them are parsed."""
    first, second = gift_json("e-first"), gift_json("e-second")
    head, tail = second.split(b', "coins"')
    pieces = [first + b"," + head, b'"coins"' + tail]
    values = [gift_json("e-before"), *pieces, gift_json("e-after")]
    outcomes = parse_records(topics.GIFTS_SENT, records_of(topics.GIFTS_SENT, list(values)))
    assert [
        outcome.error if isinstance(outcome, DeadLetter) else outcome.event.event_id
        for outcome in outcomes
    ] == ["e-before", "malformed_json", "malformed_json", "e-after"]
    assert_parsed_as_reference(topics.GIFTS_SENT, list(values))


@pytest.mark.parametrize(
    "repeat",
    [b', "coins": 7', b', "coins": {"a": [[1]]}', b', "event_id": "other"', b', "count": 1'],
    ids=["number", "nested", "string", "same_value"],
)
def test_a_repeated_key_is_malformed_json_in_a_batch_too(repeat: bytes) -> None:
    repeated = gift_json("e-repeat")[:-1] + repeat + b"}"
    values: list[bytes | None] = [gift_json("e-ok"), repeated]
    outcomes = parse_records(topics.GIFTS_SENT, records_of(topics.GIFTS_SENT, values))
    assert isinstance(outcomes[0], ParsedEvent)
    assert isinstance(outcomes[1], DeadLetter)
    assert outcomes[1].error == "malformed_json"
    assert_parsed_as_reference(topics.GIFTS_SENT, values)


@pytest.mark.parametrize("topic", [topics.GIFTS_SENT, topics.GIFTS_REVERSED])
def test_nesting_counts_the_levels_that_hold_something(topic: str) -> None:
    """An empty container adds no level: brackets 17 deep around nothing nest 16 levels, which
    is allowed (and then not an event); 17 levels around a value are too deep. Hypothesis found
    the first refused as too deep, against the reference."""
    at_limit = b"[" * (JSON_DEPTH_MAX + 1) + b"]" * (JSON_DEPTH_MAX + 1)
    past_limit = b"[" * (JSON_DEPTH_MAX + 1) + b"1" + b"]" * (JSON_DEPTH_MAX + 1)
    outcomes = parse_records(topic, records_of(topic, [at_limit, past_limit]))
    letters = [outcome for outcome in outcomes if isinstance(outcome, DeadLetter)]
    assert [letter.error for letter in letters] == ["schema_violation", "malformed_json"]
    assert letters[1].detail == f"nested deeper than {JSON_DEPTH_MAX}"
    assert_parsed_as_reference(topic, [at_limit, past_limit])


def test_one_payload_in_any_spelling_has_one_hash() -> None:
    event = {**make.gift("c-spelling", coins=3), "event_id": "e-spelling"}
    spellings: list[bytes | None] = [
        json.dumps(event).encode(),
        json.dumps(event, separators=(",", ":"), sort_keys=True).encode(),
        json.dumps(event, indent=2).encode(),
        json.dumps(event).encode().replace(b'"rose"', b'"r\\u006fse"'),  # not plain
    ]
    outcomes = parse_records(topics.GIFTS_SENT, records_of(topics.GIFTS_SENT, spellings))
    assert all(isinstance(outcome, ParsedEvent) for outcome in outcomes)
    hashes = {outcome.payload_sha256 for outcome in outcomes if isinstance(outcome, ParsedEvent)}
    canonical = GiftSent.model_validate_json(json.dumps(event)).model_dump_json().encode()
    assert hashes == {hashlib.sha256(canonical).digest()}


# Against the database: hashes recorded before batches were parsed at once.

PARTITION = 6
OFFSET_BASE = 2 * 10**12


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ingestor(engine: AsyncEngine) -> AsyncIterator[Ingestor]:
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    yield make_ingestor(engine, rate_cards)


async def record_applied_the_old_way(engine: AsyncEngine, payload: bytes) -> None:
    """An applied event as a consumer recorded it before: its hash of `model_dump_json()`."""
    event = GiftSent.model_validate_json(payload)
    digest = hashlib.sha256(event.model_dump_json().encode("utf-8")).digest()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO applied_events (topic, event_id, payload_sha256, creator_id,"
                " occurred_at, kafka_partition, kafka_offset)"
                " VALUES (:topic, :event_id, :digest, :creator_id, :occurred_at, :partition, 0)"
            ),
            {
                "topic": topics.GIFTS_SENT,
                "event_id": event.event_id,
                "digest": digest,
                "creator_id": event.creator_id,
                "occurred_at": event.occurred_at,
                "partition": PARTITION,
            },
        )


async def test_an_event_applied_before_is_a_duplicate_in_any_spelling_and_a_conflict_changed(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str
) -> None:
    event = {**make.gift(f"c-{unique_id}", coins=5), "event_id": f"gift-old-{unique_id}"}
    await record_applied_the_old_way(engine, json.dumps(event).encode())
    again = [
        json.dumps(event, indent=2, sort_keys=True).encode(),
        json.dumps(event, separators=(",", ":")).encode(),
        json.dumps(event).encode().replace(b'"rose"', b'"r\\u006fse"'),
        json.dumps({**event, "coins": 6}).encode(),
    ]
    records = [
        InputRecord(topics.GIFTS_SENT, PARTITION, OFFSET_BASE + index, None, value)
        for index, value in enumerate(again)
    ]
    report = await ingestor.process(topics.GIFTS_SENT, records)
    assert (report.applied, report.duplicates) == (0, 3)
    assert [(letter.error, letter.record.offset) for letter in report.dead_letters] == [
        ("event_id_conflict", OFFSET_BASE + 3)
    ]
    async with engine.connect() as conn:
        transfers = await conn.execute(
            text("SELECT count(*) FROM transfers WHERE event_id = :event_id"),
            {"event_id": event["event_id"]},
        )
        assert transfers.scalar_one() == 0
