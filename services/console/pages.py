"""Rendering the console's pages: Jinja2 templates (services/console/templates/) with every value
escaped (autoescape on for every template, undefined values an error), and the headers every
answer carries: no caching, no framing, and a content security policy that allows no script at
all, so a value that escaping somehow missed still cannot run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from schemas.assets import ASSET_SCALES, format_amount
from services.console.shown_bytes import visible_text
from services.trial_balance_text import grouped_amount

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("services.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


CONSOLE_PATH: Final = "/console"


def console_url(request: Request, path: str, query: Mapping[str, Any] | None = None) -> str:
    """A console path (`/console` + `path`, under the API's root path), with the query values
    that are not None. Ids travel in the query: any id (with `/`, `?`, `#`) makes a working link."""
    root = str(request.scope.get("app_root_path", request.scope.get("root_path", "")))
    kept = {name: value for name, value in (query or {}).items() if value is not None}
    return f"{root}{CONSOLE_PATH}{path}" + (f"?{urlencode(kept)}" if kept else "")


def amount_text(amount_minor: int | None, asset: str) -> str:
    """`12500, "DIAMOND"` → `12.500 DIAMOND`; an asset the console does not know: the integer."""
    if amount_minor is None:
        return ""
    if asset not in ASSET_SCALES:
        return f"{amount_minor} {asset} (minor units)"
    return format_amount(amount_minor, asset)


def grouped_text(amount_minor: int | None, asset: str) -> str:
    """`84143200, "DIAMOND"` → `84,143.200`: thousands grouped, as the printed trial balance; an
    asset the console does not know: the integer in minor units."""
    if amount_minor is None:
        return ""
    if asset not in ASSET_SCALES:
        return f"{amount_minor:,}"
    return grouped_amount(amount_minor, asset)


def moment_text(moment: datetime | None) -> str:
    """A time in UTC to the second: `2026-11-01 12:00:05Z`."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


_ENVIRONMENT.filters["amount"] = amount_text
_ENVIRONMENT.filters["moment"] = moment_text
_ENVIRONMENT.filters["grouped"] = grouped_text
_ENVIRONMENT.filters["visible"] = visible_text


def render(
    request: Request,
    template: str,
    *,
    session: Any,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    """`template` with `values`, the session (None when signed out) and `url(path, **query)`."""

    def url(path: str, **query: Any) -> str:
        return console_url(request, path, query)

    page = _ENVIRONMENT.get_template(template).render(session=session, url=url, **values)
    return HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)
