"""What the console's routes share: the API they are mounted in, the session of a request, the
read-only connection, forms and query values, and the answers every page gives (HTML with the
console's headers, 401 with the sign-in form, 403 for a role that may not act).
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api.auth import TokenBook
from services.api.deps import reader_connection
from services.console.downloads import StatementDownloads
from services.console.pages import console_url as console_url
from services.console.pages import render
from services.console.sessions import ConsoleSession, SessionBook
from services.console.sign_in_limits import SignInLimits
from services.runtime.settings import Settings

SESSION_COOKIE: Final = "giftledger_console"
SIGN_IN_COOKIE: Final = "giftledger_console_sign_in"
FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"
FORM_BYTES_MAX: Final = 16 * 1024
FORM_FIELD_COUNT_MAX: Final = 20
QUERY_VALUE_LENGTH_MAX: Final = 300
ACTION_KEY_PREFIX: Final = "console-"


@dataclass(frozen=True, slots=True)
class Console:
    """The console's view of the API process it is mounted in (read at each request, so that
    what the process sets after start, such as its Kafka cluster, is seen)."""

    api: FastAPI
    sessions: SessionBook
    sign_in_limits: SignInLimits
    statement_downloads: StatementDownloads = field(default_factory=StatementDownloads)

    @property
    def settings(self) -> Settings:
        settings: Settings = self.api.state.settings
        return settings

    @property
    def token_book(self) -> TokenBook:
        book: TokenBook = self.api.state.token_book
        return book

    @property
    def kafka_bootstrap_servers(self) -> str | None:
        servers: str | None = getattr(self.api.state, "kafka_bootstrap_servers", None)
        return servers or self.settings.kafka_bootstrap_servers

    @contextlib.asynccontextmanager
    async def reader(self, *, repeatable_read: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction as the API's database role, on its read engine; with
        `repeatable_read`, one snapshot for all its statements."""
        state = self.api.state
        async with reader_connection(
            state.read_engine, state.database_role, repeatable_read=repeatable_read
        ) as conn:
            yield conn


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(request: Request) -> ConsoleSession | None:
    return console_of(request).sessions.find(request.cookies.get(SESSION_COOKIE))


def served_over_tls(request: Request) -> bool:
    """Whether the request came over https: behind a TLS-terminating proxy, as its
    X-Forwarded-Proto says when the proxy's address is one of `API_FORWARDED_ALLOW_IPS`
    (`serve_api`)."""
    return request.url.scheme == "https"


def new_action_key() -> str:
    """The idempotency key a form carries: submitting the same form twice is one action."""
    return ACTION_KEY_PREFIX + secrets.token_hex(16)


def new_sign_in_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


# Answers ------------------------------------------------------------------------------------


def sign_in_page(request: Request, *, status_code: int, message: str | None = None) -> HTMLResponse:
    """The sign-in form, with a fresh token against cross-site sign-in (also in a cookie)."""
    token = new_sign_in_token()
    answer = render(
        request,
        "sign_in.html",
        session=None,
        status_code=status_code,
        sign_in_token=token,
        message=message,
        session_length=_duration_text(console_of(request).sessions.session_s),
    )
    answer.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=600,
        path=console_url(request, ""),
        httponly=True,
        samesite="strict",
        secure=served_over_tls(request),
    )
    return answer


def _duration_text(duration_s: int) -> str:
    if duration_s % 3600 == 0:
        return f"{duration_s // 3600} h"
    return f"{duration_s // 60} min"


def not_signed_in(request: Request) -> HTMLResponse:
    return sign_in_page(request, status_code=401, message="Sign in to see this page.")


def message_page(
    request: Request, session: ConsoleSession | None, status_code: int, title: str, text: str
) -> HTMLResponse:
    return render(
        request, "message.html", session=session, status_code=status_code, title=title, text=text
    )


def may_not_act(request: Request, session: ConsoleSession) -> HTMLResponse:
    return message_page(
        request,
        session,
        403,
        "Not allowed",
        f"The {session.caller.role} role reads; only the operator role acts.",
    )


# Forms and query values ---------------------------------------------------------------------


class FormError(ValueError):
    """A form the console cannot read (wrong type, too large, too many fields)."""


async def read_form(request: Request) -> dict[str, str]:
    """A URL-encoded form of at most FORM_BYTES_MAX bytes and FORM_FIELD_COUNT_MAX fields; the
    first value of each field."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise FormError(f"send the form as {FORM_MEDIA_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > FORM_BYTES_MAX:
            raise FormError(f"the form is larger than {FORM_BYTES_MAX} bytes")
    try:
        fields = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=FORM_FIELD_COUNT_MAX,
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise FormError(f"the form cannot be read: {error}") from None
    form: dict[str, str] = {}
    for name, value in fields:
        form.setdefault(name, value)
    return form


def query_text(request: Request, name: str) -> str | None:
    """A query value, stripped; None when absent or empty. Too long or holding NUL: None too."""
    value = request.query_params.get(name, "").strip()
    if not value or len(value) > QUERY_VALUE_LENGTH_MAX or "\x00" in value:
        return None
    return value


def query_int(request: Request, name: str, minimum: int, maximum: int) -> int | None:
    value = query_text(request, name)
    if value is None or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if minimum <= number <= maximum else None


# The days a filter may name: the years the API's timestamps may be written in, so that the day
# after the last one is a day too (9999-12-31 has none).
QUERY_DAY_FIRST: Final = date(1970, 1, 1)
QUERY_DAY_LAST: Final = date(8999, 12, 31)


def query_day(request: Request, name: str) -> date | None:
    """A `YYYY-MM-DD` query value (a UTC day from `QUERY_DAY_FIRST` to `QUERY_DAY_LAST`), or
    None, as for any value a page cannot use."""
    value = query_text(request, name)
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    return day if QUERY_DAY_FIRST <= day <= QUERY_DAY_LAST else None


def day_start(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), tzinfo=UTC)


def day_after(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), tzinfo=UTC) + timedelta(days=1)
