"""Fuzzing the finance API over real HTTP with schemathesis, from the OpenAPI document it serves,
with every check schemathesis has.

The server is the real one (`serve_api`, uvicorn on a free port, in a thread of its own: see
tests/api_server.py) on the session's test database, seeded with one creator's gifts, tip, fund
reward, marketplace deal, cash-outs, a dead letter and an event id applied in two topics. Every
operation of the served document is called with cases of schemathesis' coverage phase (boundary
values, each parameter made invalid or left out, methods the path does not serve) and of its
fuzzing phase in positive (schema-valid) and negative (schema-invalid) modes:

- with a token whose role may use the operation (finance, or operator where finance gets 403):
  `Case.call_and_validate` runs every check schemathesis registers, since the default
  configuration enables them all and the call names none (`test_every_check_of_schemathesis_runs`
  keeps it so); and no error body shows SQL, a connection string or the driver. The seeded ids
  and time window are mixed into the generated values (schemathesis dictionaries), so each read
  operation answers 200 as well as 404 and 422;
- with no token, an unknown token, and the finance token under another scheme: every operation but
  `/healthz` answers 401 with `WWW-Authenticate: Bearer`, whatever the parameters; only a body
  that is not JSON at all is refused first (400 or 422 `json_invalid`), as FastAPI reads the body
  before any dependency, the token check included.

What the checks hold the API to, and where a check has nothing to act on:

- `not_a_server_error`, `status_code_conformance`, `content_type_conformance`,
  `response_headers_conformance`, `response_schema_conformance`: no 5xx; every status, content
  type, header (`WWW-Authenticate`, `Retry-After`, `X-Next-Cursor`) and body is documented;
- `negative_data_rejection`, `positive_data_acceptance`: the document's parameter rules are the
  rules the API applies. One rule holds between two parameters and JSON Schema cannot state it,
  so the document states it in words: `to` after `from`, at most `API_TIME_RANGE_DAYS_MAX` days
  after it. The `map_case` hook `_within_one_range` keeps the generated cases inside it; a range
  outside it is 422, pinned by `test_every_error_answer_is_its_documented_model`;
- `unsupported_method`, `allow_header_conformance`: coverage cases send methods the path does not
  serve (405 with `Allow` naming every method of the path) and `OPTIONS`;
- `missing_required_header`: acts on coverage cases that leave out a required header parameter
  (an operator action's `Idempotency-Key`); the bearer token is a security scheme, not a
  parameter (`with-security-parameters = false`), and its absence is what `ignored_auth` and the
  pass without a token test;
- `ignored_auth`: each 2xx answer is asked again without the token and with a wrong one;
- `ensure_resource_availability`: a stateful check (it needs schemathesis' record of a scenario):
  `test_scenarios_along_the_links_of_the_document` runs bounded stateful scenarios along the
  links schemathesis infers, where a POST to a collection followed by a 404 on what it made
  would fail;
- `use_after_free`: acts on a read after a successful DELETE; no operation deletes (ledger rows
  are never deleted), so it has nothing to act on;
- `object_level_authorization`: compares several identities, each owning objects; here every
  token reads every object by design (finance reads the whole ledger), so it has no owner to
  protect.

The cases come from `APIOperation.as_strategy` under Hypothesis (fuzzing) and schemathesis'
`CoverageGenerator`, generated once per operation for both passes: derandomized (the same cases on
every run, so CI does not flake) and bounded (COVERAGE_CASES_MAX and FUZZ_EXAMPLES per operation
and mode, the first ANONYMOUS_EXAMPLES of each kind without a token; STATEFUL_SCENARIOS of at most
STATEFUL_STEPS_MAX calls), no deadline. schemathesis' own pytest loader
(`schemathesis.pytest.from_fixture`, needed for a schema that only exists once a fixture has
started the server) does not run on pytest 9.2: it reads `request.node._nodeid`, which pytest 9.2
no longer has.

Inputs that once answered 500, or a 422 of another shape, are pinned at the end: a NUL character
in a path or query parameter (PostgreSQL text cannot hold one; the document's patterns refuse
it), and instants whose UTC time falls outside Python's datetime range (the document's pattern
allows the written years 1970 to 8999).
"""

from __future__ import annotations

import itertools
import json
import re
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Final

import pytest
import requests
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.drivers import CoverageGenerator
from schemathesis.generation.feedback import NO_FEEDBACK
from schemathesis.generation.overrides import Override
from schemathesis.hooks import HookContext
from sqlalchemy.ext.asyncio import create_async_engine

from services.api.deps import TIMESTAMP_EXAMPLE, rfc3339
from services.api.server import create_app
from tests.api_contract import breaches
from tests.api_server import (
    FINANCE_TOKEN,
    OPERATOR_TOKEN,
    SeededApi,
    SeededLedger,
    api_settings,
    seeded_api,
    seeded_ledger,
)

FUZZ_EXAMPLES: Final = 12
COVERAGE_CASES_MAX: Final = 60
ANONYMOUS_EXAMPLES: Final = 3
STATEFUL_SCENARIOS: Final = 10
STATEFUL_STEPS_MAX: Final = 5
REQUEST_TIMEOUT_S: Final = 10.0
PUBLIC_OPERATIONS: Final = frozenset({"GET /healthz"})
# Every check schemathesis 4 registers; test_every_check_of_schemathesis_runs fails when one is
# added or left out, so that the module docstring says what each one holds the API to.
SCHEMATHESIS_CHECKS: Final = frozenset(
    {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "use_after_free",
        "ensure_resource_availability",
        "ignored_auth",
        "object_level_authorization",
    }
)
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
    "1970-01-01T00:00:00Z",
    "8999-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00+23:59",
    "8999-12-31T23:59:59-23:59",
)
UNAUTHENTICATED_BODY: Final = {"detail": "a valid bearer token is required"}
NOT_FOUND: Final = {"detail": "Not Found"}
# The longest range the test server allows (`API_TIME_RANGE_DAYS_MAX`), and the step by which
# `_within_one_range` moves an end.
RANGE_MAX: Final = timedelta(days=api_settings().api_time_range_days_max)
RANGE_STEP: Final = timedelta(seconds=1)

__all__ = ["seeded_api", "seeded_ledger"]  # fixtures, used by name


Operation = schemathesis.APIOperation[Any, Any, Any, Any]
FuzzCase = Case[Any]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


FINANCE: Final = _bearer(FINANCE_TOKEN)
OPERATOR: Final = _bearer(OPERATOR_TOKEN)
NOT_AUTHENTICATED: Final[tuple[dict[str, str], ...]] = (
    {},
    _bearer("not-a-configured-token"),
    {"Authorization": f"Basic {FINANCE_TOKEN}"},
)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# The operations: those of the document the app writes, which the served one must equal -------

APP: Final = create_app(
    create_async_engine("postgresql+asyncpg://nobody@127.0.0.1/nothing"), api_settings()
)
APP_DOCUMENT: Final = APP.openapi()
# What each documented path's route matches, as the router decides it: an id of any text is
# declared `{name:path}` and read whole, `/` included; a numeric id is one segment.
ROUTE_PATTERNS: Final = {
    route.path_format: route.path_regex for route in APP.routes if isinstance(route, APIRoute)
}
OPERATIONS: Final = tuple(
    f"{method.upper()} {path}"
    for path, operations in APP_DOCUMENT["paths"].items()
    for method in operations
)
PATH_PARAMETER_OPERATIONS: Final = tuple(
    label for label in OPERATIONS if "{" in label and label.startswith("GET ")
)


def _documented(label: str) -> dict[str, Any]:
    method, path = label.split(" ", 1)
    operation: dict[str, Any] = APP_DOCUMENT["paths"][path][method.lower()]
    return operation


def _token_for(label: str) -> dict[str, str]:
    """The finance token where the finance role may use the operation, else the operator's (an
    operation some role may not use documents 403)."""
    return OPERATOR if "403" in _documented(label)["responses"] else FINANCE


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
    for container in (case.path_parameters, case.query, case.body):
        values += [str(value) for value in _strings(container or {})]
    return values


# The rule between two parameters ------------------------------------------------------------


def _instant(value: object) -> datetime | None:
    """`value` as the API reads a timestamp, or None when it would refuse it."""
    if not isinstance(value, str):
        return None
    try:
        parsed = rfc3339(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, datetime) else None


def _within_one_range(query: dict[str, Any]) -> dict[str, Any]:
    """`query` with `to` after `from` and at most RANGE_MAX after it, when both are timestamps
    the API reads: the one rule between parameters, which the document states in words. The end
    that moves stays within the written years the document allows."""
    start, end = _instant(query.get("from")), _instant(query.get("to"))
    if start is None or end is None or start < end <= start + RANGE_MAX:
        return query
    example = datetime.fromisoformat(TIMESTAMP_EXAMPLE)
    for new_start, new_end in ((start, start + RANGE_STEP), (end - RANGE_STEP, end)):
        if _instant(new_start.isoformat()) and _instant(new_end.isoformat()):
            return {**query, "from": new_start.isoformat(), "to": new_end.isoformat()}
    return {**query, "from": example.isoformat(), "to": (example + RANGE_STEP).isoformat()}


def map_case(context: HookContext, case: FuzzCase) -> FuzzCase:
    """The schemathesis hook that applies `_within_one_range` to every generated case."""
    if isinstance(case.query, dict):
        case.query = _within_one_range(case.query)
    return case


# The schema ---------------------------------------------------------------------------------


def _config(ledger: SeededLedger) -> schemathesis.Config:
    """Derandomized generation that mixes the seeded ids and window into the values."""
    return schemathesis.Config.from_dict(
        {
            "generation": {
                "database": "none",
                "with-security-parameters": False,  # the tests set Authorization themselves
            },
            "dictionaries": {
                "creators": {"values": [ledger.creator]},
                "accounts": {"values": [ledger.available_account]},
                "events": {
                    "values": [ledger.gift_event, ledger.dead_event, ledger.twice_applied_event]
                },
                "cashouts": {"values": [ledger.paid_cashout, ledger.rejected_cashout]},
                "reconciliations": {"values": [ledger.reconciliation]},
                "starts": {"values": [_iso(ledger.start)]},
                "ends": {"values": [_iso(ledger.end)]},
                # the first and last instants the API allows, the widest offsets
                "instants": {"values": list(EDGE_INSTANTS)},
            },
            "parameters": {
                "path.creator_id": {"dictionary": "creators", "probability": 0.5},
                "query.creator_id": {"dictionary": "creators", "probability": 0.5},
                "path.account": {"dictionary": "accounts", "probability": 0.5},
                "path.event_id": {"dictionary": "events", "probability": 0.5},
                "path.cashout_id": {"dictionary": "cashouts", "probability": 0.5},
                "path.reconciliation_id": {"dictionary": "reconciliations", "probability": 0.5},
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
    schema.hook(map_case)
    return schema


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _operation(schema: schemathesis.BaseSchema, label: str) -> Operation:
    method, path = label.split(" ", 1)
    return schema[path][method]


def _fuzzed(operation: Operation, mode: GenerationMode) -> list[FuzzCase]:
    """Up to FUZZ_EXAMPLES cases of `operation` in `mode`, the same on every run; none in
    negative mode for an operation without parameters (nothing to make invalid)."""
    cases: list[FuzzCase] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=FUZZ_EXAMPLES,
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


def _covered(schema: schemathesis.BaseSchema, operation: Operation) -> list[FuzzCase]:
    """The first COVERAGE_CASES_MAX cases of schemathesis' coverage phase for `operation`, in
    both modes: boundary values, each parameter made invalid or left out, other methods."""
    generator = CoverageGenerator(
        operation=operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation_for(operation=operation, phase="coverage"),
        auth_storage=None,
        override=Override(),
        feedback=NO_FEEDBACK,
    )
    return list(itertools.islice(generator, COVERAGE_CASES_MAX))


class GeneratedCases:
    """The cases of each operation, generated once for every test of the module."""

    def __init__(self, schema: schemathesis.BaseSchema) -> None:
        self.schema = schema
        self._cases: dict[str, list[FuzzCase]] = {}

    def of(self, label: str) -> list[FuzzCase]:
        if label not in self._cases:
            operation = _operation(self.schema, label)
            self._cases[label] = [
                *_covered(self.schema, operation),
                *_fuzzed(operation, GenerationMode.POSITIVE),
                *_fuzzed(operation, GenerationMode.NEGATIVE),
            ]
        return self._cases[label]

    def sample(self, label: str) -> list[FuzzCase]:
        """ANONYMOUS_EXAMPLES cases of each kind: coverage, positive, negative."""
        by_kind: dict[tuple[str, str], list[FuzzCase]] = {}
        for case in self.of(label):
            meta = case.meta
            kind = ("", "") if meta is None else (meta.phase.name, meta.generation.mode)
            by_kind.setdefault(kind, []).append(case)
        return [case for cases in by_kind.values() for case in cases[:ANONYMOUS_EXAMPLES]]


@pytest.fixture(scope="module")
def generated(api_schema: schemathesis.BaseSchema) -> GeneratedCases:
    return GeneratedCases(api_schema)


# The document -------------------------------------------------------------------------------


def test_the_served_document_is_the_one_the_app_writes(served_document: dict[str, Any]) -> None:
    assert served_document == json.loads(json.dumps(APP_DOCUMENT))


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


def test_every_check_of_schemathesis_runs(api_schema: schemathesis.BaseSchema) -> None:
    """`call_and_validate` without `checks=` runs every registered check its configuration
    enables: all of them, for every operation."""
    load_all_checks()
    registered = set(CHECKS.get_all_names())
    assert registered == SCHEMATHESIS_CHECKS
    for label in OPERATIONS:
        config = api_schema.config.checks_config_for(
            operation=_operation(api_schema, label), phase=None
        )
        disabled = [name for name in registered if not config.get_by_name(name=name).enabled]
        assert disabled == [], label


def _text_parameters(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                for branch in schema.get("anyOf", [schema]):
                    if branch.get("type") == "string" and "enum" not in branch:
                        yield f"{method.upper()} {path} {parameter['name']}", branch


def test_every_text_parameter_refuses_a_nul_character_by_its_pattern(
    served_document: dict[str, Any],
) -> None:
    unguarded = [
        name
        for name, schema in _text_parameters(served_document)
        if "pattern" not in schema or re.search(schema["pattern"], "a\x00b")
    ]
    assert unguarded == []


def test_every_422_of_the_document_has_one_model(served_document: dict[str, Any]) -> None:
    models = {
        json.dumps(operation["responses"]["422"]["content"])
        for operations in served_document["paths"].values()
        for operation in operations.values()
        if "422" in operation["responses"]
    }
    assert models == {
        json.dumps(
            {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/InvalidRequestDocument"}
                }
            }
        )
    }
    assert "HTTPValidationError" not in served_document["components"]["schemas"]


# Fuzzing with a token -----------------------------------------------------------------------


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_with_a_token_that_may_use_the_operation(
    generated: GeneratedCases, http: requests.Session, label: str
) -> None:
    token = _token_for(label)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for case in generated.of(label):
        try:
            response = case.call_and_validate(
                session=http, headers=token, timeout=REQUEST_TIMEOUT_S
            )
        except FailureGroup as failure:
            failures.append(str(failure))
            continue
        statuses[response.status_code] += 1
        if response.status_code >= 400:
            leaked = internals_in(response.text, _sent_values(case))
            if leaked:
                curl = case.as_curl_command(headers=token)
                failures.append(f"{leaked} in {response.text!r}\n{curl}")
    assert failures == [], "\n\n".join(failures)
    # the seeded values reach the data: not only 404 and 422
    assert token is not FINANCE or statuses[200] > 0, statuses


# Scenarios along the document's links -------------------------------------------------------


def test_scenarios_along_the_links_of_the_document(
    api_schema: schemathesis.BaseSchema, http: requests.Session
) -> None:
    """schemathesis' stateful phase: chains of calls where an answer feeds the next request
    (links it infers from the document, e.g. a proposed adjustment's id to its approval), with
    the operator token (which may use every operation) and every check, the stateful ones
    included."""
    machine = api_schema.as_state_machine()

    class Scenarios(machine):  # type: ignore[valid-type, misc]
        def get_call_kwargs(self, case: FuzzCase) -> dict[str, Any]:
            return {"session": http, "headers": OPERATOR, "timeout": REQUEST_TIMEOUT_S}

    Scenarios.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS_MAX,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )


# Fuzzing without a valid token --------------------------------------------------------------


def _refused_before_the_token(response: Any) -> bool:
    """A body that is not JSON at all: FastAPI reads it before any dependency runs, the token
    check included, and answers 400 (not text) or 422 `json_invalid`."""
    if response.status_code == 400:
        return True
    if response.status_code != 422:
        return False
    problems: list[dict[str, Any]] = response.json()["detail"]
    return all(problem["type"] == "json_invalid" for problem in problems)


def _reaches(case: FuzzCase, path: str, url: str) -> bool:
    """Whether the request reached the operation: its method, and a path that the route matches
    (a numeric id holding `/`, or a `..` segment the client removed, makes another path: 404
    before any token check)."""
    sent = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    method = case.operation.method.upper()
    return case.method.upper() == method and ROUTE_PATTERNS[path].match(sent) is not None


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_without_a_valid_token(
    generated: GeneratedCases, http: requests.Session, label: str
) -> None:
    path = label.split(" ", 1)[1]
    refused = 0
    for case in generated.sample(label):
        for headers in NOT_AUTHENTICATED:
            response = case.call(session=http, headers=headers, timeout=REQUEST_TIMEOUT_S)
            answer = (case.as_curl_command(headers=headers), response.status_code, response.text)
            if not _reaches(case, path, response.request.url or ""):
                assert response.status_code in (404, 405), answer
            elif label in PUBLIC_OPERATIONS:
                assert response.status_code == 200, answer
            elif _refused_before_the_token(response):
                assert "requestBody" in _documented(label), answer
            else:
                assert response.status_code == 401, answer
                assert response.headers.get("www-authenticate") == ["Bearer"], answer
                assert response.json() == UNAUTHENTICATED_BODY, answer
                refused += 1
    assert label in PUBLIC_OPERATIONS or refused > 0


# Error answers and their documented models --------------------------------------------------

# (operation, request target with {placeholders} of the seeded ledger, headers, status)
EARLY: Final = "0001-01-01T00:00:00%2B01:00"
LATE: Final = "9999-12-31T23:59:59-01:00"
WINDOW: Final = "from={start}&to={end}"
ERROR_ANSWERS: Final[list[tuple[str, str, str, int]]] = [
    ("GET /metrics", "/metrics", "none", 401),
    ("GET /v1/cashouts", "/v1/cashouts", "unknown", 401),
    ("GET /v1/creators/{creator_id}/balances", "/v1/creators/nobody-{unique}/balances", "", 404),
    ("GET /v1/creators/{creator_id}/eligibility", "/v1/creators/a%2Fb/eligibility", "", 404),
    ("GET /v1/accounts/{account}/statement", "/v1/accounts/nothing-{unique}/statement", "", 404),
    ("GET /v1/events/{event_id}", "/v1/events/nothing-{unique}", "", 404),
    ("GET /v1/events/{event_id}", "/v1/events/{twice}", "", 409),
    ("GET /v1/cashouts/{cashout_id}", "/v1/cashouts/nothing-{unique}", "", 404),
    ("GET /v1/cashouts", "/v1/cashouts?limit=many", "", 422),
    ("GET /v1/cashouts", "/v1/cashouts?limit=1001", "", 422),
    ("GET /v1/cashouts", "/v1/cashouts?status=lost", "", 422),
    ("GET /v1/cashouts", "/v1/cashouts?creator_id=a%00b", "", 422),
    ("GET /v1/events/{event_id}", "/v1/events/a%00b", "", 422),
    ("GET /v1/events/{event_id}", f"/v1/events/{'x' * 129}", "", 422),
    ("GET /v1/reports/gifts", "/v1/reports/gifts?from={end}&to={start}", "", 422),
    ("GET /v1/reports/cashouts", "/v1/reports/cashouts?clock=paid", "", 422),
    ("GET /v1/reports/money", "/v1/reports/money?from=2020-01-01T00:00:00Z&to={end}", "", 422),
    ("GET /v1/reports/cashouts", f"/v1/reports/cashouts?from={EARLY}&to={{end}}", "", 422),
    ("GET /v1/reports/trial-balance", f"/v1/reports/trial-balance?as_of={LATE}", "", 422),
    ("GET /v1/reports/trial-balance", "/v1/reports/trial-balance?as_of=2026-01-01", "", 422),
    (
        "GET /v1/accounts/{account}/statement",
        "/v1/accounts/{account}/statement?from=2020-01-01T01:00:00+01:00",
        "",
        422,
    ),
    ("GET /v1/accounts/{account}/statement", "/v1/accounts/{account}/statement?" + WINDOW, "", 200),
    ("GET /v1/reports/gifts", "/v1/reports/gifts?to={end}", "", 200),
    ("GET /v1/reports/money", "/v1/reports/money", "", 200),
    (
        "GET /v1/accounts/{account}/statement",
        "/v1/accounts/{account}/statement?page_size=1",
        "csv",
        200,
    ),
]


def _target(template: str, ledger: SeededLedger, unique: str) -> str:
    return template.format(
        start=urllib.parse.quote(_iso(ledger.start)),
        end=urllib.parse.quote(_iso(ledger.end)),
        account=ledger.available_account,
        twice=ledger.twice_applied_event,
        unique=unique,
    )


REQUEST_HEADERS: Final = {
    "": FINANCE,
    "csv": {**FINANCE, "Accept": "text/csv"},
    "none": {},
    "unknown": _bearer("not-a-configured-token"),
}


@pytest.mark.parametrize(
    ("label", "template", "headers", "status"),
    ERROR_ANSWERS,
    ids=[f"{status}-{template}" for _, template, _, status in ERROR_ANSWERS],
)
def test_every_error_answer_is_its_documented_model(
    seeded_api: SeededApi,
    served_document: dict[str, Any],
    unique_id: str,
    label: str,
    template: str,
    headers: str,
    status: int,
) -> None:
    """Each kind of error answer (and the CSV page with its cursor header) is exactly what the
    document says of that status: its body model, content type and headers."""
    target = _target(template, seeded_api.ledger, unique_id)
    answer = requests.get(
        f"{seeded_api.base_url}{target}",
        headers=REQUEST_HEADERS[headers],
        timeout=REQUEST_TIMEOUT_S,
    )
    assert answer.status_code == status, (target, answer.text)
    found = breaches(served_document, label, answer.status_code, answer.headers, answer.content)
    assert found == [], (target, answer.text)


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

ELIGIBILITY: Final = re.compile(r"/v1/creators/[^/]+/eligibility")


def _hostile_request(label: str, segment: str) -> str:
    path = label.split(" ", 1)[1]
    return re.sub(r"\{[^}]+\}", lambda _: segment, path)


def _check_refused(
    base_url: str, document: dict[str, Any], label: str, target: str, segment: str
) -> int:
    """A 4xx (never a 5xx) as the document describes it, whose body shows no SQL, connection
    string or driver; its status."""
    answer = requests.get(f"{base_url}{target}", headers=FINANCE, timeout=REQUEST_TIMEOUT_S)
    assert internals_in(answer.text, [urllib.parse.unquote(segment)]) == [], (target, answer.text)
    found = breaches(document, label, answer.status_code, answer.headers, answer.content)
    assert found == [], (target, answer.status_code, answer.text)
    if ELIGIBILITY.fullmatch(target) and answer.status_code == 200:
        # by design any creator id of 1 to 128 characters has an eligibility: every rule
        # failed, with the value seen `unknown` (test_api.py)
        assert answer.json()["eligible"] is False, answer.text
        return answer.status_code
    assert 400 <= answer.status_code < 500, (target, answer.status_code, answer.text)
    return answer.status_code


@pytest.mark.parametrize("label", PATH_PARAMETER_OPERATIONS)
@pytest.mark.parametrize(
    ("name", "segment"), HOSTILE_SEGMENTS, ids=[n for n, _ in HOSTILE_SEGMENTS]
)
def test_hostile_path_parameters_are_refused_and_leak_nothing(
    seeded_api: SeededApi, served_document: dict[str, Any], label: str, name: str, segment: str
) -> None:
    target = _hostile_request(label, segment)
    _check_refused(seeded_api.base_url, served_document, label, target, segment)


# Inputs that once answered 500 or a 422 of another shape ------------------------------------


@pytest.mark.parametrize("label", PATH_PARAMETER_OPERATIONS)
@pytest.mark.parametrize(("name", "segment"), NUL_SEGMENTS, ids=[n for n, _ in NUL_SEGMENTS])
def test_a_nul_in_a_path_parameter_is_the_documented_422(
    seeded_api: SeededApi, served_document: dict[str, Any], label: str, name: str, segment: str
) -> None:
    target = _hostile_request(label, segment)
    status = _check_refused(seeded_api.base_url, served_document, label, target, segment)
    assert status == 422


def test_a_nul_in_a_query_parameter_is_the_documented_422(
    seeded_api: SeededApi, served_document: dict[str, Any]
) -> None:
    target = "/v1/cashouts?creator_id=a%00b"
    status = _check_refused(seeded_api.base_url, served_document, "GET /v1/cashouts", target, "")
    assert status == 422


# Each instant is RFC 3339 with an offset but outside 0001-01-01..9999-12-31 in UTC (asyncpg
# cannot encode it), or next to it; its written year is outside 1970..8999.
OUT_OF_RANGE_QUERIES: Final = [
    ("GET /v1/reports/trial-balance", f"/v1/reports/trial-balance?as_of={EARLY}"),
    ("GET /v1/reports/trial-balance", f"/v1/reports/trial-balance?as_of={LATE}"),
    ("GET /v1/reports/trial-balance", "/v1/reports/trial-balance?as_of=1969-12-31T23:59:59Z"),
    ("GET /v1/reports/trial-balance", "/v1/reports/trial-balance?as_of=9000-01-01T00:00:00Z"),
    ("GET /v1/reports/gifts", f"/v1/reports/gifts?from={EARLY}&to=0001-01-02T00:00:00Z"),
    ("GET /v1/reports/cashouts", f"/v1/reports/cashouts?from=9999-12-30T00:00:00Z&to={LATE}"),
    ("GET /v1/reports/money", f"/v1/reports/money?from={EARLY}&to=0001-01-02T00:00:00Z"),
    ("GET /v1/accounts/{account}/statement", f"/v1/accounts/{{account}}/statement?from={EARLY}"),
    ("GET /v1/accounts/{account}/statement", f"/v1/accounts/{{account}}/statement?to={LATE}"),
]


@pytest.mark.parametrize(("label", "query"), OUT_OF_RANGE_QUERIES)
def test_an_instant_out_of_range_is_the_documented_422(
    seeded_api: SeededApi, served_document: dict[str, Any], label: str, query: str
) -> None:
    target = query.replace("{account}", seeded_api.ledger.available_account)
    status = _check_refused(seeded_api.base_url, served_document, label, target, "")
    assert status == 422
