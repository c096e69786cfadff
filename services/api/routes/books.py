"""The books: bank reconciliations (`giftledger reconcile`) and a period's journal (`giftledger
journal`). Finance and operators read them; nothing here writes."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query

from ledger.closes import PeriodClose
from ledger.journal import (
    JOURNAL_CURSOR_LENGTH_MAX,
    JOURNAL_CURSOR_PATTERN,
    JournalLine,
    asset_totals,
    journal_basis,
    journal_cursor,
    journal_key,
)
from ledger.journal import journal_page as read_journal_page
from ledger.periods import PERIOD_EXAMPLE, PERIOD_PATTERN, parse_period
from services.api.books_models import (
    ItemKindName,
    JournalDocument,
    ReconciliationDocument,
    ReconciliationListDocument,
)
from services.api.deps import SEQ_MAX, ApiSettings, Reader, check_at_most, token_route
from services.api.responses import not_found
from services.reconcile.matching import ItemKind
from services.reconcile.store import (
    ID_MAX,
    ITEM_PAGE_SIZE_MAX,
    LIST_LIMIT_MAX,
    list_reconciliations,
    reconciliation_items,
    reconciliation_summary,
)

PAGE_SIZE_DEFAULT: Final = 100
# The most journal lines a page holds: `API_PAGE_SIZE_MAX` is at most this.
JOURNAL_API_PAGE_SIZE_MAX: Final = 1_000

router = APIRouter()


def _page_size(requested: int | None, hard_max: int, configured_max: int) -> int:
    """The page size asked for, else the default; at most `API_PAGE_SIZE_MAX` (else 422)."""
    limit_max = min(configured_max, hard_max)
    size = min(PAGE_SIZE_DEFAULT, limit_max) if requested is None else requested
    check_at_most("limit", size, limit_max)
    return size


def _limit_description(what: str, hard_max: int) -> str:
    return (
        f"Most {what} returned (default {PAGE_SIZE_DEFAULT}), at most `API_PAGE_SIZE_MAX` "
        f"({hard_max} by default and at most), else 422; the default is that maximum when it "
        "is lower."
    )


Cursor = Annotated[
    int, Query(ge=0, le=SEQ_MAX, description="The previous page's `next_cursor` (0: the start).")
]


@token_route(
    router,
    "/v1/reconciliations",
    summary="Bank reconciliations, newest first (`giftledger reconcile`)",
    response_model=ReconciliationListDocument,
)
async def reconciliations_route(
    conn: Reader,
    settings: ApiSettings,
    cursor: Annotated[
        int,
        Query(
            ge=0,
            le=ID_MAX,
            description="The previous page's `next_cursor`: reconciliations before that id "
            "(0: from the newest).",
        ),
    ] = 0,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=LIST_LIMIT_MAX,
            description=_limit_description("reconciliations", LIST_LIMIT_MAX),
        ),
    ] = None,
) -> dict[str, Any]:
    size = _page_size(limit, LIST_LIMIT_MAX, settings.api_page_size_max)
    page, next_cursor = await list_reconciliations(conn, before_id=cursor or None, limit=size)
    return {"reconciliations": page, "next_cursor": next_cursor}


@token_route(
    router,
    "/v1/reconciliations/{reconciliation_id}",
    summary="One reconciliation with its cash-outs, breaks first, a page at a time",
    description="Each cash-out the settlement files name or should hold, with its class "
    "(`matched`, `missing_in_bank`, `missing_in_ledger`, `amount_or_currency_differs`, "
    "`status_differs`) and what each side says; `kind` keeps one class.",
    response_model=ReconciliationDocument,
    responses=not_found("No reconciliation has this id."),
)
async def reconciliation_route(
    conn: Reader,
    settings: ApiSettings,
    reconciliation_id: Annotated[int, Path(ge=1, le=ID_MAX)],
    kind: ItemKindName | None = None,
    cursor: Cursor = 0,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=ITEM_PAGE_SIZE_MAX,
            description=_limit_description("cash-outs", ITEM_PAGE_SIZE_MAX),
        ),
    ] = None,
) -> dict[str, Any]:
    size = _page_size(limit, ITEM_PAGE_SIZE_MAX, settings.api_page_size_max)
    summary = await reconciliation_summary(conn, reconciliation_id)
    if summary is None:
        raise HTTPException(404, detail=f"no reconciliation {reconciliation_id}")
    items, next_cursor = await reconciliation_items(
        conn,
        reconciliation_id,
        kind=None if kind is None else ItemKind(kind),
        after_item=cursor,
        limit=size,
    )
    return {**summary, "items": items, "next_cursor": next_cursor}


def close_document(close: PeriodClose) -> dict[str, Any]:
    return {
        "id": close.id,
        "closed_at": close.closed_at.isoformat(),
        "closed_by": close.closed_by,
        "account_count": close.account_count,
        "balances_sha256": close.balances_sha256.hex(),
        "chain_link_id": close.chain_link_id,
        "chain_hash": close.chain_hash.hex(),
        "previous_hash": close.previous_hash.hex(),
        "hash": close.hash.hex(),
    }


def journal_line_document(line: JournalLine) -> dict[str, Any]:
    return {
        "line_no": line.line_no,
        "day": line.day.isoformat(),
        "account": line.account,
        "asset": line.asset,
        "scale": line.scale,
        "code": line.code,
        "debits": line.debits,
        "credits": line.credits,
        "opening": line.opening,
        "closing": line.closing,
    }


@token_route(
    router,
    "/v1/journal",
    summary="A month's posted debits and credits per UTC day, account and transfer code",
    description="The same lines as `giftledger journal --csv`, a page at a time: each with the "
    "account's balance (credits minus debits) at the start and at the end of its day, the same "
    "on each line of the account and day, so an account's days chain from its balance at the "
    "period's start to its balance at the end. `assets` sums the "
    "period per asset (debits equal credits); `close` is the period's close, if any. Every page "
    "is computed from the period's transfers (the days rolled up from their per-day totals). "
    "Lines run by day, account and code; `next_cursor` names the page's last line by those, so "
    "on an open month a line added since the page before is on a later page if it sorts after "
    "the cursor, and on none if before, and no line is repeated or skipped.",
    response_model=JournalDocument,
)
async def journal_route(
    conn: Reader,
    settings: ApiSettings,
    period: Annotated[
        str,
        Query(
            pattern=PERIOD_PATTERN,
            description=f"A UTC month, `YYYY-MM` (e.g. `{PERIOD_EXAMPLE}`), years 1970 to 8999.",
        ),
    ],
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=JOURNAL_CURSOR_LENGTH_MAX,
            pattern=JOURNAL_CURSOR_PATTERN,
            description="The previous page's `next_cursor`, unchanged: the lines after that one "
            "(absent: from the first). It names the last line of that page by its place in the "
            "journal: `DD:ACCOUNT:CODE`, its day of the month, its account and its code.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=JOURNAL_API_PAGE_SIZE_MAX,
            description=_limit_description("lines", JOURNAL_API_PAGE_SIZE_MAX),
        ),
    ] = None,
) -> dict[str, Any]:
    size = _page_size(limit, JOURNAL_API_PAGE_SIZE_MAX, settings.api_page_size_max)
    month = parse_period(period)
    basis = await journal_basis(conn, month)
    after = None if cursor is None else journal_key(cursor, month)  # the pattern admits keys
    lines = await read_journal_page(conn, basis, after=after, limit=size + 1)
    page = lines[:size]
    return {
        "from": month.start.isoformat(),
        "to": month.end.isoformat(),
        "period": month.text,
        "closed": basis.close is not None,
        "close": None if basis.close is None else close_document(basis.close),
        "assets": [
            {
                "asset": total.asset,
                "scale": total.scale,
                "debits": total.debits,
                "credits": total.credits,
            }
            for total in await asset_totals(conn, basis)
        ],
        "lines": [journal_line_document(line) for line in page],
        "next_cursor": journal_cursor(page[-1].key) if len(lines) > size else None,
    }
