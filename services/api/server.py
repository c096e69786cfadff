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
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Final
from urllib.parse import unquote_plus

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.auth import TokenBook
from services.api.deps import TAG
from services.api.load_shedding import ConcurrencyLimit
from services.api.routes import cashouts, creators, events, reports, service, statements
from services.runtime.settings import Settings

logger = logging.getLogger(__name__)

TITLE: Final = "giftledger finance API"
API_VERSION: Final = "1"
GRACEFUL_SHUTDOWN_S: Final = 10
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
    cashouts.router,
    reports.router,
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


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Each route of `router` as a route of `app` of its own, token check included, so that
    `app.routes` lists every route (`app.include_router` adds one entry for the whole router, whose
    routes it resolves only when a request comes)."""
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
            responses=route.responses,
            deprecated=route.deprecated,
            operation_id=route.operation_id,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            openapi_extra=route.openapi_extra,
        )


def create_app(engine: AsyncEngine, settings: Settings) -> FastAPI:
    """The finance API on `engine`, with the tokens, limits and role of `settings`."""
    app = FastAPI(
        title=TITLE,
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=[{"name": TAG, "description": "Read-only finance routes."}],
        docs_url=None,  # served by _docs_routes, on assets of its own instead of a CDN's
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.database_role = settings.api_database_role
    app.state.token_book = TokenBook(settings.api_tokens)
    _docs_routes(app)
    for router in ROUTERS:
        _add_routes(app, router)
    app.middleware("http")(_refuse_nul_characters)
    app.add_middleware(ConcurrencyLimit, concurrency_max=settings.api_concurrency_max)
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
