"""The dead letters list, one query (`services.api.dead_letters`) read three ways: `giftledger
dead-letters`, `GET /v1/dead-letters` and the console's dead letters page.

The module's dead letters belong to a deployment of their own (a topic prefix no other test
uses): rows written as the consumers write them, some at chosen times in the past (six in one
instant, as a batch's are), one re-driven, one with a terminal escape in its event id, two
through `Ingestor.process` (the function the consumers call); and one of another deployment,
which no list shows. What each list must hold is read from the table and ordered here, apart
from the query under test.

On a table of 100,000 dead letters, the list reads an index for every filter, never the whole
table (plans read as JSON).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.api.dead_letters import (
    DEAD_LETTER_CSV_COLUMNS,
    DETAIL_CHARACTERS_MAX,
    DeadLetterFilter,
    list_dead_letters,
)
from services.api.server import create_app
from services.cli import main
from services.ingestion.records import InputRecord
from services.operator.actions_log import record_action
from services.rates.rate_cards import load_rate_cards
from services.runtime import settings as settings_module
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.api_server import FINANCE_TOKEN, OPERATOR_TOKEN, served_client, token_digest
from tests.console_http import FINANCE_TOKEN as CONSOLE_FINANCE_TOKEN
from tests.console_http import console_client, console_settings, sign_in, table
from tests.ingestion_fixtures import make_ingestor
from tests.query_plans import (
    CURSOR_INDEXES,
    INDEX_SCAN_TYPES,
    nodes_of,
    only_plan,
    reads_in_order,
)

FINANCE = {"Authorization": f"Bearer {FINANCE_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
ESCAPE_EVENT_ID = "ev-\x1b[31mred"
LONG_DETAIL = "x" * (DETAIL_CHARACTERS_MAX + 500)
TIED_AT = "2026-01-12T00:00:00+00:00"
REDRIVEN_AT = "2026-01-14T06:00:00+00:00"
PLAN_ROW_COUNT = 100_000

# (topic, error, recorded_at, event_id, detail), written in this order.
PAST_LETTERS: list[tuple[str, str, str, str | None, str]] = [
    (topics.GIFTS_SENT, "schema_violation", "2026-01-10T08:00:00+00:00", "ev-a1", "coins: >= 1"),
    (topics.GIFTS_SENT, "malformed_json", "2026-01-10T09:00:00+00:00", None, "line 1\nline 2"),
    (topics.TIPS_RECEIVED, "schema_violation", "2026-01-11T00:00:00+00:00", "ev-a3", "amount"),
    (topics.GIFTS_SENT, "schema_violation", TIED_AT, "ev-t1", "tied 1"),
    (topics.GIFTS_SENT, "conflict", TIED_AT, ESCAPE_EVENT_ID, "tied 2"),
    (topics.TIPS_RECEIVED, "malformed_json", TIED_AT, "ev-t3", LONG_DETAIL),
    (topics.GIFTS_SENT, "schema_violation", TIED_AT, "ev-t4", "tied 4"),
    (topics.CASHOUTS_REQUESTED, "schema_violation", TIED_AT, "ev-t5", "tied 5"),
    (topics.GIFTS_SENT, "schema_violation", TIED_AT, "ev-t6", "tied 6"),
    (topics.GIFTS_REVERSED, "gift_not_found", "2026-01-13T00:00:00+00:00", "ev-r", "no gift"),
]


@dataclass(frozen=True)
class Letter:
    id: int
    topic: str
    error: str
    recorded_at: datetime


@dataclass(frozen=True)
class Letters:
    """The module's deployment and its dead letters, newest first (`recorded_at`, then `id`)."""

    prefix: str
    newest_first: list[Letter]
    redriven_id: int
    escape_id: int
    other_deployment_id: int
    redrive_action_id: int

    def ids(
        self,
        *,
        topic: str | None = None,
        error: str | None = None,
        from_time: datetime | None = None,
        to_time: datetime | None = None,
    ) -> list[int]:
        return [
            letter.id
            for letter in self.newest_first
            if (topic is None or letter.topic == topic)
            and (error is None or letter.error == error)
            and (from_time is None or letter.recorded_at >= from_time)
            and (to_time is None or letter.recorded_at < to_time)
        ]


def _at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


async def _write_past_letters(engine: AsyncEngine, prefix: str) -> tuple[int, int, int]:
    """PAST_LETTERS, at their times; the last one re-driven. Its id, the escape's and the id of
    the action that re-drove it."""
    ids: list[int] = []
    async with engine.begin() as conn:
        for offset, (topic, error, recorded_at, event_id, detail) in enumerate(PAST_LETTERS):
            found = await conn.execute(
                text(
                    "INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset,"
                    " event_id, error, detail, recorded_at)"
                    " VALUES (:prefix, :topic, 3, :offset, :event_id, :error, :detail, :at)"
                    " RETURNING id"
                ),
                {
                    "prefix": prefix,
                    "topic": topic,
                    "offset": offset,
                    "event_id": event_id,
                    "error": error,
                    "detail": detail,
                    "at": _at(recorded_at),
                },
            )
            ids.append(int(found.scalar_one()))
        action, _ = await record_action(  # a re-drive row cites the action that did it
            conn,
            idempotency_key=f"redrive-{prefix}#{ids[-1]}",
            actor="alice",
            action="dead_letter_redriven",
            target=f"dead-letter:{ids[-1]}",
            reason="a past re-drive",
            ticket=None,
            details={},
            topic_prefix=prefix,
        )
        await conn.execute(
            text(
                "INSERT INTO dead_letter_redrives (dead_letter_id, operator_action_id,"
                " idempotency_key, topic_prefix, topic, kafka_partition, kafka_offset, redriven_at)"
                " VALUES (:id, :action, :key, :prefix, :topic, 3, 1000, :at)"
            ),
            {
                "id": ids[-1],
                "action": action.id,
                "key": f"redrive-{prefix}",
                "prefix": prefix,
                "topic": topics.GIFTS_REVERSED,
                "at": _at(REDRIVEN_AT),
            },
        )
    escape = [row[3] for row in PAST_LETTERS].index(ESCAPE_EVENT_ID)
    return ids[-1], ids[escape], action.id


async def _consume_refused_records(engine: AsyncEngine, prefix: str) -> None:
    """Two records the consumers refuse, through `Ingestor.process`: bytes that are not JSON,
    and a gift of 0 coins."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    creator = f"dl-list-{uuid.uuid4().hex[:8]}"
    values = [b"{not json", json.dumps({**make.gift(creator), "coins": 0}).encode()]
    for offset, value in enumerate(values):
        record = InputRecord(topics.GIFTS_SENT, 5, offset, creator.encode(), value)
        report = await ingestor.process(topics.GIFTS_SENT, [record])
        assert len(report.dead_letters) == 1, report


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def letters(engine: AsyncEngine) -> Letters:
    prefix = f"dl-list-{uuid.uuid4().hex[:10]}"
    redriven_id, escape_id, redrive_action_id = await _write_past_letters(engine, prefix)
    await _consume_refused_records(engine, prefix)
    async with engine.begin() as conn:
        other = await conn.execute(
            text(
                "INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset,"
                " error, detail) VALUES (:prefix, :topic, 0, 0, 'schema_violation', 'other')"
                " RETURNING id"
            ),
            {"prefix": f"{prefix}-other", "topic": topics.GIFTS_SENT},
        )
        other_id = int(other.scalar_one())
        rows = await conn.execute(
            text(
                "SELECT id, topic, error, recorded_at FROM dead_letters"
                " WHERE topic_prefix = :prefix"
            ),
            {"prefix": prefix},
        )
        found = [Letter(row.id, row.topic, row.error, row.recorded_at) for row in rows]
    found.sort(key=lambda letter: (letter.recorded_at, letter.id), reverse=True)
    assert len(found) == len(PAST_LETTERS) + 2
    return Letters(prefix, found, redriven_id, escape_id, other_id, redrive_action_id)


# The command line ------------------------------------------------------------------------------


@pytest.fixture
def cli(letters: Letters, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Letters]:
    """`main` on the session's database as the module's deployment."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", letters.prefix)
    settings_module.get_settings.cache_clear()
    yield letters
    settings_module.get_settings.cache_clear()


def _cli_json(capsys: pytest.CaptureFixture[str], *arguments: str) -> dict[str, Any]:
    assert main(["dead-letters", *arguments, "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def _ids(document: dict[str, Any]) -> list[int]:
    return [letter["id"] for letter in document["dead_letters"]]


def test_the_command_prints_the_deployments_dead_letters_newest_first_as_a_table(
    cli: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dead-letters"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == [
        "id",
        "recorded",
        "topic",
        "place",
        "event_id",
        "error",
        "detail",
        "re-driven",
    ]
    assert [int(line.split()[0]) for line in lines[1:]] == cli.ids()
    assert cli.other_deployment_id not in [int(line.split()[0]) for line in lines[1:]]
    assert captured.err == ""  # one page holds them all: no next cursor
    [redriven] = [line for line in lines if line.split()[0] == str(cli.redriven_id)]
    assert redriven.split()[1:] == [
        "2026-01-13",
        "00:00:00Z",
        "gifts.reversed",
        "3/9",
        "ev-r",
        "gift_not_found",
        "no",
        "gift",
        "2026-01-14",
        "06:00:00Z",
    ]
    # what a terminal would act on is shown escaped, each dead letter on one line
    assert "\x1b" not in captured.out
    [escaped] = [line for line in lines if line.split()[0] == str(cli.escape_id)]
    assert "ev-\\x1b[31mred" in escaped
    assert "line 1\\nline 2" in captured.out
    assert len(lines) == 1 + len(cli.ids())


def test_the_command_filters_by_topic_error_and_range(
    cli: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _ids(_cli_json(capsys, "--topic", "gifts.sent")) == cli.ids(topic=topics.GIFTS_SENT)
    assert _ids(_cli_json(capsys, "--error", "schema_violation")) == cli.ids(
        error="schema_violation"
    )
    both = ["--topic", "gifts.sent", "--error", "schema_violation"]
    assert _ids(_cli_json(capsys, *both)) == cli.ids(
        topic=topics.GIFTS_SENT, error="schema_violation"
    )
    in_range = ["--from", "2026-01-10T09:00:00Z", "--to", TIED_AT]
    expected = cli.ids(from_time=_at("2026-01-10T09:00:00+00:00"), to_time=_at(TIED_AT))
    assert _ids(_cli_json(capsys, *in_range)) == expected
    assert len(expected) == 2  # from included, to excluded
    assert _cli_json(capsys, "--error", "no_such_error") == {
        "dead_letters": [],
        "next_cursor": None,
    }


def test_the_commands_json_is_the_apis_document(
    cli: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    document = _cli_json(capsys, "--topic", "gifts.reversed")
    assert document == {
        "dead_letters": [
            {
                "id": cli.redriven_id,
                "topic": "gifts.reversed",
                "source": {"partition": 3, "offset": 9},
                "event_id": "ev-r",
                "error": "gift_not_found",
                "detail": "no gift",
                "recorded_at": "2026-01-13T00:00:00+00:00",
                "redriven_at": REDRIVEN_AT,
                "redrive_action_id": cli.redrive_action_id,
            }
        ],
        "next_cursor": None,
    }


def test_the_command_pages_with_its_cursor_through_every_dead_letter_once(
    cli: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[int] = []
    cursor = 0
    while True:
        assert main(["dead-letters", "--limit", "3", "--cursor", str(cursor), "--json"]) == 0
        captured = capsys.readouterr()
        document = json.loads(captured.out)
        seen += _ids(document)
        if document["next_cursor"] is None:
            assert captured.err == ""
            break
        assert captured.err == f"next cursor: {document['next_cursor']}\n"
        cursor = document["next_cursor"]
    assert seen == cli.ids()


def test_the_commands_csv_is_the_apis_columns(
    cli: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dead-letters", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(row["id"]) for row in rows] == cli.ids()
    assert list(rows[0]) == list(DEAD_LETTER_CSV_COLUMNS)
    by_id = {int(row["id"]): row for row in rows}
    redriven = by_id[cli.redriven_id]
    assert (redriven["redriven_at"], redriven["redrive_action_id"]) == (
        REDRIVEN_AT,
        str(cli.redrive_action_id),
    )
    assert by_id[cli.escape_id]["event_id"] == ESCAPE_EVENT_ID  # data, as recorded
    assert {row["detail"] for row in rows} >= {
        "line 1\nline 2",
        LONG_DETAIL[:DETAIL_CHARACTERS_MAX],
    }
    assert {row["redriven_at"] for row in rows if int(row["id"]) != cli.redriven_id} == {""}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--topic", "gifts.sent.dlq"], "argument --topic: invalid choice: 'gifts.sent.dlq'"),
        (["--error", "has space"], "argument --error: an error is 1 to 64 visible ASCII"),
        (["--error", "e" * 65], "argument --error: an error is 1 to 64 visible ASCII"),
        (["--from", "2026-01-01T00:00:00"], "has no time zone: add one"),
        (["--to", "yesterday"], "argument --to: not an ISO 8601 timestamp: 'yesterday'"),
        (["--limit", "0"], "argument --limit: page size must be between 1 and 1000, not 0"),
        (["--limit", "1001"], "argument --limit: page size must be between 1 and 1000, not 1001"),
        (["--cursor", "-1"], "argument --cursor: cursor must not be negative, not -1"),
        (["--json", "--csv"], "argument --csv: not allowed with argument --json"),
    ],
)
def test_a_bad_argument_is_a_usage_error_that_says_what_is_wrong(
    cli: Letters, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert main(["dead-letters", *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_a_range_that_ends_before_it_starts_is_a_usage_error(
    cli: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    backwards = ["--from", "2026-01-12T00:00:00Z", "--to", "2026-01-11T00:00:00Z"]
    assert main(["dead-letters", *backwards]) == 2
    assert capsys.readouterr() == ("", "giftledger: --from must be before --to\n")


def test_no_dead_letter_is_said_in_words(cli: Letters, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dead-letters", "--error", "no_such_error"]) == 0
    assert capsys.readouterr().out == "no dead letters\n"


# The finance API ---------------------------------------------------------------------------


def _api_settings(prefix: str, **overrides: Any) -> Settings:
    return Settings(
        api_tokens={
            token_digest(FINANCE_TOKEN): "finance",
            token_digest(OPERATOR_TOKEN): "operator",
        },
        kafka_topic_prefix=prefix,
        **overrides,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(engine: AsyncEngine, letters: Letters) -> AsyncIterator[httpx.AsyncClient]:
    async with served_client(create_app(engine, _api_settings(letters.prefix))) as client:
        yield client


async def _walk(
    api: httpx.AsyncClient, query: dict[str, str | int], headers: dict[str, str]
) -> list[int]:
    """Every page of the JSON list from the start: the ids in the order served."""
    seen: list[int] = []
    cursor = 0
    while True:
        answer = await api.get(
            "/v1/dead-letters", params={**query, "cursor": cursor}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        document = answer.json()
        seen += _ids(document)
        assert len(document["dead_letters"]) <= int(query.get("limit", 100))
        if document["next_cursor"] is None:
            return seen
        cursor = document["next_cursor"]


async def test_the_route_needs_a_token_and_serves_finance_and_operators(
    api: httpx.AsyncClient, letters: Letters
) -> None:
    assert (await api.get("/v1/dead-letters")).status_code == 401
    unknown = {"Authorization": f"Bearer unknown-{uuid.uuid4().hex}"}
    assert (await api.get("/v1/dead-letters", headers=unknown)).status_code == 401
    for headers in (FINANCE, OPERATOR):
        answer = await api.get("/v1/dead-letters", headers=headers)
        assert answer.status_code == 200, answer.text
        assert _ids(answer.json()) == letters.ids()


async def test_the_route_filters_as_the_command_does(
    api: httpx.AsyncClient, letters: Letters
) -> None:
    cases: list[tuple[dict[str, str | int], list[int]]] = [
        ({"topic": "tips.received"}, letters.ids(topic=topics.TIPS_RECEIVED)),
        ({"error": "schema_violation"}, letters.ids(error="schema_violation")),
        (
            {"topic": "gifts.sent", "error": "malformed_json"},
            letters.ids(topic=topics.GIFTS_SENT, error="malformed_json"),
        ),
        (
            {"from": "2026-01-11T00:00:00Z", "to": "2026-01-13T00:00:00Z"},
            letters.ids(
                from_time=_at("2026-01-11T00:00:00+00:00"), to_time=_at("2026-01-13T00:00:00+00:00")
            ),
        ),
        ({"from": "2026-01-13T01:00:00+01:00"}, letters.ids(from_time=_at(PAST_LETTERS[-1][2]))),
    ]
    for query, expected in cases:
        assert expected, query
        answer = await api.get("/v1/dead-letters", params=query, headers=FINANCE)
        assert answer.status_code == 200, (query, answer.text)
        assert _ids(answer.json()) == expected, query


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
async def test_paging_with_the_cursor_serves_every_dead_letter_exactly_once(
    api: httpx.AsyncClient, letters: Letters, limit: int
) -> None:
    """The six dead letters of one instant too: the cursor names a dead letter, not a time."""
    assert await _walk(api, {"limit": limit}, FINANCE) == letters.ids()
    gifts: dict[str, str | int] = {"limit": limit, "topic": "gifts.sent"}
    assert await _walk(api, gifts, OPERATOR) == letters.ids(topic=topics.GIFTS_SENT)
    schema: dict[str, str | int] = {
        "limit": limit,
        "error": "schema_violation",
        "to": "2026-02-01T00:00:00Z",
    }
    expected = letters.ids(error="schema_violation", to_time=_at("2026-02-01T00:00:00+00:00"))
    assert await _walk(api, schema, FINANCE) == expected


async def test_a_cursor_of_no_dead_letter_of_the_deployment_is_an_empty_page(
    api: httpx.AsyncClient, letters: Letters
) -> None:
    for cursor in (letters.other_deployment_id, 2**62):
        answer = await api.get(f"/v1/dead-letters?cursor={cursor}", headers=FINANCE)
        assert answer.json() == {"dead_letters": [], "next_cursor": None}


async def test_the_route_answers_csv_with_the_next_cursor_in_a_header(
    api: httpx.AsyncClient, letters: Letters
) -> None:
    csv_accept = {**FINANCE, "Accept": "text/csv"}
    seen: list[int] = []
    cursor = 0
    while True:
        answer = await api.get(f"/v1/dead-letters?limit=4&cursor={cursor}", headers=csv_accept)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/csv; charset=utf-8"
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert answer.text.startswith(",".join(DEAD_LETTER_CSV_COLUMNS) + "\n")
        seen += [int(row["id"]) for row in rows]
        if "x-next-cursor" not in answer.headers:
            break
        cursor = int(answer.headers["x-next-cursor"])
        assert cursor == seen[-1]
    assert seen == letters.ids()


async def test_the_route_and_the_command_give_the_same_document(
    api: httpx.AsyncClient,
    letters: Letters,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", letters.prefix)
    settings_module.get_settings.cache_clear()
    try:
        arguments = ["dead-letters", "--limit", "5", "--json"]
        assert await asyncio.to_thread(main, arguments) == 0
    finally:
        settings_module.get_settings.cache_clear()
    printed = json.loads(capsys.readouterr().out)
    served = (await api.get("/v1/dead-letters?limit=5", headers=FINANCE)).json()
    assert printed == served
    assert printed["next_cursor"] == printed["dead_letters"][-1]["id"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("topic=gifts.sent.dlq", "topic"),
        ("error=", "error"),
        ("error=has%20space", "error"),
        (f"error={'e' * 65}", "error"),
        ("from=2026-01-01T00:00:00", "from"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),  # over 366 days
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=-1", "cursor"),
    ],
)
async def test_a_bad_parameter_is_a_422_naming_it(
    api: httpx.AsyncClient, query: str, field: str
) -> None:
    answer = await api.get(f"/v1/dead-letters?{query}", headers=FINANCE)
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["query", field], problem


async def test_the_configured_page_size_maximum_holds(
    engine: AsyncEngine, letters: Letters
) -> None:
    app = create_app(engine, _api_settings(letters.prefix, api_page_size_max=3))
    async with served_client(app) as client:
        default = await client.get("/v1/dead-letters", headers=FINANCE)
        assert len(default.json()["dead_letters"]) == 3
        assert (await client.get("/v1/dead-letters?limit=4", headers=FINANCE)).status_code == 422


async def test_the_openapi_document_describes_the_list(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    operation = document["paths"]["/v1/dead-letters"]["get"]
    answers = operation["responses"]["200"]
    assert answers["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeadLetterListDocument"
    }
    assert "text/csv" in answers["content"]
    assert "X-Next-Cursor" in answers["headers"]
    assert {"401", "422"} <= set(operation["responses"])
    assert "403" not in operation["responses"]  # both roles read it
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert names == {"topic", "error", "from", "to", "cursor", "limit"}
    entry = document["components"]["schemas"]["DeadLetterEntry"]
    assert set(entry["required"]) == set(entry["properties"])


# The console -------------------------------------------------------------------------------


async def test_the_console_page_lists_what_the_api_lists(
    engine: AsyncEngine, api: httpx.AsyncClient, letters: Letters
) -> None:
    settings = console_settings(kafka_topic_prefix=letters.prefix)
    async with console_client(engine, settings) as console:
        await sign_in(console, CONSOLE_FINANCE_TOKEN)
        for page_query, api_query in [
            ("", ""),
            ("topic=gifts.sent", "topic=gifts.sent"),
            ("error=schema_violation", "error=schema_violation"),
            ("from=2026-01-11&to=2026-01-12", "from=2026-01-11T00:00:00Z&to=2026-01-13T00:00:00Z"),
        ]:
            page = await console.get(f"/console/dead-letters?{page_query}")
            assert page.status_code == 200
            shown = table(page.text, "Newest first").rows[1:]  # the header row aside
            served = (await api.get(f"/v1/dead-letters?{api_query}", headers=FINANCE)).json()
            assert [int(row[0]) for row in shown] == _ids(served), page_query
            assert [row[2] for row in shown] == [d["topic"] for d in served["dead_letters"]]
            assert [row[5] for row in shown] == [d["error"] for d in served["dead_letters"]]
        # A day without a day after it is ignored, as any value a page cannot use.
        for path in ("/console/dead-letters", "/console/cashouts"):
            last_day = await console.get(f"{path}?from=0001-01-01&to=9999-12-31")
            assert last_day.status_code == 200, (path, last_day.text[:200])
        one = await console.get(f"/console/dead-letter?id={letters.redriven_id}")
        assert one.status_code == 200
        assert "gift_not_found" in one.text
        other = await console.get(f"/console/dead-letter?id={letters.other_deployment_id}")
        assert other.status_code == 404


# Plans on a big table ----------------------------------------------------------------------


def _list_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's reads of dead_letters, but the cursor's look-up of one row by id."""
    return [
        node
        for node in nodes_of(plan)
        if node.get("Relation Name") == "dead_letters"
        and node.get("Index Name") != CURSOR_INDEXES["dead_letters"]
    ]


def _index_conditions(plan: dict[str, Any]) -> str:
    return " ".join(
        str(node.get("Index Cond", "")) + str(node.get("Recheck Cond", ""))
        for node in nodes_of(plan)
    )


@pytest.mark.server
async def test_on_100000_dead_letters_every_filter_reads_an_index(engine: AsyncEngine) -> None:
    """A deployment of 100,000 dead letters over the 8 consumed topics and 4 errors, one in a
    thousand `processing_failed` (in the caller's transaction, rolled back): no filter reads the
    whole table; by time (or none) the list reads its first rows from `dead_letters_newest` in
    order, after a cursor too; by error alone, `dead_letters_by_error_newest` (migration 0032);
    by topic alone, `dead_letters_by_topic_newest` (migration 0034); by topic and error,
    `dead_letters_by_error`."""
    prefix = f"dl-plan-{uuid.uuid4().hex[:10]}"
    async with engine.connect() as conn:
        try:
            await conn.execute(
                text(
                    "INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset,"
                    " event_id, error, detail, recorded_at)"
                    " SELECT :prefix, (CAST(:topics AS text[]))[1 + i % :topic_count], i % 8, i,"
                    " 'ev-' || i,"
                    " CASE WHEN i % 1000 = 0 THEN 'processing_failed' WHEN i % 7 = 0 THEN"
                    " 'conflict' WHEN i % 3 = 0 THEN 'malformed_json' ELSE 'schema_violation' END,"
                    " 'plan test', clock_timestamp() - make_interval(secs => (i / 10) * 50)"
                    " FROM generate_series(1, :count) AS i"
                ),
                {
                    "prefix": prefix,
                    "topics": list(topics.CONSUMED_TOPICS),
                    "topic_count": len(topics.CONSUMED_TOPICS),
                    "count": PLAN_ROW_COUNT,
                },
            )
            await conn.execute(text("ANALYZE dead_letters"))
            middle = int(
                (
                    await conn.execute(
                        text(
                            "SELECT id FROM dead_letters WHERE topic_prefix = :prefix"
                            " AND kafka_offset = :offset"
                        ),
                        {"prefix": prefix, "offset": PLAN_ROW_COUNT // 2},
                    )
                ).scalar_one()
            )
            a_day_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

            async def plan(selection: DeadLetterFilter, after_id: int | None = None) -> Any:
                async def read() -> object:
                    return await list_dead_letters(
                        conn, prefix, selection, after_id=after_id, limit=100
                    )

                return await only_plan(engine, conn, read)

            for after_id in (None, middle):
                newest = await plan(DeadLetterFilter(), after_id)
                assert reads_in_order(newest, "dead_letters", "dead_letters_newest"), newest
                since = await plan(DeadLetterFilter(from_time=a_day_ago), after_id)
                assert reads_in_order(since, "dead_letters", "dead_letters_newest"), since
                common = await plan(DeadLetterFilter(error="conflict"), after_id)
                assert reads_in_order(common, "dead_letters", "dead_letters_by_error_newest"), (
                    common
                )
                topic = await plan(DeadLetterFilter(topic="payouts.updated"), after_id)
                assert reads_in_order(topic, "dead_letters", "dead_letters_by_topic_newest"), topic
            for selection, index, columns in [
                (
                    DeadLetterFilter(error="processing_failed"),
                    "dead_letters_by_error_newest",
                    ["error"],
                ),
                (
                    DeadLetterFilter(topic="payouts.updated", error="conflict"),
                    "dead_letters_by_error",
                    ["topic", "error"],
                ),
            ]:
                for after_id in (None, middle):
                    found = await plan(selection, after_id)
                    [scan] = _list_scans(found)
                    assert scan["Node Type"] in INDEX_SCAN_TYPES | {"Bitmap Heap Scan"}, found
                    assert index is None or _uses_index(found, index), found
                    conditions = _index_conditions(found)
                    assert all(column in conditions for column in columns), found
        finally:
            await conn.rollback()


def _uses_index(plan: dict[str, Any], index: str) -> bool:
    return any(node.get("Index Name") == index for node in nodes_of(plan))
