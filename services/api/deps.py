"""What the finance API's routers share: the read-only database session (`Reader`), the API's
settings (`ApiSettings`), timestamp parameters (`Timestamp`), the checks of ranges and ceilings
that the signatures cannot express, and `token_route`, which puts the token check (and its
documented 401 and 403) on each route of a router.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.api.auth import READ_ROLES, ROLES, require_role
from services.api.models import ErrorDocument
from services.runtime.settings import Settings

ID_LENGTH_MAX: Final = 128
ACCOUNT_NAME_LENGTH_MAX: Final = 300
SEQ_MAX: Final = 2**63 - 1
TAG: Final = "finance"

# An id in a path: a creator, an event or a cash-out.
IdPath = Annotated[str, Path(min_length=1, max_length=ID_LENGTH_MAX)]

# Timestamps ---------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(?P<zone>[Zz]|[+-]\d{2}:\d{2})?"
)
_UNENCODED_PLUS = re.compile(r"(:\d{2}(?:\.\d{1,6})?) (\d{2}:\d{2})$")
TIMESTAMP_EXAMPLE: Final = "2026-11-01T00:00:00Z"
# Far enough apart for any question about the ledger, and clear of the calendar's ends, where
# converting to UTC would overflow.
TIMESTAMP_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX: Final = datetime(9000, 1, 1, tzinfo=UTC)


def rfc3339(value: object) -> object:
    """An RFC 3339 timestamp with a time zone, as an aware datetime; anything else is refused."""
    if not isinstance(value, str):
        return value
    candidate = _UNENCODED_PLUS.sub(r"\1+\2", value.strip())
    match = _RFC3339.fullmatch(candidate)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r} (e.g. {TIMESTAMP_EXAMPLE})")
    if match.group("zone") is None:
        raise ValueError(f"timestamp {value!r} has no time zone: add one, e.g. {TIMESTAMP_EXAMPLE}")
    try:
        moment = datetime.fromisoformat(candidate.replace("z", "Z"))
    except ValueError as error:
        raise ValueError(f"not a valid timestamp: {value!r} ({error})") from None
    if not TIMESTAMP_MIN <= moment <= TIMESTAMP_MAX:
        raise ValueError(
            f"timestamp {value!r} is out of range: between {TIMESTAMP_MIN:%Y-%m-%d} and "
            f"{TIMESTAMP_MAX:%Y-%m-%d} (UTC)"
        )
    return moment


Timestamp = Annotated[datetime, BeforeValidator(rfc3339)]


# Checks the signatures cannot express -------------------------------------------------------


def _invalid(field: str, message: str, value: object) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": message, "input": value}]
    )


def check_at_most(field: str, value: int, maximum: int) -> None:
    """The configured ceiling (`API_PAGE_SIZE_MAX`), below the hard one in the signature."""
    if value > maximum:
        raise _invalid(field, f"Input should be less than or equal to {maximum}", value)


def check_range(from_time: datetime | None, to_time: datetime | None, days_max: int) -> None:
    """`from` before `to`, and at most `days_max` days apart (when both are given)."""
    if from_time is None or to_time is None:
        return
    if from_time >= to_time:
        raise _invalid("to", "`to` must be after `from`", to_time.isoformat())
    if to_time - from_time > timedelta(days=days_max):
        raise _invalid(
            "to",
            f"the range from `from` to `to` is longer than {days_max} days: ask for less",
            to_time.isoformat(),
        )


# The app's state ----------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# The limits and role the app was created with (`create_app` keeps them in `app.state`).
ApiSettings = Annotated[Settings, Depends(_settings)]


@contextlib.asynccontextmanager
async def reader_connection(engine: AsyncEngine, role: str) -> AsyncIterator[AsyncConnection]:
    """A connection in a read-only transaction as `role`; rolled back when the block ends."""
    async with engine.connect() as conn:
        await conn.execute(text("SET TRANSACTION READ ONLY"))
        await conn.execute(text("SELECT set_config('role', :role, true)"), {"role": role})
        yield conn


async def _reader(request: Request) -> AsyncIterator[AsyncConnection]:
    state = request.app.state
    async with reader_connection(state.engine, state.database_role) as conn:
        yield conn


Reader = Annotated[AsyncConnection, Depends(_reader)]


# Routes behind a token ----------------------------------------------------------------------

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
Responses = dict[int | str, dict[str, Any]]


def token_responses(roles: Iterable[str]) -> Responses:
    """The answers of the token check for a route that `roles` may use: 401, and 403 when some
    role may not use it."""
    responses: Responses = {
        401: {
            "model": ErrorDocument,
            "description": "No bearer token, or an unknown one.",
            "headers": {
                "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
            },
        }
    }
    if frozenset(roles) != frozenset(ROLES):
        responses[403] = {
            "model": ErrorDocument,
            "description": "The token's role may not use this route.",
        }
    return responses


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
