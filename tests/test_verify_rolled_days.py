"""`verify` holds the per-day totals (`ledger.rollups`) to the transfers: a full run every rolled
day, an incremental run the days rolled since its checkpoint, and no transfer added since the
checkpoint may be stamped in a day rolled before it.

Each test has a database of its own (the roller sums the whole ledger). Past transfers are
stamped through a `test_clock.clock_timestamp()` the test sets, as in test_rollups; the roller
and `verify` run on an ordinary engine, with the real clock, so every past day is final to them.
Tampering needs the immutability triggers off, as only a superuser can."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger.chart import AccountKind, AccountSpec
from ledger.database import create_engine
from ledger.model import PostResult, Transfer, TransferCode
from ledger.rollups import CHECK_ACCOUNTS, CHECK_COUNT, CHECK_GIFTS, day_start, roll_days
from ledger.service import Ledger
from ledger.verify import Problem, Verification, record_checkpoint, verify_ledger
from ledger.verify_checkpoints import Checkpoint
from tests.fresh_database import fresh_database

SYN = TransferCode.SYNTHETIC

TEST_CLOCK = """
CREATE SCHEMA test_clock;
CREATE TABLE test_clock.moment (at timestamptz NOT NULL);
INSERT INTO test_clock.moment VALUES ('2001-01-01T00:00:00Z');
CREATE FUNCTION test_clock.clock_timestamp() RETURNS timestamptz
    LANGUAGE sql VOLATILE AS 'SELECT at FROM test_clock.moment';
GRANT USAGE ON SCHEMA test_clock TO giftledger_writer, giftledger_reader;
GRANT SELECT ON test_clock.moment TO giftledger_writer, giftledger_reader;
"""


@dataclass
class Books:
    owner: AsyncEngine
    past: Ledger
    a: int
    b: int
    first_day: date  # three days before the database's today


@asynccontextmanager
async def books_of_their_own(admin_url: str) -> AsyncIterator[Books]:
    """A fresh database with a test clock and two accounts."""
    async with fresh_database(admin_url) as url:
        owner = create_engine(url, pool_size=4)
        past_engine = create_async_engine(
            url,
            connect_args={
                "server_settings": {
                    "search_path": "test_clock, pg_catalog, public",
                    "timezone": "UTC",
                }
            },
        )
        try:
            async with owner.begin() as conn:
                for statement in TEST_CLOCK.strip().split(";\n"):
                    await conn.execute(text(statement))
                now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
            past = Ledger(past_engine)
            specs = [AccountSpec(f"test:{i}", "DIAMOND", AccountKind.SYNTHETIC) for i in "ab"]
            ids = await past.account_ids(specs)
            first_day = now.date() - timedelta(days=3)
            yield Books(owner, past, ids["test:a"], ids["test:b"], first_day)
        finally:
            await past_engine.dispose()
            await owner.dispose()


async def post_at(books: Books, moment: datetime, transfers: list[Transfer]) -> None:
    async with books.owner.begin() as conn:
        await conn.execute(text("UPDATE test_clock.moment SET at = :at"), {"at": moment})
    assert await books.past.post(transfers) == [PostResult.OK] * len(transfers)


async def run_verify(
    engine: AsyncEngine, *, full: bool = False
) -> tuple[Verification, Checkpoint | None]:
    """What `giftledger verify` does: check, and record a checkpoint when clean."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        verification = await verify_ledger(conn, full=full)
        checkpoint = None
        if not verification.problems:
            checkpoint = await record_checkpoint(conn, verification)
        await conn.commit()
    return verification, checkpoint


async def owner_sql(engine: AsyncEngine, sql: str, **values: Any) -> None:
    """A change the triggers refuse to anyone, made by the superuser with triggers off."""
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(sql), values)


@asynccontextmanager
async def debits_raised(books: Books, day: date) -> AsyncIterator[None]:
    """Account a's rolled debits of `day` one higher, behind the ledger's back, then back."""
    edit = (
        "UPDATE day_account_totals SET debits_minor = debits_minor + :by"
        " WHERE day = :day AND account_id = :account"
    )
    await owner_sql(books.owner, edit, by=1, day=day, account=books.a)
    try:
        yield
    finally:
        await owner_sql(books.owner, edit, by=-1, day=day, account=books.a)


async def test_rolled_days_are_checked_whole_by_full_and_since_the_checkpoint_by_incremental(
    postgres_admin_url: str,
) -> None:
    async with books_of_their_own(postgres_admin_url) as books:
        d1, d2 = books.first_day, books.first_day + timedelta(days=1)
        for day in (d1, d2):
            moment = day_start(day) + timedelta(hours=10)
            await post_at(books, moment, [Transfer(uuid.uuid4(), books.a, books.b, 7, SYN)])
            await post_at(books, moment, [Transfer(uuid.uuid4(), books.b, books.a, 3, SYN)])
        assert await roll_days(books.owner, day_count_max=1) == [d1]

        # A clean ledger with a rolled day: the first run is a full one and records d1.
        verification, first = await run_verify(books.owner)
        assert verification.full_check
        assert verification.problems == []
        assert first is not None
        assert first.reached.rolled_day_max == d1

        # A day rolled after the checkpoint, changed: the incremental run right after the roll
        # recomputes it, as does the full one; neither records a checkpoint.
        assert await roll_days(books.owner, day_count_max=1) == [d2]
        found = [
            Problem(
                CHECK_ACCOUNTS,
                f"day {d2}: day_account_totals differ from the day's posted transfers",
            )
        ]
        async with debits_raised(books, d2):
            incremental, written = await run_verify(books.owner)
            assert not incremental.full_check
            assert incremental.base == first
            assert incremental.problems == found
            assert written is None
            full, written = await run_verify(books.owner, full=True)
            assert full.problems == found
            assert written is None
        # A gift row the day has no gift for, and a count changed: found the same way.
        await owner_sql(
            books.owner,
            "INSERT INTO day_gift_totals (day, surface, gift_events, counted_events,"
            " counted_gifts, coins, milli_diamonds) VALUES (:day, 'live', 1, 1, 1, 5, 40)",
            day=d2,
        )
        await owner_sql(
            books.owner, "UPDATE rolled_days SET transfer_count = 9 WHERE day = :day", day=d2
        )
        try:
            for full_run in (False, True):
                verification, _ = await run_verify(books.owner, full=full_run)
                assert [(p.check, p.detail.split(":")[0]) for p in verification.problems] == [
                    (CHECK_GIFTS, f"day {d2}"),
                    (CHECK_COUNT, f"day {d2}"),
                ]
        finally:
            await owner_sql(books.owner, "DELETE FROM day_gift_totals WHERE day = :day", day=d2)
            await owner_sql(
                books.owner, "UPDATE rolled_days SET transfer_count = 2 WHERE day = :day", day=d2
            )

        # Clean again: the incremental run checks d2 and records it.
        incremental, second = await run_verify(books.owner)
        assert not incremental.full_check
        assert incremental.problems == []
        assert second is not None
        assert second.reached.rolled_day_max == d2

        # A day rolled before the checkpoint is not read again by the incremental run: only
        # `--full` finds it changed.
        async with debits_raised(books, d1):
            incremental, third = await run_verify(books.owner)
            assert incremental.problems == []
            assert third is not None
            assert third.reached.rolled_day_max == d2
            full, written = await run_verify(books.owner, full=True)
            assert full.problems == [
                Problem(
                    CHECK_ACCOUNTS,
                    f"day {d1}: day_account_totals differ from the day's posted transfers",
                )
            ]
            assert written is None
        full, _ = await run_verify(books.owner, full=True)
        assert full.problems == []


async def test_a_transfer_stored_after_its_day_was_rolled_is_found_both_ways(
    postgres_admin_url: str,
) -> None:
    async with books_of_their_own(postgres_admin_url) as books:
        d1 = books.first_day
        await post_at(
            books,
            day_start(d1) + timedelta(hours=10),
            [Transfer(uuid.uuid4(), books.a, books.b, 7, SYN)],
        )
        assert await roll_days(books.owner, day_count_max=1) == [d1]
        _, checkpoint = await run_verify(books.owner)
        assert checkpoint is not None
        assert checkpoint.reached.rolled_day_max == d1

        # The finality rule keeps the service from this; the test clock does not.
        late = Transfer(uuid.uuid4(), books.b, books.a, 2, SYN)
        await post_at(books, day_start(d1) + timedelta(hours=12), [late])
        incremental, written = await run_verify(books.owner)
        assert written is None
        assert [p.check for p in incremental.problems] == [CHECK_COUNT]
        detail = incremental.problems[0].detail
        assert detail.startswith(f"transfer {late.id} stamped ")
        assert detail.endswith(
            f" in day {d1}, rolled before checkpoint {checkpoint.id}, was stored after it"
        )
        full, _ = await run_verify(books.owner, full=True)
        assert {(p.check, p.detail.split(":")[0]) for p in full.problems} == {
            (CHECK_COUNT, f"day {d1}"),
            (CHECK_ACCOUNTS, f"day {d1}"),
        }
