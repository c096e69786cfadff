"""Signing in and out of the console, and its stylesheet.

`GET /console/sign-in` is open (the form). `POST /console/sign-in` takes a name and a token of
`API_TOKENS` and, when the token is known and is that name's, opens a session (a sign-in that gives
no name is judged by its token alone): its id goes back in an HttpOnly, SameSite=Strict cookie
(Secure over TLS) that lasts `CONSOLE_SESSION_S`. A sign-in ends no other caller's session
(`sessions`): past `CONSOLE_SESSIONS_PER_CALLER_MAX` it ends the caller's own oldest, and past
`CONSOLE_SESSION_COUNT_MAX` it is answered 503 with Retry-After. A client address that has
failed `CONSOLE_SIGN_IN_FAILURES_MAX` times under a name in `CONSOLE_SIGN_IN_WINDOW_S` is answered
429 with Retry-After under that name, and one that has failed
`CONSOLE_SIGN_IN_ADDRESS_FAILURES_MAX` times under any names under every name
(`sign_in_limits`). The form carries a random value also set in a cookie of its own,
so another site cannot sign a browser in. `POST
/console/sign-out` (with the session's CSRF token) ends the session.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.console.context import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    FormError,
    console_of,
    console_url,
    message_page,
    not_signed_in,
    read_form,
    same_token,
    served_over_tls,
    session_of,
    sign_in_page,
)
from services.console.pages import SECURITY_HEADERS
from services.console.sessions import SessionBookFullError
from services.console.sign_in_limits import NO_NAME, name_of, source_of

STYLESHEET: Final = resources.files("services.console").joinpath("static/console.css")
STYLESHEET_CACHE_S: Final = 3600


async def sign_in_form(request: Request) -> Response:
    if session_of(request) is not None:
        return RedirectResponse(console_url(request, ""), status_code=303)
    return sign_in_page(request, status_code=200)


async def sign_in(request: Request) -> Response:
    console = console_of(request)
    source = source_of(None if request.client is None else request.client.host)
    try:
        form = await read_form(request)
    except FormError as error:
        return sign_in_page(request, status_code=400, message=str(error))
    given_name = form.get("name", "").strip()
    name = name_of(given_name)
    refusal = console.sign_in_limits.refusal(source, name)
    if refusal is not None:
        under = "" if refusal.whole_address or name == NO_NAME else " under that name"
        limited = sign_in_page(
            request,
            status_code=429,
            message=f"Too many failed sign-ins from your address{under}: try again in"
            f" {refusal.retry_after_s} s.",
        )
        limited.headers["Retry-After"] = str(refusal.retry_after_s)
        return limited
    if not same_token(form.get("sign_in_token"), request.cookies.get(SIGN_IN_COOKIE)):
        return sign_in_page(
            request, status_code=403, message="The form was out of date: sign in again."
        )
    caller = console.token_book.caller_of(form.get("token", ""))
    # A name given must be the token's; the answer is the same whichever of the two is wrong.
    if caller is None or (given_name and not same_token(given_name, caller.name)):
        console.sign_in_limits.record_failure(source, name)
        unknown = (
            "That name and token are not known together."
            if given_name
            else "That token is not known."
        )
        return sign_in_page(request, status_code=401, message=unknown)
    try:
        session = console.sessions.open(caller)
    except SessionBookFullError as error:
        full = sign_in_page(
            request,
            status_code=503,
            message=f"Every console session this process keeps is taken: sign in again in"
            f" {error.retry_after_s} s.",
        )
        full.headers["Retry-After"] = str(error.retry_after_s)
        return full
    answer = RedirectResponse(console_url(request, ""), status_code=303)
    answer.set_cookie(
        SESSION_COOKIE,
        session.session_id,
        max_age=console.sessions.session_s,
        path=console_url(request, ""),
        httponly=True,
        samesite="strict",
        secure=served_over_tls(request),
    )
    answer.delete_cookie(SIGN_IN_COOKIE, path=console_url(request, ""))
    return answer


async def sign_out(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    try:
        form = await read_form(request)
    except FormError as error:
        return message_page(request, session, 400, "Cannot read the form", str(error))
    if not session.csrf_matches(form.get("csrf_token")):
        return message_page(request, session, 403, "Refused", "The form was out of date.")
    console_of(request).sessions.close(session.session_id)
    answer = RedirectResponse(console_url(request, "/sign-in"), status_code=303)
    answer.delete_cookie(
        SESSION_COOKIE,
        path=console_url(request, ""),
        httponly=True,
        samesite="strict",
        secure=served_over_tls(request),
    )
    return answer


async def stylesheet(request: Request) -> Response:
    return Response(
        STYLESHEET.read_bytes(),
        media_type="text/css",
        headers={
            **SECURITY_HEADERS,
            "Cache-Control": f"private, max-age={STYLESHEET_CACHE_S}",
        },
    )
