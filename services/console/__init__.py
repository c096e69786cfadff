"""The finance and operations console: server-rendered HTML pages served by the API process under
`/console`, for people with a token of `API_TOKENS` (`install_console`).

No front-end build and no script: Jinja2 templates (`templates/`), plain forms, charts as inline
SVG. The console is a Starlette application mounted in the API, so its routes are not in the
OpenAPI document and the JSON API's contract stays as it is. `/console` itself (where signing in
leads) is a route of the API that hands the request to the console as `/console/`, so that it
answers as the console's pages do (401 with the sign-in form without a session, the console's
"unavailable" page when the database does not answer), not as the JSON API.
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, Route
from starlette.types import Receive, Scope, Send

from services.console import (
    action_routes,
    books_routes,
    creator_action_routes,
    page_routes,
    session_routes,
    statement_routes,
)
from services.console.context import Console, message_page, session_of
from services.console.downloads import StatementDownloads
from services.console.pages import CONSOLE_PATH
from services.console.sessions import SessionBook
from services.console.sign_in_limits import SignInLimits

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_S: Final = 5


def _routes() -> list[Route]:
    def get(path: str, endpoint: object) -> Route:
        return Route(path, endpoint, methods=["GET"], include_in_schema=False)  # type: ignore[arg-type]

    def post(path: str, endpoint: object) -> Route:
        return Route(path, endpoint, methods=["POST"], include_in_schema=False)  # type: ignore[arg-type]

    return [
        get("/", page_routes.overview),
        get("/sign-in", session_routes.sign_in_form),
        post("/sign-in", session_routes.sign_in),
        post("/sign-out", session_routes.sign_out),
        get("/static/console.css", session_routes.stylesheet),
        get("/creator", page_routes.creator),
        post("/creator/freeze", creator_action_routes.freeze),
        post("/creator/unfreeze", creator_action_routes.unfreeze),
        get("/statement.csv", statement_routes.statement_csv),
        get("/cashouts", page_routes.cashout_list),
        get("/cashout", page_routes.cashout),
        post("/cashout/cancel", creator_action_routes.cancel_hold),
        post("/cashout/resubmit", creator_action_routes.resubmit_payout),
        get("/dead-letters", page_routes.dead_letter_list),
        get("/dead-letter", page_routes.dead_letter),
        post("/dead-letter/redrive", action_routes.redrive),
        get("/operator", page_routes.operator_page),
        post("/operator/approve", action_routes.approve),
        post("/operator/withdraw", action_routes.withdraw),
        get("/books", books_routes.books),
        get("/books/journal", books_routes.journal),
        get("/books/reconciliation", books_routes.reconciliation),
    ]


async def _database_unavailable(request: Request, error: Exception) -> Response:
    logger.warning("console: the database did not answer: %s", type(error).__name__)
    answer = message_page(
        request,
        session_of(request),
        503,
        "Unavailable",
        "The database does not answer: try again in a moment.",
    )
    answer.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return answer


def console_app(console: Console) -> Starlette:
    """The console's pages, to be mounted at CONSOLE_PATH."""
    app = Starlette(
        routes=_routes(),
        exception_handlers={
            SQLAlchemyError: _database_unavailable,
            OSError: _database_unavailable,
            TimeoutError: _database_unavailable,
        },
    )
    app.state.console = console
    return app


class _AsMountRoot:
    """An ASGI app that answers a request for the mount's own path (`/console`) as the mounted
    app answers its root (`/console/`): with its routes, its exception handlers and its
    headers."""

    def __init__(self, mount: Mount) -> None:
        self.mount = mount

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        at_root = {**scope, "path": scope["path"] + "/"}
        if "raw_path" in scope:
            at_root["raw_path"] = scope["raw_path"] + b"/"
        match, child_scope = self.mount.matches(at_root)
        assert match is Match.FULL, scope["path"]
        await self.mount.handle({**at_root, **child_scope}, receive, send)


def install_console(api: FastAPI, *, statement_downloads: StatementDownloads | None = None) -> None:
    """Mount the console in the API (`create_app`): its pages under `/console/`, and `/console`
    itself, answered as `/console/` (the overview). `statement_downloads`: the limits of the
    statement downloads (the defaults of `StatementDownloads` when None)."""
    settings = api.state.settings
    sessions = SessionBook(
        settings.console_session_s,
        settings.console_session_count_max,
        per_caller_max=settings.console_sessions_per_caller_max,
    )
    limits = SignInLimits(
        settings.console_sign_in_failures_max,
        settings.console_sign_in_window_s,
        address_failures_max=settings.console_sign_in_address_failures_max,
    )
    console = Console(api, sessions, limits, statement_downloads or StatementDownloads())
    api.state.console = console
    mount = Mount(CONSOLE_PATH, console_app(console), name="console")
    api.router.routes.append(Route(CONSOLE_PATH, _AsMountRoot(mount), include_in_schema=False))
    api.router.routes.append(mount)
