"""A poison record, one that fails its batch every time with an error that is not an outage, is
isolated: the rest of its batch is applied, it alone is dead-lettered as `processing_failed` with
the error, nothing is skipped and nothing doubled.

The poison is real: a creator whose Diamond account already holds credits just under PostgreSQL's
bigint, so that one more gift would overflow the account's totals."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger.chart import creator_diamonds_available
from ledger.model import BIGINT_MAX, AccountFlags, PostResult, Transfer, TransferCode
from ledger.verify import verify
from schemas import topics
from services.app.consumer import is_database_outage
from services.app.poison import PROCESSING_FAILED, apply_isolating_poison, processing_failed
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import BatchReport, DeadLetter, InputRecord
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, make_ingestor, wait_until
from tests.ledger_helpers import ledger_problems, make_accounts, new_id, one_snapshot

DIAMONDS_PER_COIN_MILLI = 500
GIFT_COUNT = 60
PARTITIONS = 4


def _creator() -> str:
    return f"creator-{uuid.uuid4().hex[:10]}"


async def _poisoned_creator(ingestor: Ingestor) -> str:
    """A creator whose Diamonds available are 100 milli-diamonds short of bigint's maximum."""
    creator = _creator()
    ledger = ingestor.ledger
    [source] = await make_accounts(ledger, f"poison-{creator}", [AccountFlags.NONE])
    spec = creator_diamonds_available(creator)
    target = (await ledger.account_ids([spec]))[spec.name]
    results = await ledger.post(
        [Transfer(new_id(), source, target, BIGINT_MAX - 100, TransferCode.SYNTHETIC)]
    )
    assert results == [PostResult.OK]
    return creator


async def _balances(engine: AsyncEngine, creators: list[str]) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT creator_id, credits_posted - debits_posted AS balance FROM accounts"
                " WHERE creator_id = ANY(:c) AND kind = 'creator_diamonds_available'"
            ),
            {"c": creators},
        )
        return {row.creator_id: int(row.balance) for row in rows}


async def _applied(engine: AsyncEngine, event_ids: list[str]) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_id FROM applied_events WHERE topic = :topic AND event_id = ANY(:ids)"
            ),
            {"topic": topics.GIFTS_SENT, "ids": event_ids},
        )
        return {row.event_id for row in rows}


def _stream(creators: list[str], poisoned: str) -> tuple[list[dict[str, object]], str]:
    """GIFT_COUNT gifts to `creators`, with one gift to `poisoned` in the middle."""
    gifts: list[dict[str, object]] = [
        make.gift(creators[index % len(creators)], coins=1 + index % 3)
        for index in range(GIFT_COUNT)
    ]
    poison = make.gift(poisoned, coins=1)
    gifts.insert(GIFT_COUNT // 2, poison)
    return gifts, str(poison["event_id"])


def _expected(gifts: list[dict[str, object]], poisoned: str) -> dict[str, int]:
    expected: Counter[str] = Counter()
    for gift in gifts:
        if gift["creator_id"] != poisoned:
            expected[str(gift["creator_id"])] += int(str(gift["coins"])) * DIAMONDS_PER_COIN_MILLI
    return dict(expected)


async def test_one_poison_in_a_batch_over_several_partitions_is_dead_lettered_alone(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    prefix = f"p{uuid.uuid4().hex[:8]}."
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    poisoned = await _poisoned_creator(ingestor)
    creators = [_creator() for _ in range(7)]
    gifts, poison_id = _stream(creators, poisoned)
    records = [
        InputRecord(topics.GIFTS_SENT, index % PARTITIONS, index, None, make.encode(gift))
        for index, gift in enumerate(gifts)
    ]
    attempts: list[int] = []

    async def apply(part: object) -> BatchReport:
        assert isinstance(part, list)
        attempts.append(len(part))
        return await ingestor.process(topics.GIFTS_SENT, part)

    async def dead_letter(letters: object) -> BatchReport:
        assert isinstance(letters, list)
        return await ingestor.dead_letter(topics.GIFTS_SENT, letters)

    report = await apply_isolating_poison(
        topics.GIFTS_SENT,
        records,
        apply=apply,
        dead_letter=dead_letter,
        is_outage=lambda error: False,
        attempts_max=3,
    )

    assert report.applied == GIFT_COUNT
    assert [(letter.event_id, letter.error) for letter in report.dead_letters] == [
        (poison_id, PROCESSING_FAILED)
    ]
    # The driver's reason on one line, not the batch's statement SQLAlchemy's message adds.
    assert report.dead_letters[0].detail == "DBAPIError: bigint out of range (SQLSTATE 22003)"
    assert attempts[:3] == [len(records)] * 3, "the whole batch is tried three times first"
    tried_again = [r.getMessage() for r in caplog.records if "trying it again" in r.getMessage()]
    assert tried_again == [
        f"batch of {len(records)} from {topics.GIFTS_SENT} failed, attempt {attempt} of 3"
        " (DBAPIError: bigint out of range (SQLSTATE 22003)); trying it again"
        for attempt in (1, 2)
    ], "each failed attempt before the split is logged, with its error on the same line"
    assert await _balances(engine, creators) == _expected(gifts, poisoned)
    assert (await _balances(engine, [poisoned]))[poisoned] == BIGINT_MAX - 100
    event_ids = [str(gift["event_id"]) for gift in gifts]
    assert await _applied(engine, event_ids) == set(event_ids) - {poison_id}
    async with one_snapshot(engine) as conn:
        recorded = await conn.execute(
            text("SELECT event_id, error, detail FROM dead_letters WHERE topic_prefix = :prefix"),
            {"prefix": prefix},
        )
        assert [(row.event_id, row.error) for row in recorded] == [(poison_id, PROCESSING_FAILED)]
        assert await verify(conn) == []
    counts = ingestor.counts
    assert (counts.consumed, counts.applied, counts.dead_lettered) == (
        GIFT_COUNT + 1,
        GIFT_COUNT,
        1,
    )
    assert counts.balanced()


async def test_a_poison_from_kafka_reaches_the_dead_letter_topic_and_blocks_nothing(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    poisoned = await _poisoned_creator(consumers.ingestor)
    creators = [_creator() for _ in range(9)]
    gifts, poison_id = _stream(creators, poisoned)
    for gift in gifts:  # sent together, so the consumer fetches them in few batches
        await consumers.producer.send(
            consumers.prefix + topics.GIFTS_SENT,
            value=make.encode(gift),
            key=str(gift["creator_id"]).encode(),
        )
    await consumers.producer.flush()
    event_ids = [str(gift["event_id"]) for gift in gifts]

    async def all_but_the_poison_applied() -> bool:
        return await _applied(engine, event_ids) == set(event_ids) - {poison_id}

    await wait_until(all_but_the_poison_applied)
    letters = await consumers.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_SENT),
        lambda records: any(
            json.loads(record.value).get("event_id") == poison_id for record in records
        ),
    )
    [letter] = [r for r in letters if json.loads(r.value).get("event_id") == poison_id]
    headers = dict(letter.headers)
    assert headers["dlq.error"] == PROCESSING_FAILED.encode()
    assert headers["dlq.event_id"] == poison_id.encode()
    assert await _balances(engine, creators) == _expected(gifts, poisoned)
    assert await ledger_problems(engine) == []
    assert consumers.ingestor.counts.balanced()


def test_a_dead_letter_of_a_poison_names_its_event() -> None:
    gift = make.gift(_creator())
    record = InputRecord(topics.GIFTS_SENT, 2, 7, None, make.encode(gift))
    letter = processing_failed(topics.GIFTS_SENT, record, ValueError("x" * 2_000))
    assert isinstance(letter, DeadLetter)
    assert (letter.error, letter.event_id) == (PROCESSING_FAILED, gift["event_id"])
    assert letter.detail.startswith("ValueError: xxx")
    assert len(letter.detail) == 500


async def test_a_database_that_cannot_take_the_work_now_is_an_outage_not_a_poison(
    engine: AsyncEngine,
) -> None:
    """Errors that say the database cannot do the work now are outages: the batch waits and is
    tried again, and no valid record of it is dead-lettered as `processing_failed`. Each error
    here is real: a pool that hands out no connection within its timeout, and a write in a
    read-only transaction (a standby, as after a failover)."""
    tight = create_async_engine(
        engine.url.render_as_string(hide_password=False),
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.1,
    )
    try:
        async with tight.connect():
            with pytest.raises(PoolTimeoutError) as no_connection:
                async with tight.connect():
                    pass
    finally:
        await tight.dispose()
    async with engine.connect() as conn:
        await conn.execute(text("SET TRANSACTION READ ONLY"))
        with pytest.raises(DBAPIError) as read_only:
            await conn.execute(text("CREATE TEMPORARY TABLE read_only_probe (x int)"))
    assert getattr(read_only.value.orig, "sqlstate", None) == "25006"

    for error in (no_connection.value, read_only.value):
        assert is_database_outage(error), error
        records = [InputRecord(topics.GIFTS_SENT, 0, 0, None, b"{}")]

        async def apply(part: object, error: Exception = error) -> BatchReport:
            raise error

        async def dead_letter(letters: object) -> BatchReport:
            raise AssertionError("an outage dead-lettered a record")

        with pytest.raises(type(error)):
            await apply_isolating_poison(
                topics.GIFTS_SENT,
                records,
                apply=apply,
                dead_letter=dead_letter,
                is_outage=is_database_outage,
                attempts_max=3,
            )


async def test_an_error_is_an_outage_by_what_the_server_said_not_by_the_statement(
    engine: AsyncEngine,
) -> None:
    """A statement whose text, or whose data, holds the word "connection" and fails for its data
    is a poison, not an outage: one taken for an outage is rewound and fetched again for ever,
    and its partition stalls behind it."""
    async with engine.connect() as conn:
        with pytest.raises(DBAPIError) as overflow:
            await conn.execute(
                text("SELECT CAST(:note AS text), CAST(:big AS bigint) + 1 AS connection_count"),
                {"note": "a gift sent over a lost connection", "big": BIGINT_MAX},
            )
    assert "connection" in str(overflow.value), "SQLAlchemy's message names the statement"
    assert not is_database_outage(overflow.value), overflow.value
