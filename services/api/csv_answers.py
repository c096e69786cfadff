"""CSV answers of the finance API's paged lists (a statement, the dead letters): asked for with
`Accept: text/csv`, streamed in chunks, the next page's cursor in `X-Next-Cursor` (absent on the
last page), and the OpenAPI entry that says so."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from fastapi.responses import StreamingResponse

from services.api.deps import SEQ_MAX
from services.api.responses import Responses

CSV_MEDIA_TYPE: Final = "text/csv"
CSV_CHUNK_SIZE: Final = 64 * 1024
NEXT_CURSOR_HEADER: Final = "X-Next-Cursor"


def wants_csv(accept: str | None) -> bool:
    """Whether an `Accept` header names `text/csv` (parameters such as `q` aside)."""
    media_types = [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")]
    return CSV_MEDIA_TYPE in media_types


def csv_chunks(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Iterator[str]:
    """The header line, then a line per row, about `CSV_CHUNK_SIZE` characters at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > CSV_CHUNK_SIZE:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_answer(
    columns: Sequence[str], rows: Iterable[Sequence[object]], next_cursor: int | None
) -> StreamingResponse:
    """A page as streamed CSV, with its next page's cursor in `X-Next-Cursor` when there is one."""
    headers = {} if next_cursor is None else {NEXT_CURSOR_HEADER: str(next_cursor)}
    return StreamingResponse(
        csv_chunks(columns, rows), media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8", headers=headers
    )


def csv_page_responses() -> Responses:
    """The 200 entry of a route that also answers CSV: its media type and `X-Next-Cursor`."""
    header: dict[str, Any] = {
        "description": "The next page's `cursor` (CSV only; absent on the last page).",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": SEQ_MAX},
    }
    return {
        200: {
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "headers": {NEXT_CURSOR_HEADER: header},
        }
    }
