"""The console's Books pages over HTTP, on a database of their own (the trial balance, closes and
reconciliations are about the whole ledger): one creator's gift and two paid cash-outs, a bank
file that names one of them, and last month closed.

What the pages show is checked against what the data must give (the creator's Diamonds left, a
break for the cash-out the bank file leaves out), not against the code that renders it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.closes import PeriodClose, close_period
from ledger.database import create_engine
from ledger.periods import period_of
from schemas import topics
from services.payout_rail.settlement_file import file_name
from tests import event_factory as make
from tests.books_helpers import reconcile_paid_cashout
from tests.console_http import (
    FINANCE_TOKEN,
    Feed,
    console_client,
    console_settings,
    new_creator_id,
    sign_in,
    table,
    tables,
)
from tests.fresh_database import fresh_database

GIFT_DIAMONDS = 5_000
CLOSER = "books-closer"
CASHOUT_DIAMONDS = 2_000


@dataclass(frozen=True)
class Books:
    engine: AsyncEngine
    creator: str
    reconciled_cashout: str
    unreconciled_cashout: str
    reconciliation_id: int
    close: PeriodClose


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def books(postgres_admin_url: str) -> AsyncIterator[Books]:
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=4)
        try:
            feed = await Feed.on(engine)
            creator = await feed.eligible_creator(new_creator_id("books"), GIFT_DIAMONDS)
            paid = []
            for _ in range(2):
                cashout_id = await feed.held_cashout(creator, CASHOUT_DIAMONDS)
                update = make.payout_update(cashout_id, "paid")
                await feed.send(topics.PAYOUTS_UPDATED, update, creator)
                paid.append(cashout_id)
            reconciliation_id = await reconcile_paid_cashout(engine, paid[0])
            last_month = period_of(datetime.now(UTC)).previous()
            close = await close_period(engine, last_month, closed_by=CLOSER)
            yield Books(engine, creator, paid[0], paid[1], reconciliation_id, close)
        finally:
            await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def finance(books: Books) -> AsyncIterator[httpx.AsyncClient]:
    async with console_client(books.engine, console_settings()) as client:
        assert (await sign_in(client, FINANCE_TOKEN)).status_code == 303
        yield client


def _row(rows: list[list[str]], label: str) -> list[str]:
    """The row whose cells hold `label` (its cells from that label on)."""
    [found] = [row[row.index(label) :] for row in rows if label in row]
    return found


async def test_the_trial_balance_is_grouped_by_type_with_debits_equal_to_credits(
    finance: httpx.AsyncClient, books: Books
) -> None:
    page = await finance.get("/console/books")
    assert page.status_code == 200
    diamonds = table(page.text, "DIAMOND")
    assert diamonds.rows[0] == ["Type", "Account", "Debit", "Credit"]
    left = f"{GIFT_DIAMONDS - 2 * CASHOUT_DIAMONDS:,}.000"
    assert _row(diamonds.rows, "creator:*:DIAMOND:available (1 account)") == [
        "creator:*:DIAMOND:available (1 account)",
        "",
        left,
    ]
    types = [row[0] for row in diamonds.rows[1:] if len(row) == 4]
    assert "liability" in types
    assert types == sorted(
        types, key=["asset", "liability", "revenue", "expense", "clearing"].index
    )
    for found in tables(page.text):
        if found.rows and found.rows[0] == ["Type", "Account", "Debit", "Credit"]:
            total = found.rows[-1]
            assert total[0] == f"Total {found.caption}"
            assert total[1] == total[2], found
            assert total[1] not in ("", "0"), found
    assert f"Creators hold {left} DIAMOND ≈ " in page.text


async def test_the_books_page_lists_the_closes_and_the_reconciliation_runs(
    finance: httpx.AsyncClient, books: Books
) -> None:
    page = (await finance.get("/console/books")).text
    closes = table(page, "Closed periods")
    assert closes.rows[0][:3] == ["Period", "Closed", "Closed by"]
    assert closes.rows[1][0] == books.close.period
    assert closes.rows[1][2] == CLOSER
    assert closes.rows[1][-1] == books.close.hash.hex()
    runs = table(page, "Runs of giftledger reconcile")
    [run] = [row for row in runs.rows[1:] if row[0] == str(books.reconciliation_id)]
    assert run[-1] == "1"  # the paid cash-out the bank file leaves out
    assert f'href="/console/books/reconciliation?id={books.reconciliation_id}"' in page


async def test_the_journal_shows_a_month_picked_with_its_totals_and_close(
    finance: httpx.AsyncClient, books: Books
) -> None:
    this_month = period_of(datetime.now(UTC))
    page = await finance.get("/console/books/journal")  # this month by default
    assert page.status_code == 200
    assert f'<input id="period" name="period" type="month" value="{this_month.text}"' in page.text
    assert '<label for="period">' in page.text
    lines = table(page.text, "Lines after #0")
    assert lines.rows[0] == [
        "#",
        "Day",
        "Account",
        "Code",
        "Debits",
        "Credits",
        "Opening",
        "Closing",
    ]
    available = f"creator:{books.creator}:DIAMOND:available"
    credited = [row for row in lines.rows[1:] if row[2] == available and row[5]]
    assert f"{GIFT_DIAMONDS:,}.000" in [row[5] for row in credited]
    totals = table(page.text, "Totals per asset")
    for row in totals.rows[1:]:
        assert row[1] == row[2], row  # each asset's debits equal its credits
    assert "Not closed." in page.text

    closed = await finance.get(f"/console/books/journal?period={books.close.period}")
    assert closed.status_code == 200
    assert "<strong>Closed</strong>" in closed.text
    assert f" by {CLOSER} (" in closed.text
    assert books.close.hash.hex() in closed.text
    assert f">{this_month.text}</a>" in closed.text  # the link to the month after

    for wrong in ("2026-13", "26-01", "<b>x</b>"):
        refused = await finance.get("/console/books/journal", params={"period": wrong})
        assert refused.status_code == 422, wrong
        assert "<b>x</b>" not in refused.text


async def test_a_reconciliation_shows_its_breaks_first_and_filters_by_class(
    finance: httpx.AsyncClient, books: Books
) -> None:
    path = f"/console/books/reconciliation?id={books.reconciliation_id}"
    page = await finance.get(path)
    assert page.status_code == 200
    classes = {row[0]: row[1:] for row in table(page.text, "Cash-outs by class").rows[1:]}
    assert classes["missing_in_bank"] == ["yes", "1"]
    assert classes["matched"] == ["no", "1"]
    items = table(page.text, "Every class, breaks first").rows[1:]
    assert [(row[1], row[2]) for row in items] == [
        (books.unreconciled_cashout, "missing_in_bank"),
        (books.reconciled_cashout, "matched"),
    ]
    matched = await finance.get(f"{path}&kind=matched")
    rows = table(matched.text, "matched").rows[1:]
    assert [row[1] for row in rows] == [books.reconciled_cashout]
    missing = await finance.get("/console/books/reconciliation?id=999999999")
    assert missing.status_code == 404


async def test_a_reconciliation_lists_its_settlement_files(
    finance: httpx.AsyncClient, books: Books
) -> None:
    """The one bank file of the run: its name, its settlement day (the day the ledger booked
    the cash-out paid), its one line and the SHA-256 of its content, each in its own cell."""
    async with books.engine.connect() as conn:
        file = (
            await conn.execute(
                text(
                    "SELECT (t.at AT TIME ZONE 'UTC')::date AS day,"
                    " encode(f.sha256, 'hex') AS sha256"
                    " FROM cashout_transitions t, reconciliation_files f"
                    " WHERE t.cashout_id = :cashout AND t.status = 'paid'"
                    " AND f.reconciliation_id = :id"
                ),
                {"cashout": books.reconciled_cashout, "id": books.reconciliation_id},
            )
        ).one()
    page = await finance.get(f"/console/books/reconciliation?id={books.reconciliation_id}")
    assert page.status_code == 200
    files = table(page.text, "Settlement files")
    assert files.rows == [
        ["File", "Settlement day", "Lines", "SHA-256"],
        [file_name(file.day), file.day.isoformat(), "1", file.sha256],
    ]
    assert ["Files", "1"] in tables(page.text)[0].rows


@pytest.mark.parametrize("path", ["/console/books", "/console/books/journal"])
async def test_the_books_pages_need_a_session(books: Books, path: str) -> None:
    async with console_client(books.engine, console_settings()) as client:
        answer = await client.get(path)
    assert answer.status_code == 401
    assert 'name="token"' in answer.text
