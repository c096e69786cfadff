"""The dead letters list: every input of this deployment that could not be applied, newest first,
a page at a time, as JSON or CSV. Finance and operators read it (re-driving is an operator
action: `POST /v1/operator/dead-letters/redrive`)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from schemas.events import RULE_NAME_LENGTH_MAX, VISIBLE_ASCII_PATTERN
from schemas.topics import ConsumedTopic
from services.api.csv_answers import csv_answer, csv_page_responses, wants_csv
from services.api.dead_letters import (
    DEAD_LETTER_CSV_COLUMNS,
    DEAD_LETTER_PAGE_SIZE_MAX,
    DeadLetterFilter,
    dead_letter_csv_row,
    dead_letter_list_document,
    list_dead_letters,
)
from services.api.deps import (
    SEQ_MAX,
    ApiSettings,
    RangeEnd,
    RangeStart,
    Reader,
    check_at_most,
    check_range,
    token_route,
)
from services.api.models import DeadLetterListDocument

DEAD_LETTER_PAGE_SIZE_DEFAULT: Final = 100

router = APIRouter()


@token_route(
    router,
    "/v1/dead-letters",
    summary="Dead letters: inputs that could not be applied, newest first, a page at a time",
    description="This deployment's dead letters (its `KAFKA_TOPIC_PREFIX`), by source topic, "
    "error and when they were recorded (`[from, to)`), newest first, each with its source "
    "partition and offset, event id, error, detail and whether it was re-driven. JSON by "
    "default; `Accept: text/csv` streams the columns of `giftledger dead-letters --csv`, with "
    "the next page's cursor in `X-Next-Cursor` (absent on the last page). The same list as the "
    "console's dead letters page and `giftledger dead-letters`.",
    response_model=DeadLetterListDocument,
    responses=csv_page_responses(),
)
async def dead_letters_route(
    request: Request,
    conn: Reader,
    settings: ApiSettings,
    topic: Annotated[
        ConsumedTopic | None,
        Query(description="Only dead letters read from this topic (without the prefix)."),
    ] = None,
    error: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=RULE_NAME_LENGTH_MAX,
            pattern=VISIBLE_ASCII_PATTERN,
            description=f"Only dead letters with this error, e.g. `schema_violation`; 1 to "
            f"{RULE_NAME_LENGTH_MAX} visible ASCII characters.",
        ),
    ] = None,
    from_time: RangeStart = None,
    to_time: RangeEnd = None,
    cursor: Annotated[
        int,
        Query(
            ge=0,
            le=SEQ_MAX,
            description="The previous page's `next_cursor`: the dead letters listed after that "
            "one (0: from the newest; an id that names no dead letter gives an empty page).",
        ),
    ] = 0,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=DEAD_LETTER_PAGE_SIZE_MAX,
            description=f"Most dead letters returned (default {DEAD_LETTER_PAGE_SIZE_DEFAULT}), "
            f"at most `API_PAGE_SIZE_MAX` ({DEAD_LETTER_PAGE_SIZE_MAX} by default and at most), "
            "else 422; the default is that maximum when it is lower.",
        ),
    ] = None,
) -> dict[str, Any] | Response:
    limit_max = min(settings.api_page_size_max, DEAD_LETTER_PAGE_SIZE_MAX)
    count = min(DEAD_LETTER_PAGE_SIZE_DEFAULT, limit_max) if limit is None else limit
    check_at_most("limit", count, limit_max)
    check_range(from_time, to_time, settings.api_time_range_days_max)
    page = await list_dead_letters(
        conn,
        settings.kafka_topic_prefix,
        DeadLetterFilter(topic=topic, error=error, from_time=from_time, to_time=to_time),
        after_id=cursor or None,
        limit=count,
    )
    if wants_csv(request.headers.get("accept")):
        return csv_answer(
            DEAD_LETTER_CSV_COLUMNS,
            (dead_letter_csv_row(row) for row in page.rows),
            page.next_cursor,
        )
    return dead_letter_list_document(page)
