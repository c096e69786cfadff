"""The console's operator buttons on the creator and cash-out pages, over HTTP on the API app and
the test database: freeze and unfreeze a creator, cancel a stale hold, resubmit a failed payout.

Each form carries the session's CSRF token and an idempotency key the page generated: sending the
same form twice is one action in the operator log. `finance` sees no form and is refused; a hold
the bank may still answer is not cancelled; a hostile creator id stays text everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.app.bootstrap import build_api_app
from services.cashout.recovery import resubmission_id
from services.operator.desk import CREATOR_FROZEN, CREATOR_UNFROZEN
from tests import event_factory as make
from tests.console_http import (
    FINANCE_TOKEN,
    OPERATOR_NAME,
    OPERATOR_TOKEN,
    ActionCount,
    Feed,
    cashout_state,
    console_client,
    console_settings,
    hidden,
    hostile_creator_id,
    new_creator_id,
    sign_in,
    tables,
)
from tests.operator_helpers import bearer

# Any hold is stale against this window by the time an operator acts on it.
WINDOW_PASSED_S = 0.001
CASHOUT_DIAMONDS = 2_000
CREATOR_DIAMONDS = 3_000


@dataclass(frozen=True)
class ActionData:
    creator: str
    hostile_creator: str
    stale_cashout: str
    failed_cashout: str
    fresh_cashout: str
    finance_cashout: str
    shared_creator: str
    shared_cashout: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def action_data(engine: AsyncEngine) -> ActionData:
    """Creators and cash-outs of this module only, each acted on by one test."""
    feed = await Feed.on(engine)

    async def creator(what: str) -> str:
        return await feed.eligible_creator(new_creator_id(what), CREATOR_DIAMONDS)

    hostile = await feed.eligible_creator(hostile_creator_id(), CREATOR_DIAMONDS)
    return ActionData(
        creator=await creator("freeze"),
        hostile_creator=hostile,
        stale_cashout=await feed.held_cashout(await creator("cancel"), CASHOUT_DIAMONDS),
        failed_cashout=await feed.failed_cashout(await creator("resubmit"), CASHOUT_DIAMONDS),
        fresh_cashout=await feed.held_cashout(await creator("fresh"), CASHOUT_DIAMONDS),
        finance_cashout=await feed.held_cashout(await creator("finance"), CASHOUT_DIAMONDS),
        shared_creator=await creator("shared"),
        shared_cashout=await feed.held_cashout(await creator("shared-hold"), CASHOUT_DIAMONDS),
    )


async def _creator_of(engine: AsyncEngine, cashout_id: str) -> str:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT creator_id FROM cashouts WHERE cashout_id = :id"), {"id": cashout_id}
        )
    return str(found)


@pytest.fixture
async def operator(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """An operator signed in to a console whose answer window every hold has passed."""
    settings = console_settings(cashout_answer_window_s=WINDOW_PASSED_S)
    async with console_client(engine, settings) as client:
        assert (await sign_in(client, OPERATOR_TOKEN)).status_code == 303
        yield client


@pytest.fixture
async def finance(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = console_settings(cashout_answer_window_s=WINDOW_PASSED_S)
    async with console_client(engine, settings) as client:
        assert (await sign_in(client, FINANCE_TOKEN)).status_code == 303
        yield client


def _form(page: str, reason: str) -> dict[str, str]:
    """The action form of a page, filled in: its CSRF token and idempotency key as rendered."""
    return {
        "csrf_token": hidden(page, "csrf_token"),
        "idempotency_key": hidden(page, "idempotency_key"),
        "reason": reason,
    }


def _creator_path(creator_id: str, action: str = "") -> str:
    return f"/console/creator{action}?id={quote(creator_id, safe='')}"


def _cashout_path(cashout_id: str, action: str = "") -> str:
    return f"/console/cashout{action}?id={quote(cashout_id, safe='')}"


def _notice(page: str) -> str:
    start = page.index('<p class="notice" role="status">') + len('<p class="notice" role="status">')
    return page[start : page.index("</p>", start)]


def _actions_on_page(page: str) -> list[tuple[str, str, str]]:
    """(what, who, target) of each row of the page's operator actions table."""
    [log] = [
        found
        for found in tables(page)
        if found.rows and found.rows[0][:4] == ["Action", "Recorded", "Who", "What"]
    ]
    return [(row[3], row[2], row[4]) for row in log.rows[1:] if len(row) == 8]


# Freeze and unfreeze ------------------------------------------------------------------------


async def test_an_operator_freezes_a_creator_once_however_often_the_form_is_sent(
    operator: httpx.AsyncClient, engine: AsyncEngine, action_data: ActionData
) -> None:
    creator = action_data.creator
    count = ActionCount(engine)
    page = await operator.get(_creator_path(creator))
    assert page.status_code == 200
    assert "Not frozen." in page.text
    assert "Freeze this creator</button>" in page.text
    form = _form(page.text, "chargebacks under review")

    first = await operator.post(_creator_path(creator, "/freeze"), data=form)
    assert first.status_code == 200, first.text
    again = await operator.post(_creator_path(creator, "/freeze"), data=form)
    assert again.status_code == 200, again.text
    assert await count(CREATOR_FROZEN, creator) == 1
    action_id = _notice(first.text).removeprefix("Frozen (action ").removesuffix(").")
    assert _notice(first.text) == f"Frozen (action {action_id})."
    assert _notice(again.text) == f"Frozen (action {action_id}, recorded before)."
    assert "<strong>Frozen</strong>" in again.text
    assert (CREATOR_FROZEN, f"{OPERATOR_NAME} (operator)", creator) in _actions_on_page(again.text)

    assert "Unfreeze this creator</button>" in again.text
    unfreeze = _form(again.text, "review closed")
    assert unfreeze["idempotency_key"] != form["idempotency_key"]
    thawed = await operator.post(_creator_path(creator, "/unfreeze"), data=unfreeze)
    assert thawed.status_code == 200, thawed.text
    assert _notice(thawed.text).startswith("Not frozen (action ")
    assert "Not frozen." in thawed.text
    assert await count(CREATOR_UNFROZEN, creator) == 1
    assert await count(CREATOR_FROZEN, creator) == 1


async def test_an_unknown_creator_is_not_frozen(
    operator: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    nobody = new_creator_id("nobody")
    page = await operator.get(_creator_path(nobody))
    answer = await operator.post(
        _creator_path(nobody, "/freeze"), data=_form(page.text, "just in case")
    )
    assert answer.status_code == 404
    assert await ActionCount(engine)(CREATOR_FROZEN, nobody) == 0


async def test_a_hostile_creator_id_shows_as_text_in_the_form_the_notice_and_the_log(
    operator: httpx.AsyncClient, engine: AsyncEngine, action_data: ActionData
) -> None:
    hostile = action_data.hostile_creator
    page = await operator.get(_creator_path(hostile))
    assert page.status_code == 200
    assert hostile not in page.text
    escaped = hostile.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
    assert f"Creator {escaped}" in page.text
    assert f'action="{_creator_path(hostile, "/freeze")}"' in page.text.replace("&amp;", "&")
    frozen = await operator.post(_creator_path(hostile, "/freeze"), data=_form(page.text, "odd"))
    assert frozen.status_code == 200, frozen.text
    assert hostile not in frozen.text
    assert "<script" not in frozen.text
    assert (CREATOR_FROZEN, f"{OPERATOR_NAME} (operator)", hostile) in _actions_on_page(frozen.text)
    assert await ActionCount(engine)(CREATOR_FROZEN, hostile) == 1


# Cash-out recovery --------------------------------------------------------------------------


async def test_an_operator_cancels_a_stale_hold_once_however_often_the_form_is_sent(
    operator: httpx.AsyncClient, engine: AsyncEngine, action_data: ActionData
) -> None:
    cashout_id = action_data.stale_cashout
    assert await cashout_state(engine, cashout_id) == ("held", None)
    page = await operator.get(_cashout_path(cashout_id))
    assert page.status_code == 200
    assert "Cancel the hold</button>" in page.text
    assert "Resubmit the payout</button>" not in page.text
    form = _form(page.text, "the bank never answered")

    first = await operator.post(_cashout_path(cashout_id, "/cancel"), data=form)
    assert first.status_code == 200, first.text
    again = await operator.post(_cashout_path(cashout_id, "/cancel"), data=form)
    assert again.status_code == 200, again.text
    assert _notice(first.text).startswith("Cancelled: the hold is released")
    assert _notice(again.text).endswith(", recorded before).")
    assert await ActionCount(engine)("cashout_cancelled", cashout_id) == 1
    assert await cashout_state(engine, cashout_id) == ("failed", "operator_cancelled")
    assert ("cashout_cancelled", f"{OPERATOR_NAME} (operator)", cashout_id) in _actions_on_page(
        again.text
    )
    # A cancelled cash-out has failed; the page offers to resubmit it once the bank has
    # confirmed that it will not pay the original.
    assert "Cancel the hold</button>" not in again.text
    assert "Resubmit the payout</button>" not in again.text
    assert "once the bank confirms that it will not pay it" in again.text
    feed = await Feed.on(engine)
    confirmation = make.payout_update(cashout_id, "failed", failure_code="cancelled")
    await feed.send(topics.PAYOUTS_UPDATED, confirmation, await _creator_of(engine, cashout_id))
    confirmed = await operator.get(_cashout_path(cashout_id))
    assert "Resubmit the payout</button>" in confirmed.text
    assert "once the bank confirms" not in confirmed.text


async def test_an_operator_resubmits_a_failed_payout_once_however_often_the_form_is_sent(
    operator: httpx.AsyncClient, engine: AsyncEngine, action_data: ActionData
) -> None:
    cashout_id = action_data.failed_cashout
    assert await cashout_state(engine, cashout_id) == ("failed", "AC04")
    page = await operator.get(_cashout_path(cashout_id))
    assert "Resubmit the payout</button>" in page.text
    assert "Cancel the hold</button>" not in page.text
    form = _form(page.text, "the account is fixed")

    first = await operator.post(_cashout_path(cashout_id, "/resubmit"), data=form)
    assert first.status_code == 200, first.text
    again = await operator.post(_cashout_path(cashout_id, "/resubmit"), data=form)
    assert again.status_code == 200, again.text
    resubmitted = resubmission_id(cashout_id)
    assert _notice(first.text).startswith(f"Resubmitted as {resubmitted} (held; action ")
    assert _notice(again.text).endswith(", recorded before).")
    assert await ActionCount(engine)("payout_resubmitted", cashout_id) == 1
    assert await cashout_state(engine, resubmitted) == ("held", None)
    assert ("payout_resubmitted", f"{OPERATOR_NAME} (operator)", cashout_id) in (
        _actions_on_page(again.text)
    )
    assert f">{resubmitted}</a> (held)" in again.text
    assert "Resubmit the payout</button>" not in again.text


async def test_a_hold_the_bank_may_still_answer_is_not_cancelled(
    engine: AsyncEngine, action_data: ActionData
) -> None:
    cashout_id = action_data.fresh_cashout
    async with console_client(engine, console_settings()) as client:  # a one-day window
        await sign_in(client, OPERATOR_TOKEN)
        page = await client.get(_cashout_path(cashout_id))
        assert "Cancel the hold</button>" not in page.text
        assert 'name="idempotency_key"' not in page.text
        form = {
            "csrf_token": hidden(page.text, "csrf_token"),
            "idempotency_key": f"console-test-{uuid.uuid4().hex}",
            "reason": "impatient",
        }
        answer = await client.post(_cashout_path(cashout_id, "/cancel"), data=form)
    assert answer.status_code == 409
    assert "not stale yet" in answer.text
    assert await ActionCount(engine)("cashout_cancelled", cashout_id) == 0
    assert await cashout_state(engine, cashout_id) == ("held", None)


# One desk per app ---------------------------------------------------------------------------


async def test_the_console_and_the_api_share_the_apps_operator_desk_and_cashout_recovery(
    engine: AsyncEngine, action_data: ActionData
) -> None:
    """One of each per app (so one ledger each, with its account cache), made by whichever of
    the console's actions and the API's operator routes comes first; not one per action."""
    app = build_api_app(engine, console_settings(cashout_answer_window_s=WINDOW_PASSED_S))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
        assert (await sign_in(client, OPERATOR_TOKEN)).status_code == 303
        creator, cashout_id = action_data.shared_creator, action_data.shared_cashout
        assert getattr(app.state, "operator_desk", None) is None
        assert getattr(app.state, "cashout_recovery", None) is None

        page = await client.get(_creator_path(creator))
        frozen = await client.post(_creator_path(creator, "/freeze"), data=_form(page.text, "a"))
        assert frozen.status_code == 200, frozen.text
        desk = app.state.operator_desk
        page = await client.get(_creator_path(creator))
        thawed = await client.post(_creator_path(creator, "/unfreeze"), data=_form(page.text, "b"))
        assert thawed.status_code == 200, thawed.text
        assert app.state.operator_desk is desk
        refrozen = await client.post(
            f"/v1/operator/creators/{quote(creator, safe='')}/freeze",
            json={"reason": "from the API"},
            headers=bearer(OPERATOR_TOKEN, uuid.uuid4().hex),
        )
        assert refrozen.status_code == 200, refrozen.text
        assert app.state.operator_desk is desk

        page = await client.get(_cashout_path(cashout_id))
        cancelled = await client.post(
            _cashout_path(cashout_id, "/cancel"), data=_form(page.text, "no answer")
        )
        assert cancelled.status_code == 200, cancelled.text
        recovery = app.state.cashout_recovery
        confirmation = make.payout_update(cashout_id, "failed", failure_code="cancelled")
        await (await Feed.on(engine)).send(
            topics.PAYOUTS_UPDATED, confirmation, await _creator_of(engine, cashout_id)
        )
        resubmitted = await client.post(
            f"/v1/operator/cashouts/{quote(cashout_id, safe='')}/resubmit",
            json={"reason": "from the API"},
            headers=bearer(OPERATOR_TOKEN, uuid.uuid4().hex),
        )
        assert resubmitted.status_code == 200, resubmitted.text
        assert app.state.cashout_recovery is recovery
        assert await cashout_state(engine, resubmission_id(cashout_id)) == ("held", None)


# Who may act --------------------------------------------------------------------------------


async def test_finance_sees_no_action_form_and_its_posts_are_refused(
    finance: httpx.AsyncClient, engine: AsyncEngine, action_data: ActionData
) -> None:
    creator, cashout_id = action_data.creator, action_data.finance_cashout
    creator_page = await finance.get(_creator_path(creator))
    cashout_page = await finance.get(_cashout_path(cashout_id))
    for page in (creator_page, cashout_page):
        assert page.status_code == 200
        assert 'name="idempotency_key"' not in page.text
    form = {
        "csrf_token": hidden(creator_page.text, "csrf_token"),
        "idempotency_key": "console-finance-try",
        "reason": "no",
    }
    count = ActionCount(engine)
    before = [await count(action, creator) for action in (CREATOR_FROZEN, CREATOR_UNFROZEN)]
    for path in (
        _creator_path(creator, "/freeze"),
        _creator_path(creator, "/unfreeze"),
        _cashout_path(cashout_id, "/cancel"),
        _cashout_path(cashout_id, "/resubmit"),
    ):
        answer = await finance.post(path, data=form)
        assert answer.status_code == 403, (path, answer.text)
        assert "only the operator role acts" in answer.text
    after = [await count(action, creator) for action in (CREATOR_FROZEN, CREATOR_UNFROZEN)]
    assert after == before
    assert await count("cashout_cancelled", cashout_id) == 0
    assert await count("payout_resubmitted", cashout_id) == 0
    assert await cashout_state(engine, cashout_id) == ("held", None)


async def test_an_operator_form_without_the_csrf_token_is_refused(
    operator: httpx.AsyncClient, engine: AsyncEngine, action_data: ActionData
) -> None:
    cashout_id = action_data.finance_cashout
    page = await operator.get(_cashout_path(cashout_id))
    form = _form(page.text, "no token")
    del form["csrf_token"]
    answer = await operator.post(_cashout_path(cashout_id, "/cancel"), data=form)
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    form["csrf_token"] = "not-the-token"
    assert (await operator.post(_cashout_path(cashout_id, "/cancel"), data=form)).status_code == 403
    assert await ActionCount(engine)("cashout_cancelled", cashout_id) == 0
    assert await cashout_state(engine, cashout_id) == ("held", None)
