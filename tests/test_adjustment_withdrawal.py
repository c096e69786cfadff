"""Withdrawing a proposed balance adjustment, on the session's database: through the desk, the
API (roles, statuses, the OpenAPI document) and the console's form; an adjustment is never both
approved and withdrawn, and the database itself refuses the second of the two rows.

`giftledger operator withdraw` is tested in tests/test_operator_cli.py.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.service import Ledger
from services.api.server import create_app
from services.operator.actions_log import ActionEntry, ActionKeyConflictError, hold_log
from services.operator.adjustments import adjustment_transfer_id, insert_withdrawal
from services.operator.desk import (
    ADJUSTMENT_WITHDRAWN,
    AdjustmentApprovedError,
    AdjustmentNotFoundError,
    AdjustmentOutcome,
    AdjustmentWithdrawnError,
    OperatorDesk,
)
from tests.console_http import (
    FINANCE_TOKEN as CONSOLE_FINANCE_TOKEN,
)
from tests.console_http import (
    OPERATOR_NAME as CONSOLE_OPERATOR_NAME,
)
from tests.console_http import (
    OPERATOR_TOKEN as CONSOLE_OPERATOR_TOKEN,
)
from tests.console_http import (
    console_client,
    console_settings,
    hidden,
    sign_in,
)
from tests.operator_helpers import (
    ALICE_TOKEN,
    BOB_TOKEN,
    FINANCE_TOKEN,
    Feed,
    assert_books_sound,
    available_diamonds,
    bearer,
    new_key,
    operator_settings,
    served,
)

WRITER: Final = "giftledger_writer"
REASON: Final = "goodwill credit after the outage"
WITHDRAWAL_REASON: Final = "wrong creator: meant another account"
# How long an insert that must wait is given to show that it waits.
BLOCKED_S: Final = 0.5


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(engine, operator_settings())
    async with served(app) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def feed(engine: AsyncEngine) -> Feed:
    return await Feed.on(engine)


@pytest.fixture
def desk(engine: AsyncEngine) -> OperatorDesk:
    return OperatorDesk(Ledger(engine), topic_prefix="", database_role=WRITER)


async def _propose(desk: OperatorDesk, creator: str, amount_minor: int, actor: str) -> int:
    outcome = await desk.propose_adjustment(
        idempotency_key=new_key(),
        actor=actor,
        creator_id=creator,
        asset="DIAMOND",
        amount_minor=amount_minor,
        reason=REASON,
        ticket="OPS-9",
    )
    return outcome.adjustment.id


async def _withdraw(
    desk: OperatorDesk, adjustment_id: int, actor: str, key: str | None = None
) -> AdjustmentOutcome:
    return await desk.withdraw_adjustment(
        adjustment_id,
        idempotency_key=key or new_key(),
        actor=actor,
        reason=WITHDRAWAL_REASON,
        ticket="OPS-10",
    )


async def _approve(desk: OperatorDesk, adjustment_id: int, actor: str) -> AdjustmentOutcome:
    return await desk.approve_adjustment(adjustment_id, idempotency_key=new_key(), actor=actor)


async def _actions_on(engine: AsyncEngine, target: str) -> list[tuple[int, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id, action, actor FROM operator_actions WHERE target = :t ORDER BY id"),
            {"t": target},
        )
        return [(row.id, row.action, row.actor) for row in rows]


async def _count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


async def _execute(engine: AsyncEngine, statement: str, role: str | None = None) -> None:
    """`statement` in a transaction of its own, as the owner or as `role`."""
    async with engine.begin() as conn:
        if role is not None:
            await conn.execute(text(f"SET LOCAL ROLE {role}"))
        await conn.execute(text(statement))


# The desk ------------------------------------------------------------------------------------


async def test_a_withdrawn_adjustment_is_never_approved_nor_posted(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed
) -> None:
    creator = await feed.eligible_creator(10)
    adjustment_id = await _propose(desk, creator, 2_500, "alice")
    withdrawn = await _withdraw(desk, adjustment_id, "bob")
    assert withdrawn.recorded is True
    assert withdrawn.action.action == ADJUSTMENT_WITHDRAWN == "adjustment_withdrawn"
    assert (withdrawn.action.actor, withdrawn.action.target) == ("bob", creator)
    assert (withdrawn.action.reason, withdrawn.action.ticket) == (WITHDRAWAL_REASON, "OPS-10")
    assert withdrawn.action.details == {
        "adjustment_id": adjustment_id,
        "asset": "DIAMOND",
        "amount_minor": 2_500,
    }
    adjustment = withdrawn.adjustment
    assert (adjustment.status, adjustment.withdrawn_by) == ("withdrawn", "bob")
    assert adjustment.withdrawal_action_id == withdrawn.action.id
    assert adjustment.withdrawn_at is not None
    assert (adjustment.approved_by, adjustment.transfer_id) == (None, None)

    with pytest.raises(AdjustmentWithdrawnError) as refused:
        await _approve(desk, adjustment_id, "carol")
    assert str(refused.value) == (
        f"adjustment {adjustment_id} was withdrawn by bob (action {withdrawn.action.id}):"
        " it cannot be approved; propose it again if it is still wanted"
    )
    with pytest.raises(AdjustmentWithdrawnError):  # the proposer hears the same
        await _approve(desk, adjustment_id, "alice")

    assert await available_diamonds(engine, creator) == 10_000
    assert (
        await _count(
            engine,
            "SELECT count(*) FROM transfers WHERE id = :id",
            id=adjustment_transfer_id(adjustment_id),
        )
        == 0
    )
    assert (
        await _count(
            engine,
            "SELECT count(*) FROM balance_adjustment_approvals WHERE adjustment_id = :id",
            id=adjustment_id,
        )
        == 0
    )
    actions = await _actions_on(engine, creator)
    assert [(action, actor) for _, action, actor in actions] == [
        ("adjustment_proposed", "alice"),
        ("adjustment_withdrawn", "bob"),
    ]
    assert actions[1][0] == actions[0][0] + 1
    # the refused approvals used up no id of the log
    next_id = await _propose(desk, creator, 1, "alice")
    assert next_id == withdrawn.action.id + 1
    await assert_books_sound(engine)


async def test_an_approved_adjustment_cannot_be_withdrawn(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed
) -> None:
    creator = await feed.eligible_creator(10)
    adjustment_id = await _propose(desk, creator, -2_500, "alice")
    approved = await _approve(desk, adjustment_id, "bob")
    assert approved.adjustment.status == "approved"
    for actor in ("carol", "alice"):
        with pytest.raises(AdjustmentApprovedError) as refused:
            await _withdraw(desk, adjustment_id, actor)
        assert str(refused.value) == (
            f"adjustment {adjustment_id} was approved by bob and posted as transfer"
            f" {approved.adjustment.transfer_id}: it cannot be withdrawn; to undo it, propose"
            " an adjustment of 2.500 DIAMOND (the other way)"
        )
    assert await available_diamonds(engine, creator) == 7_500
    assert (
        await _count(
            engine,
            "SELECT count(*) FROM balance_adjustment_withdrawals WHERE adjustment_id = :id",
            id=adjustment_id,
        )
        == 0
    )
    assert [action for _, action, _ in await _actions_on(engine, creator)] == [
        "adjustment_proposed",
        "adjustment_approved",
    ]
    next_id = await _propose(desk, creator, 1, "alice")
    assert next_id == approved.action.id + 1
    await assert_books_sound(engine)


async def test_withdrawing_again_answers_the_withdrawal_already_recorded(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    adjustment_id = await _propose(desk, creator, 300, "alice")
    key = new_key()
    first = await _withdraw(desk, adjustment_id, "bob", key)
    same_key = await _withdraw(desk, adjustment_id, "bob", key)
    assert (same_key.recorded, same_key.action) == (False, first.action)
    assert same_key.adjustment == first.adjustment
    other_key = await _withdraw(desk, adjustment_id, "carol")
    assert (other_key.recorded, other_key.action) == (False, first.action)
    assert other_key.adjustment.withdrawn_by == "bob"
    with pytest.raises(ActionKeyConflictError):  # the key of another action
        await desk.withdraw_adjustment(
            adjustment_id, idempotency_key=key, actor="bob", reason="another reason"
        )
    assert [action for _, action, _ in await _actions_on(engine, creator)] == [
        "adjustment_proposed",
        "adjustment_withdrawn",
    ]


async def test_the_proposer_may_withdraw_and_an_unknown_adjustment_is_not_found(
    desk: OperatorDesk, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    adjustment_id = await _propose(desk, creator, 300, "alice")
    withdrawn = await _withdraw(desk, adjustment_id, "alice")
    assert (withdrawn.recorded, withdrawn.adjustment.status) == (True, "withdrawn")
    assert withdrawn.adjustment.withdrawn_by == withdrawn.adjustment.proposed_by == "alice"
    with pytest.raises(AdjustmentNotFoundError, match=f"no adjustment {2**62}"):
        await _withdraw(desk, 2**62, "alice")


# The database --------------------------------------------------------------------------------


async def test_the_database_refuses_an_adjustment_both_approved_and_withdrawn(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed
) -> None:
    """As the owner, past the desk: each table refuses the row the other one has."""
    creator = await feed.eligible_creator(1)
    approved_id = await _propose(desk, creator, 100, "alice")
    await _approve(desk, approved_id, "bob")
    with pytest.raises(DBAPIError, match=f"adjustment {approved_id} was approved"):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO balance_adjustment_withdrawals"
                    " (adjustment_id, withdrawn_by, withdrawal_action_id)"
                    " VALUES (:id, 'carol', :id)"
                ),
                {"id": approved_id},
            )

    withdrawn_id = await _propose(desk, creator, 100, "alice")
    await _withdraw(desk, withdrawn_id, "alice")
    with pytest.raises(DBAPIError, match=f"adjustment {withdrawn_id} was withdrawn"):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO balance_adjustment_approvals (adjustment_id, proposed_by,"
                    " approved_by, approval_action_id, transfer_id)"
                    " VALUES (:id, 'alice', 'bob', :id, :transfer)"
                ),
                {"id": withdrawn_id, "transfer": uuid.uuid4()},
            )


async def test_the_database_refuses_a_row_citing_an_action_that_is_not_its_own(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed
) -> None:
    """As the writer, past the desk: an approval, a withdrawal or a freeze must cite the action
    that did it, else the state would disagree with the log."""
    frozen_creator, other_creator = await feed.eligible_creator(1), await feed.eligible_creator(1)
    freeze = await desk.set_frozen(
        frozen_creator,
        frozen=True,
        idempotency_key=new_key(),
        actor="alice",
        reason=REASON,
        ticket=None,
    )
    assert freeze.action is not None
    freeze_id = freeze.action.id
    proposed_id = await _propose(desk, other_creator, 100, "alice")
    approved_id = await _propose(desk, other_creator, 100, "alice")
    approval = await _approve(desk, approved_id, "bob")
    assert approval.action is not None
    transfer_id = adjustment_transfer_id(approved_id)
    refusals: list[tuple[str, dict[str, Any], int]] = [
        # a freeze of another creator, citing a proposal
        (
            "INSERT INTO creator_freezes (creator_id, frozen, action_id) VALUES (:c, true, :a)",
            {"c": other_creator, "a": proposed_id},
            proposed_id,
        ),
        # bob's approval of the first adjustment, citing the second one's proposal, with the
        # second one's posted transfer
        (
            "INSERT INTO balance_adjustment_approvals (adjustment_id, proposed_by, approved_by,"
            " approval_action_id, transfer_id) VALUES (:id, 'alice', 'bob', :a, :t)",
            {"id": proposed_id, "a": approved_id, "t": transfer_id},
            approved_id,
        ),
        # carol's withdrawal, citing the freeze
        (
            "INSERT INTO balance_adjustment_withdrawals (adjustment_id, withdrawn_by,"
            " withdrawal_action_id) VALUES (:id, 'carol', :a)",
            {"id": proposed_id, "a": freeze_id},
            freeze_id,
        ),
    ]
    for statement, params, cited in refusals:
        with pytest.raises(DBAPIError, match=f"cites operator action {cited}, which is not"):
            await _execute_as_writer(engine, statement, params)
    assert await freeze_state_of(engine, other_creator) is None
    assert (
        await _count(
            engine,
            "SELECT count(*) FROM balance_adjustment_approvals WHERE adjustment_id = :id",
            id=proposed_id,
        )
        == 0
    )


async def _execute_as_writer(engine: AsyncEngine, statement: str, params: dict[str, Any]) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL ROLE {WRITER}"))
        await conn.execute(text(statement), params)


async def freeze_state_of(engine: AsyncEngine, creator: str) -> bool | None:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT frozen FROM creator_freezes WHERE creator_id = :c ORDER BY id DESC LIMIT 1"
            ),
            {"c": creator},
        )
    return None if found is None else bool(found)


async def test_an_approval_racing_a_withdrawal_waits_for_it_and_is_refused(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed
) -> None:
    """Without the log's lock: a withdrawal not yet committed holds off an approval row for the
    same adjustment, which is refused once the withdrawal commits."""
    creator = await feed.eligible_creator(1)
    adjustment_id = await _propose(desk, creator, 100, "alice")

    async def approval_row() -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO balance_adjustment_approvals (adjustment_id, proposed_by,"
                    " approved_by, approval_action_id, transfer_id)"
                    " VALUES (:id, 'alice', 'bob', :id, :transfer)"
                ),
                {"id": adjustment_id, "transfer": uuid.uuid4()},
            )

    async with engine.connect() as withdrawing:
        transaction = await withdrawing.begin()
        log = await hold_log(withdrawing, database_role=WRITER, topic_prefix="")
        action = await log.record(
            ActionEntry(
                idempotency_key=new_key(),
                actor="carol",
                action=ADJUSTMENT_WITHDRAWN,
                target=creator,
                reason=WITHDRAWAL_REASON,
                ticket=None,
                details={"adjustment_id": adjustment_id},
            )
        )
        await insert_withdrawal(
            withdrawing, adjustment_id, withdrawn_by="carol", withdrawal_action_id=action.id
        )
        approving = asyncio.create_task(approval_row())
        await asyncio.sleep(BLOCKED_S)
        assert not approving.done()  # it waits for the withdrawal's transaction
        await transaction.commit()
    with pytest.raises(DBAPIError, match=f"adjustment {adjustment_id} was withdrawn"):
        await approving
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM balance_adjustment_approvals WHERE adjustment_id = :id"),
            {"id": adjustment_id},
        )
        assert found.scalar_one() == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE balance_adjustment_withdrawals SET withdrawn_by = 'someone'",
        "DELETE FROM balance_adjustment_withdrawals",
        "TRUNCATE balance_adjustment_withdrawals",
    ],
)
async def test_a_withdrawal_is_never_changed_nor_removed(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed, statement: str
) -> None:
    creator = await feed.eligible_creator(1)
    await _withdraw(desk, await _propose(desk, creator, 100, "alice"), "alice")
    with pytest.raises(DBAPIError, match="permission denied"):
        await _execute(engine, statement, role=WRITER)
    with pytest.raises(DBAPIError, match="immutable"):
        await _execute(engine, statement)


# The API -------------------------------------------------------------------------------------


async def _api_propose(api: httpx.AsyncClient, creator: str, amount_minor: int = 500) -> int:
    body = {"creator_id": creator, "asset": "DIAMOND", "amount_minor": amount_minor}
    answer = await api.post(
        "/v1/operator/adjustments",
        json={**body, "reason": REASON},
        headers=bearer(ALICE_TOKEN, new_key()),
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["adjustment"]["adjustment_id"])


async def _api_withdraw(
    api: httpx.AsyncClient,
    adjustment_id: int,
    *,
    token: str = BOB_TOKEN,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    return await api.post(
        f"/v1/operator/adjustments/{adjustment_id}/withdraw",
        json={"reason": WITHDRAWAL_REASON, "ticket": "OPS-11"} if body is None else body,
        headers=bearer(token, new_key()),
    )


async def test_an_operator_withdraws_through_the_api_and_finance_may_not(
    api: httpx.AsyncClient, engine: AsyncEngine, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    adjustment_id = await _api_propose(api, creator)
    path = f"/v1/operator/adjustments/{adjustment_id}/withdraw"

    forbidden = await _api_withdraw(api, adjustment_id, token=FINANCE_TOKEN)
    assert forbidden.status_code == 403, forbidden.text
    assert forbidden.json() == {"detail": "the finance role may not use this route"}
    anonymous = await api.post(path, json={"reason": "x"}, headers={"Idempotency-Key": new_key()})
    assert anonymous.status_code == 401
    no_reason = await _api_withdraw(api, adjustment_id, body={})
    assert no_reason.status_code == 422
    assert "reason" in str(no_reason.json()["detail"])
    assert [action for _, action, _ in await _actions_on(engine, creator)] == [
        "adjustment_proposed"
    ]

    withdrawn = await _api_withdraw(api, adjustment_id)
    assert withdrawn.status_code == 200, withdrawn.text
    done = withdrawn.json()
    assert done["recorded"] is True
    assert (done["action"]["action"], done["action"]["actor"]) == ("adjustment_withdrawn", "bob")
    assert (done["action"]["reason"], done["action"]["ticket"]) == (WITHDRAWAL_REASON, "OPS-11")
    document = done["adjustment"]
    assert (document["status"], document["withdrawn_by"]) == ("withdrawn", "bob")
    assert document["withdrawn_at"] is not None
    assert (document["approved_by"], document["transfer_id"]) == (None, None)

    again = await _api_withdraw(api, adjustment_id, token=ALICE_TOKEN)
    assert again.status_code == 200
    assert (again.json()["recorded"], again.json()["action"]) == (False, done["action"])

    approve = await api.post(
        f"/v1/operator/adjustments/{adjustment_id}/approve",
        json={},
        headers=bearer(BOB_TOKEN, new_key()),
    )
    assert approve.status_code == 409
    assert f"adjustment {adjustment_id} was withdrawn by bob" in approve.json()["detail"]


async def test_withdrawing_an_approved_or_unknown_adjustment_is_409_or_404(
    api: httpx.AsyncClient, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    adjustment_id = await _api_propose(api, creator)
    approved = await api.post(
        f"/v1/operator/adjustments/{adjustment_id}/approve",
        json={},
        headers=bearer(BOB_TOKEN, new_key()),
    )
    assert approved.status_code == 200, approved.text
    refused = await _api_withdraw(api, adjustment_id)
    assert refused.status_code == 409
    assert "it cannot be withdrawn; to undo it, propose" in refused.json()["detail"]
    assert (await _api_withdraw(api, 2**62)).status_code == 404


async def test_adjustments_are_listed_by_each_of_the_three_statuses(
    api: httpx.AsyncClient, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    proposed, approved, withdrawn = [await _api_propose(api, creator) for _ in range(3)]
    await api.post(
        f"/v1/operator/adjustments/{approved}/approve",
        json={},
        headers=bearer(BOB_TOKEN, new_key()),
    )
    assert (await _api_withdraw(api, withdrawn)).status_code == 200

    async def listed(query: str) -> list[tuple[int, str]]:
        answer = await api.get(
            f"/v1/operator/adjustments?creator_id={creator}{query}", headers=bearer(FINANCE_TOKEN)
        )
        assert answer.status_code == 200, answer.text
        return [(item["adjustment_id"], item["status"]) for item in answer.json()["adjustments"]]

    assert await listed("") == [
        (proposed, "proposed"),
        (approved, "approved"),
        (withdrawn, "withdrawn"),
    ]
    assert await listed("&status=proposed") == [(proposed, "proposed")]
    assert await listed("&status=approved") == [(approved, "approved")]
    assert await listed("&status=withdrawn") == [(withdrawn, "withdrawn")]
    unknown = await api.get("/v1/operator/adjustments?status=cancelled", headers=bearer(BOB_TOKEN))
    assert unknown.status_code == 422


async def test_the_openapi_document_describes_the_withdrawal(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    operation = document["paths"]["/v1/operator/adjustments/{adjustment_id}/withdraw"]["post"]
    assert operation["security"] == [{"bearer": []}]
    assert operation["summary"].startswith("Withdraw a proposed balance adjustment")
    assert {"200", "401", "403", "404", "409", "422"} <= set(operation["responses"])
    [key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert (key["in"], key["required"]) == ("header", True)
    assert operation["requestBody"]["required"] is True
    listing = document["paths"]["/v1/operator/adjustments"]["get"]
    [status] = [p for p in listing["parameters"] if p["name"] == "status"]
    assert "withdrawn" in str(status["schema"])


# The console ---------------------------------------------------------------------------------


def _withdraw_form(page: str, adjustment_id: int) -> dict[str, str]:
    """The withdraw form of adjustment `adjustment_id` on the operator page, filled in."""
    found = re.search(
        rf'<form method="post" action="[^"]*/operator/withdraw\?id={adjustment_id}"'
        r"[^>]*>(.*?)</form>",
        page,
        re.DOTALL,
    )
    assert found is not None, page
    return {
        "csrf_token": hidden(found.group(1), "csrf_token"),
        "idempotency_key": hidden(found.group(1), "idempotency_key"),
        "reason": WITHDRAWAL_REASON,
    }


def _notice(page: str) -> str:
    start = page.index('<p class="notice" role="status">') + len('<p class="notice" role="status">')
    return page[start : page.index("</p>", start)]


async def test_an_operator_withdraws_an_adjustment_from_the_console_once(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    own = await _propose(desk, creator, 100, CONSOLE_OPERATOR_NAME)
    async with console_client(engine, console_settings()) as client:
        assert (await sign_in(client, CONSOLE_OPERATOR_TOKEN)).status_code == 303
        page = await client.get("/console/operator")
        assert f"Withdraw {own}" in page.text  # the proposer may withdraw
        form = _withdraw_form(page.text, own)
        path = f"/console/operator/withdraw?id={own}"

        done = await client.post(path, data=form)
        assert done.status_code == 200, done.text
        assert _notice(done.text).startswith(f"Adjustment {own} is withdrawn (action ")
        assert f"Withdraw {own}" not in done.text
        again = await client.post(path, data=form)
        assert again.status_code == 200, again.text
        assert _notice(again.text).endswith(", recorded before).")
        empty = await client.post(path, data={**form, "idempotency_key": new_key(), "reason": ""})
        assert empty.status_code == 422
        unknown = await client.post(f"/console/operator/withdraw?id={2**62}", data=form)
        assert unknown.status_code == 404

        approved = await _propose(desk, creator, 100, "alice")
        page = await client.get("/console/operator")
        form = _withdraw_form(page.text, approved)
        await _approve(desk, approved, "bob")
        refused = await client.post(f"/console/operator/withdraw?id={approved}", data=form)
        assert refused.status_code == 409
        assert "it cannot be withdrawn" in refused.text
    assert [action for _, action, _ in await _actions_on(engine, creator)] == [
        "adjustment_proposed",
        "adjustment_withdrawn",
        "adjustment_proposed",
        "adjustment_approved",
    ]


async def test_finance_sees_no_withdraw_form_and_its_post_is_refused(
    engine: AsyncEngine, desk: OperatorDesk, feed: Feed
) -> None:
    creator = await feed.eligible_creator(1)
    adjustment_id = await _propose(desk, creator, 100, "alice")
    path = f"/console/operator/withdraw?id={adjustment_id}"
    async with console_client(engine, console_settings()) as client:
        assert (await client.post(path, data={"reason": "x"})).status_code == 401
        assert (await sign_in(client, CONSOLE_FINANCE_TOKEN)).status_code == 303
        page = await client.get("/console/operator")
        assert page.status_code == 200
        assert "/operator/withdraw" not in page.text
        form = {
            "csrf_token": hidden(page.text, "csrf_token"),
            "idempotency_key": new_key(),
            "reason": "no",
        }
        answer = await client.post(path, data=form)
        assert answer.status_code == 403
        assert "only the operator role acts" in answer.text
    assert [action for _, action, _ in await _actions_on(engine, creator)] == [
        "adjustment_proposed"
    ]
