"""A profile's video views and posts are figures of the 30 days before its `occurred_at`: the
cash-out desk counts them for a request only when the profile is dated at most
`ELIGIBILITY_PROFILE_MAX_AGE_DAYS` (30) before the request's moment (the approval's, for a request
dated ahead of it). One request at a time and a batch of them decide alike, against the real
PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chart import AccountSpec
from ledger.service import Ledger
from schemas.events import CashoutRequested, CreatorUpdated
from services.cashout.desk import CashoutDesk, CashoutLimits, request_accounts
from services.cashout.profiles import apply_creator_updates
from services.rates.rate_cards import load_rate_cards
from services.runtime.settings import EligibilitySettings
from tests import event_factory as make

# A profile dated 120 days ago, and requests dated after it: within the 30 days, exactly at
# them, a second past them, and 92 days after. The creators hold nothing, so a request that
# passes every eligibility rule is refused for the balance.
PROFILE_AGE_BEFORE_NOW = timedelta(days=120)
REQUEST_AFTER_PROFILE = (
    timedelta(days=3),
    timedelta(days=30),
    timedelta(days=30, seconds=1),
    timedelta(days=92),
)
EXPECTED_RULES = ["available_balance", "available_balance", "video_views_30d", "video_views_30d"]


async def _profile_dated(engine: AsyncEngine, occurred_at: datetime) -> str:
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    profile = CreatorUpdated.model_validate_json(
        make.encode({**make.creator_update(creator), "occurred_at": occurred_at.isoformat()})
    )
    async with engine.begin() as conn:
        assert await apply_creator_updates(conn, [profile]) == 1
    return creator


def _request_at(creator: str, occurred_at: datetime) -> CashoutRequested:
    event = {**make.cashout_request(creator, 2_000), "occurred_at": occurred_at.isoformat()}
    return CashoutRequested.model_validate_json(make.encode(event))


async def _desk_and_accounts(
    engine: AsyncEngine, events: list[CashoutRequested], eligibility: EligibilitySettings
) -> tuple[CashoutDesk, Ledger, dict[str, int]]:
    ledger = Ledger(engine)
    specs: dict[str, AccountSpec] = {}
    for event in events:
        specs.update((spec.name, spec) for spec in request_accounts(event))
    account_ids = await ledger.account_ids(list(specs.values()))
    return CashoutDesk(CashoutLimits(), eligibility), ledger, account_ids


async def _one_at_a_time(
    engine: AsyncEngine,
    events: list[CashoutRequested],
    eligibility: EligibilitySettings | None = None,
) -> list[str | None]:
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    desk, ledger, account_ids = await _desk_and_accounts(
        engine, events, eligibility or EligibilitySettings()
    )
    rules: list[str | None] = []
    for event in events:
        async for tx in ledger.transactions(retry_count_max=0):
            async with tx:
                cashout = await desk.request(tx, event, rate_cards, account_ids)
        rules.append(cashout.rejected_rule)
    return rules


async def _in_one_batch(
    engine: AsyncEngine,
    events: list[CashoutRequested],
    eligibility: EligibilitySettings | None = None,
) -> list[str | None]:
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    desk, ledger, account_ids = await _desk_and_accounts(
        engine, events, eligibility or EligibilitySettings()
    )
    async for tx in ledger.transactions(retry_count_max=0):
        async with tx:
            cashouts = await desk.requests(tx, events, rate_cards, account_ids)
    return [cashout.rejected_rule for cashout in cashouts]


async def _stored_rules(engine: AsyncEngine, events: list[CashoutRequested]) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT cashout_id, rejected_rule FROM cashouts"
                " WHERE cashout_id = ANY(CAST(:ids AS text[]))"
            ),
            {"ids": [event.event_id for event in events]},
        )
        stored = {row.cashout_id: row.rejected_rule for row in rows}
    return [stored[event.event_id] for event in events]


async def test_one_request_at_a_time_counts_a_profile_of_at_most_30_days_before_it(
    engine: AsyncEngine,
) -> None:
    dated = datetime.now(UTC) - PROFILE_AGE_BEFORE_NOW
    creator = await _profile_dated(engine, dated)
    events = [_request_at(creator, dated + after) for after in REQUEST_AFTER_PROFILE]
    assert await _one_at_a_time(engine, events) == EXPECTED_RULES
    assert await _stored_rules(engine, events) == EXPECTED_RULES


async def test_a_batch_of_requests_counts_a_profile_of_at_most_30_days_before_each(
    engine: AsyncEngine,
) -> None:
    dated = datetime.now(UTC) - PROFILE_AGE_BEFORE_NOW
    # One creator's requests together, and each request of its own creator, in one batch.
    creator = await _profile_dated(engine, dated)
    same_creator = [_request_at(creator, dated + after) for after in REQUEST_AFTER_PROFILE]
    own_creators = [
        _request_at(await _profile_dated(engine, dated), dated + after)
        for after in REQUEST_AFTER_PROFILE
    ]
    events = [*same_creator, *own_creators]
    assert await _in_one_batch(engine, events) == EXPECTED_RULES * 2
    assert await _stored_rules(engine, events) == EXPECTED_RULES * 2


async def test_the_maximum_age_of_the_profile_is_the_desks_setting(engine: AsyncEngine) -> None:
    dated = datetime.now(UTC) - PROFILE_AGE_BEFORE_NOW
    creator = await _profile_dated(engine, dated)
    events = [_request_at(creator, dated + timedelta(days=days)) for days in (7, 8)]
    week = EligibilitySettings(profile_max_age_days=7)
    expected = ["available_balance", "video_views_30d"]
    assert await _one_at_a_time(engine, events, week) == expected
    batch = [_request_at(creator, dated + timedelta(days=days)) for days in (7, 8)]
    assert await _in_one_batch(engine, batch, week) == expected


async def test_a_request_dated_ahead_is_judged_when_it_is_approved(engine: AsyncEngine) -> None:
    """Dated 40 days ahead, 69 days after a profile of 29 days ago: the request is made no later
    than it is approved, 29 days after the profile, which then still counts."""
    now = datetime.now(UTC)
    creator = await _profile_dated(engine, now - timedelta(days=29))
    ahead = [_request_at(creator, now + timedelta(days=40))]
    assert await _one_at_a_time(engine, ahead) == ["available_balance"]
    assert await _in_one_batch(engine, [_request_at(creator, now + timedelta(days=40))]) == [
        "available_balance"
    ]
    # A profile of 31 days ago does not count for it.
    stale = await _profile_dated(engine, now - timedelta(days=31))
    assert await _in_one_batch(engine, [_request_at(stale, now + timedelta(days=40))]) == [
        "video_views_30d"
    ]
