"""The console's lists that a page cannot show whole, a page at a time, on a database of their own
(one more adjustment awaiting approval, one more frozen creator, and one more cash-out of a
creator, than a page holds; the creator's actions are its proposals): every row is reached
through the pages' links, once, and a page that is not the last says there is more.

A database of its own, so that what is on the pages is only this module's rows, and so that the
many proposals left waiting here do not push other modules' proposals off the operator page's
first page.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.service import Ledger
from schemas import topics
from services.cashout.recovery import ActionRequest, CashoutRecovery
from services.console.page_routes import (
    ACTION_PAGE_SIZE,
    CREATOR_CASHOUT_PAGE_SIZE,
    FROZEN_CREATOR_PAGE_SIZE,
    PROPOSED_ADJUSTMENT_PAGE_SIZE,
)
from services.operator.desk import OperatorDesk
from tests import event_factory as make
from tests.console_http import (
    OPERATOR_TOKEN,
    Feed,
    console_client,
    console_settings,
    new_creator_id,
    sign_in,
    table,
    tables,
)
from tests.fresh_database import fresh_database

PROPOSER = "alice"
PROPOSALS_CAPTION = "Oldest first"
FROZEN_CAPTION = "Most recently frozen first"
WRITER_ROLE = "giftledger_writer"
CASHOUT_DIAMONDS = 2_000


@dataclass(frozen=True)
class Lists:
    engine: AsyncEngine
    creator: str
    proposal_ids: list[int]  # oldest first
    proposal_action_ids: list[int]  # oldest first
    frozen_creators: list[str]  # most recently frozen first
    unfrozen_creator: str
    cashout_creator: str
    cashout_ids: list[str]  # in the list's order: newest first, then by id
    cancelled_cashout_id: str  # the last of the list, its hold cancelled by an operator


async def _creator_with_a_page_and_one_more_cashouts(
    feed: Feed, engine: AsyncEngine
) -> tuple[str, list[str], str]:
    """A creator with one more cash-out than a page of the creator page holds, their requests
    two to an instant (the oldest two on either side of the pages' boundary); the balance holds
    the first few, the later ones are rejected (listed all the same). The last of the list, a
    hold, is cancelled by an operator. The creator, the cash-outs in list order, the cancelled
    one."""
    creator = await feed.eligible_creator(new_creator_id("cashouts"), CASHOUT_DIAMONDS * 5)
    first_instant = datetime.now(UTC) - timedelta(minutes=10)
    placed: list[tuple[datetime, str]] = []
    for index in range(CREATOR_CASHOUT_PAGE_SIZE + 1):
        request = make.cashout_request(creator, CASHOUT_DIAMONDS)
        instant = first_instant + timedelta(milliseconds=index // 2)
        request["occurred_at"] = instant.isoformat()
        await feed.send(topics.CASHOUTS_REQUESTED, request, creator)
        placed.append((instant, str(request["event_id"])))
    by_id = sorted(placed, key=lambda place: place[1])
    in_order = [cashout_id for _, cashout_id in sorted(by_id, key=lambda p: p[0], reverse=True)]
    recovery = CashoutRecovery(
        Ledger(engine), feed.ingestor.desk, answer_window_s=0.001, database_role=WRITER_ROLE
    )
    cancel = ActionRequest(f"paging-cancel-{creator}", PROPOSER, "paging", None)
    await recovery.cancel_stale_hold(in_order[-1], cancel)
    return creator, in_order, in_order[-1]


async def _freeze(desk: OperatorDesk, creator_id: str, *, frozen: bool) -> None:
    await desk.set_frozen(
        creator_id,
        frozen=frozen,
        idempotency_key=f"paging-{'freeze' if frozen else 'unfreeze'}-{creator_id}",
        actor=PROPOSER,
        reason="paging",
        ticket=None,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lists(postgres_admin_url: str) -> AsyncIterator[Lists]:
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=4)
        try:
            feed = await Feed.on(engine)
            desk = OperatorDesk(Ledger(engine), topic_prefix="", database_role=WRITER_ROLE)
            creator = await feed.eligible_creator(new_creator_id("paging"), 10)
            proposal_ids, proposal_action_ids = [], []
            for index in range(PROPOSED_ADJUSTMENT_PAGE_SIZE + 1):
                outcome = await desk.propose_adjustment(
                    idempotency_key=f"paging-{creator}-{index}",
                    actor=PROPOSER,
                    creator_id=creator,
                    asset="DIAMOND",
                    amount_minor=1,
                    reason=f"proposal {index}",
                    ticket=None,
                )
                assert outcome.action is not None
                proposal_ids.append(outcome.adjustment.id)
                proposal_action_ids.append(outcome.action.id)
            frozen = []
            for index in range(FROZEN_CREATOR_PAGE_SIZE + 2):
                frozen_id = new_creator_id(f"frozen{index}")
                await feed.send(topics.CREATORS_UPDATED, make.creator_update(frozen_id), frozen_id)
                await _freeze(desk, frozen_id, frozen=True)
                frozen.append(frozen_id)
            unfrozen = frozen.pop(len(frozen) // 2)
            await _freeze(desk, unfrozen, frozen=False)
            cashouts = await _creator_with_a_page_and_one_more_cashouts(feed, engine)
            yield Lists(
                engine,
                creator,
                proposal_ids,
                proposal_action_ids,
                frozen[::-1],
                unfrozen,
                *cashouts,
            )
        finally:
            await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def operator(lists: Lists) -> AsyncIterator[httpx.AsyncClient]:
    async with console_client(lists.engine, console_settings()) as client:
        assert (await sign_in(client, OPERATOR_TOKEN)).status_code == 303
        yield client


def _link(page: str, text: str) -> str | None:
    """The address of the page's link that says `text`."""
    found = re.search(rf'<a href="([^"]+)"[^>]*>{re.escape(text)}</a>', page)
    return None if found is None else html.unescape(found.group(1))


async def _every_page(
    client: httpx.AsyncClient, path: str, more: str, rows_of: Callable[[str], list[str]]
) -> list[list[str]]:
    """The rows of each page from `path` on, following the link that says `more` until a page
    has none."""
    pages = []
    next_path: str | None = path
    while next_path is not None:
        answer = await client.get(next_path)
        assert answer.status_code == 200, next_path
        pages.append(rows_of(answer.text))
        next_path = _link(answer.text, more)
        assert len(pages) <= 10, "the links go round"
    return pages


def _first_cells(caption: str) -> Callable[[str], list[str]]:
    return lambda page: [row[0] for row in table(page, caption).rows[1:] if len(row) > 1]


async def test_every_adjustment_awaiting_approval_is_on_one_page_of_the_operator_page(
    operator: httpx.AsyncClient, lists: Lists
) -> None:
    pages = await _every_page(
        operator,
        "/console/operator",
        "More adjustments awaiting approval",
        _first_cells(PROPOSALS_CAPTION),
    )
    assert [len(rows) for rows in pages] == [PROPOSED_ADJUSTMENT_PAGE_SIZE, 1]
    assert [int(row) for rows in pages for row in rows] == lists.proposal_ids
    newest = lists.proposal_ids[-1]
    last = await operator.get(f"/console/operator?proposed_after={lists.proposal_ids[-2]}")
    assert f'action="/console/operator/approve?id={newest}"' in last.text


async def test_every_frozen_creator_is_on_one_page_of_the_operator_page(
    operator: httpx.AsyncClient, lists: Lists
) -> None:
    pages = await _every_page(
        operator, "/console/operator", "Creators frozen earlier", _first_cells(FROZEN_CAPTION)
    )
    assert [len(rows) for rows in pages] == [FROZEN_CREATOR_PAGE_SIZE, 1]
    assert [row for rows in pages for row in rows] == lists.frozen_creators
    assert lists.unfrozen_creator not in {row for rows in pages for row in rows}


async def test_each_lists_links_keep_the_others_pages(
    operator: httpx.AsyncClient, lists: Lists
) -> None:
    first = (await operator.get("/console/operator")).text
    later = _link(first, "More adjustments awaiting approval")
    assert later is not None
    second = (await operator.get(later)).text
    earlier = _link(second, "Creators frozen earlier")
    assert earlier is not None
    both = (await operator.get(earlier)).text
    assert _first_cells(PROPOSALS_CAPTION)(both) == [str(lists.proposal_ids[-1])]
    assert _first_cells(FROZEN_CAPTION)(both) == lists.frozen_creators[-1:]
    back = _link(both, "Oldest adjustments")
    assert back is not None
    assert (
        _first_cells(FROZEN_CAPTION)((await operator.get(back)).text)
        == (lists.frozen_creators[-1:])
    )


async def test_every_action_on_a_creator_is_on_one_page_of_the_creators_page(
    operator: httpx.AsyncClient, lists: Lists
) -> None:
    def action_ids(page: str) -> list[str]:
        section = page.split('id="creator-actions-heading"')[1]
        return re.findall(r'<tr><th scope="row" class="number">(\d+)</th>', section)

    pages = await _every_page(
        operator, f"/console/creator?id={lists.creator}", "Older actions", action_ids
    )
    sizes = [len(rows) for rows in pages]
    assert sizes[:-1] == [ACTION_PAGE_SIZE] * (len(pages) - 1)
    assert 1 <= sizes[-1] <= ACTION_PAGE_SIZE
    assert [int(row) for rows in pages for row in rows] == lists.proposal_action_ids[::-1]


def _cashout_ids(page: str) -> list[str]:
    """The cash-outs of a creator page, in the page's order."""
    section = page.split('id="creator-cashouts-heading"')[1].split('id="creator-actions-heading"')[
        0
    ]
    return [html.unescape(found) for found in re.findall(r"<caption><a [^>]*>([^<]+)</a>", section)]


async def test_every_cashout_of_a_creator_is_on_one_page_of_the_creators_page(
    operator: httpx.AsyncClient, lists: Lists
) -> None:
    pages = await _every_page(
        operator,
        f"/console/creator?id={lists.cashout_creator}",
        "Older cash-outs",
        _cashout_ids,
    )
    assert [len(rows) for rows in pages] == [CREATOR_CASHOUT_PAGE_SIZE, 1]
    assert [row for rows in pages for row in rows] == lists.cashout_ids
    assert pages[-1] == [lists.cancelled_cashout_id]


async def test_the_creators_page_shows_the_actions_on_every_cashout_of_theirs(
    operator: httpx.AsyncClient, lists: Lists
) -> None:
    """The cancelled hold is on the cash-outs' second page; its cancellation is on the actions'
    first page, whichever page of cash-outs is shown."""
    first = (await operator.get(f"/console/creator?id={lists.cashout_creator}")).text
    assert lists.cancelled_cashout_id not in _cashout_ids(first)
    [actions] = tables(first.split('id="creator-actions-heading"')[1])
    # Action, Recorded, Who, What, Target: the body's rows
    assert [row[3:5] for row in actions.rows[1:]] == [
        ["cashout_cancelled", lists.cancelled_cashout_id]
    ]
