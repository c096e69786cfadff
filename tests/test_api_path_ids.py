"""Every id the event schema accepts (1 to 128 visible ASCII characters: `/`, `?`, `#`, `%`, `.`
and `..` among them) reaches its route over real HTTP, percent-encoded as RFC 3986 asks: uvicorn
decodes `%2F` to `/` before the routes are matched, so a path parameter of the default kind (one
segment) could not hold it. Ids that end like a route's suffix (`x/balances`, `x/eligibility`,
`x/freeze`) reach the route the request names, not another one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.api.server import create_app
from tests import event_factory as make
from tests.operator_helpers import (
    ALICE_TOKEN,
    FINANCE_TOKEN,
    Feed,
    bearer,
    new_key,
    operator_settings,
    served,
)

FINANCE = bearer(FINANCE_TOKEN)
# Each id with a unique tail, so that the module runs on the session's shared database; `..` and
# `.` alone are ids too, given a unique creator of their own below.
SHAPES = [
    "shop/uk",
    "a/balances",
    "a/eligibility",
    "trailing/",
    "/leading",
    "a//b",
    "a?b=1",
    "a#b",
    "50%off",
    "a%2Fb",
    "x/../y",
    "x/./y",
]


def segment(value: str) -> str:
    """`value` as one path segment: every reserved character percent-encoded (`quote` leaves `.`
    alone, and clients remove `.` and `..` segments, so dots are encoded too)."""
    return quote(value, safe="").replace(".", "%2E")


@dataclass(frozen=True)
class Seeded:
    creators: list[str]
    gift_events: dict[str, str]  # creator → the event id of their gift
    cashouts: dict[str, str]  # creator → their held cash-out's id


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(engine: AsyncEngine) -> Seeded:
    tail = uuid.uuid4().hex[:8]
    creators = [f"{shape}-{tail}" for shape in SHAPES]
    creators += [f"{tail}/..", f"{tail}/.", f"{tail}/balances", f"{tail}/freeze"]
    feed = await Feed.on(engine)
    gift_events: dict[str, str] = {}
    cashouts: dict[str, str] = {}
    for creator in creators:
        await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator), creator)
        gift = {**make.gift(creator, coins=10_000), "event_id": f"gifts/{creator}/0001"}
        await feed.send(topics.GIFTS_SENT, gift, creator)
        gift_events[creator] = gift["event_id"]
        request = {**make.cashout_request(creator, 2_000), "event_id": f"cashouts/{creator}"}
        await feed.send(topics.CASHOUTS_REQUESTED, request, creator)
        cashouts[creator] = request["event_id"]
    return Seeded(creators, gift_events, cashouts)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(engine: AsyncEngine) -> FastAPI:
    return create_app(engine, operator_settings())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(app: FastAPI, seeded: Seeded) -> AsyncIterator[httpx.AsyncClient]:
    async with served(app) as client:
        yield client


async def _get(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    answer = await api.get(path, headers=FINANCE)
    assert answer.status_code == 200, (path, answer.text)
    document: dict[str, Any] = answer.json()
    return document


async def test_a_creators_balances_and_eligibility_answer_for_any_id(
    api: httpx.AsyncClient, seeded: Seeded
) -> None:
    for creator in seeded.creators:
        balances = await _get(api, f"/v1/creators/{segment(creator)}/balances")
        assert balances["creator_id"] == creator
        assert balances["balances"] == [
            {"asset": "DIAMOND", "available": 3_000_000, "pending": 2_000_000, "scale": 3}
        ]
        eligibility = await _get(api, f"/v1/creators/{segment(creator)}/eligibility")
        assert eligibility["creator_id"] == creator


async def test_an_accounts_statement_answers_for_any_creator_id(
    api: httpx.AsyncClient, seeded: Seeded
) -> None:
    for creator in seeded.creators:
        account = f"creator:{creator}:DIAMOND:available"
        statement = await _get(api, f"/v1/accounts/{segment(account)}/statement")
        assert statement["account"] == account
        assert [line["event_id"] for line in statement["lines"]] == [
            seeded.gift_events[creator],
            seeded.cashouts[creator],
        ]
        csv_answer = await api.get(
            f"/v1/accounts/{segment(account)}/statement",
            headers={**FINANCE, "Accept": "text/csv"},
        )
        assert csv_answer.status_code == 200, csv_answer.text
        assert seeded.gift_events[creator] in csv_answer.text


async def test_an_event_and_a_cashout_answer_for_any_id(
    api: httpx.AsyncClient, seeded: Seeded
) -> None:
    for creator in seeded.creators:
        event_id = seeded.gift_events[creator]
        event = await _get(api, f"/v1/events/{segment(event_id)}")
        assert (event["event_id"], event["status"]) == (event_id, "applied")
        cashout_id = seeded.cashouts[creator]
        cashout = await _get(api, f"/v1/cashouts/{segment(cashout_id)}")
        assert (cashout["cashout_id"], cashout["status"]) == (cashout_id, "held")


async def test_an_unknown_id_of_any_shape_is_the_routes_own_404(
    api: httpx.AsyncClient, seeded: Seeded
) -> None:
    """The route's answer naming the id, not the router's bare `Not Found`."""
    nobody = f"nobody/{uuid.uuid4().hex[:8]}/balances"
    for path in (
        f"/v1/creators/{segment(nobody)}/balances",
        f"/v1/creators/{segment(nobody)}/eligibility",
        f"/v1/accounts/{segment(nobody)}/statement",
        f"/v1/events/{segment(nobody)}",
        f"/v1/cashouts/{segment(nobody)}",
    ):
        answer = await api.get(path, headers=FINANCE)
        assert answer.status_code == 404, (path, answer.text)
        assert repr(nobody) in answer.json()["detail"], (path, answer.text)


@pytest.mark.parametrize("verb", ["freeze", "unfreeze"])
async def test_an_operator_freezes_and_unfreezes_a_creator_of_any_id(
    api: httpx.AsyncClient, seeded: Seeded, verb: str
) -> None:
    for creator in seeded.creators:
        answer = await api.post(
            f"/v1/operator/creators/{segment(creator)}/{verb}",
            json={"reason": "chargeback fraud under investigation"},
            headers=bearer(ALICE_TOKEN, new_key()),
        )
        assert answer.status_code == 200, (creator, answer.text)
        assert answer.json()["creator_id"] == creator


@pytest.mark.parametrize("verb", ["cancel", "resubmit"])
async def test_an_operator_action_on_a_cashout_of_any_id_reaches_it(
    api: httpx.AsyncClient, seeded: Seeded, verb: str
) -> None:
    """A held cash-out that has not waited for the bank cannot be cancelled, and one that has
    not failed cannot be resubmitted: the route's own 409 says the action found it."""
    for creator in seeded.creators:
        cashout_id = seeded.cashouts[creator]
        answer = await api.post(
            f"/v1/operator/cashouts/{segment(cashout_id)}/{verb}",
            json={"reason": "the bank has not answered"},
            headers=bearer(ALICE_TOKEN, new_key()),
        )
        assert answer.status_code == 409, (cashout_id, answer.text)
        assert cashout_id in answer.json()["detail"], answer.text


async def test_the_openapi_document_names_the_paths_without_converters_and_says_how_to_encode(
    api: httpx.AsyncClient,
) -> None:
    document = (await api.get("/openapi.json")).json()
    paths = document["paths"]
    for path, name in (
        ("/v1/creators/{creator_id}/balances", "creator_id"),
        ("/v1/creators/{creator_id}/eligibility", "creator_id"),
        ("/v1/accounts/{account}/statement", "account"),
        ("/v1/events/{event_id}", "event_id"),
        ("/v1/cashouts/{cashout_id}", "cashout_id"),
        ("/v1/operator/creators/{creator_id}/freeze", "creator_id"),
        ("/v1/operator/cashouts/{cashout_id}/cancel", "cashout_id"),
    ):
        operation = next(iter(paths[path].values()))
        [parameter] = [p for p in operation["parameters"] if p["name"] == name]
        assert "%2F" in parameter["description"], (path, parameter)
    assert not [path for path in paths if ":path" in path]
