"""Operator actions over real HTTP on the session's database: four-eyes adjustments posted as
ledger transfers, freezes that reject cash-outs and not gifts, idempotency keys, and the roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.api.server import create_app
from tests import event_factory as make
from tests.operator_helpers import (
    ALICE_TOKEN,
    BOB_TOKEN,
    FINANCE_TOKEN,
    UNNAMED_OPERATOR_TOKEN,
    Feed,
    assert_books_sound,
    bearer,
    digest,
    new_creator,
    new_key,
    operator_settings,
    served,
)

REASON = "goodwill credit after the outage"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(engine: AsyncEngine) -> FastAPI:
    return create_app(engine, operator_settings())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with served(app) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def feed(engine: AsyncEngine) -> Feed:
    return await Feed.on(engine)


async def _available(engine: AsyncEngine, creator: str, asset: str = "DIAMOND") -> int:
    name = (
        f"creator:{creator}:DIAMOND:available"
        if asset == "DIAMOND"
        else f"creator:{creator}:{asset}:wallet"
    )
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT credits_posted - debits_posted - debits_pending FROM accounts"
                " WHERE name = :name"
            ),
            {"name": name},
        )
        return int(found.scalar_one_or_none() or 0)


async def _actions_on(engine: AsyncEngine, target: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT action FROM operator_actions WHERE target = :t ORDER BY id"),
            {"t": target},
        )
        return [row.action for row in rows]


async def _propose(
    api: httpx.AsyncClient,
    creator: str,
    amount_minor: int,
    *,
    token: str = ALICE_TOKEN,
    key: str | None = None,
    asset: str = "DIAMOND",
) -> httpx.Response:
    body = {
        "creator_id": creator,
        "asset": asset,
        "amount_minor": amount_minor,
        "reason": REASON,
        "ticket": "OPS-7",
    }
    return await api.post(
        "/v1/operator/adjustments", json=body, headers=bearer(token, key or new_key())
    )


async def _approve(
    api: httpx.AsyncClient, adjustment_id: int, *, token: str = BOB_TOKEN, key: str | None = None
) -> httpx.Response:
    return await api.post(
        f"/v1/operator/adjustments/{adjustment_id}/approve",
        json={"reason": "checked against the incident report"},
        headers=bearer(token, key or new_key()),
    )


async def _freeze(
    api: httpx.AsyncClient, creator: str, *, unfreeze: bool = False, key: str | None = None
) -> httpx.Response:
    verb = "unfreeze" if unfreeze else "freeze"
    return await api.post(
        f"/v1/operator/creators/{creator}/{verb}",
        json={"reason": "chargeback fraud under investigation"},
        headers=bearer(ALICE_TOKEN, key or new_key()),
    )


# Roles ---------------------------------------------------------------------------------------


async def test_finance_gets_403_on_every_action_route_and_nothing_is_recorded(
    api: httpx.AsyncClient, engine: AsyncEngine, feed: Feed
) -> None:
    creator = await feed.eligible_creator(10)
    proposed = (await _propose(api, creator, 1_000)).json()["adjustment"]["adjustment_id"]
    actions_before = await _actions_on(engine, creator)
    calls: list[tuple[str, dict[str, Any]]] = [
        (
            "/v1/operator/adjustments",
            {"creator_id": creator, "asset": "DIAMOND", "amount_minor": 5, "reason": REASON},
        ),
        (f"/v1/operator/adjustments/{proposed}/approve", {}),
        (f"/v1/operator/creators/{creator}/freeze", {"reason": REASON}),
        (f"/v1/operator/creators/{creator}/unfreeze", {"reason": REASON}),
    ]
    for path, body in calls:
        forbidden = await api.post(path, json=body, headers=bearer(FINANCE_TOKEN, new_key()))
        assert forbidden.status_code == 403, (path, forbidden.text)
        assert forbidden.json() == {"detail": "the finance role may not use this route"}
        # the token check comes first, whatever else is wrong with the request
        assert (await api.post(path, headers=bearer(FINANCE_TOKEN))).status_code == 403
        anonymous = await api.post(path, json=body, headers={"Idempotency-Key": new_key()})
        assert anonymous.status_code == 401, path
        assert anonymous.headers["www-authenticate"] == "Bearer"
    assert await _actions_on(engine, creator) == actions_before
    listed = await api.get(
        f"/v1/operator/adjustments?creator_id={creator}", headers=bearer(FINANCE_TOKEN)
    )
    assert listed.status_code == 200
    assert [item["adjustment_id"] for item in listed.json()["adjustments"]] == [proposed]


async def test_a_token_given_by_its_role_alone_acts_under_its_digests_first_12_digits(
    api: httpx.AsyncClient, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    answer = await _propose(api, creator, 7, token=UNNAMED_OPERATOR_TOKEN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["action"]["actor"] == digest(UNNAMED_OPERATOR_TOKEN)[:12]
    assert answer.json()["adjustment"]["proposed_by"] == digest(UNNAMED_OPERATOR_TOKEN)[:12]


# Adjustments ---------------------------------------------------------------------------------


async def test_an_adjustment_is_posted_once_when_another_operator_approves_it(
    api: httpx.AsyncClient, engine: AsyncEngine, feed: Feed
) -> None:
    creator = await feed.eligible_creator(10)
    proposal = await _propose(api, creator, 2_500)
    assert proposal.status_code == 200, proposal.text
    adjustment = proposal.json()["adjustment"]
    assert (adjustment["status"], adjustment["proposed_by"], adjustment["scale"]) == (
        "proposed",
        "alice",
        3,
    )
    assert proposal.json()["recorded"] is True
    assert await _available(engine, creator) == 10_000

    same_operator = await _approve(api, adjustment["adjustment_id"], token=ALICE_TOKEN)
    assert same_operator.status_code == 409
    assert "another operator must approve it" in same_operator.json()["detail"]
    assert await _available(engine, creator) == 10_000

    approved = await _approve(api, adjustment["adjustment_id"])
    assert approved.status_code == 200, approved.text
    done = approved.json()
    assert done["recorded"] is True
    assert done["action"]["action"] == "adjustment_approved"
    assert done["action"]["actor"] == "bob"
    assert (done["adjustment"]["status"], done["adjustment"]["approved_by"]) == ("approved", "bob")
    assert await _available(engine, creator) == 12_500
    await assert_books_sound(engine)

    again = await _approve(api, adjustment["adjustment_id"])
    assert again.status_code == 200
    assert again.json()["recorded"] is False
    assert again.json()["action"] == done["action"]
    assert await _available(engine, creator) == 12_500
    assert await _actions_on(engine, creator) == [
        "adjustment_proposed",
        "adjustment_approved",
    ]

    statement = await api.get(
        f"/v1/accounts/creator:{creator}:DIAMOND:available/statement",
        headers=bearer(FINANCE_TOKEN),
    )
    lines = statement.json()["lines"]
    [line] = [line for line in lines if line["code"] == "operator_adjustment"]
    assert (line["credit"], line["transfer_id"], line["counterparty"]) == (
        2_500,
        done["adjustment"]["transfer_id"],
        "platform:DIAMOND:operator_adjustments",
    )
    assert line["event_id"] == f"operator-action:{done['action']['action_id']}"


async def test_a_debit_that_would_overdraw_is_refused_and_leaves_nothing_behind(
    api: httpx.AsyncClient, engine: AsyncEngine, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    too_much = (await _propose(api, creator, -1_001)).json()["adjustment"]["adjustment_id"]
    refused = await _approve(api, too_much)
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"adjustment {too_much} would take creator:{creator}:DIAMOND:available below zero:"
        " a debit of 1.001 DIAMOND against 1.000 DIAMOND available"
    )
    assert await _actions_on(engine, creator) == ["adjustment_proposed"]
    assert await _available(engine, creator) == 1_000
    still = await api.get(
        f"/v1/operator/adjustments?status=proposed&creator_id={creator}",
        headers=bearer(BOB_TOKEN),
    )
    assert [item["adjustment_id"] for item in still.json()["adjustments"]] == [too_much]

    enough = (await _propose(api, creator, -1_000)).json()["adjustment"]["adjustment_id"]
    assert enough == too_much + 1  # the refused approval used up no id of the log
    assert (await _approve(api, enough)).status_code == 200
    assert await _available(engine, creator) == 0
    approved = await api.get(
        f"/v1/operator/adjustments?status=approved&creator_id={creator}",
        headers=bearer(BOB_TOKEN),
    )
    assert [item["adjustment_id"] for item in approved.json()["adjustments"]] == [enough]
    await assert_books_sound(engine)


async def test_a_currency_wallet_is_adjusted_too(
    api: httpx.AsyncClient, engine: AsyncEngine, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    adjustment = (await _propose(api, creator, 1_050, asset="EUR")).json()["adjustment"]
    assert adjustment["scale"] == 2
    assert (await _approve(api, adjustment["adjustment_id"])).status_code == 200
    assert await _available(engine, creator, "EUR") == 1_050
    await assert_books_sound(engine)


async def test_the_same_key_replays_the_action_and_another_request_under_it_is_409(
    api: httpx.AsyncClient, engine: AsyncEngine, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    key = new_key()
    first = await _propose(api, creator, 300, key=key)
    again = await _propose(api, creator, 300, key=key)
    assert again.status_code == 200
    assert again.json()["recorded"] is False
    assert again.json()["action"] == first.json()["action"]
    assert again.json()["adjustment"] == first.json()["adjustment"]
    for other in (
        _propose(api, creator, 301, key=key),
        _propose(api, creator, 300, key=key, token=BOB_TOKEN),
        _freeze(api, creator, key=key),
    ):
        conflict = await other
        assert conflict.status_code == 409, conflict.text
        assert f"already action {first.json()['action']['action_id']}" in conflict.json()["detail"]
    assert await _actions_on(engine, creator) == ["adjustment_proposed"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": 10**12 + 1}, "amount_minor"),
        ({"asset": "COIN"}, "asset"),
        ({"amount_minor": "5"}, "amount_minor"),
        ({"reason": "two\nlines"}, "reason"),
        ({"reason": "shown \u202ereversed"}, "reason"),
        ({"reason": ...}, "reason"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_proposal_that_breaks_a_rule_is_422(
    api: httpx.AsyncClient, change: dict[str, Any], where: str
) -> None:
    body = {"creator_id": new_creator(), "asset": "DIAMOND", "amount_minor": 5, "reason": REASON}
    body = {name: value for name, value in {**body, **change}.items() if value is not ...}
    answer = await api.post(
        "/v1/operator/adjustments", json=body, headers=bearer(ALICE_TOKEN, new_key())
    )
    assert answer.status_code == 422, answer.text
    assert where in str(answer.json()["detail"])


async def test_an_action_needs_an_idempotency_key(api: httpx.AsyncClient, feed: Feed) -> None:
    creator = await feed.eligible_creator(1)
    answer = await api.post(
        f"/v1/operator/creators/{creator}/freeze",
        json={"reason": REASON},
        headers=bearer(ALICE_TOKEN),
    )
    assert answer.status_code == 422
    assert "idempotency-key" in str(answer.json()["detail"]).lower()


async def test_unknown_creators_and_adjustments_are_404(api: httpx.AsyncClient) -> None:
    nobody = new_creator()
    assert (await _propose(api, nobody, 5)).status_code == 404
    assert (await _freeze(api, nobody)).status_code == 404
    assert (await _approve(api, 2**62)).status_code == 404


# Freezes -------------------------------------------------------------------------------------


async def _cashout_status(engine: AsyncEngine, cashout_id: str) -> tuple[str, str | None]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, rejected_rule FROM cashouts WHERE cashout_id = :id"),
                {"id": cashout_id},
            )
        ).one()
    return row.status, row.rejected_rule


async def test_a_frozen_creators_cash_out_is_rejected_frozen_and_gifts_still_credit(
    api: httpx.AsyncClient, engine: AsyncEngine, feed: Feed
) -> None:
    creator = await feed.eligible_creator(5_000)
    frozen = await _freeze(api, creator)
    assert frozen.status_code == 200, frozen.text
    assert (frozen.json()["frozen"], frozen.json()["recorded"]) == (True, True)
    assert frozen.json()["action"]["action"] == "creator_frozen"

    request = make.cashout_request(creator, 2_000)
    await feed.send(topics.CASHOUTS_REQUESTED, request, creator)
    assert await _cashout_status(engine, request["event_id"]) == ("rejected", "frozen")
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=2, count=10), creator)
    assert await _available(engine, creator) == 5_010_000

    again = await _freeze(api, creator)
    assert (again.json()["frozen"], again.json()["recorded"]) == (True, False)
    assert again.json()["action"] == frozen.json()["action"]

    thawed = await _freeze(api, creator, unfreeze=True)
    assert (thawed.json()["frozen"], thawed.json()["recorded"]) == (False, True)
    allowed = make.cashout_request(creator, 2_000)
    await feed.send(topics.CASHOUTS_REQUESTED, allowed, creator)
    assert await _cashout_status(engine, allowed["event_id"]) == ("held", None)
    assert await _actions_on(engine, creator) == ["creator_frozen", "creator_unfrozen"]
    await assert_books_sound(engine)


async def test_unfreezing_a_creator_never_frozen_records_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    answer = await _freeze(api, creator, unfreeze=True)
    assert answer.status_code == 200
    assert answer.json() == {
        "creator_id": creator,
        "frozen": False,
        "since": None,
        "action": None,
        "recorded": False,
    }
    assert await _actions_on(engine, creator) == []


# The document --------------------------------------------------------------------------------


async def test_the_openapi_document_describes_every_action_route(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    actions = {
        "/v1/operator/adjustments",
        "/v1/operator/adjustments/{adjustment_id}/approve",
        "/v1/operator/creators/{creator_id}/freeze",
        "/v1/operator/creators/{creator_id}/unfreeze",
    }
    for path in actions:
        operation = document["paths"][path]["post"]
        assert operation["security"] == [{"bearer": []}], path
        assert {"200", "401", "403", "404", "409", "422"} <= set(operation["responses"]), path
        [key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert (key["in"], key["required"]) == ("header", True), path
    listing = document["paths"]["/v1/operator/adjustments"]["get"]
    assert "403" not in listing["responses"]
