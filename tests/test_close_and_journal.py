"""Month-end closes and the journal, on a database of its own holding transfers of three past
months (January to March 2001).

Transfers are stamped by the database's `clock_timestamp()` as their batch is written, so a test
cannot post in the past through the ledger as it is. This module's database has one more schema,
`test_clock`, with a `clock_timestamp()` that reads a moment the test sets; the ledger's engine
here puts it before `pg_catalog` in its `search_path`, so the ledger's own statements stamp
transfers, keys and running balances with that moment and link them into the hash chain as
usual. Closes, the journal and `verify` run on ordinary engines, with the real clock.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ledger import closes
from ledger.chart import AccountKind, AccountSpec
from ledger.closes import (
    CHECK_ASSETS,
    CHECK_BALANCES,
    CHECK_DIGEST,
    CHECKS,
    CloseRefusedError,
    PeriodClose,
    close_period,
    load_close,
)
from ledger.database import create_engine
from ledger.journal import (
    AssetTotals,
    JournalBasis,
    JournalKey,
    JournalLine,
    asset_totals,
    journal_basis,
    journal_lines,
    journal_page,
)
from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.periods import Period, parse_period, period_of
from ledger.queries import posted_balance_as_of, trial_balance
from ledger.service import Ledger
from ledger.verify import verify
from services.api.server import create_app
from services.cli import main
from services.commands import reconcile as reconcile_commands
from services.runtime.settings import get_settings
from tests.api_server import FINANCE_TOKEN, api_settings
from tests.fresh_database import fresh_database
from tests.ingestion_fixtures import wait_until
from tests.ledger_helpers import one_snapshot

CLOSER = "month-end-closer"
JANUARY = Period(2001, 1)
FEBRUARY = Period(2001, 2)
MARCH = Period(2001, 3)
APRIL = Period(2001, 4)

TEST_CLOCK = """
CREATE SCHEMA test_clock;
CREATE TABLE test_clock.moment (at timestamptz NOT NULL);
INSERT INTO test_clock.moment VALUES ('2001-01-01T00:00:00Z');
CREATE FUNCTION test_clock.clock_timestamp() RETURNS timestamptz
    LANGUAGE sql VOLATILE AS 'SELECT at FROM test_clock.moment';
GRANT USAGE ON SCHEMA test_clock TO giftledger_writer, giftledger_reader;
GRANT SELECT ON test_clock.moment TO giftledger_writer, giftledger_reader;
"""


def _at(text_moment: str) -> datetime:
    return datetime.fromisoformat(text_moment)


@dataclass(frozen=True)
class Books:
    url: str
    accounts: dict[str, int]  # a, b, c in DIAMOND; x, y in USD
    # Expected posted balances (credits minus debits) at the end of each month, by account.
    balances: dict[Period, dict[str, int]]


class PastLedger:
    """The ledger on an engine whose `clock_timestamp()` is the test's clock."""

    def __init__(self, url: str, owner: AsyncEngine) -> None:
        self.owner = owner
        self.engine = create_async_engine(
            url,
            connect_args={
                "server_settings": {
                    "search_path": "test_clock, pg_catalog, public",
                    "timezone": "UTC",
                }
            },
        )
        self.ledger = Ledger(self.engine)

    async def post_at(self, moment: str, transfers: list[Transfer]) -> None:
        async with self.owner.begin() as conn:
            await conn.execute(text("UPDATE test_clock.moment SET at = :at"), {"at": _at(moment)})
        results = await self.ledger.post(transfers)
        assert results == [PostResult.OK] * len(transfers), results
        stamped = await _scalar(
            self.owner, "SELECT max(created_at) FROM transfers WHERE id = :id", id=transfers[-1].id
        )
        assert stamped == _at(moment)


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


def _spec(prefix: str, name: str, asset: str) -> AccountSpec:
    return AccountSpec(f"test:{prefix}:{name}", asset, AccountKind.SYNTHETIC)


def _move(
    debit: int, credit: int, amount: int, code: TransferCode = TransferCode.SYNTHETIC
) -> Transfer:
    return Transfer(uuid.uuid4(), debit, credit, amount, code)


async def _post_three_months(url: str) -> Books:
    owner = create_engine(url, pool_size=2)
    async with owner.begin() as conn:
        for statement in TEST_CLOCK.strip().split(";\n"):
            await conn.execute(text(statement))
    past = PastLedger(url, owner)
    try:
        prefix = uuid.uuid4().hex[:8]
        specs = {
            name: _spec(prefix, name, "DIAMOND" if name in "abc" else "USD") for name in "abcxy"
        }
        ids = await past.ledger.account_ids(list(specs.values()))
        a, b, c, x, y = (ids[specs[name].name] for name in "abcxy")
        held = Transfer(uuid.uuid4(), a, c, 300, TransferCode.SYNTHETIC, TransferFlags.PENDING)
        await past.post_at(
            "2001-01-10T08:00:00+00:00",
            [_move(a, b, 500), _move(b, c, 200), _move(x, y, 1_000), held],
        )
        await past.post_at("2001-01-31T23:59:59.999999+00:00", [_move(c, a, 7)])
        posted = Transfer(
            uuid.uuid4(), 0, 0, 0, TransferCode.ADJUSTMENT, TransferFlags.POST_PENDING, held.id
        )
        await past.post_at("2001-02-01T00:00:00+00:00", [_move(a, b, 11), posted])
        await past.post_at("2001-02-03T10:00:00+00:00", [_move(y, x, 250)])
        voided = Transfer(uuid.uuid4(), b, a, 40, TransferCode.SYNTHETIC, TransferFlags.PENDING)
        void = Transfer(
            uuid.uuid4(), 0, 0, 0, TransferCode.SYNTHETIC, TransferFlags.VOID_PENDING, voided.id
        )
        await past.post_at("2001-02-17T10:00:00+00:00", [_move(y, x, 250), voided])
        await past.post_at("2001-02-17T11:00:00+00:00", [void])
        await past.post_at("2001-03-05T10:00:00+00:00", [_move(a, b, 1)])
    finally:
        await past.engine.dispose()
        await owner.dispose()
    return Books(
        url,
        {"a": a, "b": b, "c": c, "x": x, "y": y},
        {
            JANUARY: {"a": -493, "b": 300, "c": 193, "x": -1_000, "y": 1_000},
            FEBRUARY: {"a": -804, "b": 311, "c": 493, "x": -500, "y": 500},
            MARCH: {"a": -805, "b": 312, "c": 493, "x": -500, "y": 500},
        },
    )


@dataclass(frozen=True)
class Closed:
    books: Books
    february_first: str  # why closing February before January was refused
    january: PeriodClose
    february: PeriodClose


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def books(postgres_admin_url: str) -> AsyncIterator[Books]:
    async with fresh_database(postgres_admin_url) as url:
        yield await _post_three_months(url)


@pytest_asyncio.fixture(loop_scope="session")
async def engine_on_books(books: Books) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(books.url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def closed(books: Books) -> AsyncIterator[Closed]:
    """January and February closed, in that order, after trying February first."""
    engine = create_engine(books.url, pool_size=2)
    try:
        with pytest.raises(CloseRefusedError) as refused:
            await close_period(engine, FEBRUARY, closed_by=CLOSER)
        january = await close_period(engine, JANUARY, closed_by=CLOSER)
        february = await close_period(engine, FEBRUARY, closed_by="second-closer")
    finally:
        await engine.dispose()
    yield Closed(books, str(refused.value), january, february)


async def _closing_balances(
    engine: AsyncEngine, close: PeriodClose, books: Books
) -> dict[str, int]:
    names = {account_id: name for name, account_id in books.accounts.items()}
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT account_id, credits_minor - debits_minor AS balance"
                " FROM closing_balances WHERE close_id = :id"
            ),
            {"id": close.id},
        )
        return {names[row.account_id]: row.balance for row in rows}


async def _close_problems(conn: Any) -> list[tuple[str, str]]:
    return [(p.check, p.detail) for p in await verify(conn) if p.check in CHECKS]


# Closing -------------------------------------------------------------------------------------


async def test_months_close_in_order_with_each_accounts_balance_at_the_months_end(
    closed: Closed, engine_on_books: AsyncEngine
) -> None:
    assert (
        closed.february_first
        == "2001-01 holds transfers and is not closed: close it before 2001-02"
    )
    books = closed.books
    for close, period in ((closed.january, JANUARY), (closed.february, FEBRUARY)):
        assert close.period == period.text
        assert close.account_count == len(books.accounts)
        assert await _closing_balances(engine_on_books, close, books) == books.balances[period]
    assert closed.february.previous_hash == closed.january.hash
    assert closed.january.previous_hash == bytes(32)
    assert (closed.january.closed_by, closed.february.closed_by) == (CLOSER, "second-closer")
    async with one_snapshot(engine_on_books) as conn:
        assert await _close_problems(conn) == []
        head = (await conn.execute(text("SELECT link_id, hash FROM ledger_chain_head"))).one()
    # Nothing was posted after the closes: both name the chain's head of now.
    assert closed.february.chain_link_id == head.link_id
    assert closed.february.chain_hash == bytes(head.hash)


async def test_a_period_closes_once_and_never_before_a_later_closed_one(
    closed: Closed, engine_on_books: AsyncEngine
) -> None:
    with pytest.raises(CloseRefusedError, match="2001-01 is closed already"):
        await close_period(engine_on_books, JANUARY, closed_by=CLOSER)
    with pytest.raises(
        CloseRefusedError, match="2001-01 is closed already: periods close in order"
    ):
        await close_period(engine_on_books, Period(2000, 12), closed_by=CLOSER)
    async with engine_on_books.connect() as conn:
        assert (await load_close(conn, JANUARY)) == closed.january


async def test_the_running_month_cannot_be_closed(engine_on_books: AsyncEngine) -> None:
    now = period_of(datetime.now(UTC))
    with pytest.raises(CloseRefusedError, match="has not ended"):
        await close_period(engine_on_books, now, closed_by=CLOSER)
    with pytest.raises(CloseRefusedError, match="has not ended"):
        await close_period(engine_on_books, now.next(), closed_by=CLOSER)


async def test_verify_catches_a_tampered_closing_balance(
    closed: Closed, engine_on_books: AsyncEngine
) -> None:
    b = closed.books.accounts["b"]
    async with one_snapshot(engine_on_books) as conn:
        transaction = await conn.begin()
        try:
            # as only a superuser can: with the triggers that refuse any change switched off
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                text(
                    "UPDATE closing_balances SET credits_minor = credits_minor + 1"
                    " WHERE close_id = :close AND account_id = :account"
                ),
                {"close": closed.january.id, "account": b},
            )
            found = await _close_problems(conn)
        finally:
            await transaction.rollback()
        assert await _close_problems(conn) == []
    checks = {check for check, _ in found}
    assert checks == {CHECK_DIGEST, CHECK_BALANCES, CHECK_ASSETS}
    details = [detail for check, detail in found if check == CHECK_BALANCES]
    # January closed b one credit too high; February's opening, taken from it, is too.
    assert len(details) == 2
    assert "close of 2001-01: test:" in details[0]
    assert "closed with (debits, credits) (200, 501) but opening plus the period's " in details[0]
    assert details[0].endswith("transfers give (200, 500)")


async def _balances_as_of(
    engine: AsyncEngine, books: Books, as_of: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """Each account's posted balance as of `as_of`: by the trial balance, and by
    `posted_balance_as_of`."""
    async with engine.connect() as conn:
        lines = {line.account_name: line.balance for line in await trial_balance(conn, as_of)}
        rows = await conn.execute(
            text("SELECT id, name FROM accounts WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": list(books.accounts.values())},
        )
        names = {row.id: row.name for row in rows}
        by_trial_balance = {
            letter: lines.get(names[account_id], 0) for letter, account_id in books.accounts.items()
        }
        by_probe = {
            letter: await posted_balance_as_of(conn, account_id, as_of)
            for letter, account_id in books.accounts.items()
        }
    return by_trial_balance, by_probe


async def test_as_of_a_months_end_is_that_months_close_without_the_transfers_stamped_then(
    closed: Closed, engine_on_books: AsyncEngine
) -> None:
    """Periods are [start, end), and as_of is their end: the transfers stamped at exactly
    2001-02-01T00:00:00Z are February's, not in the balances as of that instant, which are
    January's close; they are in those as of March's first instant, February's close."""
    books = closed.books
    for as_of, close, period in (
        (_at("2001-02-01T00:00:00+00:00"), closed.january, JANUARY),
        (_at("2001-03-01T00:00:00+00:00"), closed.february, FEBRUARY),
    ):
        by_trial_balance, by_probe = await _balances_as_of(engine_on_books, books, as_of)
        assert by_trial_balance == books.balances[period], as_of
        assert by_probe == books.balances[period], as_of
        assert by_trial_balance == await _closing_balances(engine_on_books, close, books)


async def _close_waits_on_a_lock(owner: AsyncEngine) -> bool:
    waiting = await _scalar(
        owner,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%wait_for_ledger_writers%'",
    )
    return bool(waiting)


async def test_a_close_waits_for_a_batch_stamped_before_the_months_end_to_commit(
    postgres_admin_url: str,
) -> None:
    """A batch stamped at January's last microsecond is still open when January is closed: the
    close waits for it and counts it."""
    async with fresh_database(postgres_admin_url) as url:
        owner = create_engine(url, pool_size=4)
        async with owner.begin() as conn:
            for statement in TEST_CLOCK.strip().split(";\n"):
                await conn.execute(text(statement))
        past = PastLedger(url, owner)
        try:
            prefix = uuid.uuid4().hex[:8]
            specs = [_spec(prefix, name, "DIAMOND") for name in "ab"]
            ids = await past.ledger.account_ids(specs)
            a, b = (ids[spec.name] for spec in specs)
            await past.post_at("2001-01-10T08:00:00+00:00", [_move(a, b, 5)])
            async with owner.begin() as conn:
                await conn.execute(
                    text("UPDATE test_clock.moment SET at = '2001-01-31T23:59:59.999999Z'")
                )
            async for tx in past.ledger.transactions():
                async with tx:
                    outcome = await tx.post([_move(a, b, 3)])
                    assert outcome.results == [PostResult.OK]
                    closing = asyncio.create_task(close_period(owner, JANUARY, closed_by=CLOSER))
                    await wait_until(functools.partial(_close_waits_on_a_lock, owner))
                    assert not closing.done()
            close = await closing
            async with one_snapshot(owner) as conn:
                rows = await conn.execute(
                    text(
                        "SELECT account_id, credits_minor - debits_minor AS balance"
                        " FROM closing_balances WHERE close_id = :id"
                    ),
                    {"id": close.id},
                )
                balances = {row.account_id: row.balance for row in rows}
                problems = await _close_problems(conn)
        finally:
            await past.engine.dispose()
            await owner.dispose()
    assert balances == {a: -8, b: 8}
    assert problems == []


async def test_a_close_whose_writers_do_not_finish_is_refused_with_what_to_do(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that holds the accounts past the wait: the close is refused with a message
    saying so, not the database's timeout."""
    monkeypatch.setattr(closes, "WRITERS_WAIT_MS_MAX", 300)
    holder = create_engine(books.url, pool_size=1)
    closer = create_engine(books.url, pool_size=1)
    try:
        async with holder.begin() as conn:
            await conn.execute(text("LOCK TABLE accounts IN ROW EXCLUSIVE MODE"))
            with pytest.raises(CloseRefusedError, match="still being written after 300 ms"):
                await close_period(closer, MARCH, closed_by=CLOSER)
    finally:
        await holder.dispose()
        await closer.dispose()


# The journal ---------------------------------------------------------------------------------


async def _journal(engine: AsyncEngine, period: Period) -> list[JournalLine]:
    async with engine.connect() as conn:
        basis = await journal_basis(conn, period)
        return await journal_page(conn, basis, limit=1_000)


async def test_the_journal_chains_each_accounts_days_from_its_opening_to_its_closing(
    closed: Closed, engine_on_books: AsyncEngine
) -> None:
    """Each line carries its account's balance at the start and the end of its day: the lines
    of one account and day share them, and the day's codes together take the one to the other;
    no balance between two codes of a day is shown, since their transfers interleave."""
    books = closed.books
    lines = await _journal(engine_on_books, FEBRUARY)
    by_account: dict[str, list[JournalLine]] = {}
    for line in lines:
        by_account.setdefault(line.account.rsplit(":", 1)[1], []).append(line)
    assert set(by_account) == set(books.accounts)
    for name, account_lines in by_account.items():
        days = [list(day) for _, day in itertools.groupby(account_lines, lambda x: x.day)]
        assert days[0][0].opening == books.balances[JANUARY][name]
        for day in days:
            assert {(line.opening, line.closing) for line in day} == {
                (day[0].opening, day[0].closing)
            }
            change = sum(line.credits - line.debits for line in day)
            assert day[0].opening + change == day[0].closing
        for before, after in itertools.pairwise(days):
            assert after[0].opening == before[0].closing
        assert days[-1][0].closing == books.balances[FEBRUARY][name]
    a_lines = [
        (str(line.day), line.code, line.debits, line.credits, line.opening, line.closing)
        for line in by_account["a"]
    ]
    assert a_lines == [
        ("2001-02-01", "adjustment", 300, 0, -493, -804),
        ("2001-02-01", "synthetic", 11, 0, -493, -804),
    ]
    async with engine_on_books.connect() as conn:
        basis = await journal_basis(conn, FEBRUARY)
        streamed = [line async for line in journal_lines(conn, basis)]
    assert streamed == lines  # the export's statement (`journal --csv`) says the same
    x_lines = [(str(line.day), line.credits, line.closing) for line in by_account["x"]]
    assert x_lines == [("2001-02-03", 250, -750), ("2001-02-17", 250, -500)]
    assert [line.line_no for line in lines] == list(range(1, len(lines) + 1))
    async with engine_on_books.connect() as conn:
        totals = await asset_totals(conn, await journal_basis(conn, FEBRUARY))
    assert [(t.asset, t.debits, t.credits) for t in totals] == [
        ("DIAMOND", 311, 311),
        ("USD", 500, 500),
    ]


async def test_marchs_journal_opens_at_februarys_close(
    closed: Closed, engine_on_books: AsyncEngine
) -> None:
    lines = await _journal(engine_on_books, MARCH)
    assert [(line.account.rsplit(":", 1)[1], line.opening, line.closing) for line in lines] == [
        ("a", -804, -805),
        ("b", 311, 312),
    ]


async def test_the_api_pages_the_journal_and_names_the_close(
    closed: Closed, engine_on_books: AsyncEngine
) -> None:
    app = create_app(engine_on_books, api_settings())
    headers = {"Authorization": f"Bearer {FINANCE_TOKEN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://books"
    ) as client:
        first = await client.get(
            "/v1/journal", params={"period": "2001-02", "limit": 3}, headers=headers
        )
        assert first.status_code == 200, first.text
        page = first.json()
        rest = await client.get(
            "/v1/journal",
            params={"period": "2001-02", "cursor": page["next_cursor"]},
            headers=headers,
        )
        refused = await client.get("/v1/journal", params={"period": "2001-13"}, headers=headers)
    assert (page["closed"], page["close"]["hash"]) == (True, closed.february.hash.hex())
    assert page["close"]["closed_by"] == "second-closer"
    assert (page["from"], page["to"]) == ("2001-02-01T00:00:00+00:00", "2001-03-01T00:00:00+00:00")
    expected = await _journal(engine_on_books, FEBRUARY)
    served = page["lines"] + rest.json()["lines"]
    assert [(line["line_no"], line["account"], line["closing"]) for line in served] == [
        (line.line_no, line.account, line.closing) for line in expected
    ]
    assert rest.json()["next_cursor"] is None
    assert refused.status_code == 422


async def test_the_journal_of_an_open_month_pages_on_after_the_last_line_shown(
    books: Books, engine_on_books: AsyncEngine
) -> None:
    """April 2001, open, three pages' worth of lines; between the first page and the second, a
    transfer of the current day adds a line that sorts before the first page's last line and
    one after it. No line is served twice, none of the first reading's lines is skipped, and of
    the new lines only the one after the cursor is served."""
    owner = create_engine(books.url, pool_size=1)
    past = PastLedger(books.url, owner)
    app = create_app(engine_on_books, api_settings())
    headers = {"Authorization": f"Bearer {FINANCE_TOKEN}"}
    try:
        prefix = uuid.uuid4().hex[:8]
        specs = [_spec(prefix, name, "DIAMOND") for name in "pqr"]
        ids = await past.ledger.account_ids(specs)
        p, q, r = (ids[spec.name] for spec in specs)
        await past.post_at("2001-04-02T10:00:00+00:00", [_move(p, q, 5)])
        await past.post_at("2001-04-03T10:00:00+00:00", [_move(q, r, 3)])
        first_reading = [line.key for line in await _journal(engine_on_books, APRIL)]
        served: list[JournalKey] = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://books"
        ) as client:
            params = {"period": "2001-04", "limit": "3"}
            for page_index in range(4):
                answer = await client.get("/v1/journal", params=params, headers=headers)
                assert answer.status_code == 200, answer.text
                page = answer.json()
                served += [
                    JournalKey(date.fromisoformat(line["day"]), line["account"], line["code"])
                    for line in page["lines"]
                ]
                if page["next_cursor"] is None:
                    break
                params["cursor"] = page["next_cursor"]
                if page_index == 0:  # the current day gets an adjustment of p and r
                    adjustment = _move(p, r, 2, TransferCode.ADJUSTMENT)
                    await past.post_at("2001-04-03T11:00:00+00:00", [adjustment])
            refused = await client.get(
                "/v1/journal", params={"period": "2001-04", "cursor": "3"}, headers=headers
            )
    finally:
        await past.engine.dispose()
        await owner.dispose()
    day = date(2001, 4, 3)
    before_cursor = JournalKey(day, specs[0].name, "adjustment")
    after_cursor = JournalKey(day, specs[2].name, "adjustment")
    assert first_reading == [
        JournalKey(date(2001, 4, 2), specs[0].name, "synthetic"),
        JournalKey(date(2001, 4, 2), specs[1].name, "synthetic"),
        JournalKey(day, specs[1].name, "synthetic"),
        JournalKey(day, specs[2].name, "synthetic"),
    ]
    assert len(served) == len(set(served)), served  # none twice
    assert [key for key in served if key in first_reading] == first_reading  # none skipped
    assert after_cursor in served
    assert before_cursor not in served
    assert page["next_cursor"] is None
    assert refused.status_code == 422


# The command line ----------------------------------------------------------------------------


async def test_the_journal_command_reads_its_totals_and_lines_in_one_snapshot(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`giftledger journal` of an open month (May 2001) while a transfer of the month is posted
    between its read of the totals and its read of the lines: the totals are the lines' sums."""
    owner = create_engine(books.url, pool_size=1)
    past = PastLedger(books.url, owner)
    try:
        prefix = uuid.uuid4().hex[:8]
        specs = [_spec(prefix, name, "DIAMOND") for name in "st"]
        ids = await past.ledger.account_ids(specs)
        s, t = (ids[spec.name] for spec in specs)
        await past.post_at("2001-05-02T10:00:00+00:00", [_move(s, t, 5)])
    finally:
        await past.engine.dispose()
        await owner.dispose()
    read_totals: list[AssetTotals] = []
    read_lines: list[JournalLine] = []

    async def totals_then_a_transfer(conn: AsyncConnection, basis: JournalBasis) -> Any:
        totals = await asset_totals(conn, basis)
        read_totals.extend(totals)
        owner = create_engine(books.url, pool_size=1)  # on the command's event loop
        past = PastLedger(books.url, owner)
        try:
            await past.post_at("2001-05-02T11:00:00+00:00", [_move(s, t, 7)])
        finally:
            await past.engine.dispose()
            await owner.dispose()
        return totals

    async def lines_read(conn: AsyncConnection, basis: JournalBasis) -> AsyncIterator[JournalLine]:
        async for line in journal_lines(conn, basis):
            read_lines.append(line)
            yield line

    monkeypatch.setattr(reconcile_commands, "asset_totals", totals_then_a_transfer)
    monkeypatch.setattr(reconcile_commands, "journal_lines", lines_read)
    monkeypatch.setenv("DATABASE_URL", books.url)
    get_settings.cache_clear()
    try:
        exit_code = await asyncio.to_thread(main, ["journal", "--period", "2001-05"])
    finally:
        get_settings.cache_clear()
    assert exit_code == 0
    assert [(total.asset, total.debits, total.credits) for total in read_totals] == [
        ("DIAMOND", 5, 5)
    ]
    assert (sum(line.debits for line in read_lines), sum(line.credits for line in read_lines)) == (
        5,
        5,
    )


async def test_the_commands_close_march_once_export_the_journal_and_verify(
    closed: Closed,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", closed.books.url)
    get_settings.cache_clear()
    try:
        capsys.readouterr()
        close = ["close", "--period", "2001-03", "--as", CLOSER]
        first = await asyncio.to_thread(main, close)
        closed_text = capsys.readouterr()
        again = await asyncio.to_thread(main, close)
        again_text = capsys.readouterr()
        exported = await asyncio.to_thread(main, ["journal", "--period", "2001-03", "--csv"])
        journal_csv = capsys.readouterr().out
        verified = await asyncio.to_thread(main, ["verify"])
        verify_text = capsys.readouterr()
        bad_period = await asyncio.to_thread(main, ["journal", "--period", "March"])
    finally:
        get_settings.cache_clear()
    assert (first, again, exported, bad_period) == (0, 1, 0, 2), (closed_text, again_text)
    assert closed_text.out.startswith("closed 2001-03: 5 accounts, hash ")
    assert closed_text.out.endswith(f"; closed by {CLOSER}\n")
    assert "close of 2001-03 refused: 2001-03 is closed already" in again_text.err
    rows = list(csv.DictReader(io.StringIO(journal_csv)))
    assert list(rows[0]) == [
        "day",
        "account",
        "asset",
        "scale",
        "code",
        "debits",
        "credits",
        "opening",
        "closing",
    ]
    assert {(row["asset"], row["scale"]) for row in rows} == {("DIAMOND", "3")}  # accounts a, b
    columns = ("day", "code", "debits", "credits", "opening", "closing")
    assert [tuple(row[column] for column in columns) for row in rows] == [
        ("2001-03-05", "synthetic", "1", "0", "-804", "-805"),
        ("2001-03-05", "synthetic", "0", "1", "311", "312"),
    ]
    assert verified == 0, verify_text
    assert parse_period("2001-03") == MARCH
