"""The console's Books pages (GET), for finance and operators alike: nothing here acts.

- `/books`: the trial balance as of now (`ledger.queries.trial_balance_creators_summed`: creators'
  accounts summed per kind in the database), grouped by accounting type as `giftledger
  trial-balance` prints it, the period closes (`ledger.closes.list_closes`), and
  the bank reconciliation runs, newest first (`services.reconcile.store`);
- `/books/journal?period=YYYY-MM`: a month's journal a page at a time (`ledger.journal`, the lines
  of `giftledger journal` and `GET /v1/journal`), with the month's totals per asset and its close;
- `/books/reconciliation?id=`: one run, its counts per class, and its cash-outs, breaks first,
  filtered by class and a page at a time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from ledger.closes import list_closes
from ledger.journal import (
    JournalKey,
    asset_totals,
    journal_basis,
    journal_cursor,
    journal_key,
    journal_page,
)
from ledger.periods import PERIOD_YEAR_MAX, PERIOD_YEAR_MIN, Period, parse_period, period_of
from ledger.queries import trial_balance_creators_summed
from services.console.context import (
    console_of,
    message_page,
    not_signed_in,
    query_int,
    query_text,
    session_of,
)
from services.console.pages import render
from services.console.trial_balance_view import asset_trial_balances
from services.rates.rate_cards import load_rate_cards
from services.reconcile.matching import BREAK_KINDS, KIND_ORDER, ItemKind
from services.reconcile.store import (
    ID_MAX,
    list_reconciliations,
    reconciliation_items,
    reconciliation_summary,
)

RECONCILIATION_PAGE_SIZE: Final = 50
JOURNAL_PAGE_SIZE: Final = 100
ITEM_PAGE_SIZE: Final = 100
LINE_NO_MAX: Final = 2**63 - 1
ITEM_KINDS: Final[tuple[str, ...]] = tuple(kind.value for kind in KIND_ORDER)
BREAK_KIND_NAMES: Final = frozenset(kind.value for kind in BREAK_KINDS)


async def books(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    before = query_int(request, "before", 1, ID_MAX)
    async with console_of(request).reader() as conn:
        lines = await trial_balance_creators_summed(conn)
        card = (await load_rate_cards(conn)).in_force_at(datetime.now(UTC))
        closes = await list_closes(conn)
        runs, older_than = await list_reconciliations(
            conn, before_id=before, limit=RECONCILIATION_PAGE_SIZE
        )
    return render(
        request,
        "books.html",
        session=session,
        assets=asset_trial_balances(lines, card),
        closes=list(reversed(closes)),
        runs=runs,
        before=before,
        older_than=older_than,
        current_period=period_of(datetime.now(UTC)).text,
    )


def _neighbours(period: Period) -> tuple[str | None, str | None]:
    """The months before and after `period`, when they are periods too."""
    previous = period.previous() if (period.year, period.month) > (PERIOD_YEAR_MIN, 1) else None
    following = period.next() if (period.year, period.month) < (PERIOD_YEAR_MAX, 12) else None
    return (
        None if previous is None else previous.text,
        None if following is None else following.text,
    )


async def journal(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    asked = query_text(request, "period")
    try:
        period = period_of(datetime.now(UTC)) if asked is None else parse_period(asked)
    except ValueError as error:
        return message_page(request, session, 422, "Not a period", str(error))
    after = _journal_after(request, period)
    async with console_of(request).reader() as conn:
        basis = await journal_basis(conn, period)
        lines = await journal_page(conn, basis, after=after, limit=JOURNAL_PAGE_SIZE + 1)
        totals = await asset_totals(conn, basis)
    page = lines[:JOURNAL_PAGE_SIZE]
    previous_period, next_period = _neighbours(period)
    return render(
        request,
        "journal.html",
        session=session,
        period=period.text,
        first_day=period.first_day,
        last_day=period.last_day,
        close=basis.close,
        totals=totals,
        lines=page,
        first_page=after is None,
        lines_before=page[0].line_no - 1 if page else 0,
        next_cursor=journal_cursor(page[-1].key) if len(lines) > JOURNAL_PAGE_SIZE else None,
        previous_period=previous_period,
        next_period=next_period,
    )


def _journal_after(request: Request, period: Period) -> JournalKey | None:
    """The line a journal page starts after: its `cursor` (`DD:ACCOUNT:CODE`); the first page
    for none, or for one that is not a cursor."""
    cursor = request.query_params.get("cursor")
    try:
        return None if cursor is None else journal_key(cursor, period)
    except ValueError:
        return None


async def reconciliation(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    reconciliation_id = query_int(request, "id", 1, ID_MAX)
    kind = query_text(request, "kind")
    kind = kind if kind in ITEM_KINDS else None
    cursor = query_int(request, "cursor", 0, LINE_NO_MAX) or 0
    async with console_of(request).reader() as conn:
        summary = None
        if reconciliation_id is not None:
            summary = await reconciliation_summary(conn, reconciliation_id)
        if summary is None or reconciliation_id is None:
            return message_page(
                request, session, 404, "No reconciliation", "No reconciliation has this id."
            )
        items, next_cursor = await reconciliation_items(
            conn,
            reconciliation_id,
            kind=None if kind is None else ItemKind(kind),
            after_item=cursor,
            limit=ITEM_PAGE_SIZE,
        )
    return render(
        request,
        "reconciliation.html",
        session=session,
        run=summary,
        kinds=ITEM_KINDS,
        break_kinds=BREAK_KIND_NAMES,
        kind=kind,
        items=items,
        cursor=cursor,
        next_cursor=next_cursor,
    )
