"""Parked reversals swept by several processes at once: each row is taken by one sweep, which
keeps it while its process runs; the others skip it, and take it over once the claim of a sweep
that stopped has run out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.queries import creator_balances
from schemas import topics
from services.ingestion.event_store import EventStore
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import DeadLetter, InputRecord
from services.rates.rate_cards import RateCardBook, load_rate_cards
from tests import event_factory as make
from tests.ingestion_fixtures import make_ingestor, wait_until

WRITER = "giftledger_writer"
SWEEPER_COUNT = 3
PARKED_COUNT = 24
PARK_S = 3_600.0  # no reversal here reaches its deadline
SHORT_CLAIM_S = 1.0


@pytest_asyncio.fixture(loop_scope="session")
async def writer_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The sweeps write as the services do."""
    engine = create_engine(database_url, pool_size=6, role=WRITER)
    yield engine
    await engine.dispose()


async def _rate_cards(engine: AsyncEngine) -> RateCardBook:
    async with engine.connect() as conn:
        return await load_rate_cards(conn)


def _ingestor(engine: AsyncEngine, rate_cards: RateCardBook, prefix: str) -> Ingestor:
    return make_ingestor(engine, rate_cards, topic_prefix=prefix, park_s=PARK_S)


async def _park_reversals(ingestor: Ingestor, count: int) -> list[InputRecord]:
    """`count` reversals parked before their gifts; returns the gifts, not yet applied."""
    reversals: list[InputRecord] = []
    gifts: list[InputRecord] = []
    for offset in range(count):
        creator = f"creator-{uuid.uuid4().hex[:10]}"
        gift = make.gift(creator, coins=4)
        reversal = make.reversal(creator, str(gift["event_id"]))
        gifts.append(InputRecord(topics.GIFTS_SENT, 0, offset, None, make.encode(gift)))
        reversals.append(InputRecord(topics.GIFTS_REVERSED, 0, offset, None, make.encode(reversal)))
    report = await ingestor.process(topics.GIFTS_REVERSED, reversals)
    assert report.parked == count
    return gifts


async def _taken(store: EventStore, engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        parsed = await store.read_parked(conn, topics.GIFTS_REVERSED)
    return {item.event.event_id for item in parsed}


async def _parked_ids(engine: AsyncEngine, prefix: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_id FROM parked_events WHERE topic_prefix = :p"), {"p": prefix}
        )
        return {row.event_id for row in rows}


async def test_sweeps_at_once_take_each_parked_row_once_and_keep_it(
    engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    prefix = f"sweep{uuid.uuid4().hex[:6]}."
    rate_cards = await _rate_cards(engine)
    await _park_reversals(_ingestor(engine, rate_cards, prefix), PARKED_COUNT)
    stores = [EventStore(prefix, PARK_S) for _ in range(SWEEPER_COUNT)]

    taken = await asyncio.gather(*(_taken(store, writer_engine) for store in stores))
    assert sum(len(rows) for rows in taken) == PARKED_COUNT  # nobody took a row twice
    assert set().union(*taken) == await _parked_ids(engine, prefix)  # and every row was taken
    assert await _taken(EventStore(prefix, PARK_S), writer_engine) == set()  # a newcomer: none
    # Each sweep takes its own rows again at its next round, and only those.
    again = await asyncio.gather(*(_taken(store, writer_engine) for store in stores))
    assert again == taken


async def test_processes_sweeping_at_once_apply_each_parked_reversal_once(
    engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    prefix = f"sweep{uuid.uuid4().hex[:6]}."
    rate_cards = await _rate_cards(engine)
    first = _ingestor(engine, rate_cards, prefix)
    gifts = await _park_reversals(first, PARKED_COUNT)
    assert (await first.process(topics.GIFTS_SENT, gifts)).applied == PARKED_COUNT

    sweepers = [_ingestor(writer_engine, rate_cards, prefix) for _ in range(SWEEPER_COUNT)]
    reports = await asyncio.gather(
        *(sweeper.retry_parked(topics.GIFTS_REVERSED) for sweeper in sweepers)
    )
    assert sum(report.applied for report in reports) == PARKED_COUNT
    assert [(report.duplicates, report.dead_letters) for report in reports] == [(0, [])] * len(
        reports
    )
    assert await _parked_ids(engine, prefix) == set()


async def test_a_stopped_sweeps_rows_go_to_another_once_its_claim_runs_out(
    engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    prefix = f"sweep{uuid.uuid4().hex[:6]}."
    rate_cards = await _rate_cards(engine)
    first = _ingestor(engine, rate_cards, prefix)
    gifts = await _park_reversals(first, 2)
    assert (await first.process(topics.GIFTS_SENT, gifts)).applied == 2
    stopped = EventStore(prefix, PARK_S, parked_claim_s=SHORT_CLAIM_S)
    assert len(await _taken(stopped, writer_engine)) == 2
    # Its process stops here, before retrying them.

    survivor = _ingestor(writer_engine, rate_cards, prefix)
    applied = 0

    async def survivor_applied_them() -> bool:
        nonlocal applied
        applied += (await survivor.retry_parked(topics.GIFTS_REVERSED)).applied
        return applied == 2

    await wait_until(survivor_applied_them)
    assert await _parked_ids(engine, prefix) == set()


SHORT_PARK_S = 0.01  # every reversal parked here is past its deadline at the first sweep


async def _park_one_past_its_deadline(ingestor: Ingestor) -> tuple[str, InputRecord, str]:
    """A reversal parked before its gift, its wait over; returns its creator, the gift (not
    applied) and the reversal's event_id."""
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    gift = make.gift(creator, coins=4)
    reversal = make.reversal(creator, str(gift["event_id"]))
    record = InputRecord(topics.GIFTS_REVERSED, 0, 7, None, make.encode(reversal))
    assert (await ingestor.process(topics.GIFTS_REVERSED, [record])).parked == 1
    await asyncio.sleep(SHORT_PARK_S * 5)
    return (
        creator,
        InputRecord(topics.GIFTS_SENT, 0, 7, None, make.encode(gift)),
        str(reversal["event_id"]),
    )


async def _creator_diamonds(engine: AsyncEngine, creator: str) -> int:
    async with engine.connect() as conn:
        balances = await creator_balances(conn, creator)
    return sum(balance.posted for balance in balances if balance.name.endswith(":available"))


async def _reversal_applied(engine: AsyncEngine, event_id: str) -> bool:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT 1 FROM applied_events WHERE topic = :topic AND event_id = :id"),
            {"topic": topics.GIFTS_REVERSED, "id": event_id},
        )
        return found.first() is not None


async def test_a_sweep_stopped_after_publishing_leaves_the_verdict_for_the_next_one(
    engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    """The sweep publishes a dead letter and stops before its event leaves the parking (a crash,
    a lost commit); the gift arrives; the next sweep publishes the same verdict again and does
    not apply the reversal, which the dead-letter topic already has."""
    prefix = f"sweep{uuid.uuid4().hex[:6]}."
    rate_cards = await _rate_cards(engine)
    sweeper = make_ingestor(writer_engine, rate_cards, topic_prefix=prefix, park_s=SHORT_PARK_S)
    creator, gift, reversal_id = await _park_one_past_its_deadline(sweeper)
    published: list[DeadLetter] = []

    async def publish_then_stop(letters: list[DeadLetter]) -> None:
        published.extend(letters)
        raise RuntimeError("the process stopped right after the publish")

    with pytest.raises(RuntimeError, match="stopped right after"):
        await sweeper.retry_parked(topics.GIFTS_REVERSED, publish_dead_letters=publish_then_stop)
    assert (await sweeper.process(topics.GIFTS_SENT, [gift])).applied == 1

    async def publish(letters: list[DeadLetter]) -> None:
        published.extend(letters)

    again = await sweeper.retry_parked(topics.GIFTS_REVERSED, publish_dead_letters=publish)
    assert again.applied == 0
    assert [(letter.error, letter.event_id) for letter in published] == [
        ("gift_not_found", reversal_id)
    ] * 2
    assert published[0].record == published[1].record
    assert not await _reversal_applied(engine, reversal_id)
    assert await _parked_ids(engine, prefix) == set()
    assert await _creator_diamonds(engine, creator) > 0  # the gift stands, not reversed
    # Counted once, by the sweep after which it left the parking: the counts still balance.
    counts = sweeper.counts
    assert (counts.parked, counts.unparked_dead_lettered, counts.still_parked) == (1, 1, 0)


async def test_a_sweep_whose_claim_ran_out_while_it_published_is_not_overruled(
    engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    """A sweep's publish outlasts its claim; meanwhile the gift arrives and another sweep takes
    the row: it gives the first sweep's verdict again rather than applying the reversal."""
    prefix = f"sweep{uuid.uuid4().hex[:6]}."
    rate_cards = await _rate_cards(engine)
    slow = make_ingestor(writer_engine, rate_cards, topic_prefix=prefix, park_s=SHORT_PARK_S)
    slow.events.parked_claim_s = SHORT_CLAIM_S
    creator, gift, reversal_id = await _park_one_past_its_deadline(slow)
    slow_letters: list[DeadLetter] = []
    publishing, release = asyncio.Event(), asyncio.Event()

    async def publish_slowly(letters: list[DeadLetter]) -> None:
        slow_letters.extend(letters)
        publishing.set()
        await release.wait()

    slow_sweep = asyncio.create_task(
        slow.retry_parked(topics.GIFTS_REVERSED, publish_dead_letters=publish_slowly)
    )
    await asyncio.wait_for(publishing.wait(), 30)
    other = make_ingestor(writer_engine, rate_cards, topic_prefix=prefix, park_s=SHORT_PARK_S)
    assert (await other.process(topics.GIFTS_SENT, [gift])).applied == 1
    await asyncio.sleep(SHORT_CLAIM_S * 1.5)  # the slow sweep's claim runs out

    other_letters: list[DeadLetter] = []

    async def publish(letters: list[DeadLetter]) -> None:
        other_letters.extend(letters)

    report = await other.retry_parked(topics.GIFTS_REVERSED, publish_dead_letters=publish)
    release.set()
    await asyncio.wait_for(slow_sweep, 30)
    assert report.applied == 0
    assert [letter.error for letter in slow_letters + other_letters] == ["gift_not_found"] * 2
    assert not await _reversal_applied(engine, reversal_id)
    assert await _parked_ids(engine, prefix) == set()
    assert await _creator_diamonds(engine, creator) > 0
