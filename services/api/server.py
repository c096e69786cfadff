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
`set_config('role', :role, true)`, the bound-parameter form of `SET LOCAL ROLE`. Those sessions
are on `API_DATABASE_URL`, a streaming replica, when it is set (else on the database the service
writes); the operator actions write, and only on the primary.

Amounts are integers in the asset's minor unit, each with the asset's `scale`. Timestamps in
queries are RFC 3339 with seconds and an offset (`2026-11-01T00:00:00Z`; a naive one is refused
with 422, never guessed as UTC), in the years 1970 to 8999; in a query string a `+` is sent as
`%2B`. Ranges are half-open, `[from, to)`, at most `API_TIME_RANGE_DAYS_MAX` days long. Errors are
JSON: every 422 is `{"detail": [{loc, msg, type}, ...]}` (`InvalidRequestDocument`, FastAPI's
`HTTPValidationError` shape), every other error `{"detail": "..."}` (`ErrorDocument`). Each
route documents every status it can answer: 401 (with `WWW-Authenticate`), 403, 404, 409, 422,
500, and 503 (with `Retry-After`: too many requests in hand, or the database unavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Final

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.convertors import PathConvertor
from starlette.exceptions import HTTPException

from services.api.auth import TokenBook
from services.api.deps import TAG
from services.api.errors import (
    on_database_error,
    on_http_error,
    on_request_validation_error,
    on_unexpected_error,
)
from services.api.load_shedding import ConcurrencyLimit
from services.api.responses import (
    Responses,
    invalid_request,
    path_without_route,
    service_responses,
    unreadable_body,
)
from services.api.routes import (
    books,
    cashouts,
    creators,
    dead_letters,
    events,
    operator,
    reports,
    service,
    statements,
)
from services.api.routes.operator_recovery import router as operator_recovery_router
from services.runtime.listening import listening_socket
from services.runtime.settings import Settings

logger = logging.getLogger(__name__)

TITLE: Final = "giftledger finance API"
API_VERSION: Final = "1"
GRACEFUL_SHUTDOWN_S: Final = 10
API_ADDRESS_VARIABLES: Final = "API_HOST and API_PORT"
# The OpenAPI pages' scripts, styles and icon, served by the API itself so that the pages work
# offline: the fastapi-offline wheel ships Swagger UI 5 (which renders the OpenAPI 3.1 document
# FastAPI writes; the 4.x of swagger-ui-bundle cannot) and ReDoc 2.
DOCS_ASSETS_PACKAGE: Final = "fastapi_offline"
DOCS_ASSETS_DIRECTORY: Final = "static"
DOCS_STATIC_PATH: Final = "/docs/static"
# One router per resource (services/api/routes/), in the order of the OpenAPI document; what they
# share (the read-only session, the settings, timestamps, the token check) is services/api/deps.py
# and the models of their answers services/api/models.py.
ROUTERS: Final = (
    service.router,
    creators.router,
    statements.router,
    events.router,
    dead_letters.router,
    cashouts.router,
    reports.router,
    books.router,
    operator.router,
    operator_recovery_router,
)

DESCRIPTION: Final = (
    (__doc__ or "").split("\n\n", 1)[1]
    + """

Reports: `gifts` counts transfers with code `gift_diamonds` (one per gift event, whatever its
`count`) and their milli-diamonds, by when the ledger recorded them, not net of reversals;
`cashouts` counts cash-outs by status, by when they were requested; `money` sums tips, their fees,
fund rewards and marketplace payments and fees per currency and transfer code.
"""
)


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


def _answers_of_its_parameters(route: APIRoute) -> Responses:
    """What a route's parameters make it answer: 400 when it has a body (one that cannot be
    decoded), 422 when it has parameters or a body, and 404 when it has a path parameter of one
    segment (a numeric id: one holding `/` makes a path no route matches; an id of any text is
    declared `{name:path}` and read whole)."""
    responses: Responses = {}
    if route.body_field is not None:
        responses.update(unreadable_body())
    if route.body_field is not None or get_flat_params(route.dependant):
        responses.update(invalid_request())
    if any(not isinstance(kind, PathConvertor) for kind in route.param_convertors.values()):
        responses.update(path_without_route())
    return responses


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Each route of `router` as a route of `app` of its own, token check included, so that
    `app.routes` lists every route (`app.include_router` adds one entry for the whole router, whose
    routes it resolves only when a request comes). Every route documents what any route can
    answer (`service_responses`, given to the app) and what its parameters make it answer; its
    own `responses` come last, and win."""
    for route in router.routes:
        assert isinstance(route, APIRoute), route
        assert route.methods, route
        app.add_api_route(
            route.path,
            route.endpoint,
            methods=sorted(route.methods),
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses={**_answers_of_its_parameters(route), **route.responses},
            deprecated=route.deprecated,
            operation_id=route.operation_id,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            openapi_extra=route.openapi_extra,
        )


def create_app(
    engine: AsyncEngine, settings: Settings, *, read_engine: AsyncEngine | None = None
) -> FastAPI:
    """The finance API on `engine`, with the tokens, limits and role of `settings`. Its reads go
    through `read_engine` (a streaming replica of `engine`'s database) when given; whatever
    writes (the operator actions) uses `engine`, the primary."""
    app = FastAPI(
        title=TITLE,
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=[{"name": TAG, "description": "Read-only finance routes."}],
        docs_url=None,  # served by _docs_routes, on assets of its own instead of a CDN's
        redoc_url=None,
        responses=service_responses(),
    )
    app.state.engine = engine  # the primary: every write
    app.state.read_engine = read_engine or engine  # every read-only session
    app.state.settings = settings
    app.state.database_role = settings.api_database_role
    app.state.token_book = TokenBook(settings.api_tokens)
    _docs_routes(app)
    for router in ROUTERS:
        _add_routes(app, router)
    app.add_middleware(ConcurrencyLimit, concurrency_max=settings.api_concurrency_max)
    app.add_exception_handler(RequestValidationError, on_request_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(SQLAlchemyError, on_database_error)
    app.add_exception_handler(OSError, on_database_error)
    app.add_exception_handler(TimeoutError, on_database_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    return app


# Serving ------------------------------------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the host process owns SIGTERM and SIGINT and
    stops the server through `serve_api`'s `stop` event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(
    app: FastAPI,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    listener: socket.socket | None = None,
) -> None:
    """Serve `app` on host:port until `stop` is set, then finish the requests in hand (for at
    most GRACEFUL_SHUTDOWN_S) and return. The socket is bound here (`listener`, or one made
    now: `ListenError` when the address cannot be bound) rather than by uvicorn, which calls
    sys.exit when it cannot bind.

    The X-Forwarded-Proto and X-Forwarded-For of a request are believed when it comes from one
    of its settings' `api_forwarded_allow_ips` (a TLS-terminating proxy), and only then: a
    request such a proxy forwards with `X-Forwarded-Proto: https` is https to the app."""
    settings: Settings = app.state.settings
    if listener is None:
        listener = listening_socket(host, port, API_ADDRESS_VARIABLES)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        proxy_headers=True,
        forwarded_allow_ips=settings.api_forwarded_allow_ips,
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
