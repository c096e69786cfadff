"""Transfers pre-summed per UTC day (`ledger.rollups`): the roller sums final days once and
exactly, and the journal (whole and a few lines a page), the console's overview and the API's
gifts report read the same figures with no day rolled, some rolled and all rolled.

Each part runs on a database of its own (the roller sums the whole ledger). Past transfers are
stamped through a `test_clock.clock_timestamp()` the test sets, as in test_close_and_journal;
the roller runs on an ordinary engine, with the real clock, so every past day is final to it.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ledger.chart import AccountKind, AccountSpec
from ledger.database import create_engine
from ledger.journal import JournalBasis, asset_totals, journal_basis, journal_page
from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.periods import Period, period_of
from ledger.rollups import (
    CHECK_ACCOUNTS,
    CHECK_COUNT,
    CHECK_GIFTS,
    FINAL_AFTER,
    day_start,
    last_final_day,
    roll_all_days,
    roll_days,
    rolled_day_differences,
)
from ledger.service import Ledger
from schemas.reports import GIFT_GROUPINGS
from services.api.queries import gifts_report
from services.console.reads import overview_gifts
from tests.fresh_database import fresh_database

TEST_CLOCK = """
CREATE SCHEMA test_clock;
CREATE TABLE test_clock.moment (at timestamptz NOT NULL);
INSERT INTO test_clock.moment VALUES ('2001-01-01T00:00:00Z');
CREATE FUNCTION test_clock.clock_timestamp() RETURNS timestamptz
    LANGUAGE sql VOLATILE AS 'SELECT at FROM test_clock.moment';
GRANT USAGE ON SCHEMA test_clock TO giftledger_writer, giftledger_reader;
GRANT SELECT ON test_clock.moment TO giftledger_writer, giftledger_reader;
"""

ACCOUNT_COUNT = 3
# Lines per page when the journal is read a page at a time: pages that end inside days.
JOURNAL_SMALL_PAGE = 2
DAYS_PER_EXAMPLE = 5
# Examples take consecutive blocks of days from here; the block of 2002-01-30 crosses a month.
FIRST_DAY = date(2002, 1, 30)
SURFACES = ("live", "video", None)


@dataclass
class Books:
    owner: AsyncEngine
    past: Ledger
    accounts: list[int]
    examples: itertools.count[int]


async def _with_test_clock(url: str) -> tuple[AsyncEngine, AsyncEngine]:
    owner = create_engine(url, pool_size=4)
    async with owner.begin() as conn:
        for statement in TEST_CLOCK.strip().split(";\n"):
            await conn.execute(text(statement))
    past = create_async_engine(
        url,
        connect_args={
            "server_settings": {"search_path": "test_clock, pg_catalog, public", "timezone": "UTC"}
        },
    )
    return owner, past


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def books(postgres_admin_url: str) -> AsyncIterator[Books]:
    async with fresh_database(postgres_admin_url) as url:
        owner, past_engine = await _with_test_clock(url)
        past = Ledger(past_engine)
        prefix = uuid.uuid4().hex[:8]
        specs = [
            AccountSpec(f"test:{prefix}:{i}", "DIAMOND", AccountKind.SYNTHETIC)
            for i in range(ACCOUNT_COUNT)
        ]
        ids = await past.account_ids(specs)
        try:
            yield Books(owner, past, [ids[spec.name] for spec in specs], itertools.count())
        finally:
            await past_engine.dispose()
            await owner.dispose()


async def _post_at(books: Books, moment: datetime, transfers: list[Transfer]) -> None:
    async with books.owner.begin() as conn:
        await conn.execute(text("UPDATE test_clock.moment SET at = :at"), {"at": moment})
    assert await books.past.post(transfers) == [PostResult.OK] * len(transfers)


# What the readers answer --------------------------------------------------------------------


async def _journal(engine: AsyncEngine, period: Period) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        basis = await journal_basis(conn, period)
        lines = await journal_page(conn, basis, limit=10_000)
        totals = await asset_totals(conn, basis)
        paged = await _journal_in_pages(conn, basis, JOURNAL_SMALL_PAGE)
    assert paged == lines
    return [asdict(line) for line in lines] + [asdict(total) for total in totals]


async def _journal_in_pages(conn: AsyncConnection, basis: JournalBasis, limit: int) -> list[Any]:
    """Every line of the journal, `limit` lines a page, each page after the last one's line."""
    lines: list[Any] = []
    for _ in range(10_000):
        page = await journal_page(conn, basis, after=lines[-1].key if lines else None, limit=limit)
        if not page:
            return lines
        lines.extend(page)
    raise AssertionError("the journal did not end")


async def _gifts_reports(
    engine: AsyncEngine, start: datetime, end: datetime
) -> dict[str, list[dict[str, Any]]]:
    """The API's gifts report of `[start, end)` per every grouping."""
    async with engine.connect() as conn:
        return {
            group_by: await gifts_report(conn, start, end, group_by) for group_by in GIFT_GROUPINGS
        }


async def _overview(engine: AsyncEngine, month_start: datetime, today: date, end: datetime) -> Any:
    async with engine.connect() as conn:
        return asdict(await overview_gifts(conn, month_start, today, end))


async def _answers(engine: AsyncEngine, days: list[date]) -> dict[str, Any]:
    """The journal of every month the days touch; the overview's gifts of each of those months
    up to the middle of the fourth day (a range ending inside a day), and up to the month's end."""
    answers: dict[str, Any] = {}
    middle = day_start(days[3]) + timedelta(hours=13, minutes=17)
    for period in sorted({period_of(day_start(day)) for day in days}, key=str):
        answers[f"journal {period}"] = await _journal(engine, period)
        answers[f"gifts {period} to {middle}"] = await _overview(
            engine, period.start, days[3], max(middle, period.start)
        )
        answers[f"gifts {period}"] = await _overview(engine, period.start, days[3], period.end)
        answers[f"report {period}"] = await _gifts_reports(engine, period.start, period.end)
    # Ranges that start and end inside days, and one of whole days.
    inside = day_start(days[1]) + timedelta(hours=5, minutes=3)
    answers[f"report {inside} to {middle}"] = await _gifts_reports(engine, inside, middle)
    answers["report of whole days"] = await _gifts_reports(
        engine, day_start(days[0]), day_start(days[-1])
    )
    return answers


async def _expected_gifts(engine: AsyncEngine, start: datetime, end: datetime) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT metadata ->> 'surface' AS surface, count(*) AS gift_events,"
                " count(metadata -> 'count') AS counted_events,"
                " coalesce(sum(CAST(metadata ->> 'count' AS bigint)), 0)::bigint AS gifts,"
                " coalesce(sum(CAST(metadata ->> 'coins' AS bigint)), 0)::bigint AS coins,"
                " sum(amount)::bigint AS milli_diamonds FROM transfers"
                " WHERE code = :code AND created_at >= :start AND created_at < :end"
                " GROUP BY 1 ORDER BY 1"
            ),
            {"code": int(TransferCode.GIFT_DIAMONDS), "start": start, "end": end},
        )
        return [
            {
                "surface": row.surface,
                "gift_events": row.gift_events,
                # a gift count where every event of the group recorded one
                "gift_count": row.gifts if row.counted_events == row.gift_events else None,
                "gift_events_without_count": row.gift_events - row.counted_events,
                "coins": row.coins,
                "milli_diamonds": row.milli_diamonds,
            }
            for row in rows
        ]


# The property -------------------------------------------------------------------------------

transfer = st.fixed_dictionaries(
    {
        "minute": st.integers(0, DAYS_PER_EXAMPLE * 24 * 60 - 1),
        "debit": st.integers(0, ACCOUNT_COUNT - 1),
        "step": st.integers(1, ACCOUNT_COUNT - 1),
        "amount": st.integers(1, 10_000),
        "gift": st.booleans(),
        "pending": st.booleans(),
        "surface": st.sampled_from(SURFACES),
        "coins": st.one_of(st.none(), st.integers(1, 30_000)),
        # a gift booked before the count was recorded has none
        "count": st.one_of(st.none(), st.integers(1, 10_000)),
    }
)


def _transfer(books: Books, drawn: dict[str, Any]) -> Transfer:
    debit = books.accounts[drawn["debit"]]
    credit = books.accounts[(drawn["debit"] + drawn["step"]) % ACCOUNT_COUNT]
    metadata: dict[str, Any] = {}
    if drawn["surface"] is not None:
        metadata["surface"] = drawn["surface"]
    if drawn["coins"] is not None:
        metadata["coins"] = drawn["coins"]
    if drawn["count"] is not None:
        metadata["count"] = drawn["count"]
    return Transfer(
        uuid.uuid4(),
        debit,
        credit,
        drawn["amount"],
        TransferCode.GIFT_DIAMONDS if drawn["gift"] else TransferCode.SYNTHETIC,
        TransferFlags.PENDING if drawn["pending"] else 0,
        metadata=metadata or None,
    )


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    drawn=st.lists(transfer, min_size=1, max_size=12),
    partial_day_count=st.integers(1, DAYS_PER_EXAMPLE - 1),
)
async def test_readers_answer_the_same_with_no_some_and_all_days_rolled(
    books: Books, drawn: list[dict[str, Any]], partial_day_count: int
) -> None:
    first = FIRST_DAY + timedelta(days=DAYS_PER_EXAMPLE * next(books.examples))
    days = [first + timedelta(days=i) for i in range(DAYS_PER_EXAMPLE)]
    for item in sorted(drawn, key=lambda item: item["minute"]):
        moment = day_start(first) + timedelta(minutes=item["minute"])
        await _post_at(books, moment, [_transfer(books, item)])

    none_rolled = await _answers(books.owner, days)
    rolled = await roll_days(books.owner, day_count_max=partial_day_count)
    assert rolled, "the days before this example's were rolled by the one before"
    some_rolled = await _answers(books.owner, days)
    # The rest of this example's days (not all final days: the next example posts after them).
    remaining = (days[-1] - rolled[-1]).days
    if remaining:
        assert await roll_days(books.owner, day_count_max=remaining) == [
            rolled[-1] + timedelta(days=i) for i in range(1, remaining + 1)
        ]
    async with books.owner.connect() as conn:
        last = (await conn.execute(text("SELECT max(day) FROM rolled_days"))).scalar_one()
        assert last == days[-1]
        assert await rolled_day_differences(conn) == []
    all_rolled = await _answers(books.owner, days)

    assert some_rolled == none_rolled
    assert all_rolled == none_rolled
    for period in {period_of(day_start(day)) for day in days}:
        gifts = none_rolled[f"gifts {period}"]
        expected = await _expected_gifts(books.owner, period.start, period.end)
        assert gifts["month"] == expected
        assert none_rolled[f"report {period}"]["surface"] == expected


# Roll-up against the transfers, and the check ------------------------------------------------


async def _owner_sql(engine: AsyncEngine, sql: str, **values: Any) -> None:
    """A change the triggers refuse to anyone, made by the superuser with triggers off."""
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(sql), values)


async def test_rolled_totals_equal_the_transfers_and_the_check_names_a_changed_day(
    postgres_admin_url: str,
) -> None:
    async with fresh_database(postgres_admin_url) as url:
        owner, past_engine = await _with_test_clock(url)
        try:
            ledger = Ledger(past_engine)
            specs = [AccountSpec(f"test:{i}", "DIAMOND", AccountKind.SYNTHETIC) for i in "ab"]
            ids = await ledger.account_ids(specs)
            a, b = ids["test:a"], ids["test:b"]
            books = Books(owner, ledger, [a, b], itertools.count())
            gift = {"surface": "live", "coins": 5}  # booked before the count was recorded
            counted = {"surface": "live", "coins": 0, "count": 3}
            moves = [
                ("2003-05-01T23:59:59+00:00", Transfer(uuid.uuid4(), a, b, 7, TransferCode.TIP)),
                (
                    "2003-05-02T00:00:00+00:00",
                    Transfer(uuid.uuid4(), a, b, 40, TransferCode.GIFT_DIAMONDS, metadata=gift),
                ),
                (
                    "2003-05-02T09:00:00+00:00",
                    Transfer(uuid.uuid4(), a, b, 40, TransferCode.GIFT_DIAMONDS, metadata=counted),
                ),
                (
                    "2003-05-02T10:00:00+00:00",
                    Transfer(uuid.uuid4(), b, a, 3, TransferCode.TIP, TransferFlags.PENDING),
                ),
                ("2003-05-04T10:00:00+00:00", Transfer(uuid.uuid4(), b, a, 11, TransferCode.TIP)),
            ]
            for moment, move in moves:
                await _post_at(books, datetime.fromisoformat(moment), [move])
            await roll_days(owner, day_count_max=4)
            async with owner.connect() as conn:
                days = (
                    await conn.execute(text("SELECT day, transfer_count FROM rolled_days"))
                ).all()
                accounts = (
                    await conn.execute(
                        text(
                            "SELECT day, account_id, code, debits_minor, credits_minor"
                            " FROM day_account_totals ORDER BY 1, 2, 3"
                        )
                    )
                ).all()
                gifts = (
                    await conn.execute(
                        text(
                            "SELECT day, surface, gift_events, counted_events, counted_gifts,"
                            " coins, milli_diamonds FROM day_gift_totals"
                        )
                    )
                ).all()
            may = [date(2003, 5, day) for day in range(1, 5)]
            assert [tuple(row) for row in days] == list(zip(may, [1, 3, 0, 1], strict=True))
            tip, gift_code = int(TransferCode.TIP), int(TransferCode.GIFT_DIAMONDS)
            assert [tuple(row) for row in accounts] == [
                (may[0], a, tip, 7, 0),
                (may[0], b, tip, 0, 7),
                (may[1], a, gift_code, 80, 0),
                (may[1], b, gift_code, 0, 80),
                (may[3], a, tip, 0, 11),
                (may[3], b, tip, 11, 0),
            ]
            assert [tuple(row) for row in gifts] == [(may[1], "live", 2, 1, 3, 5, 80)]

            async with owner.connect() as conn:
                assert await rolled_day_differences(conn) == []
            await _owner_sql(
                owner,
                "UPDATE day_account_totals SET debits_minor = 8 WHERE day = :day AND code = :tip",
                day=may[0],
                tip=tip,
            )
            await _owner_sql(
                owner, "UPDATE rolled_days SET transfer_count = 5 WHERE day = :day", day=may[3]
            )
            await _owner_sql(owner, "DELETE FROM day_gift_totals WHERE day = :day", day=may[1])
            async with owner.connect() as conn:
                found = await rolled_day_differences(conn)
                assert [(d.day, d.check) for d in found] == [
                    (may[0], CHECK_ACCOUNTS),
                    (may[1], CHECK_GIFTS),
                    (may[3], CHECK_COUNT),
                ]
                later = await rolled_day_differences(conn, from_day=may[2])
                assert [(d.day, d.check) for d in later] == [(may[3], CHECK_COUNT)]
        finally:
            await past_engine.dispose()
            await owner.dispose()


# Which days are final; rolling again ---------------------------------------------------------


def test_a_day_is_final_fifteen_minutes_after_its_end() -> None:
    midnight = datetime(2026, 12, 4, tzinfo=UTC)
    assert timedelta(minutes=15) == FINAL_AFTER
    assert last_final_day(midnight + FINAL_AFTER - timedelta(microseconds=1)) == date(2026, 12, 2)
    assert last_final_day(midnight + FINAL_AFTER) == date(2026, 12, 3)
    assert last_final_day(midnight + timedelta(hours=23)) == date(2026, 12, 3)


async def test_the_roller_leaves_days_not_final_alone_and_rolls_each_day_once(
    postgres_admin_url: str,
) -> None:
    async with fresh_database(postgres_admin_url) as url:
        owner, past_engine = await _with_test_clock(url)
        try:
            ledger = Ledger(past_engine)
            specs = [AccountSpec(f"test:{i}", "DIAMOND", AccountKind.SYNTHETIC) for i in "ab"]
            ids = await ledger.account_ids(specs)
            a, b = ids["test:a"], ids["test:b"]
            books = Books(owner, ledger, [a, b], itertools.count())
            async with owner.connect() as conn:
                now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
            today = now.astimezone(UTC).date()
            for moment in (now - timedelta(days=3), now - timedelta(minutes=1), now):
                await _post_at(books, moment, [Transfer(uuid.uuid4(), a, b, 1, TransferCode.TIP)])
            before = await _journal(owner, period_of(now))

            writer = create_engine(url, pool_size=2, role="giftledger_writer")
            try:  # as `giftledger run` rolls: the writer role
                first_round = await roll_days(writer)
            finally:
                await writer.dispose()
            final = last_final_day(now)
            assert first_round == [
                today - timedelta(days=3) + timedelta(days=i)
                for i in range((final - (today - timedelta(days=3))).days + 1)
            ]
            assert all(day < today for day in first_round)
            assert await roll_days(owner) == []
            assert await roll_all_days(owner) == 0
            async with owner.connect() as conn:
                counts = (
                    await conn.execute(
                        text(
                            "SELECT (SELECT count(*) FROM rolled_days),"
                            " (SELECT count(*) FROM day_account_totals),"
                            " (SELECT coalesce(sum(transfer_count), 0) FROM rolled_days)"
                        )
                    )
                ).one()
            assert counts[0] == len(first_round)
            yesterday_rolled = (now - timedelta(minutes=1)).date() <= final
            rolled_transfers = 2 if yesterday_rolled else 1
            assert counts[2] == rolled_transfers
            assert await _journal(owner, period_of(now)) == before
        finally:
            await past_engine.dispose()
            await owner.dispose()
