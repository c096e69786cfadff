"""The finance API over real HTTP: a uvicorn server on a free port, on the session's database.

The data goes in through the real ingestion path (`Ingestor.process`, the function the Kafka
consumers call), so the API reads exactly what the consumers write.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema_rs
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI, HTTPException
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from services.api.auth import OPERATOR_ROLES, require_role
from services.api.deps import reader_connection
from services.api.models import InvalidRequestDocument
from services.api.responses import invalid_request
from services.api.server import create_app
from services.cli import main
from services.runtime import settings as settings_module
from services.runtime.settings import Settings
from tests.api_contract import breaches
from tests.api_server import (
    FINANCE_TOKEN,
    OPERATOR_TOKEN,
    SeededLedger,
    api_settings,
    free_port,
    seed_ledger,
    served_client,
)

PUBLIC_PATHS = {"/healthz", "/openapi.json", "/docs", "/docs/static", "/redoc"}
UNKNOWN_TOKEN = f"unknown-{uuid.uuid4().hex}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


FINANCE = _bearer(FINANCE_TOKEN)
OPERATOR = _bearer(OPERATOR_TOKEN)


# The data ------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _filled(template: str, ledgered: SeededLedger, unique: str) -> str:
    """A route template with the module's data in it."""
    return template.format(
        creator=ledgered.creator,
        gift_event=ledgered.gift_event,
        dead_event=ledgered.dead_event,
        cashout=ledgered.paid_cashout,
        start=_iso(ledgered.start),
        end=_iso(ledgered.end),
        unique=unique,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ledgered(engine: AsyncEngine) -> SeededLedger:
    """One eligible creator's events, fed through `Ingestor.process` (see `seed_ledger`)."""
    return await seed_ledger(engine)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(engine: AsyncEngine) -> FastAPI:
    return create_app(engine, api_settings())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(app: FastAPI, ledgered: SeededLedger) -> AsyncIterator[httpx.AsyncClient]:
    async with served_client(app) as client:
        yield client


# Authentication on every route ---------------------------------------------------------------

# Every authenticated route, with what finance and operator tokens get. A new route must be
# added here: test_every_route_of_the_app_is_in_the_auth_matrix fails otherwise.
ROUTES: list[tuple[str, int]] = [
    ("/metrics", 200),
    ("/v1/creators/{creator}/balances", 200),
    ("/v1/creators/nobody-{unique}/balances", 404),
    ("/v1/creators/nobody-{unique}/eligibility", 404),
    ("/v1/creators/{creator}/eligibility", 200),
    ("/v1/accounts/creator:{creator}:DIAMOND:available/statement", 200),
    ("/v1/accounts/nothing-{unique}/statement", 404),
    ("/v1/events/{gift_event}", 200),
    ("/v1/events/{dead_event}?topic=gifts.sent", 200),
    ("/v1/events/nothing-{unique}", 404),
    ("/v1/dead-letters?topic=gifts.sent", 200),
    ("/v1/cashouts/{cashout}", 200),
    ("/v1/cashouts/nothing-{unique}", 404),
    ("/v1/cashouts?creator_id={creator}", 200),
    ("/v1/reports/trial-balance", 200),
    ("/v1/reports/gifts?from={start}&to={end}&group_by=surface", 200),
    ("/v1/reports/cashouts?from={start}&to={end}", 200),
    ("/v1/reports/money?from={start}&to={end}", 200),
    ("/v1/operator/adjustments?status=proposed", 200),
    ("/v1/reconciliations", 200),
    ("/v1/reconciliations/9223372036854775807", 404),
    ("/v1/journal?period=2026-11", 200),
]
# The operator actions (POST, operator role only): tests/test_operator_api.py checks their
# answers to each role; the matrix below only needs to know them.
ACTION_ROUTES: list[str] = [
    "/v1/operator/adjustments",
    "/v1/operator/adjustments/1/approve",
    "/v1/operator/adjustments/1/withdraw",
    "/v1/operator/creators/{creator}/freeze",
    "/v1/operator/creators/{creator}/unfreeze",
    "/v1/operator/dead-letters/redrive",
    "/v1/operator/cashouts/{cashout}/cancel",
    "/v1/operator/cashouts/{cashout}/resubmit",
]


@pytest.mark.parametrize(("template", "expected"), ROUTES, ids=[route for route, _ in ROUTES])
async def test_every_route_answers_401_without_a_known_token_and_serves_both_roles(
    api: httpx.AsyncClient, ledgered: SeededLedger, unique_id: str, template: str, expected: int
) -> None:
    path = _filled(template, ledgered, unique_id)
    for headers in ({}, _bearer(UNKNOWN_TOKEN), {"Authorization": f"Basic {FINANCE_TOKEN}"}):
        refused = await api.get(path, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json() == {"detail": "a valid bearer token is required"}
    for headers in (FINANCE, OPERATOR):
        answer = await api.get(path, headers=headers)
        assert answer.status_code == expected, answer.text
        if expected == 404:
            assert "detail" in answer.json()


async def test_every_route_of_the_app_is_in_the_auth_matrix(
    app: FastAPI, ledgered: SeededLedger, unique_id: str
) -> None:
    templates = [template for template, _ in ROUTES] + ACTION_ROUTES
    paths = [_filled(template, ledgered, unique_id).split("?")[0] for template in templates]
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path not in PUBLIC_PATHS:
            assert any(route.path_regex.match(path) for path in paths), route.path


async def test_every_route_but_the_public_ones_refuses_a_request_without_a_token(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    checked = 0
    for route in app.routes:
        path = getattr(route, "path", "")
        if path in PUBLIC_PATHS:
            continue
        filled = path.replace("{", "").replace("}", "")  # every path parameter becomes its name
        method = sorted(getattr(route, "methods", None) or ["GET"])[0]
        answer = await api.request(method, filled)
        assert answer.status_code == 401, (path, answer.text)
        checked += 1
    assert checked >= 10


async def test_a_role_missing_from_a_routes_roles_gets_403(engine: AsyncEngine) -> None:
    app = create_app(engine, api_settings())

    @app.get("/operator-only", dependencies=[Depends(require_role(OPERATOR_ROLES))])
    async def operator_only() -> dict[str, str]:
        return {"done": "yes"}

    async with served_client(app) as client:
        forbidden = await client.get("/operator-only", headers=FINANCE)
        assert forbidden.status_code == 403
        assert forbidden.json() == {"detail": "the finance role may not use this route"}
        assert (await client.get("/operator-only", headers=OPERATOR)).status_code == 200
        assert (await client.get("/operator-only")).status_code == 401


async def test_no_configured_token_means_every_authenticated_route_is_refused(
    engine: AsyncEngine,
) -> None:
    async with served_client(create_app(engine, Settings(api_tokens={}))) as client:
        assert (await client.get("/metrics", headers=FINANCE)).status_code == 401
        assert (await client.get("/healthz")).status_code == 200


async def test_the_openapi_document_names_the_api_and_puts_a_bearer_on_every_route(
    api: httpx.AsyncClient,
) -> None:
    document = (await api.get("/openapi.json")).json()
    assert document["info"]["title"] == "giftledger finance API"
    assert "finance" in document["info"]["description"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert operation["summary"], path
            if path == "/healthz":
                assert "security" not in operation
            else:
                assert operation["security"] == [{"bearer": []}], path


# What each answer is -------------------------------------------------------------------------

JSON = "application/json"
# Every route that answers 200 with JSON, with the module's data: the seeded creator, events and
# cash-out, and each grouping of the gifts report (one model per grouping's key).
JSON_ROUTES: list[str] = [
    "/healthz",
    *(template for template, expected in ROUTES if expected == 200 and template != "/metrics"),
    *(
        f"/v1/reports/gifts?from={{start}}&to={{end}}&group_by={group_by}"
        for group_by in ("creator", "gift", "day")
    ),
]


def _is_any_object(schema: dict[str, Any]) -> bool:
    """An empty schema, or an object with no named property: what says nothing of the answer."""
    return schema.get("type") in (None, "object") and not (
        {"$ref", "properties", "anyOf", "oneOf", "allOf", "enum", "const"} & set(schema)
    )


async def test_every_200_answer_in_the_openapi_document_has_a_schema(
    api: httpx.AsyncClient,
) -> None:
    document = (await api.get("/openapi.json")).json()
    undescribed = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation["responses"]["200"].get("content", {})
            if not content:
                undescribed.append(f"{method.upper()} {path}: no content")
            for media_type, entry in content.items():
                schema = entry.get("schema", {})
                if not schema or (media_type == JSON and _is_any_object(schema)):
                    undescribed.append(f"{method.upper()} {path} {media_type}: {schema}")
    assert undescribed == []


async def test_every_route_documents_its_error_answers_with_their_headers(
    api: httpx.AsyncClient,
) -> None:
    """401 with `WWW-Authenticate` behind a token, 404 with a path parameter, 422 with any
    parameter or body, and 500 and 503 (with `Retry-After`) everywhere."""
    document = (await api.get("/openapi.json")).json()
    error = {"$ref": "#/components/schemas/ErrorDocument"}
    invalid = {"$ref": "#/components/schemas/InvalidRequestDocument"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            responses = operation["responses"]
            if "security" in operation:
                assert responses["401"]["content"][JSON]["schema"] == error, label
                assert responses["401"]["headers"]["WWW-Authenticate"]["required"], label
            if "{" in path:
                assert responses["404"]["content"][JSON]["schema"] == error, label
            if operation.get("parameters") or "requestBody" in operation:
                assert responses["422"]["content"][JSON]["schema"] == invalid, label
            assert responses["500"]["content"][JSON]["schema"] == error, label
            assert responses["503"]["headers"]["Retry-After"]["required"], label


def _declared_model(app: FastAPI, path: str) -> type[BaseModel]:
    [route] = [
        route
        for route in app.routes
        if isinstance(route, APIRoute)
        and "GET" in (route.methods or ())
        and route.path_regex.match(path.split("?")[0])
    ]
    model = route.response_model
    assert isinstance(model, type), (route.path, model)
    assert issubclass(model, BaseModel), (route.path, model)
    return model


@pytest.mark.parametrize("template", JSON_ROUTES)
async def test_each_routes_json_answer_is_exactly_its_declared_model(
    app: FastAPI, api: httpx.AsyncClient, ledgered: SeededLedger, unique_id: str, template: str
) -> None:
    path = _filled(template, ledgered, unique_id)
    answer = await api.get(path, headers=FINANCE)
    assert answer.status_code == 200, answer.text
    model = _declared_model(app, path)
    document = model.model_validate(answer.json())
    # nothing left out, added or rewritten: the model writes back the very same JSON
    assert json.loads(document.model_dump_json(by_alias=True)) == answer.json()


# The OpenAPI pages ---------------------------------------------------------------------------

ASSET_CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _AssetUrls(HTMLParser):
    """The `src` of every script and the `href` of every link in an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attribute = {"script": "src", "link": "href"}.get(tag)
        self.urls.extend(value for name, value in attrs if name == attribute and value)


async def _asset_urls(api: httpx.AsyncClient, page: str) -> list[str]:
    answer = await api.get(page)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "http://" not in answer.text
    assert "https://" not in answer.text
    parser = _AssetUrls()
    parser.feed(answer.text)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_an_openapi_page_loads_every_script_and_style_from_the_api_without_a_token(
    api: httpx.AsyncClient, page: str
) -> None:
    urls = await _asset_urls(api, page)
    assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), url
        assert parts.path.startswith("/docs/static/"), url
        asset = await api.get(url)
        assert asset.status_code == 200, url
        assert (
            ASSET_CONTENT_TYPES[PurePosixPath(parts.path).suffix] in asset.headers["content-type"]
        ), (url, asset.headers["content-type"])
        assert len(asset.content) > 1_000, url


async def test_the_served_swagger_ui_renders_the_openapi_version_the_api_writes(
    api: httpx.AsyncClient,
) -> None:
    """Swagger UI 4 shows "Unable to render this definition" for OpenAPI 3.1; 5 knows 3.1."""
    document = (await api.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1.")
    bundle = next(url for url in await _asset_urls(api, "/docs") if url.endswith("bundle.js"))
    script = (await api.get(bundle)).text
    assert "SwaggerUIBundle" in script
    assert "isOAS31" in script


# Health and metrics --------------------------------------------------------------------------


async def test_healthz_needs_no_token_and_says_ok(api: httpx.AsyncClient) -> None:
    answer = await api.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_healthz_is_503_when_the_database_does_not_answer() -> None:
    unreachable = create_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing", pool_timeout_s=2
    )
    try:
        async with served_client(create_app(unreachable, api_settings())) as client:
            document = (await client.get("/openapi.json")).json()
            answer = await client.get("/healthz")
            assert answer.status_code == 503
            assert answer.json() == {"status": "unavailable"}
            assert int(answer.headers["retry-after"]) >= 1
            assert breaches(document, "GET /healthz", 503, answer.headers, answer.content) == []
            balances = await client.get("/v1/creators/c1/balances", headers=FINANCE)
            assert balances.status_code == 503
            assert balances.json() == {"detail": "the database is unavailable"}
            label = "GET /v1/creators/{creator_id}/balances"
            assert breaches(document, label, 503, balances.headers, balances.content) == []
    finally:
        await unreachable.dispose()


async def test_metrics_are_prometheus_text(api: httpx.AsyncClient) -> None:
    answer = await api.get("/metrics", headers=FINANCE)
    assert answer.headers["content-type"].startswith("text/plain")
    assert "giftledger_events_applied_total" in answer.text


# Validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("/v1/accounts/a/statement?from=2026-01-01T00:00:00", "has no time zone"),
        ("/v1/accounts/a/statement?to=2026-01-01", "not an RFC 3339 timestamp"),
        ("/v1/accounts/a/statement?page_size=1001", "less than or equal to 1000"),
        ("/v1/accounts/a/statement?page_size=0", "greater than or equal to 1"),
        ("/v1/accounts/a/statement?cursor=-1", "greater than or equal to 0"),
        (
            "/v1/accounts/a/statement?from=2025-01-01T00:00:00Z&to=2026-01-03T00:00:00Z",
            "longer than 366 days",
        ),
        ("/v1/reports/gifts?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "after `from`"),
        (
            "/v1/reports/gifts?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&group_by=week",
            "'surface', 'creator', 'gift' or 'day'",
        ),
        ("/v1/reports/cashouts?clock=occurred", "'booked' or 'requested'"),
        ("/v1/reports/cashouts?from=2026-01-01T00:00:00&to=2026-01-02T00:00:00Z", "time zone"),
        ("/v1/reports/trial-balance?as_of=yesterday", "not an RFC 3339 timestamp"),
        ("/v1/cashouts?status=lost", "'requested', 'held'"),
        ("/v1/cashouts?limit=1001", "less than or equal to 1000"),
        ("/v1/cashouts?cursor=2026-01-01T00:00:00Z:c1", "String should match pattern"),
        ("/v1/events/e1?topic=gifts.unknown", "'gifts.sent'"),
    ],
)
async def test_invalid_queries_are_422_with_a_message(
    api: httpx.AsyncClient, query: str, message: str
) -> None:
    answer = await api.get(query, headers=FINANCE)
    assert answer.status_code == 422, answer.text
    problems = answer.json()["detail"]
    assert any(message in problem["msg"] for problem in problems), problems


async def test_a_plus_sent_as_2b_is_read_and_a_bare_one_is_refused_with_a_hint(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    """A bare `+` in a query string arrives as a space, which no timestamp the document allows
    holds: refused, saying how to send it."""
    path = f"/v1/accounts/creator:{ledgered.creator}:DIAMOND:available/statement"
    answer = await api.get(f"{path}?from=2020-01-01T01:00:00%2B01:00", headers=FINANCE)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["lines"]) == 6  # 3 gifts, a hold, and its post (two lines)
    bare = await api.get(f"{path}?from=2020-01-01T01:00:00+01:00", headers=FINANCE)
    assert bare.status_code == 422, bare.text
    [problem] = bare.json()["detail"]
    assert problem["loc"] == ["query", "from"]
    assert "send `+` as `%2B`" in problem["msg"]


@pytest.mark.parametrize(
    ("written", "accepted"),
    [
        ("1970-01-01T00:00:00Z", True),
        ("1970-01-01T00:00:00+23:59", True),
        ("8999-12-31T23:59:59.999999-23:59", True),
        ("2024-02-29t12:00:00z", True),
        ("1969-12-31T23:59:59Z", False),
        ("9000-01-01T00:00:00Z", False),
        ("2026-02-29T00:00:00Z", False),
        ("2026-01-01T23:59:60Z", False),
        ("2026-01-01T00:00:00.1234567Z", False),
        ("2026-01-01 00:00:00Z", False),
        ("2026-01-01T00:00Z", False),
        ("2026-01-01T00:00:00+24:00", False),
        ("２０２６-01-01T00:00:00Z", False),
    ],
)
async def test_a_timestamp_is_read_exactly_when_the_documented_pattern_and_format_allow_it(
    api: httpx.AsyncClient, written: str, accepted: bool
) -> None:
    document = (await api.get("/openapi.json")).json()
    [parameter] = document["paths"]["/v1/reports/trial-balance"]["get"]["parameters"]
    [schema, _null] = parameter["schema"]["anyOf"]
    validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    assert validator.is_valid(written) is accepted
    answer = await api.get("/v1/reports/trial-balance", params={"as_of": written}, headers=FINANCE)
    assert answer.status_code == (200 if accepted else 422), answer.text


async def test_every_422_has_one_shape_a_hand_raised_one_too(engine: AsyncEngine) -> None:
    app = create_app(engine, api_settings())

    @app.get("/refused-by-hand", responses=invalid_request())
    async def refused_by_hand() -> None:
        raise HTTPException(422, detail="refused by hand")

    async with served_client(app) as client:
        by_hand = await client.get("/refused-by-hand", headers=FINANCE)
        validated = await client.get("/v1/cashouts?limit=many", headers=FINANCE)
        checked = await client.get(
            "/v1/reports/gifts?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", headers=FINANCE
        )
    assert by_hand.status_code == validated.status_code == checked.status_code == 422
    for answer in (by_hand, validated, checked):
        InvalidRequestDocument.model_validate(answer.json())
    assert by_hand.json() == {
        "detail": [{"loc": [], "msg": "refused by hand", "type": "value_error"}]
    }


async def test_an_unexpected_fault_is_the_documented_500_and_shows_nothing_of_it(
    engine: AsyncEngine,
) -> None:
    app = create_app(engine, api_settings())

    @app.get("/faulty")
    async def faulty() -> None:
        raise RuntimeError("postgresql://secret@db/ledger is on fire")

    async with served_client(app) as client:
        document = (await client.get("/openapi.json")).json()
        answer = await client.get("/faulty")
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error"}
    assert breaches(document, "GET /faulty", 500, answer.headers, answer.content) == []


async def test_a_method_the_path_does_not_serve_is_405_naming_every_method_it_serves(
    engine: AsyncEngine,
) -> None:
    """Starlette's 405 names only the methods of the first route on the path; ours names all."""
    app = create_app(engine, api_settings())

    @app.get("/both")
    async def read_both() -> None:
        return None

    @app.post("/both")
    async def write_both() -> None:
        return None

    async with served_client(app) as client:
        answer = await client.delete("/both")
        cashouts = await client.delete("/v1/cashouts", headers=FINANCE)
    assert (answer.status_code, answer.headers["allow"]) == (405, "GET, POST")
    assert answer.json() == {"detail": "Method Not Allowed"}
    assert (cashouts.status_code, cashouts.headers["allow"]) == (405, "GET")


# Documents -----------------------------------------------------------------------------------


async def _cli_json(database_url: str, monkeypatch: pytest.MonkeyPatch, *argv: str) -> Any:
    """What `giftledger <argv>` prints, run in a thread (it calls asyncio.run)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    settings_module.get_settings.cache_clear()
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            assert await asyncio.to_thread(main, list(argv)) == 0
    finally:
        settings_module.get_settings.cache_clear()
    return json.loads(output.getvalue())


async def test_balances_are_the_same_document_as_the_cli_prints(
    api: httpx.AsyncClient,
    ledgered: SeededLedger,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = await api.get(f"/v1/creators/{ledgered.creator}/balances", headers=FINANCE)
    document = answer.json()
    assert document == await _cli_json(
        database_url, monkeypatch, "balance", ledgered.creator, "--json"
    )
    assert document["balances"] == [
        {"asset": "DIAMOND", "available": 535_000, "pending": 0, "scale": 3},
        {"asset": "EUR", "available": 2_500, "pending": 0, "scale": 2},
        {"asset": "GBP", "available": 8_000, "pending": 0, "scale": 2},
        {"asset": "USD", "available": 500, "pending": 0, "scale": 2},
    ]


async def test_eligibility_lists_every_rule_with_what_it_saw(
    api: httpx.AsyncClient, ledgered: SeededLedger, unique_id: str
) -> None:
    known = (await api.get(f"/v1/creators/{ledgered.creator}/eligibility", headers=FINANCE)).json()
    assert known["creator_id"] == ledgered.creator
    assert known["eligible"] is True
    followers = next(rule for rule in known["rules"] if rule["rule"] == "followers")
    assert followers == {
        "rule": "followers",
        "passed": True,
        "seen": "25000",
        "required": ">= 10000 (minimum for US)",
    }
    unknown = await api.get(f"/v1/creators/nobody-{unique_id}/eligibility", headers=FINANCE)
    assert unknown.status_code == 404  # as `giftledger eligibility` exits 2: a typo is not "no"
    assert unknown.json()["detail"] == (
        f"no creator 'nobody-{unique_id}': no profile, account or cash-out names it"
    )


def _running_balance_adds_up(lines: list[dict[str, Any]]) -> None:
    """The lines not pending add up to `balance_after`, the pending ones to `pending_after`."""
    balance = pending = 0
    for line in lines:
        movement = int(line["credit"]) - int(line["debit"])
        if line["pending"] in (False, "false"):
            balance += movement
        else:
            pending += movement
        assert (int(line["balance_after"]), int(line["pending_after"])) == (balance, pending), line


async def test_a_statement_pages_with_a_cursor_and_its_running_balance_adds_up(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    path = f"/v1/accounts/creator:{ledgered.creator}:DIAMOND:available/statement"
    whole = (await api.get(path, headers=FINANCE)).json()
    assert (whole["account"], whole["asset"], whole["scale"], whole["next_cursor"]) == (
        f"creator:{ledgered.creator}:DIAMOND:available",
        "DIAMOND",
        3,
        None,
    )
    assert [line["code"] for line in whole["lines"]] == [
        "gift_diamonds",
        "gift_diamonds",
        "gift_diamonds",
        "cashout_hold",
        # the hold posted, its money payable: the hold released, then the amount posted
        "cashout_submitted",
        "cashout_submitted",
    ]
    assert [
        (line["pending"], line["debit"], line["credit"], line["pending_after"])
        for line in whole["lines"][3:]
    ] == [(True, 2_000_000, 0, -2_000_000), (True, 0, 2_000_000, 0), (False, 2_000_000, 0, 0)]
    assert whole["lines"][0]["event_id"] == ledgered.gift_event
    assert whole["lines"][-1]["balance_after"] == 535_000
    _running_balance_adds_up(whole["lines"])
    paged: list[dict[str, Any]] = []
    cursor: int | None = 0
    while cursor is not None:
        page = (
            await api.get(path, params={"cursor": cursor, "page_size": 2}, headers=FINANCE)
        ).json()
        assert len({line["seq"] for line in page["lines"]}) <= 2  # transfers; a post is 2 lines
        paged += page["lines"]
        cursor = page["next_cursor"]
    assert paged == whole["lines"]


async def test_a_statement_as_csv_has_the_cli_columns_and_the_cursor_in_a_header(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    path = f"/v1/accounts/creator:{ledgered.creator}:DIAMOND:available/statement"
    csv_headers = {**FINANCE, "Accept": "text/csv"}
    first = await api.get(path, params={"page_size": 3}, headers=csv_headers)
    assert first.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(first.text)))
    assert list(rows[0]) == [
        "seq",
        "created_at",
        "transfer_id",
        "code",
        "event_id",
        "counterparty",
        "asset",
        "scale",
        "debit",
        "credit",
        "pending",
        "balance_after",
        "pending_after",
    ]
    assert len(rows) == 3
    cursor = first.headers["x-next-cursor"]
    assert cursor == rows[-1]["seq"]
    rest = await api.get(path, params={"cursor": cursor}, headers=csv_headers)
    assert "x-next-cursor" not in rest.headers
    rows += list(csv.DictReader(io.StringIO(rest.text)))
    assert [row["pending"] for row in rows] == ["false", "false", "false", "true", "true", "false"]
    # every line says what its amounts count: milli-diamonds, not cents
    assert {(row["asset"], row["scale"]) for row in rows} == {("DIAMOND", "3")}
    _running_balance_adds_up(rows)
    whole = (await api.get(path, headers=FINANCE)).json()
    assert [row["transfer_id"] for row in rows] == [line["transfer_id"] for line in whole["lines"]]
    assert (whole["asset"], whole["scale"]) == ("DIAMOND", 3)
    assert all("asset" not in line for line in whole["lines"])  # JSON says it once, above


async def test_a_statement_outside_the_accounts_activity_is_empty(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    path = f"/v1/accounts/creator:{ledgered.creator}:DIAMOND:available/statement"
    params = {"from": "2020-01-01T00:00:00Z", "to": "2020-06-01T00:00:00Z"}
    answer = (await api.get(path, params=params, headers=FINANCE)).json()
    assert (answer["lines"], answer["next_cursor"]) == ([], None)


async def test_an_applied_event_shows_its_transfers(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    document = (await api.get(f"/v1/events/{ledgered.gift_event}", headers=FINANCE)).json()
    assert document["status"] == "applied"
    assert document["applied"]["topic"] == "gifts.sent"
    assert document["applied"]["creator_id"] == ledgered.creator
    assert document["dead_letters"] == []
    [transfer] = document["transfers"]
    assert (transfer["code"], transfer["asset"], transfer["scale"], transfer["amount"]) == (
        "gift_diamonds",
        "DIAMOND",
        3,
        5_000,
    )
    assert transfer["credit_account"] == f"creator:{ledgered.creator}:DIAMOND:available"
    assert transfer["metadata"]["surface"] == "video"
    same = await api.get(f"/v1/events/{ledgered.gift_event}?topic=gifts.sent", headers=FINANCE)
    assert same.json() == document
    elsewhere = await api.get(
        f"/v1/events/{ledgered.gift_event}?topic=tips.received", headers=FINANCE
    )
    assert elsewhere.status_code == 404


async def test_an_event_id_applied_in_two_topics_shows_each_topics_transfers_only(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    """Event ids are unique per topic only: a tip and a fund reward share one."""
    path = f"/v1/events/{ledgered.twice_applied_event}"

    async def codes(topic: str) -> set[str]:
        document = (await api.get(path, params={"topic": topic}, headers=FINANCE)).json()
        assert document["applied"]["topic"] == topic
        return {transfer["code"] for transfer in document["transfers"]}

    assert await codes("tips.received") == {"tip", "tip_fan_fee", "tip_processor_fee"}
    assert await codes("fund.rewarded") == {"fund_reward"}


async def test_a_dead_lettered_event_says_why(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    document = (await api.get(f"/v1/events/{ledgered.dead_event}", headers=FINANCE)).json()
    assert (document["status"], document["applied"], document["transfers"]) == (
        "dead_lettered",
        None,
        [],
    )
    [letter] = document["dead_letters"]
    assert letter["topic"] == "gifts.sent"
    assert letter["error"] == "schema_violation"
    assert "coins" in letter["detail"]
    assert set(letter["source"]) == {"partition", "offset"}


async def test_an_events_dead_letters_are_this_deployments_only(
    api: httpx.AsyncClient, ledgered: SeededLedger, engine: AsyncEngine, unique_id: str
) -> None:
    """Another deployment (another topic prefix) sharing the database dead-lettered the same
    event id, and one of its own: neither is this deployment's."""
    elsewhere_only = f"elsewhere-{unique_id}"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset,"
                " event_id, error, detail)"
                " SELECT 'other-deployment.', 'gifts.sent', 0, 10^12 + n, id, 'schema_violation',"
                " 'theirs' FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY AS t(id, n)"
            ),
            {"ids": [ledgered.dead_event, elsewhere_only]},
        )
    document = (await api.get(f"/v1/events/{ledgered.dead_event}", headers=FINANCE)).json()
    assert [letter["detail"] for letter in document["dead_letters"]] == [
        "coins: Input should be greater than or equal to 1"
    ]
    theirs = await api.get(f"/v1/events/{elsewhere_only}", headers=FINANCE)
    assert theirs.status_code == 404


async def test_a_cashout_shows_every_state_it_went_through(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    document = (await api.get(f"/v1/cashouts/{ledgered.paid_cashout}", headers=FINANCE)).json()
    assert document["cashout_id"] == ledgered.paid_cashout
    assert (document["status"], document["amount"], document["payout_amount"]) == (
        "paid",
        2_000_000,
        1_000,
    )
    assert [step["status"] for step in document["transitions"]] == ["requested", "held", "paid"]


async def test_cashouts_are_listed_by_creator_and_status(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    async def listed(**params: str) -> list[str]:
        answer = await api.get("/v1/cashouts", params=params, headers=OPERATOR)
        return [cashout["cashout_id"] for cashout in answer.json()["cashouts"]]

    assert sorted(await listed(creator_id=ledgered.creator)) == sorted(
        [ledgered.paid_cashout, ledgered.rejected_cashout]
    )
    assert await listed(creator_id=ledgered.creator, status="rejected") == [
        ledgered.rejected_cashout
    ]
    assert await listed(creator_id=ledgered.creator, status="held") == []
    assert len(await listed(limit="1")) == 1


async def _insert_rejected_cashouts(engine: AsyncEngine, cashouts: list[tuple[str, str]]) -> None:
    """Cash-outs of one creator rejected by the daily limit, by (id, occurred_at): rows only,
    nothing in the ledger; their transitions are stamped at their occurred_at."""
    rows = [
        {"cashout_id": cashout_id, "creator_id": cashout_id.split("/")[0], "at": _at(moment)}
        for cashout_id, moment in cashouts
    ]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO cashouts (cashout_id, creator_id, asset, amount, payout_currency,"
                " usd_value_micros, status, rejected_rule, requested_on, occurred_at)"
                " VALUES (:cashout_id, :creator_id, 'USD', 100, 'USD', 0, 'rejected',"
                " 'daily_limit', CAST(:at AS timestamptz)::date, :at)"
            ),
            rows,
        )
        await conn.execute(
            text(
                "INSERT INTO cashout_transitions (cashout_id, status, at)"
                " VALUES (:cashout_id, 'rejected', :at)"
            ),
            rows,
        )


def _at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


async def test_cashouts_page_with_a_cursor_each_once_in_order(
    api: httpx.AsyncClient, engine: AsyncEngine, unique_id: str
) -> None:
    """More cash-outs than a page, three and two of them at one instant: paged through with the
    cursor, every one is served once, newest first and by id within an instant, and the last
    page has no cursor."""
    creator = f"paged-{unique_id}"
    moments = ["2001-05-03T10:00:00+00:00"] * 3 + ["2001-05-02T10:00:00.000001+00:00"] * 2
    moments += ["2001-05-02T10:00:00+00:00", "2001-05-01T00:00:00+00:00"]
    # Ids against the time order, so that neither the ids nor the times alone give the order.
    cashouts = [(f"{creator}/{index}", moment) for index, moment in enumerate(moments[::-1])]
    await _insert_rejected_cashouts(engine, cashouts)
    newest_first = sorted(sorted(cashouts), key=lambda cashout: _at(cashout[1]), reverse=True)
    expected = [cashout_id for cashout_id, _ in newest_first]
    assert expected == [f"{creator}/{index}" for index in (4, 5, 6, 2, 3, 1, 0)]
    served: list[str] = []
    cursors: list[str | None] = []
    params = {"creator_id": creator, "status": "rejected", "limit": "2"}
    for _ in range(len(cashouts)):
        answer = await api.get("/v1/cashouts", params=params, headers=FINANCE)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        served += [cashout["cashout_id"] for cashout in page["cashouts"]]
        cursors.append(page["next_cursor"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert served == expected
    assert len(cursors) == 4
    assert cursors[-1] is None
    everything = await api.get(
        "/v1/cashouts", params={"creator_id": creator, "limit": "7"}, headers=FINANCE
    )
    assert [c["cashout_id"] for c in everything.json()["cashouts"]] == expected
    assert everything.json()["next_cursor"] is None
    assert cursors[0] == f"988884000000000:{creator}/5"  # 2001-05-03T10:00:00Z in microseconds
    for malformed in ("988884000000000", ":c1", "-1:c1", "1:", f"1:{'x' * 146}", "1:a\x00b"):
        refused = await api.get(
            "/v1/cashouts", params={"creator_id": creator, "cursor": malformed}, headers=FINANCE
        )
        assert refused.status_code == 422, (malformed, refused.text)
        assert refused.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_the_trial_balance_is_the_cli_document_and_sums_to_zero_per_asset(
    api: httpx.AsyncClient,
    ledgered: SeededLedger,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_of = _iso(ledgered.end)
    answer = await api.get("/v1/reports/trial-balance", params={"as_of": as_of}, headers=FINANCE)
    document = answer.json()
    assert document == await _cli_json(
        database_url, monkeypatch, "trial-balance", "--json", "--as-of", as_of
    )
    assert {entry["asset"] for entry in document["assets"]} >= {"DIAMOND", "COIN", "USD"}
    for entry in document["assets"]:
        assert entry["total"]["balance"] == 0
        assert sum(account["balance"] for account in entry["accounts"]) == 0


async def test_the_gifts_report_groups_by_surface_creator_gift_and_day(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    window = {"from": _iso(ledgered.start), "to": _iso(ledgered.end)}

    async def groups(group_by: str) -> list[dict[str, Any]]:
        answer = await api.get(
            "/v1/reports/gifts", params={**window, "group_by": group_by}, headers=FINANCE
        )
        document = answer.json()
        assert (document["group_by"], document["asset"], document["scale"]) == (
            group_by,
            "DIAMOND",
            3,
        )
        return list(document["groups"])

    def counted(events: int, gifts: int) -> dict[str, Any]:
        return {"gift_events": events, "gift_count": gifts, "gift_events_without_count": 0}

    # the seeded gifts: 1 and 2,500 on video, 3 in one event on LIVE
    assert await groups("surface") == [
        {"surface": "live", **counted(1, 3), "coins": 60, "milli_diamonds": 30_000},
        {"surface": "video", **counted(2, 2_501), "coins": 5_010, "milli_diamonds": 2_505_000},
    ]
    assert await groups("creator") == [
        {
            "creator": ledgered.creator,
            **counted(3, 2_504),
            "coins": 5_070,
            "milli_diamonds": 2_535_000,
        }
    ]
    assert [group["gift"] for group in await groups("gift")] == ["rose"]
    days = await groups("day")
    assert sum(group["gift_events"] for group in days) == 3
    assert sum(group["gift_count"] for group in days) == 2_504
    assert days[0]["day"] == ledgered.start.date().isoformat()


async def test_the_cashouts_report_counts_and_sums_by_status(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    window = {"from": _iso(ledgered.start), "to": _iso(ledgered.end)}
    document = (await api.get("/v1/reports/cashouts", params=window, headers=FINANCE)).json()
    assert document["clock"] == "booked"
    by_status = {entry["status"]: entry for entry in document["statuses"]}
    assert set(by_status) == {"paid", "rejected"}
    assert by_status["paid"]["count"] == 1
    assert by_status["paid"]["lines"] == [
        {
            "asset": "DIAMOND",
            "scale": 3,
            "amount": 2_000_000,
            "payout_currency": "USD",
            "payout_scale": 2,
            "payout_amount": 1_000,
            "usd_value_micros": 10_000_000,
            "count": 1,
            "priced_count": 1,
        }
    ]
    [rejected] = by_status["rejected"]["lines"]
    assert (rejected["amount"], rejected["priced_count"], rejected["usd_value_micros"]) == (
        100_000,
        1,
        500_000,
    )


async def test_the_money_report_sums_each_code_per_currency(
    api: httpx.AsyncClient, ledgered: SeededLedger
) -> None:
    window = {"from": _iso(ledgered.start), "to": _iso(ledgered.end)}
    document = (await api.get("/v1/reports/money", params=window, headers=FINANCE)).json()
    totals = {
        (entry["currency"], entry["scale"], total["code"]): total["amount"]
        for entry in document["currencies"]
        for total in entry["totals"]
    }
    assert totals == {
        ("EUR", 2, "fund_reward"): 2_500,
        ("GBP", 2, "marketplace_fee"): 2_000,
        ("GBP", 2, "marketplace_payment"): 8_000,
        ("USD", 2, "tip"): 500,
        ("USD", 2, "tip_fan_fee"): 25,
        ("USD", 2, "tip_processor_fee"): 30,
    }


# The API cannot write ------------------------------------------------------------------------

_INSERT_ACCOUNT = text(
    "INSERT INTO accounts (name, asset, kind) VALUES (:name, 'USD', 'synthetic')"
)


async def test_an_api_session_cannot_write(engine: AsyncEngine, unique_id: str) -> None:
    async with reader_connection(engine, "giftledger_reader") as conn:
        assert (await conn.execute(text("SELECT current_user"))).scalar_one() == "giftledger_reader"
        assert (await conn.execute(text("SELECT count(*) FROM transfers"))).scalar_one() >= 0
        with pytest.raises(DBAPIError) as refused:
            await conn.execute(_INSERT_ACCOUNT, {"name": f"test:api:{unique_id}"})
    # read-only transaction (25006) is checked before the role's privileges (42501)
    assert getattr(refused.value.orig, "sqlstate", None) in ("25006", "42501")


async def test_the_reader_role_has_no_right_to_write(engine: AsyncEngine, unique_id: str) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL ROLE giftledger_reader"))
        with pytest.raises(DBAPIError) as refused:
            await conn.execute(_INSERT_ACCOUNT, {"name": f"test:api:{unique_id}"})
    assert getattr(refused.value.orig, "sqlstate", None) == "42501"
    assert "permission denied" in str(refused.value)
