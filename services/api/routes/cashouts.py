"""Cash-outs: one with its history, or a list by status and creator."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query

from schemas.events import CashoutStatus
from services.api.deps import (
    ID_LENGTH_MAX,
    WITHOUT_NUL,
    WITHOUT_NUL_PATTERN,
    ApiSettings,
    IdPath,
    Reader,
    check_at_most,
    token_route,
)
from services.api.models import CashoutHistoryDocument, CashoutListDocument
from services.api.queries import cashout_transitions
from services.api.responses import not_found
from services.cashout.store import (
    CASHOUT_CURSOR_LENGTH_MAX,
    CASHOUT_CURSOR_PATTERN,
    CASHOUT_LIST_LIMIT_MAX,
    cashout_document,
    cashout_key,
    cashout_list_document,
    list_cashouts,
    load_cashout,
)

CASHOUT_LIST_LIMIT_DEFAULT: Final = 100

router = APIRouter()


@token_route(
    router,
    "/v1/cashouts/{cashout_id:path}",
    summary="A cash-out (the `cashouts.updated` document) with every state it went through",
    response_model=CashoutHistoryDocument,
    responses=not_found("No cash-out has this id."),
)
async def cashout_route(conn: Reader, cashout_id: IdPath) -> dict[str, Any]:
    cashout = await load_cashout(conn, cashout_id)
    if cashout is None:
        raise HTTPException(404, detail=f"no cash-out {cashout_id!r}")
    document = cashout_document(cashout)
    document["transitions"] = await cashout_transitions(conn, cashout_id)
    return document


@token_route(
    router,
    "/v1/cashouts",
    summary="Cash-outs, newest first, by status and creator, a page at a time",
    description="Cash-outs (the `cashouts.updated` document of each, without its transitions), "
    "newest first by `occurred_at`, then by id, filtered by status and creator. When more match "
    "than `limit`, `next_cursor` is the next page's `cursor` (null on the last page).",
    response_model=CashoutListDocument,
)
async def cashouts_route(
    conn: Reader,
    settings: ApiSettings,
    status: CashoutStatus | None = None,
    creator_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=ID_LENGTH_MAX,
            pattern=WITHOUT_NUL_PATTERN,
            description=f"1 to {ID_LENGTH_MAX} characters, {WITHOUT_NUL}.",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=CASHOUT_CURSOR_LENGTH_MAX,
            pattern=CASHOUT_CURSOR_PATTERN,
            description="The previous page's `next_cursor`, unchanged: the cash-outs listed after "
            "that one (absent: from the newest). It names the last cash-out of that page by its "
            "place in the list: the microseconds from 1970-01-01T00:00:00Z to its `occurred_at`, "
            "`:`, its id.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=CASHOUT_LIST_LIMIT_MAX,
            description=f"Most cash-outs returned (default {CASHOUT_LIST_LIMIT_DEFAULT}), at most "
            f"`API_PAGE_SIZE_MAX` ({CASHOUT_LIST_LIMIT_MAX} by default and at most), else 422; "
            "the default is that maximum when it is lower.",
        ),
    ] = None,
) -> dict[str, Any]:
    limit_max = min(settings.api_page_size_max, CASHOUT_LIST_LIMIT_MAX)
    count = min(CASHOUT_LIST_LIMIT_DEFAULT, limit_max) if limit is None else limit
    check_at_most("limit", count, limit_max)
    after = None if cursor is None else cashout_key(cursor)  # the pattern admits only keys
    page = await list_cashouts(conn, status=status, creator_id=creator_id, after=after, limit=count)
    return cashout_list_document(page)
