"""Balances, point-in-time balances, statements, the trial balance and `verify`."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import chart
from ledger.model import AccountFlags, Transfer, TransferCode, TransferFlags
from ledger.queries import (
    creator_balances,
    posted_balance_as_of,
    statement,
    trial_balance,
)
from ledger.service import Ledger
from ledger.verify import check_names
from tests.ledger_helpers import ledger_problems, make_accounts

SYN = TransferCode.SYNTHETIC


async def _now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        value = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    assert isinstance(value, datetime)
    return value


async def test_creator_balances_show_available_and_pending_per_account(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    (funding,) = await make_accounts(ledger, unique_id, [AccountFlags.NONE])
    available = chart.creator_diamonds_available(unique_id)
    held = chart.creator_diamonds_held(unique_id)
    ids = await ledger.account_ids([available, held])
    await ledger.post(
        [
            Transfer(uuid.uuid4(), funding, ids[available.name], 12_500, SYN),
            Transfer(
                uuid.uuid4(), ids[available.name], ids[held.name], 2_000, SYN, TransferFlags.PENDING
            ),
        ]
    )
    async with engine.connect() as conn:
        balances = {b.name: b for b in await creator_balances(conn, unique_id)}
    mine = balances[available.name]
    assert (mine.posted, mine.pending, mine.available, mine.scale) == (12_500, 2_000, 10_500, 3)
    assert balances[held.name].available == 0


async def test_balance_as_of_a_past_time_ignores_later_transfers(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    before_anything = await _now(engine)
    await ledger.post([Transfer(uuid.uuid4(), a, b, 100, SYN)])
    between = await _now(engine)
    await asyncio.sleep(0.01)
    await ledger.post(
        [Transfer(uuid.uuid4(), a, b, 40, SYN), Transfer(uuid.uuid4(), b, a, 15, SYN)]
    )
    async with engine.connect() as conn:
        assert await posted_balance_as_of(conn, b, before_anything) == 0
        assert await posted_balance_as_of(conn, b, between) == 100
        assert await posted_balance_as_of(conn, b, await _now(engine)) == 125
        assert await posted_balance_as_of(conn, a, await _now(engine)) == -125


async def test_statement_pages_carry_a_running_balance_and_a_cursor(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    amounts = list(range(1, 26))
    await ledger.post([Transfer(uuid.uuid4(), a, b, amount, SYN) for amount in amounts[:20]])
    await ledger.post([Transfer(uuid.uuid4(), b, a, amount, SYN) for amount in amounts[20:]])
    lines = []
    cursor = 0
    async with engine.connect() as conn:
        while True:
            page = await statement(conn, b, after_seq=cursor, page_size=7)
            lines += page.lines
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert len(lines) == 25
    running = 0
    for line in lines:
        running += line.credit - line.debit
        assert line.balance_after == running
    assert running == sum(amounts[:20]) - sum(amounts[20:])
    assert [line.seq for line in lines] == sorted(line.seq for line in lines)


async def test_a_statements_posted_lines_add_up_to_its_change_in_balance(
    engine: AsyncEngine, unique_id: str
) -> None:
    """A hold and the void that releases it move only pending amounts, on opposite sides; a
    post is the release of the whole hold and the amount posted. The lines not pending add up
    to the change in the posted balance, the pending ones to the pending amounts left."""
    ledger = Ledger(engine)
    a, b, c = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 3)
    voided = Transfer(uuid.uuid4(), b, c, 30, SYN, TransferFlags.PENDING)
    posted = Transfer(uuid.uuid4(), b, c, 40, SYN, TransferFlags.PENDING)
    void = Transfer(uuid.uuid4(), 0, 0, 0, SYN, TransferFlags.VOID_PENDING, voided.id)
    post = Transfer(uuid.uuid4(), 0, 0, 25, SYN, TransferFlags.POST_PENDING, posted.id)
    for transfer in (Transfer(uuid.uuid4(), a, b, 100, SYN), voided, void, posted, post):
        await ledger.post([transfer])
    async with engine.connect() as conn:
        lines = (await statement(conn, b)).lines
    assert [
        (
            line.transfer_id,
            line.debit,
            line.credit,
            line.pending,
            line.balance_after,
            line.pending_after,
        )
        for line in lines
    ] == [
        (lines[0].transfer_id, 0, 100, False, 100, 0),
        (voided.id, 30, 0, True, 100, -30),
        (void.id, 0, 30, True, 100, 0),  # the release, against the hold
        (posted.id, 40, 0, True, 100, -40),
        (post.id, 0, 40, True, 100, 0),  # the whole hold released ...
        (post.id, 25, 0, False, 75, 0),  # ... and 25 of it posted
    ]
    balance = pending = 0
    for line in lines:
        if line.pending:
            pending += line.credit - line.debit
        else:
            balance += line.credit - line.debit
        assert (line.balance_after, line.pending_after) == (balance, pending)


async def test_trial_balance_sums_to_zero_per_asset(engine: AsyncEngine, unique_id: str) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id + "d", [AccountFlags.NONE] * 2)
    c, d = await make_accounts(ledger, unique_id + "u", [AccountFlags.NONE] * 2, "USD")
    await ledger.post([Transfer(uuid.uuid4(), a, b, 7, SYN), Transfer(uuid.uuid4(), c, d, 9, SYN)])
    async with engine.connect() as conn:
        lines = await trial_balance(conn)
    for asset in {line.asset for line in lines}:
        assert sum(line.balance for line in lines if line.asset == asset) == 0
    names = {line.account_name for line in lines}
    assert f"test:{unique_id}d:1" in names
    assert f"test:{unique_id}u:1" in names


async def test_verify_names_an_account_whose_totals_were_edited_by_hand(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    await ledger.post([Transfer(uuid.uuid4(), a, b, 10, SYN)])
    edit = "UPDATE accounts SET credits_posted = credits_posted + :delta WHERE id = :id"
    async with engine.begin() as conn:
        await conn.execute(text(edit), {"delta": 1, "id": b})
    try:
        problems = await ledger_problems(engine)
        checks = {problem.check for problem in problems}
        assert checks == {"asset_sums_to_zero", "totals_match_transfers"}
        assert any(f"test:{unique_id}:1" in problem.detail for problem in problems)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(edit), {"delta": -1, "id": b})
    assert await ledger_problems(engine) == []


async def test_verify_names_a_transfer_whose_balance_after_was_edited(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    transfer = Transfer(uuid.uuid4(), a, b, 10, SYN)
    await ledger.post([transfer])
    edit = (
        "UPDATE transfers SET credit_balance_after = credit_balance_after + :delta WHERE id = :id"
    )
    async with engine.begin() as conn:  # as a superuser who turned the triggers off
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(edit), {"delta": 1, "id": transfer.id})
    try:
        problems = await ledger_problems(engine)
        assert {p.check for p in problems} == {
            "balances_after_match_running_totals",
            "hash_chain_intact",
        }
        detail = next(p.detail for p in problems if p.check != "hash_chain_intact")
        assert str(transfer.id) in detail
        assert f"test:{unique_id}:1 balance after is 11 but its transfers up to it give 10" in (
            detail
        )
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text(edit), {"delta": -1, "id": transfer.id})
    assert await ledger_problems(engine) == []


async def test_verify_reports_an_expired_pending_left_open(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    hold = Transfer(uuid.uuid4(), a, b, 3, SYN, TransferFlags.PENDING, timeout_s=1)
    await ledger.post([hold])
    await asyncio.sleep(1.1)
    problems = await ledger_problems(engine)
    assert [p.check for p in problems] == ["no_expired_pending_left_open"]
    assert str(hold.id) in problems[0].detail
    assert await ledger.expire_pending() >= 1
    assert await ledger_problems(engine) == []


def test_verify_runs_every_documented_check() -> None:
    assert check_names() == [
        "asset_sums_to_zero",
        "totals_match_transfers",
        "balances_after_match_running_totals",
        "balance_rules_hold",
        "no_expired_pending_left_open",
        "transfer_assets_match_accounts",
        "every_transfer_has_one_key",
        "resolutions_match_transfers",
        "gift_coins_reconcile_with_diamonds",
        "payouts_payable_matches_submitted_cashouts",
        "clearing_accounts_explained",
        "conversion_explained_by_cashouts",
        "diamonds_held_by_creators",
        "hash_chain_intact",
    ]


async def test_verify_names_gift_coins_without_their_diamonds(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    spent = chart.platform(chart.AccountKind.COINS_SPENT, "COIN")
    revenue = chart.platform(chart.AccountKind.COIN_GIFT_REVENUE, "COIN")
    ids = await ledger.account_ids([spent, revenue])
    coins = Transfer(
        uuid.uuid4(),
        ids[spent.name],
        ids[revenue.name],
        3,
        TransferCode.GIFT_COINS,
        rate_card_version=1,
    )
    await ledger.post([coins])
    problems = await ledger_problems(engine)
    assert [p.check for p in problems] == ["gift_coins_reconcile_with_diamonds"]
    found = re.fullmatch(
        r"rate card 1: \d+ coins should give (\d+) milli-diamonds, transfers give (\d+)",
        problems[0].detail,
    )
    assert found is not None, problems[0].detail
    assert int(found.group(1)) - int(found.group(2)) == 3 * 500
    undo = Transfer(
        uuid.uuid4(),
        ids[revenue.name],
        ids[spent.name],
        3,
        TransferCode.GIFT_REVERSAL_COINS,
        rate_card_version=1,
    )
    await ledger.post([undo])
    assert await ledger_problems(engine) == []
