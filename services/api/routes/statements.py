"""An account's statement, a page at a time, as JSON or as the CLI's CSV."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response

from ledger.queries import STATEMENT_PAGE_SIZE_MAX, StatementLine, account_balance, statement
from services.api.csv_answers import csv_answer, csv_page_responses, wants_csv
from services.api.deps import (
    ACCOUNT_NAME_LENGTH_MAX,
    PERCENT_ENCODED,
    SEQ_MAX,
    WITHOUT_NUL,
    WITHOUT_NUL_PATTERN,
    ApiSettings,
    RangeEnd,
    RangeStart,
    Reader,
    check_at_most,
    check_range,
    token_route,
)
from services.api.documents import STATEMENT_CSV_COLUMNS, statement_csv_row
from services.api.models import StatementDocument
from services.api.responses import not_found

STATEMENT_PAGE_SIZE_DEFAULT: Final = 100

router = APIRouter()


def _statement_line(line: StatementLine) -> dict[str, Any]:
    """A `StatementLineDocument`: the CSV's columns but `asset` and `scale`, which the JSON
    document gives once, beside the lines."""
    return {
        "seq": line.seq,
        "created_at": line.created_at.isoformat(),
        "transfer_id": str(line.transfer_id),
        "code": line.code,
        "event_id": line.event_id,
        "counterparty": line.counterparty,
        "debit": line.debit,
        "credit": line.credit,
        "pending": line.pending,
        "balance_after": line.balance_after,
        "pending_after": line.pending_after,
    }


@token_route(
    router,
    "/v1/accounts/{account:path}/statement",
    summary="An account's transfers with the running posted balance and pending amount, a page "
    "at a time",
    description="JSON by default; `Accept: text/csv` streams the same columns as "
    "`giftledger statement --csv` ("
    + ", ".join(f"`{column}`" for column in STATEMENT_CSV_COLUMNS)
    + "; amounts are integers in the minor unit of the account's `asset`, `scale` decimal "
    "places below its major unit), with the next page's cursor in `X-Next-Cursor` (absent "
    "on the last page). A hold (a pending transfer, `cashout_hold`) is listed on its side with "
    "`pending` true; what ends it is listed against it: a void (`cashout_released`, "
    "`pending_expired`) on the other side with `pending` true, and a post (`cashout_submitted`) "
    "as two lines of the one transfer, the release of the whole hold (`pending` true, on the "
    "other side) and the amount posted (`pending` false, on the hold's side). The lines with "
    "`pending` false add up to the change in `balance_after`, the posted balance; those with "
    "`pending` true to the change in `pending_after`, the pending amounts still open (both "
    "credits minus debits: a creator's `balance_after + pending_after` is what the balances "
    "call `available`, and `-pending_after` of the available account what they call "
    "`pending`). A page holds `page_size` transfers, so a post may make it a line longer.",
    response_model=StatementDocument,
    responses={**csv_page_responses(), **not_found("No account has this name.")},
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
            f"{ACCOUNT_NAME_LENGTH_MAX} characters, {WITHOUT_NUL}. {PERCENT_ENCODED}",
        ),
    ],
    from_time: RangeStart = None,
    to_time: RangeEnd = None,
    cursor: Annotated[
        int, Query(ge=0, le=SEQ_MAX, description="The previous page's `next_cursor`.")
    ] = 0,
    page_size: Annotated[
        int | None,
        Query(
            ge=1,
            le=STATEMENT_PAGE_SIZE_MAX,
            description=f"Transfers per page (default {STATEMENT_PAGE_SIZE_DEFAULT}), at most "
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
    if wants_csv(request.headers.get("accept")):
        return csv_answer(
            STATEMENT_CSV_COLUMNS,
            (statement_csv_row(found, line) for line in page.lines),
            page.next_cursor,
        )
    return {
        "account": found.name,
        "asset": found.asset,
        "scale": found.scale,
        "lines": [_statement_line(line) for line in page.lines],
        "next_cursor": page.next_cursor,
    }
