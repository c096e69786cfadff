"""The console's statement: the creator page's table carries each line's running pending amount
beside its posted balance, as the CLI, the API and the CSV do."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chart import creator_diamonds_available
from ledger.queries import account_balance, statement
from schemas.assets import DIAMOND
from services.console.pages import amount_text
from tests.console_http import (
    FINANCE_TOKEN,
    Feed,
    console_client,
    console_settings,
    new_creator_id,
    sign_in,
    table,
)

CREATOR_DIAMONDS = 5_000
CASHOUT_DIAMONDS = 2_000
STATEMENT_HEADER = [
    "#",
    "Recorded",
    "Code",
    "Event",
    "Counterparty",
    "Debit",
    "Credit",
    "Balance after",
    "Pending after",
]


async def test_the_creator_pages_statement_shows_each_lines_running_pending_amount(
    engine: AsyncEngine,
) -> None:
    """A creator with a cash-out held and one failed by the bank: the hold still open shows as
    pending, the failed one's hold and its release cancel out, and the column ends at what the
    balances call pending (negated: credits minus debits)."""
    feed = await Feed.on(engine)
    creator = await feed.eligible_creator(new_creator_id("pending"), CREATOR_DIAMONDS)
    await feed.held_cashout(creator, CASHOUT_DIAMONDS)
    await feed.failed_cashout(creator, CASHOUT_DIAMONDS)
    account = creator_diamonds_available(creator).name
    async with engine.connect() as conn:
        found = await account_balance(conn, account)
        assert found is not None
        page = await statement(conn, found.account_id, page_size=100)
    assert page.next_cursor is None
    assert found.pending == CASHOUT_DIAMONDS * 1_000  # the hold still open, in milli-diamonds
    assert page.lines[-1].pending_after == -found.pending

    async with console_client(engine, console_settings()) as http:
        assert (await sign_in(http, FINANCE_TOKEN)).status_code == 303
        answer = await http.get("/console/creator", params={"id": creator, "account": account})
        # a later page starts from the holds open before it
        later = await http.get(
            "/console/creator",
            params={"id": creator, "account": account, "page_size": 2, "cursor": page.lines[1].seq},
        )
    assert answer.status_code == 200, answer.text
    assert later.status_code == 200, later.text
    shown = table(answer.text, f"{account}: lines after")
    assert shown.rows[0] == STATEMENT_HEADER
    assert [(int(row[0]), row[7], row[8]) for row in shown.rows[1:]] == [
        (
            line.seq,
            amount_text(line.balance_after, DIAMOND),
            amount_text(line.pending_after, DIAMOND),
        )
        for line in page.lines
    ]
    pending_column = [row[8] for row in shown.rows[1:]]
    two_thousand = amount_text(-CASHOUT_DIAMONDS * 1_000, DIAMOND)
    assert pending_column == [
        amount_text(0, DIAMOND),  # the gift
        two_thousand,  # the first hold
        amount_text(-2 * CASHOUT_DIAMONDS * 1_000, DIAMOND),  # the second
        two_thousand,  # the second released when the bank failed it
    ]
    later_shown = table(later.text, f"{account}: lines after")
    assert [row[8] for row in later_shown.rows[1:]] == pending_column[2:]
