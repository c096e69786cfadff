"""Hostile input, straight into `Ingestor.process`: the function the Kafka consumers call for
every batch (the consumer is a thin layer over it), on a real PostgreSQL, with no Kafka.

For every topic the ingestor applies, hypothesis sends valid events with their fields broken
(wrong types, huge and negative numbers, NaN and Infinity tokens, overlong, empty and odd Unicode
strings, NUL and lone surrogates, missing, extra and renamed fields), bytes that are not events at
all (invalid UTF-8, truncated JSON, deep nesting, duplicate keys, non-objects, empty values,
tombstones) and valid events whose `event_id` comes back with another payload. After every batch:

- `process` returned: an exception would block the partition (the consumer rewinds and retries);
- every record is in exactly one of applied, duplicates, dead-lettered or parked, in the report,
  in the running counts, and in the database rows written for its offset;
- every dead letter has an error code from the known set and a short, non-empty detail;
- the ledger holds transfers only for applied events, with positive, bounded amounts;
and at the end `verify` finds the whole ledger sound.

The tests at the end pin the exact inputs that once broke ingestion (each fixed since); a bug
found later goes into `tests.hostile_strategies.KNOWN_BUGS` with a strict xfail until its fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import random
import string
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.queries import creator_balances
from ledger.verify import verify
from schemas import topics
from schemas.events import AMOUNT_MAX, CONSUMED_EVENT_MODELS, ID_LENGTH_MAX, GiftSent
from services.ingestion.event_transfers import (
    fund_legs,
    gift_transfer,
    marketplace_legs,
    tip_legs,
)
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import ERROR_DETAIL_LENGTH_MAX, BatchReport, InputRecord
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
from tests import hostile_strategies as hs
from tests.ingestion_fixtures import make_ingestor
from tests.ledger_helpers import one_snapshot

# A partition no Kafka test of the session uses (they have 4), and offsets far above any they
# reach: dead letters are keyed by (topic, partition, offset), and these tests read their own
# rows back by offset.
PARTITION = 7
_offsets = itertools.count(10**12)

PARSE_ERRORS = frozenset({"empty_value", "invalid_utf8", "malformed_json", "schema_violation"})
CASHOUT_STATUSES = ("requested", "held", "submitted", "paid", "rejected", "failed", "returned")
KNOWN_ERRORS = (
    PARSE_ERRORS
    | {
        "event_id_conflict",
        "already_reversed",
        "charge_already_applied",
        "ledger_refused",
        "creator_mismatch",
        "gift_not_found",
        "unknown_cashout",
    }
    | {f"cashout_is_{status}" for status in CASHOUT_STATUSES}
)
# The largest transfer any input may cause: a cash-out of AMOUNT_MAX diamonds, in milli-diamonds.
TRANSFER_AMOUNT_MAX = AMOUNT_MAX * 1_000
# What a fresh, valid event of each topic becomes when nothing it refers to exists.
FRESH_OUTCOME = {
    topics.GIFTS_SENT: "applied",
    topics.GIFTS_REVERSED: "parked",
    topics.TIPS_RECEIVED: "applied",
    topics.FUND_REWARDED: "applied",
    topics.MARKETPLACE_PAID: "applied",
    topics.CREATORS_UPDATED: "applied",
    topics.CASHOUTS_REQUESTED: "applied",
    topics.PAYOUTS_UPDATED: "parked",  # until its cash-out's request arrives
}
VISIBLE_ASCII = frozenset(hs.VISIBLE_ASCII)

# Examples per test and topic; GIFTLEDGER_HOSTILE_EXAMPLES=500 makes a deeper (slower) hunt.
EXAMPLES = int(os.environ.get("GIFTLEDGER_HOSTILE_EXAMPLES", "15"))
hostile_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ingestor(engine: AsyncEngine) -> AsyncIterator[Ingestor]:
    """One ingestor for the module, built as the consumer service builds it."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    yield make_ingestor(engine, rate_cards)
    # The reversals and payout results parked here wait for gifts and cash-outs that never come:
    # remove them, so that no other test's consumer of this session retries them (and
    # dead-letters them, in its counts).
    async with engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM parked_events WHERE kafka_partition = :partition"),
            {"partition": PARTITION},
        )


def record(
    topic: str, value: bytes | None, headers: hs.Headers = (), key: bytes | None = None
) -> InputRecord:
    return InputRecord(topic, PARTITION, next(_offsets), key, value, headers)


def is_identifier(value: object) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= ID_LENGTH_MAX
        and all(char in VISIBLE_ASCII for char in value)
    )


def event_id_of(value: bytes | None) -> str | None:
    """The record's event_id when it is one the database could hold, else None."""
    try:
        decoded = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    event_id = decoded.get("event_id") if isinstance(decoded, dict) else None
    return event_id if is_identifier(event_id) else None


def payload_sha256(topic: str, value: bytes) -> bytes:
    """The hash the ingestor records for an applied event: of its canonical form."""
    parsed = CONSUMED_EVENT_MODELS[topic].model_validate_json(value)
    return hashlib.sha256(parsed.model_dump_json().encode()).digest()


# The rows each table holds for some offsets of a topic: one query, one round trip.
_ROWS_OF_OFFSETS = text(
    """
    SELECT 'dead_letter' AS kind, kafka_offset, error FROM dead_letters
    WHERE topic = :topic AND kafka_partition = :partition AND kafka_offset = ANY(:offsets)
    UNION ALL
    SELECT 'applied', kafka_offset, NULL FROM applied_events
    WHERE topic = :topic AND kafka_partition = :partition AND kafka_offset = ANY(:offsets)
    UNION ALL
    SELECT 'parked', kafka_offset, NULL FROM parked_events
    WHERE topic = :topic AND kafka_partition = :partition AND kafka_offset = ANY(:offsets)
    """
)


async def process_checked(
    engine: AsyncEngine, ingestor: Ingestor, topic: str, records: Sequence[InputRecord]
) -> BatchReport:
    """`ingestor.process`, then every invariant that must hold after any batch."""
    before = dataclasses.replace(ingestor.counts)
    report = await ingestor.process(topic, records)

    settled = report.applied + report.duplicates + len(report.dead_letters) + report.parked
    assert settled == len(records), report
    assert min(report.applied, report.duplicates, report.parked) >= 0, report
    by_offset = {item.offset: item for item in records}
    letters: dict[int, str] = {}
    for letter in report.dead_letters:
        assert by_offset.get(letter.record.offset) == letter.record, "a dead letter's record"
        assert letter.record.offset not in letters, "a record dead-lettered twice"
        assert letter.error in KNOWN_ERRORS, letter.error
        assert 0 < len(letter.detail) <= ERROR_DETAIL_LENGTH_MAX, letter.detail
        letters[letter.record.offset] = letter.error
        if currently_in_test_context():  # for --hypothesis-show-statistics
            event(f"dead letter: {letter.error}")

    counts = ingestor.counts
    assert counts.consumed - before.consumed == len(records)
    assert counts.applied - before.applied == report.applied
    assert counts.duplicates - before.duplicates == report.duplicates + report.dead_letters_again
    assert counts.dead_lettered - before.dead_lettered == len(report.dead_letters_recorded)
    assert counts.parked - before.parked == report.parked
    assert counts.consumed == (
        counts.applied + counts.duplicates + counts.dead_lettered + counts.parked
    )
    assert counts.balanced()

    params = {"topic": topic, "partition": PARTITION, "offsets": list(by_offset)}
    async with engine.connect() as conn:
        rows = await conn.execute(_ROWS_OF_OFFSETS, params)
    stored_letters: dict[int, str] = {}
    applied_rows = parked_rows = 0
    for row in rows:
        if row.kind == "dead_letter":
            stored_letters[row.kafka_offset] = row.error
        elif row.kind == "applied":
            applied_rows += 1
        else:
            parked_rows += 1
    assert stored_letters == letters, "dead letters recorded with the batch"
    assert applied_rows == report.applied, "applied events recorded with the batch"
    assert parked_rows <= report.parked
    return report


async def check_ledger(engine: AsyncEngine, records: Sequence[InputRecord]) -> None:
    """Transfers exist only for applied events, and their amounts are positive and bounded."""
    event_ids = sorted({eid for item in records if (eid := event_id_of(item.value)) is not None})
    if not event_ids:
        return
    async with engine.connect() as conn:
        transfers = (
            await conn.execute(
                text("SELECT event_id, amount FROM transfers WHERE event_id = ANY(:ids)"),
                {"ids": event_ids},
            )
        ).all()
        applied = set(
            (
                await conn.execute(
                    text("SELECT event_id FROM applied_events WHERE event_id = ANY(:ids)"),
                    {"ids": event_ids},
                )
            ).scalars()
        )
    for transfer in transfers:
        assert 1 <= transfer.amount <= TRANSFER_AMOUNT_MAX, transfer
        assert transfer.event_id in applied, f"a transfer of unapplied {transfer.event_id}"


async def outcome_of(engine: AsyncEngine, item: InputRecord) -> str:
    """What became of one record, from the rows written for its offset."""
    params = {"topic": item.topic, "partition": PARTITION, "offsets": [item.offset]}
    async with engine.connect() as conn:
        row = (await conn.execute(_ROWS_OF_OFFSETS, params)).first()
    if row is None:
        return "nothing"
    return str(row.error) if row.kind == "dead_letter" else str(row.kind)


def batches(items: Sequence[InputRecord], cuts: Sequence[bool]) -> list[list[InputRecord]]:
    """Split `items` after every position whose cut is True."""
    result: list[list[InputRecord]] = [[]]
    for item, cut in zip(items, [*cuts, False], strict=True):
        result[-1].append(item)
        if cut:
            result.append([])
    return [batch for batch in result if batch]


def with_offsets(topic: str, raws: Sequence[hs.RawRecord]) -> list[InputRecord]:
    return [record(topic, raw.value, raw.headers, raw.key) for raw in raws]


async def run_in_batches(
    engine: AsyncEngine,
    ingestor: Ingestor,
    topic: str,
    records: list[InputRecord],
    data: st.DataObject,
) -> None:
    cuts = data.draw(
        st.lists(st.booleans(), min_size=len(records) - 1, max_size=len(records) - 1),
        label="cuts",
    )
    for batch in batches(records, cuts):
        await process_checked(engine, ingestor, topic, batch)
    await check_ledger(engine, records)


# --- (a) valid events, mutated ------------------------------------------------------------------


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
@hostile_settings
@given(data=st.data())
async def test_mutated_events_are_applied_or_dead_lettered_and_never_raise(
    engine: AsyncEngine, ingestor: Ingestor, topic: str, data: st.DataObject
) -> None:
    creator = data.draw(hs.creator_ids(), label="creator")
    clean = data.draw(hs.valid_event(topic, creator), label="clean")
    hostile = data.draw(
        st.lists(hs.hostile_record(topic, creator), min_size=1, max_size=4), label="hostile"
    )
    raws = data.draw(st.permutations([hs.RawRecord(hs.encode(clean)), *hostile]), label="order")
    records = with_offsets(topic, raws)
    await run_in_batches(engine, ingestor, topic, records, data)

    # The valid event among them is not harmed by its neighbours.
    clean_record = next(item for item in records if item.value == hs.encode(clean))
    assert await outcome_of(engine, clean_record) == FRESH_OUTCOME[topic]


# --- (b) raw bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
@hostile_settings
@given(data=st.data())
async def test_bytes_that_are_not_events_are_dead_lettered_and_never_raise(
    engine: AsyncEngine, ingestor: Ingestor, topic: str, data: st.DataObject
) -> None:
    creator = data.draw(hs.creator_ids(), label="creator")
    clean = hs.encode(data.draw(hs.valid_event(topic, creator), label="clean"))
    junk = data.draw(
        st.lists(
            hs.garbage(clean).filter(lambda value: hs.triggers_known_bug(topic, value) is None),
            min_size=1,
            max_size=4,
        ),
        label="junk",
    )
    raws = data.draw(
        st.permutations([hs.RawRecord(clean), *(hs.RawRecord(value) for value in junk)]),
        label="order",
    )
    records = with_offsets(topic, raws)
    await run_in_batches(engine, ingestor, topic, records, data)

    for item in records:
        outcome = await outcome_of(engine, item)
        if item.value == clean:
            assert outcome == FRESH_OUTCOME[topic]
        else:
            assert outcome in PARSE_ERRORS, (item.value, outcome)


RAW_TABLE: list[tuple[bytes | None, str]] = [
    (None, "empty_value"),
    (b"", "malformed_json"),
    (b"   ", "malformed_json"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b'{"event_id": "\xed\xa0\x80"}', "invalid_utf8"),
    (b"[" * 100, "malformed_json"),
    (b"[" * 100 + b"]" * 100, "malformed_json"),
    (b'{"a":' * 120 + b"1" + b"}" * 120, "malformed_json"),
    (b"[" * 200_000, "malformed_json"),
    (b'{"event_id": "a", "event_id": "a"}', "malformed_json"),
    (b'{"event_id": "a", "event_id": "b"}', "malformed_json"),
    (b'{"event_id": "x"', "malformed_json"),
    (b'{"event_id": 1' + b"0" * 5_000 + b"}", "malformed_json"),
    (b"[]", "schema_violation"),
    (b"[{}]", "schema_violation"),
    (b"42", "schema_violation"),
    (b'"gifts"', "schema_violation"),
    (b"null", "schema_violation"),
    (b"{}", "schema_violation"),
    (b'{"event_id": NaN}', "schema_violation"),
    (b'{"event_id": "e", "occurred_at": Infinity}', "schema_violation"),
]


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
async def test_each_kind_of_raw_input_and_an_empty_batch_get_their_outcome(
    engine: AsyncEngine, ingestor: Ingestor, topic: str
) -> None:
    await process_checked(engine, ingestor, topic, [])
    records = [record(topic, value) for value, _ in RAW_TABLE]
    report = await process_checked(engine, ingestor, topic, records)
    errors = {letter.record.offset: letter.error for letter in report.dead_letters}
    assert [errors.get(item.offset) for item in records] == [error for _, error in RAW_TABLE]


async def test_a_megabyte_field_is_dead_lettered_quickly_with_a_short_detail(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str
) -> None:
    gift = {**make.gift(f"c-{unique_id}"), "gift_id": "g" * 1_000_000, "junk": ["x"] * 50_000}
    started = time.monotonic()
    report = await process_checked(
        engine, ingestor, topics.GIFTS_SENT, [record(topics.GIFTS_SENT, hs.encode(gift))]
    )
    assert time.monotonic() - started < 2.0
    assert [letter.error for letter in report.dead_letters] == ["schema_violation"]


# --- (c) an event_id reused with another payload -----------------------------------------------


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
@settings(hostile_settings, max_examples=max(1, EXAMPLES * 3 // 4))
@given(data=st.data())
async def test_an_event_id_reused_with_another_payload_never_replaces_the_first(
    engine: AsyncEngine, ingestor: Ingestor, topic: str, data: st.DataObject
) -> None:
    creator = data.draw(hs.creator_ids(), label="creator")
    gift_event_id = None
    if topic == topics.GIFTS_REVERSED:
        gift = data.draw(hs.valid_event(topics.GIFTS_SENT, creator), label="gift")
        sent = await process_checked(
            engine, ingestor, topics.GIFTS_SENT, [record(topics.GIFTS_SENT, hs.encode(gift))]
        )
        assert sent.applied == 1
        gift_event_id = gift["event_id"]
    first = data.draw(hs.valid_event(topic, creator, gift_event_id=gift_event_id), label="first")
    other = data.draw(
        hs.valid_event(topic, creator, event_id=first["event_id"], gift_event_id=gift_event_id),
        label="other",
    )
    # Each payload in two spellings: the same payload written differently is the same event.
    variants = [hs.encode(first), hs.encode(first, "pretty"), hs.encode(other, "utf8")]
    sequence = data.draw(st.lists(st.sampled_from(variants), min_size=2, max_size=6), label="seq")
    records = [record(topic, value) for value in sequence]
    one_per_batch = data.draw(st.booleans(), label="one_per_batch")
    cut = st.just(True) if one_per_batch else st.booleans()
    cuts = data.draw(st.lists(cut, min_size=len(records) - 1, max_size=len(records) - 1))
    reports = [
        await process_checked(engine, ingestor, topic, batch) for batch in batches(records, cuts)
    ]
    await check_ledger(engine, records)

    # The contract, record by record in stream order: the first payload is applied (or, for a
    # payout result of an unknown cash-out, parked until its request arrives); later, the same
    # payload is a duplicate and another payload a conflict.
    appliable = topic != topics.PAYOUTS_UPDATED
    hashes = [payload_sha256(topic, item.value or b"") for item in records]
    expected: list[str] = []
    for digest in hashes:
        if not expected:
            expected.append("applied" if appliable else "parked")
        else:
            expected.append("duplicate" if digest == hashes[0] else "event_id_conflict")
    letters = {
        letter.record.offset: letter.error for report in reports for letter in report.dead_letters
    }
    got_applied = sum(report.applied for report in reports)
    assert got_applied == expected.count("applied")
    assert sum(report.parked for report in reports) == expected.count("parked")
    # The same in one batch as one a batch: a copy of a refused payout result is refused too.
    assert [letters.get(item.offset, "ok") for item in records] == [
        "ok" if outcome in ("applied", "duplicate", "parked") else outcome for outcome in expected
    ]

    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text(
                    "SELECT payload_sha256 FROM applied_events"
                    " WHERE topic = :topic AND event_id = :event_id"
                ),
                {"topic": topic, "event_id": first["event_id"]},
            )
        ).scalar_one_or_none()
        amounts = sorted(
            (
                await conn.execute(
                    text("SELECT amount FROM transfers WHERE event_id = :event_id"),
                    {"event_id": first["event_id"]},
                )
            ).scalars()
        )
    assert stored == (hashes[0] if appliable else None), "the first payload is the one applied"
    assert amounts == expected_amounts(ingestor, topic, records[0].value or b"", amounts)


def expected_amounts(ingestor: Ingestor, topic: str, value: bytes, stored: list[int]) -> list[int]:
    """The transfer amounts the event in `value` posts; `stored` where this test cannot tell."""
    parsed: Any = CONSUMED_EVENT_MODELS[topic].model_validate_json(value)
    if topic == topics.GIFTS_SENT:
        assert isinstance(parsed, GiftSent)
        card = ingestor.rate_cards.in_force_at(parsed.occurred_at)
        return [gift_transfer(parsed, card).milli_diamonds]
    if topic == topics.TIPS_RECEIVED:
        legs = tip_legs(parsed)
    elif topic == topics.FUND_REWARDED:
        legs = fund_legs(parsed)
    elif topic == topics.MARKETPLACE_PAID:
        legs = marketplace_legs(parsed)
    elif topic == topics.GIFTS_REVERSED:
        assert len(stored) == 2, "a reversal posts its coins and its diamonds"
        return stored
    else:
        return []
    return sorted(leg.amount for leg in legs)


# --- a creator's whole story, in any order, with hostile records in between ---------------------


@st.composite
def story_records(draw: st.DrawFn, creator: str) -> list[tuple[str, bytes | None]]:
    """Every kind of event about one creator, referring to each other: in their natural order
    (profile, gifts and a tip, cash-outs, the bank's answers, reversals), shuffled a little or a
    lot, with redeliveries, and with mutated events and junk of any topic in between."""
    gifts = [make.gift(creator, coins=100, count=50), make.gift(creator, coins=50, count=100)]
    cashouts = [
        make.cashout_request(creator, 2_000),
        make.cashout_request(creator, 2_500),
        make.cashout_request(creator, 1_500, asset="USD"),
    ]
    story: list[tuple[str, dict[str, Any]]] = [
        (topics.CREATORS_UPDATED, make.creator_update(creator)),
        *((topics.GIFTS_SENT, gift) for gift in gifts),
        (topics.TIPS_RECEIVED, make.tip(creator, amount=500_000)),
        *((topics.CASHOUTS_REQUESTED, cashout) for cashout in cashouts),
    ]
    for cashout in cashouts:
        cashout_id = str(cashout["event_id"])
        story += [
            (topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, "paid")),
            (topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, "failed", "R01")),
            (topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, "returned", "AC04")),
        ]
    story += [
        (topics.GIFTS_REVERSED, make.reversal(creator, str(gifts[0]["event_id"]))),
        (topics.GIFTS_REVERSED, make.reversal(creator, str(gifts[0]["event_id"]), "fraud")),
        (topics.GIFTS_REVERSED, make.reversal(creator, str(gifts[1]["event_id"]), "refund")),
    ]
    entries: list[tuple[str, bytes | None]] = [(topic, hs.encode(item)) for topic, item in story]
    shuffle = draw(st.sampled_from([0, 0, 1, 3, len(entries)]))
    noise = draw(
        st.lists(st.integers(-shuffle, shuffle), min_size=len(entries), max_size=len(entries))
    )
    sequence = [entries[i] for i in sorted(range(len(entries)), key=lambda i: (i + noise[i], i))]
    extras: list[tuple[str, bytes | None]] = [
        entries[i] for i in draw(st.lists(st.sampled_from(range(len(entries))), max_size=5))
    ]
    for _ in range(draw(st.integers(0, 3))):
        topic = draw(st.sampled_from(topics.CONSUMED_TOPICS))
        extras.append((topic, draw(hs.hostile_record(topic, creator)).value))
    for _ in range(draw(st.integers(0, 2))):
        topic, value = draw(st.sampled_from(entries))
        junk = draw(hs.garbage(value or b"{}"))
        if hs.triggers_known_bug(topic, junk) is None:
            extras.append((topic, junk))
    for extra in extras:
        sequence.insert(draw(st.integers(0, len(sequence))), extra)
    return sequence


@settings(hostile_settings, max_examples=max(1, EXAMPLES * 2 // 3))
@given(data=st.data())
async def test_a_creators_story_in_any_order_keeps_every_invariant(
    engine: AsyncEngine, ingestor: Ingestor, data: st.DataObject
) -> None:
    creator = data.draw(hs.creator_ids(), label="creator")
    steps = data.draw(story_records(creator), label="steps")
    records = [record(topic, value) for topic, value in steps]
    # Consecutive records of one topic may share a batch, as the consumer would give them.
    groups = [list(group) for _, group in itertools.groupby(records, key=lambda r: r.topic)]
    for group in groups:
        cuts = data.draw(st.lists(st.booleans(), min_size=len(group) - 1, max_size=len(group) - 1))
        for batch in batches(group, cuts):
            await process_checked(engine, ingestor, batch[0].topic, batch)
    await check_ledger(engine, records)
    async with engine.connect() as conn:
        held = (
            await conn.execute(
                text(
                    "SELECT credits_posted - debits_posted - debits_pending FROM accounts"
                    " WHERE name = :name"
                ),
                {"name": f"creator:{creator}:DIAMOND:held"},
            )
        ).scalar_one_or_none()
        statuses = set(
            (
                await conn.execute(
                    text("SELECT status FROM cashouts WHERE creator_id = :creator"),
                    {"creator": creator},
                )
            ).scalars()
        )
    for status in statuses:
        event(f"a cash-out ended {status}")
    assert held is None or held >= 0, "held diamonds never go below zero"
    assert statuses <= set(CASHOUT_STATUSES)


# --- the bugs found, pinned ---------------------------------------------------------------------


def _random_ascii(length: int) -> str:
    rng = random.Random(length)
    return "".join(rng.choice(string.ascii_letters) for _ in range(length))


async def _bad_next_to_good(
    engine: AsyncEngine, ingestor: Ingestor, topic: str, bad: bytes, good: dict[str, Any]
) -> tuple[BatchReport, InputRecord, InputRecord]:
    """One bad record and one valid one in a batch: the bad one must not take the good one
    down with it (an exception fails the whole batch, and the consumer retries it forever)."""
    bad_record, good_record = record(topic, bad), record(topic, hs.encode(good))
    report = await process_checked(engine, ingestor, topic, [bad_record, good_record])
    return report, bad_record, good_record


@pytest.mark.parametrize(
    ("event_id", "error"),
    [
        ("evt\u0000nul", "schema_violation"),
        # A string with an unpaired surrogate escape is not JSON the event parser reads.
        ("evt\ud800", "malformed_json"),
        (_random_ascii(10_000), "schema_violation"),
    ],
    ids=["nul", "lone_surrogate", "10k_chars"],
)
async def test_an_unstorable_event_id_on_an_invalid_event_is_dead_lettered(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str, event_id: str, error: str
) -> None:
    creator = f"c-{unique_id}"
    bad = hs.encode({**make.gift(creator), "event_id": event_id})
    report, _, good_record = await _bad_next_to_good(
        engine, ingestor, topics.GIFTS_SENT, bad, make.gift(creator)
    )
    assert [letter.error for letter in report.dead_letters] == [error]
    assert await outcome_of(engine, good_record) == "applied"


async def test_an_unknown_field_whose_name_holds_nul_is_dead_lettered(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str
) -> None:
    creator = f"c-{unique_id}"
    bad = hs.encode({**make.gift(creator), "bonus\u0000": 1})
    report, _, good_record = await _bad_next_to_good(
        engine, ingestor, topics.GIFTS_SENT, bad, make.gift(creator)
    )
    assert [letter.error for letter in report.dead_letters] == ["schema_violation"]
    assert await outcome_of(engine, good_record) == "applied"


OUT_OF_RANGE_CASES = [
    (topics.GIFTS_SENT, "9999-12-31T23:59:59-01:00"),
    (topics.GIFTS_SENT, "0001-01-01T00:00:00+01:00"),
    (topics.TIPS_RECEIVED, "9999-12-31T23:59:59-01:00"),
    (topics.CREATORS_UPDATED, "9999-12-31T23:59:59-01:00"),
    (topics.CASHOUTS_REQUESTED, "9999-12-31T23:59:59-01:00"),
]


@pytest.mark.parametrize(("topic", "occurred_at"), OUT_OF_RANGE_CASES)
async def test_an_occurred_at_beyond_the_datetime_range_is_refused_not_raised(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str, topic: str, occurred_at: str
) -> None:
    creator = f"c-{unique_id}"
    builders: dict[str, Callable[[str], dict[str, Any]]] = {
        topics.GIFTS_SENT: make.gift,
        topics.TIPS_RECEIVED: make.tip,
        topics.CREATORS_UPDATED: make.creator_update,
        topics.CASHOUTS_REQUESTED: make.cashout_request,
    }
    build = builders[topic]
    bad = hs.encode({**build(creator), "occurred_at": occurred_at})
    _, bad_record, good_record = await _bad_next_to_good(
        engine, ingestor, topic, bad, build(creator)
    )
    assert await outcome_of(engine, good_record) == "applied"
    assert await outcome_of(engine, bad_record) in ("applied", "schema_violation")


async def test_a_reversal_with_a_nul_in_a_header_key_is_parked(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str
) -> None:
    creator = f"c-{unique_id}"
    reversal = make.reversal(creator, f"gift-{unique_id}-not-yet-sent")
    item = record(topics.GIFTS_REVERSED, hs.encode(reversal), (("trace\u0000id", b"t-1"),))
    report = await process_checked(engine, ingestor, topics.GIFTS_REVERSED, [item])
    assert report.parked == 1


async def test_a_diamond_cashout_above_a_billion_diamonds_is_refused_not_raised(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str
) -> None:
    creator = f"c-{unique_id}"
    bad = hs.encode(make.cashout_request(creator, diamonds=10**9 + 1))
    _, bad_record, good_record = await _bad_next_to_good(
        engine, ingestor, topics.CASHOUTS_REQUESTED, bad, make.cashout_request(creator)
    )
    assert await outcome_of(engine, good_record) == "applied"
    assert await outcome_of(engine, bad_record) in ("applied", "schema_violation")


async def test_a_record_with_many_keys_and_one_repeat_is_refused_quickly(
    engine: AsyncEngine, ingestor: Ingestor
) -> None:
    keys = ",".join(f'"k{index}": 0' for index in range(6_000))
    value = ("{" + keys + ', "k0": 1}').encode()
    started = time.monotonic()
    report = await process_checked(
        engine, ingestor, topics.GIFTS_SENT, [record(topics.GIFTS_SENT, value)]
    )
    elapsed = time.monotonic() - started
    assert [letter.error for letter in report.dead_letters] == ["malformed_json"]
    # Linear in the keys: a check that compared every key with every other (18 million pairs
    # here) would take seconds; 2 s leaves a busy machine room.
    assert elapsed < 2.0, f"{elapsed:.2f} s for {len(value)} bytes"


@pytest.mark.parametrize("same_payload", [True, False], ids=["redelivered", "other_payload"])
async def test_a_parked_reversal_delivered_again_is_a_duplicate_or_a_conflict(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str, same_payload: bool
) -> None:
    creator = f"c-{unique_id}"
    reversal = make.reversal(creator, f"gift-{unique_id}-late")
    again = reversal if same_payload else {**reversal, "reason": "fraud"}
    first = await process_checked(
        engine,
        ingestor,
        topics.GIFTS_REVERSED,
        [record(topics.GIFTS_REVERSED, hs.encode(reversal))],
    )
    assert first.parked == 1
    second = await process_checked(
        engine, ingestor, topics.GIFTS_REVERSED, [record(topics.GIFTS_REVERSED, hs.encode(again))]
    )
    if same_payload:
        assert (second.duplicates, second.parked) == (1, 0)
    else:
        assert [letter.error for letter in second.dead_letters] == ["event_id_conflict"]


@pytest.mark.parametrize("later", ["applied_payload", "other_payload"])
async def test_copies_in_one_batch_are_judged_against_the_applied_payload(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str, later: str
) -> None:
    """After A is applied, the batch [B, X]: B is a conflict; X = A is a duplicate (a no-op,
    as the contract says), X = B is a conflict, exactly as when each comes in its own batch."""
    applied = make.fund_reward(f"c-{unique_id}", 100)
    other = {**applied, "amount": 999}
    topic = topics.FUND_REWARDED
    await process_checked(engine, ingestor, topic, [record(topic, hs.encode(applied))])
    x = applied if later == "applied_payload" else other
    report = await process_checked(
        engine, ingestor, topic, [record(topic, hs.encode(other)), record(topic, hs.encode(x))]
    )
    expected = ["event_id_conflict"] if later == "applied_payload" else ["event_id_conflict"] * 2
    assert [letter.error for letter in report.dead_letters] == expected
    assert report.duplicates == (1 if later == "applied_payload" else 0)


async def _refused_then_corrected(
    engine: AsyncEngine, ingestor: Ingestor, topic: str, together: bool
) -> tuple[list[str], dict[str, int]]:
    """An event refused after it was found new (a reversal naming another creator's gift; a
    tip whose card charge another tip credited), the same again, then corrected under its
    event_id, in one batch or one a batch: each record's outcome, and the creator's balances."""
    creator = f"c-{uuid.uuid4().hex[:12]}"
    if topic == topics.GIFTS_REVERSED:
        gift = make.gift(creator, coins=10)
        await process_checked(
            engine, ingestor, topics.GIFTS_SENT, [record(topics.GIFTS_SENT, make.encode(gift))]
        )
        refused = make.reversal(f"other-{creator}", gift["event_id"])
        corrected = {**refused, "creator_id": creator}
    else:
        credited = make.tip(creator, 1_000)
        await process_checked(engine, ingestor, topic, [record(topic, make.encode(credited))])
        refused = {**make.tip(creator, 700), "charge_id": credited["charge_id"]}
        corrected = {**refused, "charge_id": f"ch-{uuid.uuid4().hex[:8]}"}
    stream = [record(topic, make.encode(event)) for event in (refused, refused, corrected)]
    parts = [stream] if together else [[item] for item in stream]
    reports = [await process_checked(engine, ingestor, topic, part) for part in parts]
    letters = {letter.record.offset: letter.error for r in reports for letter in r.dead_letters}
    async with engine.connect() as conn:
        balances = {b.name: b.posted for b in await creator_balances(conn, creator)}
    return [letters.get(item.offset, "ok") for item in stream], balances


@pytest.mark.parametrize("topic", [topics.GIFTS_REVERSED, topics.TIPS_RECEIVED])
async def test_copies_of_an_event_refused_as_new_are_judged_alike_in_any_batches(
    engine: AsyncEngine, ingestor: Ingestor, topic: str
) -> None:
    """An event found new and then refused is not applied: a copy of it is decided as itself,
    and is refused again, and a corrected payload under its event_id is applied, whether they
    come in the refused one's batch or in batches of their own (in its batch they were judged
    against its payload as if it had been applied: a duplicate, and an `event_id_conflict`)."""
    one_batch = await _refused_then_corrected(engine, ingestor, topic, together=True)
    one_a_batch = await _refused_then_corrected(engine, ingestor, topic, together=False)
    reason = "creator_mismatch" if topic == topics.GIFTS_REVERSED else "charge_already_applied"
    assert one_batch[0] == one_a_batch[0] == [reason, reason, "ok"]
    assert [sorted(balances.values()) for balances in (one_batch[1], one_a_batch[1])] == [
        sorted(one_a_batch[1].values())
    ] * 2


# --- at the end ---------------------------------------------------------------------------------


async def test_the_ledger_verifies_clean_after_all_of_it(engine: AsyncEngine) -> None:
    async with one_snapshot(engine) as conn:
        assert await verify(conn) == []
        unknown = (
            await conn.execute(
                text(
                    "SELECT DISTINCT error FROM dead_letters WHERE kafka_partition = :partition"
                    " AND NOT error = ANY(:known)"
                ),
                {"partition": PARTITION, "known": sorted(KNOWN_ERRORS)},
            )
        ).scalars()
        assert list(unknown) == []


@pytest.mark.parametrize("currency", sorted(hs.UNSEEDED_CURRENCIES))
async def test_a_tip_in_every_currency_the_schema_accepts_is_applied(
    engine: AsyncEngine, ingestor: Ingestor, unique_id: str, currency: str
) -> None:
    creator = f"c-{unique_id}"
    bad = hs.encode({**make.tip(creator), "currency": currency})
    _, bad_record, good_record = await _bad_next_to_good(
        engine, ingestor, topics.TIPS_RECEIVED, bad, make.tip(creator)
    )
    assert await outcome_of(engine, good_record) == "applied"
    assert await outcome_of(engine, bad_record) in ("applied", "schema_violation")
