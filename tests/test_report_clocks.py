"""One clock for the reports: gifts, money and cash-outs are counted by when the ledger booked
them, so one window holds all three or none of them; the cash-out report counts by request time
only when asked (`clock=requested`). A range left out is the last 30 days, the same on every
report route and on `giftledger report`.

The events go in through the real ingestion path (`Ingestor.process`, what the consumers call),
published with a business time (`occurred_at`) long before they are booked.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from schemas import topics
from schemas.assets import format_amount
from services.api.queries import cashouts_report
from services.api.server import create_app
from services.cli import main
from services.runtime import settings as settings_module
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.api_server import FINANCE_TOKEN, api_settings, served_client, token_digest
from tests.console_http import Feed, new_creator_id
from tests.report_helpers import FINANCE, EventFeed, database_time

# The business time of every event of this module: long before it is booked.
REQUESTED_ON: Final = datetime(2019, 7, 14, tzinfo=UTC)
OCCURRED_AT: Final = (REQUESTED_ON + timedelta(hours=12)).isoformat()
DEFAULT_SPAN: Final = timedelta(days=30)
REPORTS: Final = ("/v1/reports/gifts", "/v1/reports/cashouts", "/v1/reports/money")
README: Final = Path(__file__).resolve().parent.parent / "README.md"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Booked:
    """One creator's gifts, tip and cash-out request, all of `OCCURRED_AT`, booked in
    `[start, end)` of the database's clock."""

    creator: str
    cashout: str
    start: datetime
    end: datetime

    @property
    def window(self) -> dict[str, str]:
        return {"from": _iso(self.start), "to": _iso(self.end)}


def _then(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "occurred_at": OCCURRED_AT}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def booked(engine: AsyncEngine) -> Booked:
    creator = f"clocks-{uuid.uuid4().hex[:10]}"
    feed = await EventFeed.on(engine)
    start = await database_time(engine)
    await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator))
    await feed.send(topics.GIFTS_SENT, _then(make.gift(creator, coins=100, count=40)))
    await feed.send(topics.GIFTS_SENT, _then(make.gift(creator, coins=10, count=3, surface="live")))
    await feed.send(topics.TIPS_RECEIVED, _then(make.tip(creator)))
    cashout = _then(make.cashout_request(creator, 2_000))
    await feed.send(topics.CASHOUTS_REQUESTED, cashout)
    end = await database_time(engine)
    return Booked(creator, cashout["event_id"], start, end)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(engine: AsyncEngine, booked: Booked) -> AsyncIterator[httpx.AsyncClient]:
    async with served_client(create_app(engine, api_settings())) as client:
        yield client


async def _report(api: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    answer = await api.get(path, params=params, headers=FINANCE)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


HELD_CASHOUT: Final = {
    "status": "held",
    "count": 1,
    "lines": [
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
    ],
}


# One clock ----------------------------------------------------------------------------------


async def test_the_window_of_the_booking_holds_the_gifts_the_money_and_the_cashout(
    api: httpx.AsyncClient, booked: Booked
) -> None:
    gifts = await _report(api, "/v1/reports/gifts", **booked.window, group_by="creator")
    assert gifts["groups"] == [
        {
            "creator": booked.creator,
            "gift_events": 2,
            "gift_count": 43,
            "gift_events_without_count": 0,
            "coins": 4_030,
            "milli_diamonds": 2_015_000,
        }
    ]
    money = await _report(api, "/v1/reports/money", **booked.window)
    assert money["currencies"] == [
        {
            "currency": "USD",
            "scale": 2,
            "totals": [
                {"code": "tip", "amount": 500, "transfer_count": 1},
                {"code": "tip_fan_fee", "amount": 25, "transfer_count": 1},
                {"code": "tip_processor_fee", "amount": 30, "transfer_count": 1},
            ],
        }
    ]
    cashouts = await _report(api, "/v1/reports/cashouts", **booked.window)
    assert cashouts["clock"] == "booked"
    assert cashouts["statuses"] == [HELD_CASHOUT]
    asked_for_the_clock = await _report(
        api, "/v1/reports/cashouts", **booked.window, clock="booked"
    )
    assert asked_for_the_clock == cashouts


async def test_the_day_of_the_business_time_holds_none_of_them_by_the_booking_clock(
    api: httpx.AsyncClient, booked: Booked
) -> None:
    day = {"from": _iso(REQUESTED_ON), "to": _iso(REQUESTED_ON + timedelta(days=1))}
    assert (await _report(api, "/v1/reports/gifts", **day))["groups"] == []
    assert (await _report(api, "/v1/reports/money", **day))["currencies"] == []
    assert (await _report(api, "/v1/reports/cashouts", **day))["statuses"] == []


async def test_the_cashout_report_counts_by_request_time_when_asked(
    api: httpx.AsyncClient, booked: Booked
) -> None:
    day = {"from": _iso(REQUESTED_ON), "to": _iso(REQUESTED_ON + timedelta(days=1))}
    requested = await _report(api, "/v1/reports/cashouts", **day, clock="requested")
    assert requested["clock"] == "requested"
    assert requested["statuses"] == [HELD_CASHOUT]
    when_booked = await _report(api, "/v1/reports/cashouts", **booked.window, clock="requested")
    assert when_booked["statuses"] == []


async def test_a_clock_the_report_does_not_know_is_refused(api: httpx.AsyncClient) -> None:
    answer = await api.get("/v1/reports/cashouts", params={"clock": "paid"}, headers=FINANCE)
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["query", "clock"]
    assert "'booked' or 'requested'" in problem["msg"]


# Default ranges -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", REPORTS)
async def test_a_range_left_out_is_the_last_30_days_up_to_the_database_clock(
    api: httpx.AsyncClient, engine: AsyncEngine, booked: Booked, path: str
) -> None:
    before = await database_time(engine)
    document = await _report(api, path)
    after = await database_time(engine)
    start, end = datetime.fromisoformat(document["from"]), datetime.fromisoformat(document["to"])
    assert before <= end <= after
    assert end - start == DEFAULT_SPAN
    assert start <= booked.start
    assert booked.end <= end
    # the same document as the range written out
    assert await _report(api, path, **{"from": document["from"], "to": document["to"]}) == document


@pytest.mark.parametrize("path", REPORTS)
async def test_one_end_given_makes_a_range_of_30_days_from_it(
    api: httpx.AsyncClient, path: str
) -> None:
    after = await _report(api, path, **{"from": "2019-07-01T00:00:00+02:00"})
    assert (after["from"], after["to"]) == (
        "2019-07-01T00:00:00+02:00",
        "2019-07-31T00:00:00+02:00",
    )
    before = await _report(api, path, to="2019-08-01T00:00:00Z")
    assert (before["from"], before["to"]) == (
        "2019-07-02T00:00:00+00:00",
        "2019-08-01T00:00:00+00:00",
    )


async def test_the_default_span_is_the_api_range_limit_where_that_is_shorter(
    engine: AsyncEngine,
) -> None:
    settings = Settings(
        api_tokens={token_digest(FINANCE_TOKEN): "finance"}, api_time_range_days_max=7
    )
    async with served_client(create_app(engine, settings)) as client:
        document = await _report(client, "/v1/reports/money", **{"from": "2019-07-01T00:00:00Z"})
        assert document["to"] == "2019-07-08T00:00:00+00:00"
        longer = await client.get(
            "/v1/reports/money",
            params={"from": "2019-07-01T00:00:00Z", "to": "2019-07-09T00:00:00Z"},
            headers=FINANCE,
        )
    assert longer.status_code == 422, longer.text


# The command line ---------------------------------------------------------------------------


@contextlib.contextmanager
def _configured(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATABASE_URL", database_url)
    settings_module.get_settings.cache_clear()
    try:
        yield
    finally:
        settings_module.get_settings.cache_clear()


async def _cli(database_url: str, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str]:
    """`giftledger <argv>` run in a thread (it calls asyncio.run): its exit code and stdout."""
    output = io.StringIO()
    with _configured(database_url, monkeypatch), contextlib.redirect_stdout(output):
        code = await asyncio.to_thread(main, list(argv))
    return code, output.getvalue()


@pytest.mark.parametrize(
    ("argv", "path", "params"),
    [
        (["gifts", "--group-by", "creator"], "/v1/reports/gifts", {"group_by": "creator"}),
        (["cashouts"], "/v1/reports/cashouts", {}),
        (["cashouts", "--clock", "requested"], "/v1/reports/cashouts", {"clock": "requested"}),
        (["money"], "/v1/reports/money", {}),
    ],
)
async def test_giftledger_report_json_is_the_api_document(
    api: httpx.AsyncClient,
    booked: Booked,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    path: str,
    params: dict[str, str],
) -> None:
    window = ["--from", booked.window["from"], "--to", booked.window["to"]]
    code, printed = await _cli(database_url, monkeypatch, "report", *argv, *window, "--json")
    assert code == 0
    assert json.loads(printed) == await _report(api, path, **booked.window, **params)


async def test_giftledger_report_defaults_to_the_last_30_days_and_prints_a_table(
    booked: Booked, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, printed = await _cli(database_url, monkeypatch, "report", "cashouts", "--json")
    assert code == 0
    document = json.loads(printed)
    start, end = datetime.fromisoformat(document["from"]), datetime.fromisoformat(document["to"])
    assert end - start == DEFAULT_SPAN
    assert start <= booked.start
    assert booked.end <= end
    code, printed = await _cli(
        database_url, monkeypatch, "report", "gifts", "--group-by", "creator"
    )
    assert code == 0
    [line] = [line for line in printed.splitlines() if line.startswith(booked.creator)]
    assert line.split()[1:4] == ["2", "43", "4030"]  # gift events, gifts, coins
    assert line.endswith(format_amount(2_015_000, "DIAMOND"))


async def test_giftledger_report_refuses_a_range_the_api_refuses(
    booked: Booked, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backwards = ["--from", booked.window["to"], "--to", booked.window["from"]]
    code, _ = await _cli(database_url, monkeypatch, "report", "money", *backwards)
    assert code == 2
    too_long = ["--from", "2019-01-01T00:00:00Z", "--to", "2020-01-03T00:00:00Z"]
    code, _ = await _cli(database_url, monkeypatch, "report", "gifts", *too_long)
    assert code == 2


# The README ---------------------------------------------------------------------------------


def _finance_api_rows() -> list[str]:
    """The rows of the README's Finance API table."""
    section = README.read_text(encoding="utf-8").split("\n## Finance API", 1)[1]
    section = section.split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `GET ")]


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_the_readme_lists_every_parameter_of_every_finance_route() -> None:
    document = create_app(
        create_async_engine("postgresql+asyncpg://nobody@127.0.0.1/nothing"), api_settings()
    ).openapi()
    rows = _finance_api_rows()
    missing = []
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/") or path.startswith("/v1/operator/"):
            continue
        for method, operation in operations.items():
            route = f"`{method.upper()} {_shape(path)}"
            shaped = [_shape(row) for row in rows]
            found = [row for row in shaped if f"{route}`" in row or f"{route}?" in row]
            if not found:
                missing.append(route)
                continue
            missing += [
                f"{route} {parameter['name']}"
                for parameter in operation.get("parameters", [])
                if parameter["in"] == "query" and f"{parameter['name']}=" not in found[0]
            ]
    assert missing == []


async def test_the_cashouts_report_sums_payouts_of_the_priced_and_says_how_many(
    engine: AsyncEngine,
) -> None:
    """A request refused before pricing (here: a country not enabled) has no payout and no USD
    value; one refused after (under the minimum) has both. A line counts both and sums the
    priced, saying how many: before, its USD value read 0 for the first, as if worth nothing.
    The sums expected are the requests' own rows: the rate card in force in the year 2400 is
    whichever other tests have added by then."""
    feed = await Feed.on(engine)
    requested_at = datetime(2400, 1, 1, tzinfo=UTC) + timedelta(seconds=uuid.uuid4().int % 10**9)
    eligible = await feed.eligible_creator(new_creator_id("priced"), 10_000)
    abroad = new_creator_id("abroad")
    await feed.send(topics.CREATORS_UPDATED, make.creator_update(abroad, country="CA"), abroad)
    requests = [
        (eligible, make.cashout_request(eligible, 5_000)),  # held: over the minimum at any card
        (abroad, make.cashout_request(abroad, 2_000)),  # rejected for its country: not priced
        (eligible, make.cashout_request(eligible, 100)),  # rejected, under the minimum: priced
    ]
    for creator, request in requests:
        request["occurred_at"] = requested_at.isoformat()
        await feed.send(topics.CASHOUTS_REQUESTED, request, creator)
    async with engine.connect() as conn:
        statuses = await cashouts_report(
            conn, requested_at, requested_at + timedelta(seconds=1), "requested"
        )
        rows = (
            await conn.execute(
                text(
                    "SELECT status, payout_amount, usd_value_micros, fx_numerator IS NOT NULL"
                    " AS priced FROM cashouts WHERE creator_id = ANY(:creators)"
                ),
                {"creators": [eligible, abroad]},
            )
        ).all()
    lines = {
        entry["status"]: [
            (line["count"], line["priced_count"], line["payout_amount"], line["usd_value_micros"])
            for line in entry["lines"]
        ]
        for entry in statuses
    }
    expected: dict[str, list[tuple[int, int, int, int]]] = {}
    for status in ("held", "rejected"):
        mine = [row for row in rows if row.status == status]
        priced = [row for row in mine if row.priced]
        expected[status] = [
            (
                len(mine),
                len(priced),
                sum(row.payout_amount for row in priced),
                sum(row.usd_value_micros for row in priced),
            )
        ]
    assert [(line[0], line[1]) for line in expected["held"] + expected["rejected"]] == [
        (1, 1),
        (2, 1),
    ]
    assert min(line[2] for line in expected["held"] + expected["rejected"]) > 0
    assert lines == expected
