"""How the finance API answers when a request does not end in a route's own document: the
exception handlers `server.create_app` installs, each writing the body services/api/responses.py
documents for its status code.

- every 422, from parameter validation, from a check in a route (`deps.check_range`) or from an
  `HTTPException(422, "...")` raised by hand, is an `InvalidRequestDocument`: a list of
  `{loc, msg, type}` problems;
- any other `HTTPException` (400, 401, 403, 404, 405, 409...) is an `ErrorDocument`,
  `{"detail": "..."}`, with the exception's headers (`WWW-Authenticate` on 401); a 405's `Allow`
  names every method of the path, whichever route serves it; a 503 always has `Retry-After`;
- a database that does not answer is 503 with `Retry-After`; any other fault is 500, logged,
  with nothing of the fault in the body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from services.api.responses import RETRY_AFTER_HEADER
from services.runtime.database import error_text

logger = logging.getLogger(__name__)

UNPROCESSABLE: Final = 422
METHOD_NOT_ALLOWED: Final = 405
SERVICE_UNAVAILABLE: Final = 503
# A database outage lasts longer than a busy moment (load shedding asks for 1 s).
DATABASE_RETRY_AFTER_S: Final = 5
# For a 503 raised by a route without a `Retry-After` of its own.
RETRY_AFTER_DEFAULT_S: Final = 5
# Problems listed in one 422 at most (a request has a handful of parameters).
PROBLEM_COUNT_MAX: Final = 100


def problem(loc: tuple[str | int, ...], msg: str, kind: str = "value_error") -> dict[str, Any]:
    """One entry of a 422's `detail`: where, what, and its kind."""
    return {"loc": list(loc), "msg": msg, "type": kind}


def invalid_request_response(problems: list[dict[str, Any]]) -> JSONResponse:
    """The one body of every 422 (`InvalidRequestDocument`)."""
    assert problems, "a 422 names at least one problem"
    return JSONResponse({"detail": problems[:PROBLEM_COUNT_MAX]}, status_code=UNPROCESSABLE)


def _problem_of(error: Mapping[str, Any]) -> dict[str, Any]:
    loc = tuple(part if isinstance(part, int) else str(part) for part in error.get("loc", ()))
    return problem(loc, str(error.get("msg", "invalid")), str(error.get("type", "value_error")))


async def on_request_validation_error(request: Request, error: Exception) -> JSONResponse:
    """422 for parameters or a body that break the document's rules, or a route's own checks."""
    assert isinstance(error, RequestValidationError), error
    problems = [_problem_of(entry) for entry in error.errors()]
    return invalid_request_response(problems or [problem((), "invalid request")])


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on the request's path (Starlette's 405 names only those of
    the first route whose path matches)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


async def on_http_error(request: Request, error: Exception) -> Response:
    """An `HTTPException`: 422 as every 422, anything else as `{"detail": "..."}`."""
    assert isinstance(error, HTTPException), error
    status_code = error.status_code
    headers = dict(error.headers or {})
    if status_code == METHOD_NOT_ALLOWED:
        headers["Allow"] = _allowed_methods(request)
    if status_code == SERVICE_UNAVAILABLE:
        headers.setdefault(RETRY_AFTER_HEADER, str(RETRY_AFTER_DEFAULT_S))
    if not is_body_allowed_for_status_code(status_code):
        return Response(status_code=status_code, headers=headers)
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(status_code).phrase
    if status_code == UNPROCESSABLE:
        response = invalid_request_response([problem((), detail)])
        response.headers.update(headers)
        return response
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _database_unavailable(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error, OperationalError | InterfaceError | PoolTimeoutError | OSError | TimeoutError
    )


def database_unavailable_response() -> JSONResponse:
    """503 with `Retry-After`: the database does not answer."""
    return JSONResponse(
        {"detail": "the database is unavailable"},
        status_code=503,
        headers={RETRY_AFTER_HEADER: str(DATABASE_RETRY_AFTER_S)},
    )


async def on_database_error(request: Request, error: Exception) -> JSONResponse:
    """503 when the database does not answer; 500 for any other database error."""
    if _database_unavailable(error):
        logger.warning(
            "%s %s: database unavailable (%s)", request.method, request.url.path, error_text(error)
        )
        return database_unavailable_response()
    return await on_unexpected_error(request, error)


async def on_unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """500, logged with the fault; the body says nothing of it."""
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": "internal error"}, status_code=500)
