"""The console's statement: the creator page's table carries each line's running pending amount
beside its posted balance, as the CLI, the API and the CSV do; the CSV download is every line from
the page shown to the end, however many, read a page at a time from one snapshot, as `giftledger
statement --csv` writes it; how many downloads run at once, and for how long, is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chart import creator_diamonds_available
from ledger.model import AccountFlags, PostResult, Transfer, TransferCode, TransferFlags
from ledger.queries import AccountBalance, account_balance, statement
from ledger.service import Ledger
from schemas.assets import DIAMOND
from services.api.documents import STATEMENT_CSV_COLUMNS, statement_csv_row
from services.api.server import create_app
from services.console import install_console
from services.console.context import Console
from services.console.downloads import StatementDownloads
from services.console.pages import amount_text
from services.console.statement_routes import statement_csv_chunks
from tests.api_server import served_client
from tests.console_http import (
    FINANCE_TOKEN,
    Feed,
    console_client,
    console_settings,
    new_creator_id,
    sign_in,
    table,
)
from tests.ledger_helpers import make_accounts

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


# The CSV download -----------------------------------------------------------------------------

F = TransferFlags
SYN = TransferCode.SYNTHETIC
# More lines than a download once stopped at (10,000, the rest named in X-Next-Cursor) and than
# the default page of 1,000 transfers.
BIG_STATEMENT_TRANSFER_COUNT = 10_050
SMALL_PAGE_SIZE = 3
LEFT_DOWNLOAD_WAITS_MAX = 100
LEFT_DOWNLOAD_WAIT_S = 0.05


async def _account_with_holds(engine: AsyncEngine, plain_count: int) -> AccountBalance:
    """An account credited `plain_count` times, with holds on it among them: one posted in part
    (two lines), one voided, one still open, each spread over several small pages."""
    ledger = Ledger(engine)
    prefix = f"console-csv-{uuid.uuid4().hex[:10]}"
    account_id, other_id = await make_accounts(ledger, prefix, [AccountFlags.NONE] * 2)
    holds = [uuid.uuid4() for _ in range(3)]
    transfers = [
        Transfer(uuid.uuid4(), other_id, account_id, 1 + index % 9, SYN)
        for index in range(plain_count)
    ]
    middle = plain_count // 2
    transfers[middle:middle] = [
        Transfer(holds[0], account_id, other_id, 700, SYN, F.PENDING),
        Transfer(holds[1], other_id, account_id, 300, SYN, F.PENDING),
        Transfer(uuid.uuid4(), other_id, account_id, 5, SYN),
        Transfer(uuid.uuid4(), 0, 0, 400, SYN, F.POST_PENDING, holds[0]),
        Transfer(holds[2], account_id, other_id, 250, SYN, F.PENDING),
        Transfer(uuid.uuid4(), 0, 0, 0, SYN, F.VOID_PENDING, holds[1]),
    ]
    assert await ledger.post(transfers) == [PostResult.OK] * len(transfers)
    async with engine.connect() as conn:
        name = await conn.scalar(
            text("SELECT name FROM accounts WHERE id = :id"), {"id": account_id}
        )
        found = await account_balance(conn, str(name))
    assert found is not None
    return found


async def _whole_statement_csv(engine: AsyncEngine, account: AccountBalance) -> str:
    """What `giftledger statement --csv` writes: every line, a page at a time, one snapshot."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(STATEMENT_CSV_COLUMNS)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        cursor: int | None = 0
        while cursor is not None:
            page = await statement(conn, account.account_id, after_seq=cursor, page_size=1_000)
            writer.writerows(statement_csv_row(account, line) for line in page.lines)
            cursor = page.next_cursor
    return out.getvalue()


@contextlib.asynccontextmanager
async def _console_with(
    engine: AsyncEngine, downloads: StatementDownloads
) -> AsyncIterator[tuple[httpx.AsyncClient, Console]]:
    """The API app and its console with these download limits, a finance user signed in."""
    app = create_app(engine, console_settings())
    install_console(app, statement_downloads=downloads)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as http:
        assert (await sign_in(http, FINANCE_TOKEN)).status_code == 303
        yield http, app.state.console


async def test_the_statement_csv_is_every_line_of_the_statement_however_many(
    engine: AsyncEngine,
) -> None:
    account = await _account_with_holds(engine, BIG_STATEMENT_TRANSFER_COUNT)
    expected = await _whole_statement_csv(engine, account)
    assert expected.count("\n") > 1 + BIG_STATEMENT_TRANSFER_COUNT
    async with console_client(engine, console_settings()) as http:
        assert (await sign_in(http, FINANCE_TOKEN)).status_code == 303
        answer = await http.get("/console/statement.csv", params={"account": account.name})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert "x-next-cursor" not in answer.headers
    assert answer.text == expected


async def test_the_statement_csv_reads_a_page_at_a_time_from_the_page_shown_on(
    engine: AsyncEngine,
) -> None:
    """Pages of three transfers: every line of the statement, the pending lines' running figure
    carried from page to page; from a cursor, the lines after it."""
    account = await _account_with_holds(engine, 20)
    expected = await _whole_statement_csv(engine, account)
    rows = list(csv.reader(io.StringIO(expected)))
    downloads = StatementDownloads(page_size=SMALL_PAGE_SIZE)
    async with _console_with(engine, downloads) as (http, _):
        whole = await http.get("/console/statement.csv", params={"account": account.name})
        cursor = rows[8][0]
        rest = await http.get(
            "/console/statement.csv", params={"account": account.name, "cursor": cursor}
        )
    assert whole.status_code == 200, whole.text
    assert whole.text == expected
    assert [row for row in csv.reader(io.StringIO(rest.text))] == [
        rows[0],
        *[row for row in rows[1:] if int(row[0]) > int(cursor)],
    ]
    assert downloads.running == 0


async def test_the_statement_csv_comes_from_one_snapshot(engine: AsyncEngine) -> None:
    """A transfer committed while the file streams, after its first page, is in none of its
    lines: every page reads the snapshot the first one took."""
    account = await _account_with_holds(engine, 20)
    expected = await _whole_statement_csv(engine, account)
    other_id = await _counterparty_id(engine, account)
    async with _console_with(engine, StatementDownloads()) as (_, console):
        chunks = statement_csv_chunks(console, account, after_seq=0, page_size=SMALL_PAGE_SIZE)
        try:
            first = await anext(chunks)
            late = Transfer(uuid.uuid4(), other_id, account.account_id, 11, SYN)
            assert await Ledger(engine).post([late]) == [PostResult.OK]
            streamed = first + "".join([chunk async for chunk in chunks])
        finally:
            await chunks.aclose()
    assert streamed == expected
    assert str(late.id) not in streamed
    assert str(late.id) in await _whole_statement_csv(engine, account)


async def _counterparty_id(engine: AsyncEngine, account: AccountBalance) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT debit_account_id FROM transfers WHERE credit_account_id = :id"
                " AND flags = 0 LIMIT 1"
            ),
            {"id": account.account_id},
        )
    return int(found)


async def test_a_download_past_the_running_limit_is_answered_503_until_one_ends(
    engine: AsyncEngine,
) -> None:
    account = await _account_with_holds(engine, 2)
    downloads = StatementDownloads(count_max=1)
    async with _console_with(engine, downloads) as (http, _):
        assert downloads.start()  # a download running
        busy = await http.get("/console/statement.csv", params={"account": account.name})
        downloads.end()
        free = await http.get("/console/statement.csv", params={"account": account.name})
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "30"
    assert "statement downloads are running" in busy.text
    assert free.status_code == 200
    assert free.text == await _whole_statement_csv(engine, account)
    assert downloads.running == 0


async def _download(http: httpx.AsyncClient, account_name: str, received: bytearray) -> None:
    """The statement's CSV streamed into `received` as it comes."""
    params = {"account": account_name}
    async with http.stream("GET", "/console/statement.csv", params=params) as answer:
        assert answer.status_code == 200
        async for chunk in answer.aiter_bytes():
            received.extend(chunk)


async def test_a_download_running_past_its_time_is_cut_off_and_fails_for_the_client(
    engine: AsyncEngine,
) -> None:
    """Served by uvicorn: a download still streaming after `duration_s_max` ends without its
    last chunk, which the client reports as an error, never as a complete but shorter file; its
    place among the running downloads is given back."""
    account = await _account_with_holds(engine, 3_000)
    downloads = StatementDownloads(page_size=1, duration_s_max=0.3)
    app = create_app(engine, console_settings())
    install_console(app, statement_downloads=downloads)
    async with served_client(app) as http:
        assert (await sign_in(http, FINANCE_TOKEN)).status_code == 303
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            await _download(http, account.name, received)
    assert received.startswith(",".join(STATEMENT_CSV_COLUMNS).encode())
    assert received.count(b"\n") < 3_000
    assert downloads.running == 0


async def test_a_download_over_http_1_0_is_refused_rather_than_cut_off_unseen(
    engine: AsyncEngine,
) -> None:
    """Served by uvicorn: HTTP/1.0 ends a body by closing the connection, so a download cut off
    there would look complete; it is answered 505 and no download starts."""
    account = await _account_with_holds(engine, 3)
    downloads = StatementDownloads(page_size=1)
    app = create_app(engine, console_settings())
    install_console(app, statement_downloads=downloads)
    async with served_client(app) as http:
        assert (await sign_in(http, FINANCE_TOKEN)).status_code == 303
        cookies = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
        address = httpx.URL(str(http.base_url))
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(
            f"GET /console/statement.csv?account={account.name} HTTP/1.0\r\n"
            f"Host: {address.host}\r\nCookie: {cookies}\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        await writer.wait_closed()
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1] == b"505", answer[:300]
    assert b"proxy_http_version 1.1" in answer
    assert ",".join(STATEMENT_CSV_COLUMNS).encode() not in answer
    assert downloads.running == 0


async def test_a_download_the_client_leaves_gives_back_its_place_and_connection(
    engine: AsyncEngine,
) -> None:
    """Served by uvicorn: the client takes the first chunk and closes the connection; the
    download ends there, its place given back and its snapshot's connection back in the pool."""
    account = await _account_with_holds(engine, 3_000)
    downloads = StatementDownloads(page_size=1)
    app = create_app(engine, console_settings())
    install_console(app, statement_downloads=downloads)
    pool = engine.sync_engine.pool
    async with served_client(app) as http:
        assert (await sign_in(http, FINANCE_TOKEN)).status_code == 303
        params = {"account": account.name}
        async with http.stream("GET", "/console/statement.csv", params=params) as answer:
            assert answer.status_code == 200
            first = await anext(answer.aiter_bytes())
            assert downloads.running == 1
        assert first.startswith(",".join(STATEMENT_CSV_COLUMNS).encode())
        for _ in range(LEFT_DOWNLOAD_WAITS_MAX):
            if downloads.running == 0 and pool.checkedout() == 0:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(LEFT_DOWNLOAD_WAIT_S)
    assert downloads.running == 0
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
