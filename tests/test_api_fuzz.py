"""Fuzzing the finance API over real HTTP with schemathesis, from the OpenAPI document it serves.

The server is the real one (`serve_api`, uvicorn on a free port, in a thread of its own: see
tests/api_server.py) on the session's test database, seeded with one creator's gifts, tip, fund
reward, marketplace deal, cash-outs and a dead letter. Every operation of the served document is
fuzzed, in schemathesis' positive (schema-valid) and negative (schema-invalid) modes:

- with a finance token: no 5xx (`not_a_server_error`), every documented response matches its
  schema (`response_schema_conformance`), schema-invalid input is refused with 4xx
  (`negative_data_rejection`), and no error body shows SQL, a connection string or the driver;
  the seeded ids and time window are mixed into the generated values (schemathesis dictionaries),
  so each operation answers 200 as well as 404 and 422;
- with no token, an unknown token, and the finance token under another scheme: every operation but
  `/healthz` answers 401 with `WWW-Authenticate: Bearer`, whatever the parameters.

The cases come from `APIOperation.as_strategy` under Hypothesis, generated once per operation and
mode for both passes: derandomized (the same cases on every run, so CI does not flake) and
bounded (FINANCE_EXAMPLES per operation and mode, the first ANONYMOUS_EXAMPLES of them without a
token), no deadline. schemathesis' own pytest loader (`schemathesis.pytest.from_fixture`, needed
for a schema that only exists once a fixture has started the server) does not run on pytest 9.2:
it reads `request.node._nodeid`, which pytest 9.2 no longer has.

Two inputs that once gave 500 (both fixed) are pinned by targeted tests at the end of the module
and kept out of the generated values:
- a NUL character in any string parameter is 500 (PostgreSQL text cannot hold 0x00), hence
  `allow-x00 = false`;
- an instant whose UTC time falls outside Python's datetime range (`0001-01-01T00:00:00+01:00`,
  `9999-12-31T23:59:59-01:00`) is 500 (asyncpg cannot encode it), hence `_known_bad_instant`.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.hooks import HookContext
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
)

from services.api.deps import rfc3339
from tests.api_server import (
    FINANCE_TOKEN,
    SeededApi,
    SeededLedger,
    seeded_api,
    seeded_ledger,
)

FINANCE_EXAMPLES: Final = 30
ANONYMOUS_EXAMPLES: Final = 6
REQUEST_TIMEOUT_S: Final = 10.0
PUBLIC_OPERATIONS: Final = frozenset({"GET /healthz"})
# Every operation of the served document. A new route must be added here:
# test_the_served_document_has_exactly_the_fuzzed_operations fails otherwise.
OPERATIONS: Final = (
    "GET /healthz",
    "GET /metrics",
    "GET /v1/creators/{creator_id}/balances",
    "GET /v1/creators/{creator_id}/eligibility",
    "GET /v1/accounts/{account}/statement",
    "GET /v1/events/{event_id}",
    "GET /v1/cashouts/{cashout_id}",
    "GET /v1/cashouts",
    "GET /v1/reports/trial-balance",
    "GET /v1/reports/gifts",
    "GET /v1/reports/cashouts",
    "GET /v1/reports/money",
)
PATH_PARAMETER_ROUTES: Final = tuple(operation for operation in OPERATIONS if "{" in operation)
# Text that has no business in an error body: SQL (this code base writes it in capitals), a
# connection string, the driver or the ORM.
SQL_WORDS: Final = ("SELECT", "INSERT INTO", "UPDATE ", "DELETE FROM", " FROM ", " WHERE ")
INTERNALS: Final = (
    "postgresql://",
    "postgresql+asyncpg",
    "asyncpg",
    "sqlalchemy",
    "sqlstate",
    "traceback",
)
EDGE_INSTANTS: Final = (
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00+14:00",
    "2026-11-01T00:00:00-12:00",
)
UNAUTHENTICATED_BODY: Final = {"detail": "a valid bearer token is required"}
NOT_FOUND: Final = {"detail": "Not Found"}

__all__ = ["seeded_api", "seeded_ledger"]  # fixtures, used by name


Operation = schemathesis.APIOperation[Any, Any, Any, Any]
FuzzCase = Case[Any]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


FINANCE: Final = _bearer(FINANCE_TOKEN)
NOT_AUTHENTICATED: Final[tuple[dict[str, str], ...]] = (
    {},
    _bearer("not-a-configured-token"),
    {"Authorization": f"Basic {FINANCE_TOKEN}"},
)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# Finding internals in error bodies ----------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _markers(text: str) -> list[str]:
    lowered = text.lower()
    return [word for word in SQL_WORDS if word in text] + [
        marker for marker in INTERNALS if marker in lowered
    ]


def internals_in(body: str, sent: list[str]) -> list[str]:
    """The SQL_WORDS and INTERNALS in an error body, leaving out what merely echoes a value the
    client sent (`no accounts for creator "' UNION SELECT 1 --"` is an echo, not a leak)."""
    try:
        texts = list(_strings(json.loads(body)))
    except ValueError:
        texts = [body]
    echoes = [value for value in sent if _markers(value)]
    found = []
    for text in texts:
        for echo in echoes:
            text = text.replace(echo, "").replace(repr(echo), "")
        found += _markers(text)
    return found


def _sent_values(case: FuzzCase) -> list[str]:
    values: list[str] = []
    for container in (case.path_parameters, case.query):
        values += [str(value) for value in _strings(container or {})]
    return values


# The schema ---------------------------------------------------------------------------------


def _known_bad_instant(value: object) -> bool:
    """A timestamp the API parses but whose UTC time Python cannot hold: 500 today (bug)."""
    if not isinstance(value, str):
        return False
    try:
        parsed = rfc3339(value)
    except ValueError:
        return False
    if not isinstance(parsed, datetime):
        return False
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        return True
    return False


def _config(ledger: SeededLedger) -> schemathesis.Config:
    """Derandomized, NUL-free generation that mixes the seeded ids and window into the values."""
    return schemathesis.Config.from_dict(
        {
            "generation": {
                "database": "none",
                "allow-x00": False,  # known bug: test_a_nul_in_a_path_parameter_is_4xx
                "with-security-parameters": False,  # the tests set Authorization themselves
            },
            "dictionaries": {
                "creators": {"values": [ledger.creator]},
                "accounts": {"values": [ledger.available_account]},
                "events": {"values": [ledger.gift_event, ledger.dead_event]},
                "cashouts": {"values": [ledger.paid_cashout, ledger.rejected_cashout]},
                "starts": {"values": [_iso(ledger.start)]},
                "ends": {"values": [_iso(ledger.end)]},
                # valid edges: the first and last instants in range, the widest offsets
                "instants": {"values": list(EDGE_INSTANTS)},
            },
            "parameters": {
                "path.creator_id": {"dictionary": "creators", "probability": 0.5},
                "query.creator_id": {"dictionary": "creators", "probability": 0.5},
                "path.account": {"dictionary": "accounts", "probability": 0.5},
                "path.event_id": {"dictionary": "events", "probability": 0.5},
                "path.cashout_id": {"dictionary": "cashouts", "probability": 0.5},
                "query.from": {"dictionary": "starts", "probability": 0.5},
                "query.to": {"dictionary": "ends", "probability": 0.5},
                "query.as_of": {"dictionary": "instants", "probability": 0.5},
            },
        }
    )


@pytest.fixture(scope="module")
def served_document(seeded_api: SeededApi) -> dict[str, Any]:
    answer = requests.get(f"{seeded_api.base_url}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    answer.raise_for_status()
    document: dict[str, Any] = answer.json()
    return document


@pytest.fixture(scope="module")
def api_schema(seeded_api: SeededApi) -> schemathesis.BaseSchema:
    """The OpenAPI document the running server serves, as a schemathesis schema."""
    schema = schemathesis.openapi.from_url(
        f"{seeded_api.base_url}/openapi.json",
        config=_config(seeded_api.ledger),
        timeout=REQUEST_TIMEOUT_S,
    )

    def filter_query(context: HookContext, query: dict[str, Any] | None) -> bool:
        """Known bug: see test_an_instant_out_of_range_in_utc_is_4xx."""
        return not any(_known_bad_instant(value) for value in (query or {}).values())

    schema.hook(filter_query)
    return schema


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _operation(schema: schemathesis.BaseSchema, label: str) -> Operation:
    method, path = label.split(" ", 1)
    return schema[path][method]


def _generate(operation: Operation, mode: GenerationMode, examples: int) -> list[FuzzCase]:
    """Up to `examples` cases of `operation` in `mode`, the same on every run; none in negative
    mode for an operation without parameters (nothing to make invalid)."""
    cases: list[FuzzCase] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    def collect(case: FuzzCase) -> None:
        cases.append(case)

    try:
        collect()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
    return cases


class GeneratedCases:
    """The cases of each operation and mode, generated once for every test of the module."""

    def __init__(self, schema: schemathesis.BaseSchema) -> None:
        self.schema = schema
        self._cases: dict[tuple[str, GenerationMode], list[FuzzCase]] = {}

    def of(self, label: str, mode: GenerationMode) -> list[FuzzCase]:
        key = (label, mode)
        if key not in self._cases:
            operation = _operation(self.schema, label)
            self._cases[key] = _generate(operation, mode, FINANCE_EXAMPLES)
        return self._cases[key]


@pytest.fixture(scope="module")
def generated(api_schema: schemathesis.BaseSchema) -> GeneratedCases:
    return GeneratedCases(api_schema)


MODES: Final = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


# The document -------------------------------------------------------------------------------


def test_the_served_document_has_exactly_the_fuzzed_operations(
    served_document: dict[str, Any],
) -> None:
    served = {
        f"{method.upper()} {path}"
        for path, operations in served_document["paths"].items()
        for method in operations
    }
    assert served == set(OPERATIONS)


def test_every_operation_but_healthz_declares_the_bearer_scheme(
    served_document: dict[str, Any],
) -> None:
    scheme = served_document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    # a document-wide `security` would apply to operations that declare none, /healthz included
    assert "security" not in served_document
    undeclared = [
        f"{method.upper()} {path}"
        for path, operations in served_document["paths"].items()
        for method, operation in operations.items()
        if f"{method.upper()} {path}" not in PUBLIC_OPERATIONS
        and operation.get("security") != [{"bearer": []}]
    ]
    assert undeclared == []
    assert "security" not in served_document["paths"]["/healthz"]["get"]


# Fuzzing with a finance token ---------------------------------------------------------------


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_with_a_finance_token(
    generated: GeneratedCases, http: requests.Session, label: str
) -> None:
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for mode in MODES:
        for case in generated.of(label, mode):
            try:
                response = case.call_and_validate(
                    session=http,
                    headers=FINANCE,
                    checks=[
                        not_a_server_error,
                        response_schema_conformance,
                        negative_data_rejection,
                    ],
                    timeout=REQUEST_TIMEOUT_S,
                )
            except FailureGroup as failure:
                failures.append(f"{mode.value}: {failure}")
                continue
            statuses[response.status_code] += 1
            if response.status_code >= 400:
                leaked = internals_in(response.text, _sent_values(case))
                if leaked:
                    curl = case.as_curl_command(headers=FINANCE)
                    failures.append(f"{mode.value}: {leaked} in {response.text!r}\n{curl}")
    assert failures == [], "\n\n".join(failures)
    # the seeded values reach the data: not only 404 and 422
    assert statuses[200] > 0, statuses


# Fuzzing without a valid token --------------------------------------------------------------


def _route_pattern(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile(
        "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    )


def _reaches(path: str, url: str) -> bool:
    """Whether the request reached the operation's route: a path parameter holding `/` or `..`
    (or nothing) makes another path, which no route may match (404 before any token check)."""
    sent = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return _route_pattern(path).fullmatch(sent) is not None


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_without_a_valid_token(
    generated: GeneratedCases, http: requests.Session, label: str
) -> None:
    path = label.split(" ", 1)[1]
    refused = 0
    for mode in MODES:
        for case in generated.of(label, mode)[:ANONYMOUS_EXAMPLES]:
            for headers in NOT_AUTHENTICATED:
                response = case.call(session=http, headers=headers, timeout=REQUEST_TIMEOUT_S)
                answer = (
                    case.as_curl_command(headers=headers),
                    response.status_code,
                    response.text,
                )
                if label in PUBLIC_OPERATIONS:
                    assert response.status_code == 200, answer
                elif not _reaches(path, response.request.url or ""):
                    assert (response.status_code, response.json()) == (404, NOT_FOUND), answer
                else:
                    assert response.status_code == 401, answer
                    assert response.headers.get("www-authenticate") == ["Bearer"], answer
                    assert response.json() == UNAUTHENTICATED_BODY, answer
                    refused += 1
    assert label in PUBLIC_OPERATIONS or refused > 0


# Hostile path parameters --------------------------------------------------------------------

# (id, the path segment as sent: already percent-encoded)
HOSTILE_SEGMENTS: Final = [
    ("long-129", "x" * 129),
    ("long-301", "x" * 301),
    ("long-4000", "x" * 4_000),
    ("accented-128", urllib.parse.quote("é" * 128, safe="")),
    ("emoji", urllib.parse.quote("💸🎁", safe="")),
    ("rtl-override", urllib.parse.quote("\u202eadmin", safe="")),
    ("zero-width", urllib.parse.quote("a\u200bb\ufeff", safe="")),
    ("invalid-utf8", "%FF%FE%C0%AF"),
    ("fullwidth", urllib.parse.quote("ＳＥＬＥＣＴ", safe="")),
    ("or-1-1", urllib.parse.quote("' OR 1=1 --", safe="")),
    ("or-1-1-raw", "'%20OR%201=1%20--"),
    ("drop-table", urllib.parse.quote("'; DROP TABLE transfers; --", safe="")),
    ("union", urllib.parse.quote("x' UNION SELECT current_user, pg_sleep(1) --", safe="")),
    ("quote", urllib.parse.quote('"', safe="")),
    ("backslash", urllib.parse.quote("\\", safe="")),
    ("percent", "%25"),
    ("bind-param", urllib.parse.quote(":event_id $1 %s", safe="")),
    ("cast", urllib.parse.quote("1::int", safe="")),
    ("json-path", urllib.parse.quote("'->>'x", safe="")),
    ("dot-dot-encoded", "%2E%2E"),
    ("slash-encoded", "a%2Fb"),
    ("query-encoded", "a%3Fb%3D1"),
    ("control", urllib.parse.quote("\x01\x1b[31m\x7f", safe="")),
    ("newline", urllib.parse.quote("a\r\nSet-Cookie: x=1", safe="")),
    ("template", urllib.parse.quote("{creator_id}", safe="")),
]
NUL_SEGMENTS: Final = [("nul", "%00"), ("nul-inside", "a%00b"), ("nul-or-1-1", "'%00%20OR%201=1")]
NUL_BUG: Final = (
    "bug: a NUL in a path parameter reaches PostgreSQL, which refuses it "
    "(CharacterNotInRepertoireError, `invalid byte sequence for encoding UTF8: 0x00`): 500 "
    "`internal error` instead of a 4xx"
)


ELIGIBILITY: Final = re.compile(r"/v1/creators/[^/]+/eligibility")


def _hostile_request(label: str, segment: str) -> str:
    path = label.split(" ", 1)[1]
    return re.sub(r"\{[^}]+\}", lambda _: segment, path)


def _check_refused(base_url: str, target: str, segment: str) -> None:
    """A 4xx (never a 5xx) whose body shows no SQL, connection string or driver."""
    answer = requests.get(f"{base_url}{target}", headers=FINANCE, timeout=REQUEST_TIMEOUT_S)
    assert internals_in(answer.text, [urllib.parse.unquote(segment)]) == [], (target, answer.text)
    if ELIGIBILITY.fullmatch(target) and answer.status_code == 200:
        # by design any creator id of 1 to 128 characters has an eligibility: every rule
        # failed, with the value seen `unknown` (test_api.py)
        assert answer.json()["eligible"] is False, answer.text
        return
    assert 400 <= answer.status_code < 500, (target, answer.status_code, answer.text)


@pytest.mark.parametrize("label", PATH_PARAMETER_ROUTES)
@pytest.mark.parametrize(
    ("name", "segment"), HOSTILE_SEGMENTS, ids=[n for n, _ in HOSTILE_SEGMENTS]
)
def test_hostile_path_parameters_are_refused_and_leak_nothing(
    seeded_api: SeededApi, label: str, name: str, segment: str
) -> None:
    target = _hostile_request(label, segment)
    _check_refused(seeded_api.base_url, target, segment)


# Known bugs, pinned -------------------------------------------------------------------------


@pytest.mark.parametrize("label", PATH_PARAMETER_ROUTES)
@pytest.mark.parametrize(("name", "segment"), NUL_SEGMENTS, ids=[n for n, _ in NUL_SEGMENTS])
def test_a_nul_in_a_path_parameter_is_4xx(
    seeded_api: SeededApi, label: str, name: str, segment: str
) -> None:
    target = _hostile_request(label, segment)
    _check_refused(seeded_api.base_url, target, segment)


def test_a_nul_in_a_query_parameter_is_4xx(seeded_api: SeededApi) -> None:
    _check_refused(seeded_api.base_url, "/v1/cashouts?creator_id=a%00b", "a%00b")


# Each instant parses (RFC 3339, with a zone) but is outside 0001-01-01..9999-12-31 in UTC.
EARLY: Final = "0001-01-01T00:00:00%2B01:00"
LATE: Final = "9999-12-31T23:59:59-01:00"
OUT_OF_RANGE_QUERIES: Final = [
    f"/v1/reports/trial-balance?as_of={EARLY}",
    f"/v1/reports/trial-balance?as_of={LATE}",
    f"/v1/reports/gifts?from={EARLY}&to=0001-01-02T00:00:00Z",
    f"/v1/reports/cashouts?from=9999-12-30T00:00:00Z&to={LATE}",
    f"/v1/reports/money?from={EARLY}&to=0001-01-02T00:00:00Z",
    f"/v1/accounts/{{account}}/statement?from={EARLY}",
    f"/v1/accounts/{{account}}/statement?to={LATE}",
]


@pytest.mark.parametrize("query", OUT_OF_RANGE_QUERIES)
def test_an_instant_out_of_range_in_utc_is_4xx(seeded_api: SeededApi, query: str) -> None:
    target = query.replace("{account}", seeded_api.ledger.available_account)
    _check_refused(seeded_api.base_url, target, "")
