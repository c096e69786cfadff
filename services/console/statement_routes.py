"""The console's statement download: an account's statement as CSV, every line from the page
shown (`cursor`) to the end of its history, in the columns of `giftledger statement --csv`.

The lines are read `page_size` transfers a query, all in one `REPEATABLE READ` snapshot on one
connection, and streamed a page a chunk, as `giftledger statement --csv` writes them: however
long the statement, only a page is held in memory, and a transfer committed while the file
streams is in none of its lines, so the pending and posted figures of every line agree. The
limits on how many downloads run and for how long are in `downloads`.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Final

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ledger.queries import AccountBalance, account_balance, statement
from services.api.documents import STATEMENT_CSV_COLUMNS, statement_csv_row
from services.console.context import (
    Console,
    console_of,
    message_page,
    not_signed_in,
    query_int,
    query_text,
    session_of,
)
from services.console.downloads import StatementDownloads
from services.console.pages import SECURITY_HEADERS

SEQ_MAX: Final = 2**63 - 1
DOWNLOAD_RETRY_AFTER_S: Final = 30


class StatementDownloadCutOffError(Exception):
    """A download ran past `StatementDownloads.duration_s_max`. Raised after the answer started,
    so the server ends the connection without the answer's last chunk: the client sees the
    download fail, not a complete file that stops early."""


async def statement_csv_chunks(
    console: Console, account: AccountBalance, *, after_seq: int, page_size: int
) -> AsyncGenerator[str, None]:
    """The header, then every line of `account`'s statement after `after_seq`, a chunk per page
    of `page_size` transfers, all read on one connection in one snapshot (opened at the first
    chunk asked for, rolled back when the generator ends or is closed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STATEMENT_CSV_COLUMNS)
    next_cursor: int | None = after_seq
    async with console.reader(repeatable_read=True) as conn:
        while next_cursor is not None:
            page = await statement(
                conn, account.account_id, after_seq=next_cursor, page_size=page_size
            )
            writer.writerows(statement_csv_row(account, line) for line in page.lines)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            next_cursor = page.next_cursor


class StatementStream(StreamingResponse):
    """A download's streamed answer, cut off once it has run `duration_s_max` (at the next chunk
    or while a chunk waits for the client to take it; a page's read is bounded by the statement
    timeout); its chunks' generator (and the connection it holds) closed and its place among the
    running downloads given back however it ends: sent whole, cut off, or the client gone."""

    def __init__(
        self,
        chunks: AsyncGenerator[str, None],
        downloads: StatementDownloads,
        account_name: str,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(chunks, media_type="text/csv; charset=utf-8", headers=headers)
        self._chunks = chunks
        self._downloads = downloads
        self._account_name = account_name

    async def stream_response(self, send: Send) -> None:
        duration_s_max = self._downloads.duration_s_max
        deadline_s = time.monotonic() + duration_s_max

        async def send_in_time(message: Message) -> None:
            with anyio.move_on_after(deadline_s - time.monotonic()):
                if time.monotonic() < deadline_s:
                    await send(message)
                    return
            raise StatementDownloadCutOffError(
                f"the statement download of {self._account_name!r} ran past "
                f"{duration_s_max:g} s: cut off"
            )

        try:
            await super().stream_response(send_in_time)
        finally:
            with anyio.CancelScope(shield=True):
                await self._chunks.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._downloads.end()


async def statement_csv(request: Request) -> Response:
    """An account's statement from `cursor` on, every line of it, with the columns of
    `giftledger statement --csv`; 503 with `Retry-After` while the process runs as many
    downloads as it allows."""
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    name = query_text(request, "account")
    cursor = query_int(request, "cursor", 0, SEQ_MAX) or 0
    console = console_of(request)
    async with console.reader() as conn:
        found = None if name is None else await account_balance(conn, name)
    if found is None:
        return message_page(request, session, 404, "No account", "No account has this name.")
    if request.scope.get("http_version") == "1.0":
        # HTTP/1.0 ends a body by closing the connection, so a download cut off would look
        # complete to the client: a shorter file with nothing to tell it.
        return message_page(
            request,
            session,
            505,
            "HTTP/1.1 needed",
            "The statement download streams, and over HTTP/1.0 one cut short would look"
            " complete. Ask with HTTP/1.1 or later (behind nginx: proxy_http_version 1.1).",
        )
    downloads = console.statement_downloads
    if not downloads.start():
        answer = message_page(
            request,
            session,
            503,
            "Busy",
            f"{downloads.count_max} statement downloads are running: try again in a moment.",
        )
        answer.headers["Retry-After"] = str(DOWNLOAD_RETRY_AFTER_S)
        return answer
    file_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in found.name)[:100]
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="statement-{file_name}.csv"',
    }
    chunks = statement_csv_chunks(console, found, after_seq=cursor, page_size=downloads.page_size)
    return StatementStream(chunks, downloads, found.name, headers)
