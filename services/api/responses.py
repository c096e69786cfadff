"""The answers the finance API's routes share, declared once for the OpenAPI document.

A route names what it can answer in its `responses=`; these functions write each entry (status
code, body model, headers, what it means) so that every route says it the same way:

- `token_responses(roles)`: 401 with `WWW-Authenticate: Bearer`, and 403 when some role may not
  use the route (for a route behind `require_role(roles)`);
- `not_found(description)`, `conflict(description)`: 404 and 409, with what they mean there
  (`path_without_route()`: the 404 of a route with a path parameter of one segment);
- `unreadable_body()`: 400, a body that cannot be decoded;
- `invalid_request()`: 422, one model for every problem with a request (`InvalidRequestDocument`);
- `service_responses()`: 500, and 503 with `Retry-After` (too many requests in hand, or the
  database unavailable), which any route can answer.

`server.create_app` gives every route `service_responses()`, `invalid_request()` when it has
parameters or a body, `unreadable_body()` when it has a body, and `path_without_route()` when
it has a path parameter of one segment (an id of any text is read whole, `/` included); a route
adds the others, and its own 404 replaces that one.
The handlers that write these bodies are services/api/errors.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from services.api.auth import ROLES
from services.api.models import ErrorDocument, InvalidRequestDocument

Responses = dict[int | str, dict[str, Any]]

RETRY_AFTER_HEADER: Final = "Retry-After"
WWW_AUTHENTICATE_HEADER: Final = "WWW-Authenticate"
BEARER_CHALLENGE: Final = "Bearer"
PATH_WITHOUT_ROUTE: Final = (
    "A path no route matches (a numeric id holding `/`, say) is answered 404 as well."
)


def _retry_after() -> dict[str, Any]:
    return {
        RETRY_AFTER_HEADER: {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    }


def unauthenticated() -> Responses:
    """401: no bearer token, or one whose digest is not configured."""
    return {
        401: {
            "model": ErrorDocument,
            "description": "No bearer token, or an unknown one.",
            "headers": {
                WWW_AUTHENTICATE_HEADER: {
                    "description": f"Always `{BEARER_CHALLENGE}`.",
                    "required": True,
                    "schema": {"type": "string", "enum": [BEARER_CHALLENGE]},
                }
            },
        }
    }


def forbidden() -> Responses:
    """403: a known token whose role may not use the route."""
    return {
        403: {"model": ErrorDocument, "description": "The token's role may not use this route."}
    }


def token_responses(roles: Iterable[str]) -> Responses:
    """The answers of the token check for a route that `roles` may use: 401, and 403 when some
    role may not use it."""
    responses = unauthenticated()
    if frozenset(roles) != frozenset(ROLES):
        responses.update(forbidden())
    return responses


def not_found(description: str) -> Responses:
    """404, with what it means on the route (for a route with path parameters)."""
    return {404: {"model": ErrorDocument, "description": f"{description} {PATH_WITHOUT_ROUTE}"}}


def path_without_route() -> Responses:
    """404 for a route with a path parameter of one segment whose own lookups never answer
    404."""
    return {404: {"model": ErrorDocument, "description": PATH_WITHOUT_ROUTE}}


def conflict(description: str) -> Responses:
    """409, with what it means on the route."""
    return {409: {"model": ErrorDocument, "description": description}}


def unreadable_body() -> Responses:
    """400: a body that cannot be decoded at all (not UTF-8), for a route with a body."""
    return {400: {"model": ErrorDocument, "description": "The body cannot be decoded."}}


def invalid_request() -> Responses:
    """422: the parameters (or body) break a rule of this document; every 422 has this body."""
    return {
        422: {
            "model": InvalidRequestDocument,
            "description": "The request breaks a rule of its parameters or body: `detail` lists "
            "each problem, where it is (`loc`), what it is (`msg`) and its kind (`type`).",
        }
    }


UNAVAILABLE: Final = (
    "The API is handling as many requests as it may (`API_CONCURRENCY_MAX`), or the database "
    "does not answer: try again after `Retry-After` seconds."
)


def unavailable(model: Any = ErrorDocument, description: str = UNAVAILABLE) -> Responses:
    """503 with `Retry-After`: too many requests in hand, or the database unavailable."""
    return {503: {"model": model, "description": description, "headers": _retry_after()}}


def service_responses() -> Responses:
    """What any route can answer: 500 (a fault of the API) and 503 (`unavailable`)."""
    return {
        500: {"model": ErrorDocument, "description": "A fault of the API, logged on its side."},
        **unavailable(),
    }
