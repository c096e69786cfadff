"""The finance API: read-only HTTP JSON over the ledger (`create_app`, `serve_api`).

Authentication: every route but `/healthz` (and the OpenAPI pages `/openapi.json`, `/docs`,
`/redoc` and their scripts and styles under `/docs/static`) needs `Authorization: Bearer <token>`.
`API_TOKENS` maps the SHA-256 hex digest of each token to its role (services/api/auth.py); no token
or an unknown one is 401, a known token whose role may not use a route is 403.

| route                    | no or unknown token | finance | operator |
| ------------------------ | ------------------- | ------- | -------- |
| `GET /healthz`           | allowed             | allowed | allowed  |
| `GET /metrics`           | 401                 | allowed | allowed  |
| `GET /v1/...` (all)      | 401                 | allowed | allowed  |

Both roles read everything today; the `operator` role is reserved for routes that act (retry a
dead letter, resubmit a payout), which will answer 403 to `finance`.

The API can only read: every database session is a read-only transaction
(`SET TRANSACTION READ ONLY`) that first switches to the role `API_DATABASE_ROLE`
(`giftledger_reader` by default, created by migration 0005 with SELECT on every table) with
`set_config('role', :role, true)`, the bound-parameter form of `SET LOCAL ROLE`.

Amounts are integers in the asset's minor unit, each with the asset's `scale`. Timestamps in
queries are RFC 3339 with a time zone (`2026-11-01T00:00:00Z`; a naive one is refused with 422,
never guessed as UTC; a `+` left unencoded in a query string, which arrives as a space, is read as
`+`). Ranges are half-open, `[from, to)`, at most `API_TIME_RANGE_DAYS_MAX` days long. Errors are
JSON `{"detail": ...}`: a message, or for 422 the list of `{loc, msg, type}` problems.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import unquote_plus

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BeforeValidator
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.queries import (
    STATEMENT_PAGE_SIZE_MAX,
    StatementLine,
    account_balance,
    creator_balances,
    statement,
    trial_balance,
)
from schemas import topics
from schemas.assets import ASSET_SCALES, DIAMOND
from services.api.auth import READ_ROLES, TokenBook, require_role
from services.api.documents import (
    STATEMENT_CSV_COLUMNS,
    creator_balances_document,
    statement_csv_row,
    trial_balance_document,
)
from services.api.queries import (
    applied_events,
    cashout_transitions,
    cashouts_report,
    event_dead_letters,
    event_transfers,
    gifts_report,
    money_report,
)
from services.cashout.desk import (
    CASHOUT_LIST_LIMIT_MAX,
    cashout_document,
    list_cashouts,
    load_cashout,
)
from services.cashout.eligibility import creator_eligibility, get_eligibility_settings
from services.runtime.settings import Settings

logger = logging.getLogger(__name__)

TITLE: Final = "giftledger finance API"
API_VERSION: Final = "1"
HEALTH_CHECK_TIMEOUT_S: Final = 5.0
STATEMENT_PAGE_SIZE_DEFAULT: Final = 100
CASHOUT_LIST_LIMIT_DEFAULT: Final = 100
CONCURRENCY_MAX: Final = 256
GRACEFUL_SHUTDOWN_S: Final = 10
ID_LENGTH_MAX: Final = 128
ACCOUNT_NAME_LENGTH_MAX: Final = 300
SEQ_MAX: Final = 2**63 - 1
CSV_MEDIA_TYPE: Final = "text/csv"
NEXT_CURSOR_HEADER: Final = "X-Next-Cursor"
# The OpenAPI pages' scripts, styles and icon, served by the API itself so that the pages work
# offline: the fastapi-offline wheel ships Swagger UI 5 (which renders the OpenAPI 3.1 document
# FastAPI writes; the 4.x of swagger-ui-bundle cannot) and ReDoc 2.
DOCS_ASSETS_PACKAGE: Final = "fastapi_offline"
DOCS_ASSETS_DIRECTORY: Final = "static"
DOCS_STATIC_PATH: Final = "/docs/static"
CashoutStatus = Literal["requested", "held", "submitted", "paid", "rejected", "failed", "returned"]
GiftGrouping = Literal["surface", "creator", "gift", "day"]
Topic = Literal[
    "gifts.sent",
    "gifts.reversed",
    "tips.received",
    "fund.rewarded",
    "marketplace.paid",
    "creators.updated",
    "cashouts.requested",
    "payouts.updated",
]
assert set(get_args(Topic)) == set(topics.CONSUMED_TOPICS)

DESCRIPTION: Final = (
    (__doc__ or "").split("\n\n", 1)[1]
    + """

Reports: `gifts` counts transfers with code `gift_diamonds` (one per gift event, whatever its
`count`) and their milli-diamonds, by when the ledger recorded them, not net of reversals;
`cashouts` counts cash-outs by status, by when they were requested; `money` sums tips, their fees,
fund rewards and marketplace payments and fees per currency and transfer code.
"""
)

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


# Database sessions --------------------------------------------------------------------------


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


# Routes -------------------------------------------------------------------------------------

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _read_route(app: FastAPI, path: str, summary: str, **options: Any) -> Decorator:
    """`app.get` for a route any reading role may use: the token check is on the route itself,
    so every route is a plain entry of `app.routes` carrying its own authentication."""
    return app.get(
        path,
        summary=summary,
        tags=["finance"],
        dependencies=[Depends(require_role(READ_ROLES))],
        **options,
    )


def _creator_routes(app: FastAPI) -> None:
    @_read_route(
        app,
        "/v1/creators/{creator_id}/balances",
        summary="A creator's balances per asset (`giftledger balance --json`)",
    )
    async def creator_balances_route(
        conn: Reader,
        creator_id: Annotated[str, Path(min_length=1, max_length=ID_LENGTH_MAX)],
    ) -> dict[str, Any]:
        accounts = await creator_balances(conn, creator_id)
        if not accounts:
            raise HTTPException(404, detail=f"no accounts for creator {creator_id!r}")
        return creator_balances_document(creator_id, accounts)

    @_read_route(
        app,
        "/v1/creators/{creator_id}/eligibility",
        summary="Each Creator Next cash-out rule with pass or fail and the value seen",
    )
    async def creator_eligibility_route(
        conn: Reader,
        creator_id: Annotated[str, Path(min_length=1, max_length=ID_LENGTH_MAX)],
    ) -> dict[str, Any]:
        report = await creator_eligibility(conn, creator_id, get_eligibility_settings())
        return report.to_document()


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
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _statement_routes(app: FastAPI, settings: Settings) -> None:
    page_size_max = settings.api_page_size_max

    @_read_route(
        app,
        "/v1/accounts/{account}/statement",
        summary="An account's transfers with the running posted balance, a page at a time",
        description="JSON by default; `Accept: text/csv` streams the same columns as "
        "`giftledger statement --csv`, with the next page's cursor in `X-Next-Cursor` (absent "
        "on the last page). Pending transfers are listed and leave the balance unchanged.",
        responses={
            200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}},
            404: {"description": "No account has this name."},
        },
    )
    async def account_statement_route(
        request: Request,
        conn: Reader,
        account: Annotated[str, Path(min_length=1, max_length=ACCOUNT_NAME_LENGTH_MAX)],
        from_time: Annotated[
            Timestamp | None,
            Query(alias="from", description="First instant included (RFC 3339, with a zone)."),
        ] = None,
        to_time: Annotated[
            Timestamp | None,
            Query(alias="to", description="First instant excluded (RFC 3339, with a zone)."),
        ] = None,
        cursor: Annotated[
            int, Query(ge=0, le=SEQ_MAX, description="The previous page's `next_cursor`.")
        ] = 0,
        page_size: Annotated[
            int | None,
            Query(
                ge=1,
                le=STATEMENT_PAGE_SIZE_MAX,
                description=f"Lines per page, at most `API_PAGE_SIZE_MAX` "
                f"(default {STATEMENT_PAGE_SIZE_DEFAULT}, or that maximum when lower).",
            ),
        ] = None,
    ) -> Response:
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
        return JSONResponse(
            {
                "account": found.name,
                "asset": found.asset,
                "scale": found.scale,
                "lines": [_statement_line(line) for line in page.lines],
                "next_cursor": page.next_cursor,
            }
        )


def _event_routes(app: FastAPI) -> None:
    @_read_route(
        app,
        "/v1/events/{event_id}",
        summary="What an input event produced: its transfers, or why it was refused",
        description="`status` is `applied` when the event was applied (then `applied` names the "
        "topic, creator, times and Kafka position, and `transfers` lists what it posted), else "
        "`dead_lettered`; `dead_letters` lists every refusal naming this event id (a conflicting "
        "redelivery of an applied event shows up there too). Without `topic`, every consumed "
        "topic is searched, and an id applied in several topics is a 409.",
        responses={404: {"description": "Neither applied nor dead-lettered."}},
    )
    async def event_route(
        conn: Reader,
        event_id: Annotated[str, Path(min_length=1, max_length=ID_LENGTH_MAX)],
        topic: Annotated[Topic | None, Query(description="The topic, without prefix.")] = None,
    ) -> dict[str, Any]:
        searched = topics.CONSUMED_TOPICS if topic is None else (topic,)
        applied = await applied_events(conn, event_id, searched)
        if len(applied) > 1:
            names = ", ".join(entry["topic"] for entry in applied)
            raise HTTPException(
                409, detail=f"event {event_id!r} was applied in {names}: pass topic"
            )
        letters = await event_dead_letters(conn, event_id, topic)
        if not applied and not letters:
            raise HTTPException(404, detail=f"no event {event_id!r} was applied or dead-lettered")
        return {
            "event_id": event_id,
            "status": "applied" if applied else "dead_lettered",
            "applied": applied[0] if applied else None,
            "transfers": await event_transfers(conn, event_id) if applied else [],
            "dead_letters": letters,
        }


def _cashout_routes(app: FastAPI, settings: Settings) -> None:
    limit_max = min(settings.api_page_size_max, CASHOUT_LIST_LIMIT_MAX)

    @_read_route(
        app,
        "/v1/cashouts/{cashout_id}",
        summary="A cash-out (the `cashouts.updated` document) with every state it went through",
        responses={404: {"description": "No cash-out has this id."}},
    )
    async def cashout_route(
        conn: Reader,
        cashout_id: Annotated[str, Path(min_length=1, max_length=ID_LENGTH_MAX)],
    ) -> dict[str, Any]:
        cashout = await load_cashout(conn, cashout_id)
        if cashout is None:
            raise HTTPException(404, detail=f"no cash-out {cashout_id!r}")
        document = cashout_document(cashout)
        document["transitions"] = await cashout_transitions(conn, cashout_id)
        return document

    @_read_route(app, "/v1/cashouts", summary="Cash-outs, newest first, by status and creator")
    async def cashouts_route(
        conn: Reader,
        status: CashoutStatus | None = None,
        creator_id: Annotated[str | None, Query(min_length=1, max_length=ID_LENGTH_MAX)] = None,
        limit: Annotated[
            int | None,
            Query(
                ge=1,
                le=CASHOUT_LIST_LIMIT_MAX,
                description=f"Most cash-outs returned, at most `API_PAGE_SIZE_MAX` "
                f"(default {CASHOUT_LIST_LIMIT_DEFAULT}, or that maximum when lower).",
            ),
        ] = None,
    ) -> dict[str, Any]:
        count = min(CASHOUT_LIST_LIMIT_DEFAULT, limit_max) if limit is None else limit
        check_at_most("limit", count, limit_max)
        found = await list_cashouts(conn, status=status, creator_id=creator_id, limit=count)
        return {"cashouts": [cashout_document(cashout) for cashout in found]}


RangeStart = Annotated[
    Timestamp, Query(alias="from", description="First instant included (RFC 3339, with a zone).")
]
RangeEnd = Annotated[
    Timestamp, Query(alias="to", description="First instant excluded (RFC 3339, with a zone).")
]


def _report_routes(app: FastAPI, settings: Settings) -> None:
    days_max = settings.api_time_range_days_max

    @_read_route(
        app,
        "/v1/reports/trial-balance",
        summary="Posted debits and credits per account and asset (`giftledger trial-balance`)",
    )
    async def trial_balance_route(
        conn: Reader,
        as_of: Annotated[
            Timestamp | None, Query(description="Posted up to this instant (default: now).")
        ] = None,
    ) -> dict[str, Any]:
        return trial_balance_document(await trial_balance(conn, as_of), as_of)

    @_read_route(
        app,
        "/v1/reports/gifts",
        summary="Gifts and their milli-diamonds per surface, creator, gift or UTC day",
        description="Counts transfers with code `gift_diamonds` recorded in `[from, to)`; "
        "reversals are not netted out (see the `money` and trial balance reports for those).",
    )
    async def gifts_route(
        conn: Reader, from_time: RangeStart, to_time: RangeEnd, group_by: GiftGrouping = "surface"
    ) -> dict[str, Any]:
        check_range(from_time, to_time, days_max)
        return {
            "from": from_time.isoformat(),
            "to": to_time.isoformat(),
            "group_by": group_by,
            "asset": DIAMOND,
            "scale": ASSET_SCALES[DIAMOND],
            "groups": await gifts_report(conn, from_time, to_time, group_by),
        }

    @_read_route(
        app,
        "/v1/reports/cashouts",
        summary="Cash-outs requested in a range: count and amounts by status",
    )
    async def cashouts_report_route(
        conn: Reader, from_time: RangeStart, to_time: RangeEnd
    ) -> dict[str, Any]:
        check_range(from_time, to_time, days_max)
        return {
            "from": from_time.isoformat(),
            "to": to_time.isoformat(),
            "statuses": await cashouts_report(conn, from_time, to_time),
        }

    @_read_route(
        app,
        "/v1/reports/money",
        summary="Tips, fund rewards and marketplace totals per currency and transfer code",
    )
    async def money_report_route(
        conn: Reader, from_time: RangeStart, to_time: RangeEnd
    ) -> dict[str, Any]:
        check_range(from_time, to_time, days_max)
        return {
            "from": from_time.isoformat(),
            "to": to_time.isoformat(),
            "currencies": await money_report(conn, from_time, to_time),
        }


def _service_routes(app: FastAPI) -> None:
    @app.get(
        "/healthz",
        summary="Whether the API can read the database (no token needed)",
        responses={503: {"description": "The database does not answer."}},
    )
    async def healthz(request: Request) -> JSONResponse:
        state = request.app.state
        try:
            async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
                async with reader_connection(state.engine, state.database_role) as conn:
                    await conn.execute(text("SELECT 1"))
        except (OSError, TimeoutError, SQLAlchemyError) as error:
            logger.warning("health check failed: %s", type(error).__name__)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(
        "/metrics",
        summary="Prometheus metrics of this process",
        dependencies=[Depends(require_role(READ_ROLES))],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


# Errors -------------------------------------------------------------------------------------


def _database_unavailable(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError | InterfaceError | PoolTimeoutError | OSError)


async def _on_database_error(request: Request, error: Exception) -> JSONResponse:
    if _database_unavailable(error) or isinstance(error, TimeoutError):
        logger.warning("%s %s: database unavailable: %s", request.method, request.url.path, error)
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": "internal error"}, status_code=500)


async def _on_unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": "internal error"}, status_code=500)


# The OpenAPI pages ----------------------------------------------------------------------------


def _docs_routes(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` on assets under DOCS_STATIC_PATH: no CDN, no token."""
    app.mount(
        DOCS_STATIC_PATH,
        StaticFiles(packages=[(DOCS_ASSETS_PACKAGE, DOCS_ASSETS_DIRECTORY)]),
        name="docs-static",
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", ""))
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{TITLE} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC_PATH}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", ""))
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{TITLE} - ReDoc",
            redoc_js_url=f"{root}{DOCS_STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_STATIC_PATH}/favicon.png",
            with_google_fonts=False,
        )


# The app ------------------------------------------------------------------------------------


async def _refuse_nul_characters(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """No identifier or parameter may hold a NUL character (PostgreSQL text cannot)."""
    if "\x00" in request.url.path or "\x00" in unquote_plus(request.url.query):
        return JSONResponse(
            status_code=422, content={"detail": "NUL characters are not allowed in a request"}
        )
    return await call_next(request)


def create_app(engine: AsyncEngine, settings: Settings) -> FastAPI:
    """The finance API on `engine`, with the tokens, limits and role of `settings`."""
    app = FastAPI(
        title=TITLE,
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=[{"name": "finance", "description": "Read-only finance routes."}],
        docs_url=None,  # served by _docs_routes, on assets of its own instead of a CDN's
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.database_role = settings.api_database_role
    app.state.token_book = TokenBook(settings.api_tokens)
    _docs_routes(app)
    _service_routes(app)
    _creator_routes(app)
    _statement_routes(app, settings)
    _event_routes(app)
    _cashout_routes(app, settings)
    _report_routes(app, settings)
    app.middleware("http")(_refuse_nul_characters)
    app.add_exception_handler(SQLAlchemyError, _on_database_error)
    app.add_exception_handler(OSError, _on_database_error)
    app.add_exception_handler(TimeoutError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected_error)
    return app


# Serving ------------------------------------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the host process owns SIGTERM and SIGINT and
    stops the server through `serve_api`'s `stop` event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bound here rather than by uvicorn, which calls sys.exit when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


async def serve_api(app: FastAPI, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` on host:port until `stop` is set, then finish the requests in hand (for at
    most GRACEFUL_SHUTDOWN_S) and return. Raises OSError when the address cannot be bound."""
    listener = _listening_socket(host, port)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        server_header=False,
        limit_concurrency=CONCURRENCY_MAX,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = _EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    logger.info("finance API on http://%s:%d", host, port)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        try:
            await serving
        finally:
            listener.close()
    logger.info("finance API on %s:%d stopped", host, port)
