"""An account's statement, a page at a time, as JSON or as the CLI's CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from ledger.queries import STATEMENT_PAGE_SIZE_MAX, StatementLine, account_balance, statement
from services.api.deps import (
    ACCOUNT_NAME_LENGTH_MAX,
    RANGE_END_DESCRIPTION,
    RANGE_START_DESCRIPTION,
    SEQ_MAX,
    WITHOUT_NUL,
    WITHOUT_NUL_PATTERN,
    ApiSettings,
    Reader,
    Timestamp,
    check_at_most,
    check_range,
    token_route,
)
from services.api.documents import STATEMENT_CSV_COLUMNS, statement_csv_row
from services.api.models import StatementDocument
from services.api.responses import not_found

STATEMENT_PAGE_SIZE_DEFAULT: Final = 100
CSV_MEDIA_TYPE: Final = "text/csv"
CSV_CHUNK_SIZE: Final = 64 * 1024
NEXT_CURSOR_HEADER: Final = "X-Next-Cursor"

router = APIRouter()


def _wants_csv(accept: str | None) -> bool:
    media_types = [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")]
    return CSV_MEDIA_TYPE in media_types


def _statement_line(line: StatementLine) -> dict[str, Any]:
    values = dict(zip(STATEMENT_CSV_COLUMNS, statement_csv_row(line), strict=True))
    values["transfer_id"] = str(line.transfer_id)
    values["event_id"] = line.event_id
    values["pending"] = line.pending
    return values


def _csv_chunks(lines: list[StatementLine]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STATEMENT_CSV_COLUMNS)
    for line in lines:
        writer.writerow(statement_csv_row(line))
        if buffer.tell() > CSV_CHUNK_SIZE:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@token_route(
    router,
    "/v1/accounts/{account}/statement",
    summary="An account's transfers with the running posted balance, a page at a time",
    description="JSON by default; `Accept: text/csv` streams the same columns as "
    "`giftledger statement --csv`, with the next page's cursor in `X-Next-Cursor` (absent "
    "on the last page). Pending transfers are listed and leave the balance unchanged.",
    response_model=StatementDocument,
    responses={
        200: {
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "headers": {
                NEXT_CURSOR_HEADER: {
                    "description": "The next page's `cursor` (CSV only; absent on the last page).",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": SEQ_MAX},
                }
            },
        },
        **not_found("No account has this name."),
    },
)
async def account_statement_route(
    request: Request,
    conn: Reader,
    settings: ApiSettings,
    account: Annotated[
        str,
        Path(
            min_length=1,
            max_length=ACCOUNT_NAME_LENGTH_MAX,
            pattern=WITHOUT_NUL_PATTERN,
            description=f"An account's name, e.g. `creator:<id>:DIAMOND:available`; 1 to "
            f"{ACCOUNT_NAME_LENGTH_MAX} characters, {WITHOUT_NUL}.",
        ),
    ],
    from_time: Annotated[
        Timestamp | None, Query(alias="from", description=RANGE_START_DESCRIPTION)
    ] = None,
    to_time: Annotated[
        Timestamp | None, Query(alias="to", description=RANGE_END_DESCRIPTION)
    ] = None,
    cursor: Annotated[
        int, Query(ge=0, le=SEQ_MAX, description="The previous page's `next_cursor`.")
    ] = 0,
    page_size: Annotated[
        int | None,
        Query(
            ge=1,
            le=STATEMENT_PAGE_SIZE_MAX,
            description=f"Lines per page (default {STATEMENT_PAGE_SIZE_DEFAULT}), at most "
            f"`API_PAGE_SIZE_MAX` ({STATEMENT_PAGE_SIZE_MAX} by default and at most), else 422; "
            "the default is that maximum when it is lower.",
        ),
    ] = None,
) -> dict[str, Any] | Response:
    page_size_max = settings.api_page_size_max
    size = min(STATEMENT_PAGE_SIZE_DEFAULT, page_size_max) if page_size is None else page_size
    check_at_most("page_size", size, page_size_max)
    check_range(from_time, to_time, settings.api_time_range_days_max)
    found = await account_balance(conn, account)
    if found is None:
        raise HTTPException(404, detail=f"no account named {account!r}")
    page = await statement(
        conn,
        found.account_id,
        from_time=from_time,
        to_time=to_time,
        after_seq=cursor,
        page_size=size,
    )
    if _wants_csv(request.headers.get("accept")):
        headers = {}
        if page.next_cursor is not None:
            headers[NEXT_CURSOR_HEADER] = str(page.next_cursor)
        return StreamingResponse(
            _csv_chunks(page.lines),
            media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
            headers=headers,
        )
    return {
        "account": found.name,
        "asset": found.asset,
        "scale": found.scale,
        "lines": [_statement_line(line) for line in page.lines],
        "next_cursor": page.next_cursor,
    }
