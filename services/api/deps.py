"""What the finance API's routers share: the read-only database session (`Reader`, on the app's
read engine: the replica of `API_DATABASE_URL` when set), the API's settings (`ApiSettings`), path
ids and timestamp parameters (`IdPath`, `Timestamp`) with the rules the OpenAPI document states
for them, the checks of ranges and ceilings that the signatures cannot express, and `token_route`,
which puts the token check (and its documented 401 and 403) on each route of a router.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator, WithJsonSchema
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.api.auth import READ_ROLES, require_role
from services.api.errors import problem
from services.api.responses import Responses
from services.api.responses import token_responses as token_responses  # also importable here
from services.runtime.settings import Settings

ID_LENGTH_MAX: Final = 128
ACCOUNT_NAME_LENGTH_MAX: Final = 300
SEQ_MAX: Final = 2**63 - 1
TAG: Final = "finance"
# No NUL character anywhere in a text parameter: PostgreSQL text cannot hold one.
WITHOUT_NUL_PATTERN: Final = r"^[^\x00]*$"
WITHOUT_NUL: Final = "no NUL character"

# How a path parameter holding any id is sent. The routes declare such a parameter with the
# `path` converter (`{creator_id:path}`): uvicorn decodes `%2F` to `/` before the routes are
# matched, so a parameter of one segment could not hold an id with `/` (the event schema accepts
# any visible ASCII). A route's fixed suffix (`/balances`) ends the path, so an id that ends
# like a suffix (`x/balances`) is still read whole.
PERCENT_ENCODED: Final = (
    "Sent percent-encoded as one path segment: `/` as `%2F`, `?` as `%3F`, `#` as `%23`, `%` "
    "as `%25`, and a `.` or `..` segment as `%2E` or `%2E%2E` (clients remove such segments); "
    "an id holding `/` is read whole, whatever it ends with."
)

# An id in a path: a creator, an event or a cash-out.
IdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=ID_LENGTH_MAX,
        pattern=WITHOUT_NUL_PATTERN,
        description=f"1 to {ID_LENGTH_MAX} characters, {WITHOUT_NUL}. {PERCENT_ENCODED}",
    ),
]

# Timestamps ---------------------------------------------------------------------------------

# RFC 3339 with seconds and an offset, as `format: date-time` reads it (`T` or `t`, `Z` or `z`),
# narrowed to what the API can compute with: written years 1970 to 8999 (far enough apart for any
# question about the ledger, and clear of the calendar's ends, where converting to UTC would
# overflow), no leap second, at most 6 decimals of a second. The OpenAPI document publishes this
# pattern; `rfc3339` applies it, then the calendar (no 30 February).
TIMESTAMP_YEAR_MIN: Final = 1970
TIMESTAMP_YEAR_MAX: Final = 8999
TIMESTAMP_PATTERN: Final = (
    r"^(19[7-9][0-9]|[2-8][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
TIMESTAMP_EXAMPLE: Final = "2026-11-01T00:00:00Z"
TIMESTAMP_RULES: Final = (
    f"RFC 3339 with seconds and an offset (`Z` or `+hh:mm`), e.g. `{TIMESTAMP_EXAMPLE}`, in the "
    f"years {TIMESTAMP_YEAR_MIN} to {TIMESTAMP_YEAR_MAX}, at most 6 decimals of a second; in a "
    "query string a `+` is sent as `%2B` (a bare `+` arrives as a space)"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
_NAIVE = re.compile(_DATE_TIME)
_BARE_PLUS = re.compile(_DATE_TIME + r" [0-9]{2}:[0-9]{2}")


def _refusal(value: str) -> str:
    if _NAIVE.fullmatch(value):
        return f"timestamp {value!r} has no time zone: add one, e.g. {TIMESTAMP_EXAMPLE}"
    if _BARE_PLUS.fullmatch(value):
        return f"timestamp {value!r} has a space before its offset: send `+` as `%2B`"
    return f"not an RFC 3339 timestamp: {value!r} ({TIMESTAMP_RULES})"


def rfc3339(value: object) -> object:
    """A timestamp matching TIMESTAMP_PATTERN on a real calendar day, as an aware datetime;
    anything else is refused."""
    if not isinstance(value, str):
        return value
    if _TIMESTAMP.fullmatch(value) is None:
        raise ValueError(_refusal(value))
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as error:
        raise ValueError(f"not a valid timestamp: {value!r} ({error})") from None


Timestamp = Annotated[
    datetime,
    BeforeValidator(rfc3339),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "examples": [TIMESTAMP_EXAMPLE],
        }
    ),
]

# A range `[from, to)`: what each end says in the OpenAPI document.
RANGE_START_DESCRIPTION: Final = f"First instant included. {TIMESTAMP_RULES}."
RANGE_END_DESCRIPTION: Final = (
    f"First instant excluded. {TIMESTAMP_RULES}. With `from`, `to` must be after it and at most "
    "`API_TIME_RANGE_DAYS_MAX` days (366 by default) after it, else 422: a rule between two "
    "parameters, which JSON Schema cannot state."
)
# The two ends as optional query parameters (`from`, `to`): a statement's range, the dead letters'.
RangeStart = Annotated[Timestamp | None, Query(alias="from", description=RANGE_START_DESCRIPTION)]
RangeEnd = Annotated[Timestamp | None, Query(alias="to", description=RANGE_END_DESCRIPTION)]


# Checks the signatures cannot express -------------------------------------------------------


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([problem(("query", field), message)])


def check_at_most(field: str, value: int, maximum: int) -> None:
    """The configured ceiling (`API_PAGE_SIZE_MAX`), below the hard one in the signature."""
    if value > maximum:
        raise _invalid(field, f"Input should be less than or equal to {maximum}")


def check_range(from_time: datetime | None, to_time: datetime | None, days_max: int) -> None:
    """`from` before `to`, and at most `days_max` days apart (when both are given)."""
    if from_time is None or to_time is None:
        return
    if from_time >= to_time:
        raise _invalid("to", "`to` must be after `from`")
    if to_time - from_time > timedelta(days=days_max):
        raise _invalid(
            "to",
            f"the range from `from` to `to` is longer than {days_max} days: ask for less",
        )


# The app's state ----------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# The limits and role the app was created with (`create_app` keeps them in `app.state`).
ApiSettings = Annotated[Settings, Depends(_settings)]


@contextlib.asynccontextmanager
async def reader_connection(
    engine: AsyncEngine, role: str, *, repeatable_read: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A connection in a read-only transaction as `role`; rolled back when the block ends. With
    `repeatable_read`, every statement of the transaction reads the snapshot the first one took
    (a read of many pages that must agree, such as a statement's whole range)."""
    async with engine.connect() as conn:
        if repeatable_read:
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        else:
            await conn.execute(text("SET TRANSACTION READ ONLY"))
        await conn.execute(text("SELECT set_config('role', :role, true)"), {"role": role})
        yield conn


async def _reader(request: Request) -> AsyncIterator[AsyncConnection]:
    state = request.app.state
    async with reader_connection(state.read_engine, state.database_role) as conn:
        yield conn


Reader = Annotated[AsyncConnection, Depends(_reader)]


# Routes behind a token ----------------------------------------------------------------------

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def token_route(
    router: APIRouter,
    path: str,
    *,
    summary: str,
    roles: frozenset[str] = READ_ROLES,
    responses: Responses | None = None,
    **options: Any,
) -> Decorator:
    """`router.get` for a route that `roles` may use: the token check is on the route itself,
    so every route is a plain entry of `app.routes` carrying its own authentication."""
    return router.get(
        path,
        summary=summary,
        tags=[TAG],
        dependencies=[Depends(require_role(roles))],
        responses={**token_responses(roles), **(responses or {})},
        **options,
    )
