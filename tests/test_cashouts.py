"""Cash-outs end to end through the broker: every state path, every refusal, the daily limit,
racing requests, a crash between commit and publish, and balances restored exactly."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.service import Ledger
from schemas import topics
from schemas.events import CashoutRequested
from services.cashout.desk import CashoutDesk, CashoutLimits, request_accounts
from services.cashout.store import list_cashouts
from services.cli import main
from services.payout_rail.rail import RailSettings, simulated_rail
from services.rates.rate_cards import load_rate_cards
from services.runtime.settings import EligibilitySettings, get_settings
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, wait_until
from tests.ledger_helpers import ledger_problems


def _creator() -> str:
    return f"creator-{uuid.uuid4().hex[:10]}"


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one_or_none()


async def _status(engine: AsyncEngine, cashout_id: str) -> str | None:
    status = await _scalar(
        engine, "SELECT status FROM cashouts WHERE cashout_id = :id", id=cashout_id
    )
    return None if status is None else str(status)


async def _available(engine: AsyncEngine, creator: str) -> int:
    value = await _scalar(
        engine,
        "SELECT credits_posted - debits_posted - debits_pending FROM accounts WHERE name = :name",
        name=f"creator:{creator}:DIAMOND:available",
    )
    return int(value or 0)


async def _eligible_creator_with(
    consumers: RunningConsumers, engine: AsyncEngine, diamonds: int, **profile: Any
) -> str:
    """A creator who passes every rule and holds `diamonds` (gifts of 2 coins = 1 diamond)."""
    creator = _creator()
    await consumers.publish(topics.CREATORS_UPDATED, {**make.creator_update(creator), **profile})
    if diamonds:
        per_gift = 1_000 if diamonds > 10_000 else 1  # a gift's count is at most 10,000
        assert diamonds % per_gift == 0
        gift = make.gift(creator, coins=2 * per_gift, count=diamonds // per_gift)
        await consumers.publish(topics.GIFTS_SENT, gift)

    async def ready() -> bool:
        known = await _scalar(engine, "SELECT 1 FROM creators WHERE creator_id = :c", c=creator)
        return known is not None and await _available(engine, creator) == diamonds * 1_000

    await wait_until(ready)
    return creator


async def _request(consumers: RunningConsumers, engine: AsyncEngine, event: dict[str, Any]) -> str:
    await consumers.publish(topics.CASHOUTS_REQUESTED, event)
    cashout_id = str(event["event_id"])

    async def decided() -> bool:
        return await _status(engine, cashout_id) not in (None, "requested")

    await wait_until(decided)
    return cashout_id


async def _until_status(engine: AsyncEngine, cashout_id: str, status: str) -> None:
    async def reached() -> bool:
        return await _status(engine, cashout_id) == status

    await wait_until(reached)


async def test_a_paid_cash_out_sends_the_payout_once_and_redeems_the_diamonds(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 2_500)
    cashout_id = await _request(consumers, engine, make.cashout_request(creator, 2_001))
    await _until_status(engine, cashout_id, "submitted")
    assert await _available(engine, creator) == 499_000
    requested = [
        json.loads(r.value)
        for r in await consumers.read_topic(topics.PAYOUTS_REQUESTED, 1)
        if json.loads(r.value)["cashout_id"] == cashout_id
    ]
    assert [(p["amount"], p["currency"], p["payout_account_ref"]) for p in requested] == [
        (1_000, "USD", "pa_demo_1")
    ]
    await consumers.publish(
        topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, "paid"), key=creator
    )
    await _until_status(engine, cashout_id, "paid")
    assert await _available(engine, creator) == 499_000
    held = await _scalar(
        engine,
        "SELECT credits_posted - debits_posted FROM accounts WHERE name = :n",
        n=f"creator:{creator}:DIAMOND:held",
    )
    assert held == 0
    rounded = await _scalar(
        engine,
        "SELECT sum(amount) FROM transfers WHERE code = 90 AND metadata->>'cashout_id' = :id",
        id=cashout_id,
    )
    assert rounded == 1_000  # the 2,001st diamond is worth half a cent: kept, not paid
    transitions = await _transitions(engine, cashout_id)
    assert transitions == ["requested", "held", "submitted", "paid"]
    updates: list[str] = []

    async def every_change_published() -> bool:
        # The outbox publishes after each commit, a moment later: read until all four are out.
        records = await consumers.read_topic(topics.CASHOUTS_UPDATED, 1)
        updates[:] = [
            json.loads(r.value)["status"]
            for r in records
            if json.loads(r.value)["cashout_id"] == cashout_id
        ]
        return len(updates) >= 4

    await wait_until(every_change_published)
    assert updates == ["requested", "held", "submitted", "paid"]


async def _transitions(engine: AsyncEngine, cashout_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT status FROM cashout_transitions WHERE cashout_id = :id ORDER BY seq"),
            {"id": cashout_id},
        )
        return [row.status for row in rows]


async def test_a_failed_payout_gives_the_diamonds_back_exactly(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 3_000)
    cashout_id = await _request(consumers, engine, make.cashout_request(creator, 3_000))
    assert await _available(engine, creator) == 0
    failed = make.payout_update(cashout_id, "failed", "account_closed")
    await consumers.publish(topics.PAYOUTS_UPDATED, failed, key=creator)
    await _until_status(engine, cashout_id, "failed")
    assert await _available(engine, creator) == 3_000_000
    assert (
        await _scalar(
            engine, "SELECT failure_code FROM cashouts WHERE cashout_id = :id", id=cashout_id
        )
        == "account_closed"
    )


async def test_a_returned_payout_restores_the_balance_exactly(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 2_345)
    cashout_id = await _request(consumers, engine, make.cashout_request(creator, 2_345))
    await consumers.publish(
        topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, "paid"), key=creator
    )
    await _until_status(engine, cashout_id, "paid")
    returned = make.payout_update(cashout_id, "returned", "R01")
    await consumers.publish(topics.PAYOUTS_UPDATED, returned, key=creator)
    await _until_status(engine, cashout_id, "returned")
    assert await _available(engine, creator) == 2_345_000
    assert await ledger_problems(engine) == []


async def test_results_for_unknown_or_finished_cash_outs_change_nothing(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 2_000)
    cashout_id = await _request(consumers, engine, make.cashout_request(creator, 2_000))
    await consumers.publish(
        topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, "paid"), key=creator
    )
    await _until_status(engine, cashout_id, "paid")
    again = make.payout_update(cashout_id, "failed", "AC04")
    unknown = make.payout_update("cashout-nobody-made", "paid")
    await consumers.publish(topics.PAYOUTS_UPDATED, unknown, key=creator)
    await consumers.publish(topics.PAYOUTS_UPDATED, again, key=creator)
    records = await consumers.read_topic_until(
        topics.dead_letter_topic(topics.PAYOUTS_UPDATED),
        lambda found: any(json.loads(r.value)["event_id"] == again["event_id"] for r in found),
    )
    errors = {json.loads(r.value)["event_id"]: dict(r.headers)["dlq.error"] for r in records}
    assert errors[again["event_id"]] == b"cashout_is_paid"
    # The unknown cash-out's request may yet come (PAYOUT_PARK_S): its result waits for it.
    assert unknown["event_id"] not in errors
    assert await _parked_for(consumers, engine, "cashout-nobody-made") == [unknown["event_id"]]
    assert await _status(engine, cashout_id) == "paid"
    assert await _available(engine, creator) == 0


async def _parked_for(
    consumers: RunningConsumers, engine: AsyncEngine, cashout_id: str
) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_id FROM parked_events WHERE topic_prefix = :prefix"
                " AND topic = :topic AND waiting_for = :waiting_for"
            ),
            {
                "prefix": consumers.prefix,
                "topic": topics.PAYOUTS_UPDATED,
                "waiting_for": f"cashout {cashout_id}",
            },
        )
        return [row.event_id for row in rows]


async def test_a_bank_result_read_before_its_request_is_applied_once_the_request_arrives(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 2_000)
    request = make.cashout_request(creator, 2_000)
    cashout_id = str(request["event_id"])
    paid = make.payout_update(cashout_id, "paid")
    await consumers.publish(topics.PAYOUTS_UPDATED, paid, key=creator)

    async def parked() -> bool:
        return await _parked_for(consumers, engine, cashout_id) == [paid["event_id"]]

    await wait_until(parked)
    await consumers.publish(topics.PAYOUTS_UPDATED, paid, key=creator)  # the bank again
    await _request(consumers, engine, request)
    await _until_status(engine, cashout_id, "paid")

    async def unparked() -> bool:
        return await _parked_for(consumers, engine, cashout_id) == []

    await wait_until(unparked)
    assert await _available(engine, creator) == 0
    assert (
        await _scalar(
            engine, "SELECT count(*) FROM applied_events WHERE event_id = :id", id=paid["event_id"]
        )
        == 1
    )
    assert await ledger_problems(engine) == []


async def test_each_failed_rule_rejects_the_request_with_its_name(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    rich = await _eligible_creator_with(consumers, engine, 5_000)
    canadian = await _eligible_creator_with(consumers, engine, 5_000, country="CA")
    few_followers = await _eligible_creator_with(consumers, engine, 5_000, followers=9_999)
    cases = {
        await _request(consumers, engine, make.cashout_request(rich, 1_999)): "minimum",
        await _request(consumers, engine, make.cashout_request(rich, 5_001)): "available_balance",
        await _request(consumers, engine, make.cashout_request(canadian, 2_000)): "country",
        await _request(consumers, engine, make.cashout_request(few_followers, 2_000)): "followers",
        await _request(consumers, engine, make.cashout_request(_creator(), 2_000)): "profile_known",
        await _request(consumers, engine, make.cashout_request(rich, 2_000, "EUR")): "fx_rate",
    }
    for cashout_id, rule in cases.items():
        assert await _status(engine, cashout_id) == "rejected"
        assert (
            await _scalar(
                engine, "SELECT rejected_rule FROM cashouts WHERE cashout_id = :id", id=cashout_id
            )
            == rule
        )
    assert await _available(engine, rich) == 5_000_000


async def test_the_fx_rate_is_the_one_in_force_when_the_request_is_approved(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    # CHF per USD: 0.80 from a day ago, 0.90 from ten minutes ago, 0.50 scheduled for tomorrow.
    # A request made an hour ago (under 0.80) and one dated the day after tomorrow (0.50 by its
    # date) are both approved now: both at 0.90.
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO fx_rates (currency, effective_from, units_per_usd_numerator,"
                " units_per_usd_denominator, created_by) VALUES"
                " ('CHF', :day_ago, 4, 5, 'test'), ('CHF', :minutes_ago, 9, 10, 'test'),"
                " ('CHF', :tomorrow, 1, 2, 'test')"
            ),
            {
                "day_ago": now - timedelta(days=1),
                "minutes_ago": now - timedelta(minutes=10),
                "tomorrow": now + timedelta(days=1),
            },
        )
    creator = await _eligible_creator_with(consumers, engine, 4_000)
    made_earlier = make.cashout_request(creator, 2_000, "CHF")
    made_earlier["occurred_at"] = (now - timedelta(hours=1)).isoformat()
    dated_ahead = make.cashout_request(creator, 2_000, "CHF")
    dated_ahead["occurred_at"] = (now + timedelta(days=2)).isoformat()
    for event in (made_earlier, dated_ahead):
        cashout_id = await _request(consumers, engine, event)
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT status, payout_amount, fx_numerator, fx_denominator FROM cashouts"
                        " WHERE cashout_id = :id"
                    ),
                    {"id": cashout_id},
                )
            ).one()
        # 2,000 diamonds are 10.00 USD, 9.00 CHF at 0.90.
        assert (row.payout_amount, row.fx_numerator, row.fx_denominator) == (900, 9, 10)
        assert row.status != "rejected"


async def test_the_daily_limit_counts_per_utc_day(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 400_000)
    midnight = datetime(2026, 12, 1, tzinfo=UTC)

    def at(moment: datetime, diamonds: int) -> dict[str, Any]:
        return {**make.cashout_request(creator, diamonds), "occurred_at": moment.isoformat()}

    before = midnight - timedelta(seconds=1)
    first = await _request(consumers, engine, at(before - timedelta(hours=1), 120_000))  # 600 USD
    over = await _request(consumers, engine, at(before, 100_000))  # +500 USD the same day
    fits = await _request(consumers, engine, at(before, 80_000))  # +400 USD: exactly 1,000
    next_day = await _request(consumers, engine, at(midnight, 100_000))
    for accepted in (first, fits, next_day):
        assert await _status(engine, accepted) in ("held", "submitted")
    assert await _status(engine, over) == "rejected"
    assert (
        await _scalar(engine, "SELECT rejected_rule FROM cashouts WHERE cashout_id = :id", id=over)
        == "daily_limit"
    )


async def test_racing_requests_never_take_the_balance_below_zero(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 10_000)
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    desk = CashoutDesk(
        CashoutLimits(daily_maximum_usd_cents=10**9), EligibilitySettings(), consumers.prefix
    )
    requests = [
        CashoutRequested.model_validate_json(make.encode(make.cashout_request(creator, 2_000)))
        for _ in range(12)
    ]
    ledger = Ledger(engine)
    account_ids = await ledger.account_ids(request_accounts(requests[0]))

    async def one(event: CashoutRequested) -> str:
        async for tx in ledger.transactions(retry_count_max=0):
            async with tx:
                status = (await desk.request(tx, event, rate_cards, account_ids)).status
        return status

    statuses = await asyncio.gather(*(one(event) for event in requests))
    assert sorted(statuses) == ["held"] * 5 + ["rejected"] * 7
    assert await _available(engine, creator) == 0
    assert await ledger_problems(engine) == []


async def test_a_crash_between_commit_and_publish_still_sends_the_payout_once(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 2_000)
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    desk = CashoutDesk(CashoutLimits(), EligibilitySettings(), consumers.prefix)
    event = CashoutRequested.model_validate_json(make.encode(make.cashout_request(creator, 2_000)))
    ledger = Ledger(engine)
    account_ids = await ledger.account_ids(request_accounts(event))
    async for tx in ledger.transactions(retry_count_max=0):
        async with tx:  # the commit happens; the process dies before publishing
            await desk.request(tx, event, rate_cards, account_ids)
    await _until_status(engine, event.event_id, "submitted")  # the restarted publisher sends it
    await consumers.service.publish_outbox_once()
    await consumers.service.publish_outbox_once()
    sent = [
        r
        for r in await consumers.read_topic(topics.PAYOUTS_REQUESTED, 1)
        if json.loads(r.value)["cashout_id"] == event.event_id
    ]
    assert len(sent) == 1


async def test_a_deployment_publishes_only_the_outbox_rows_it_wrote(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    """Another deployment on the same database (another topic prefix, e.g. a load test) holds a
    cash-out: its payout request waits for its own publisher, not for these consumers'."""
    creator = await _eligible_creator_with(consumers, engine, 4_000)
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    other_prefix = f"other{uuid.uuid4().hex[:6]}."
    requests = [
        CashoutRequested.model_validate_json(make.encode(make.cashout_request(creator, 2_000)))
        for _ in range(2)
    ]
    ledger = Ledger(engine)
    account_ids = await ledger.account_ids(request_accounts(requests[0]))
    for request, prefix in zip(requests, (other_prefix, consumers.prefix), strict=True):
        desk = CashoutDesk(CashoutLimits(), EligibilitySettings(), prefix)
        async for tx in ledger.transactions(retry_count_max=0):
            async with tx:
                assert (await desk.request(tx, request, rate_cards, account_ids)).status == "held"
    other, own = (request.event_id for request in requests)
    await _until_status(engine, own, "submitted")
    # One creator, one key, one partition: had the other row been sent, it would come first.
    records = await consumers.read_topic_until(
        topics.PAYOUTS_REQUESTED,
        lambda records: any(json.loads(r.value)["cashout_id"] == own for r in records),
    )
    sent = {json.loads(r.value)["cashout_id"] for r in records}
    assert own in sent
    assert other not in sent
    assert await _status(engine, other) == "held"
    async with engine.connect() as conn:
        waiting = await conn.execute(
            text(
                "SELECT topic, count(*) AS n FROM outbox WHERE topic_prefix = :prefix"
                " AND published_at IS NULL GROUP BY topic ORDER BY topic"
            ),
            {"prefix": other_prefix},
        )
        assert [(row.topic, row.n) for row in waiting] == [
            (topics.CASHOUTS_UPDATED, 2),  # requested, then held
            (topics.PAYOUTS_REQUESTED, 1),
        ]


async def test_holds_the_bank_has_not_answered_in_time_are_listed_as_stale(
    consumers: RunningConsumers,
    engine: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 2_000)
    cashout_id = await _request(consumers, engine, make.cashout_request(creator, 2_000))
    async with engine.connect() as conn:
        stale = await list_cashouts(conn, creator_id=creator, stale_after_s=0.001)
        assert [cashout.cashout_id for cashout in stale.cashouts] == [cashout_id]
        waiting = await list_cashouts(conn, creator_id=creator, stale_after_s=3_600)
        assert waiting.cashouts == []
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CASHOUT_ANSWER_WINDOW_S", "0.001")
    get_settings.cache_clear()
    try:
        code = await asyncio.to_thread(
            main, ["cashouts", "--stale", "--creator", creator, "--json"]
        )
    finally:
        get_settings.cache_clear()
    assert code == 1
    listed = json.loads(capsys.readouterr().out)["cashouts"]
    assert [(c["cashout_id"], c["payout_amount"]) for c in listed] == [(cashout_id, 1_000)]


def test_fx_rates_are_added_for_the_future_only(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        fx_add = ["rates", "fx-add", "--as", "finance-test", "EUR"]
        past = main([*fx_add, "0.92", "--effective-from", "2020-01-01T00:00:00Z"])
        future = f"{2100 + uuid.uuid4().int % 500}-01-01T00:00:00Z"
        added = main([*fx_add, "0.92", "--effective-from", future])
        not_a_number = main([*fx_add, "ninety", "--effective-from", future])
    finally:
        get_settings.cache_clear()
    assert (past, added, not_a_number) == (2, 0, 2)
    assert "EUR: 0.92 per USD" in capsys.readouterr().out


async def test_the_payout_rail_answers_and_the_cash_outs_end_paid(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    rail = simulated_rail(
        RailSettings(seed=7, paid_delay_ms=50, failure_rate=0, return_rate=0),
        consumers.bootstrap_servers,
        topic_prefix=consumers.prefix,
        consumer_group=f"rail-{consumers.prefix}",
        session_timeout_ms=6_000,
    )
    await rail.start()
    try:
        creator = await _eligible_creator_with(consumers, engine, 6_000)
        cashouts = [
            await _request(consumers, engine, make.cashout_request(creator, 2_000))
            for _ in range(3)
        ]
        for cashout_id in cashouts:
            await _until_status(engine, cashout_id, "paid")
    finally:
        await rail.stop()
    assert await _available(engine, creator) == 0
    # `submitted` is recorded when the publisher has sent the request; a fast bank may answer
    # before that, and then the cash-out goes from held straight to paid.
    assert (await _transitions(engine, cashouts[0]))[:2] == ["requested", "held"]
    assert (await _transitions(engine, cashouts[0]))[-1] == "paid"
