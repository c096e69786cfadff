"""Operator actions end to end on the real broker: the running service's outbox relay publishes
each action on `operator.actions`, keyed by its creator, with the hash the log holds; a frozen
creator's cash-out request read from Kafka is rejected `frozen` while their gifts still credit."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.service import Ledger
from schemas import topics
from schemas.events import OperatorActionRecorded
from services.operator.desk import OperatorDesk
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, wait_until
from tests.operator_helpers import assert_books_sound, new_creator, new_key

WRITER = "giftledger_writer"


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one_or_none()


async def _available(engine: AsyncEngine, creator: str) -> int:
    value = await _scalar(
        engine,
        "SELECT credits_posted - debits_posted - debits_pending FROM accounts WHERE name = :name",
        name=f"creator:{creator}:DIAMOND:available",
    )
    return int(value or 0)


async def _until_available(engine: AsyncEngine, creator: str, milli_diamonds: int) -> None:
    async def reached() -> bool:
        return await _available(engine, creator) == milli_diamonds

    await wait_until(reached)


async def test_actions_are_published_keyed_by_creator_and_a_frozen_creator_cannot_cash_out(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = new_creator()
    await consumers.publish(topics.CREATORS_UPDATED, make.creator_update(creator))
    await consumers.publish(topics.GIFTS_SENT, make.gift(creator, coins=2, count=5_000))
    await _until_available(engine, creator, 5_000_000)

    desk = OperatorDesk(Ledger(engine), topic_prefix=consumers.prefix, database_role=WRITER)
    frozen = await desk.set_frozen(
        creator, frozen=True, idempotency_key=new_key(), actor="alice", reason="fraud", ticket=None
    )
    proposed = await desk.propose_adjustment(
        idempotency_key=new_key(),
        actor="alice",
        creator_id=creator,
        asset="DIAMOND",
        amount_minor=-1_000,
        reason="duplicate gift credited by hand",
        ticket="OPS-9",
    )
    approved = await desk.approve_adjustment(
        proposed.adjustment.id, idempotency_key=new_key(), actor="bob"
    )
    assert frozen.action is not None
    action_ids = [frozen.action.id, proposed.action.id, approved.action.id]

    request = make.cashout_request(creator, 2_000)
    await consumers.publish(topics.CASHOUTS_REQUESTED, request)
    await consumers.publish(topics.GIFTS_SENT, make.gift(creator, coins=2, count=3))

    async def decided() -> bool:
        status = await _scalar(
            engine, "SELECT status FROM cashouts WHERE cashout_id = :id", id=request["event_id"]
        )
        return status not in (None, "requested")

    await wait_until(decided)
    rule = await _scalar(
        engine,
        "SELECT rejected_rule FROM cashouts WHERE cashout_id = :id",
        id=request["event_id"],
    )
    assert rule == "frozen"
    await _until_available(engine, creator, 5_000_000 - 1_000 + 3_000)

    wanted = {f"operator-action:{action_id}" for action_id in action_ids}

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if json.loads(r.value)["event_id"] in wanted]

    records = mine(
        await consumers.read_topic_until(
            topics.OPERATOR_ACTIONS, lambda read: len({r.value for r in mine(read)}) == 3
        )
    )
    events = {}
    for record in records:
        assert record.key == creator.encode()
        event = OperatorActionRecorded.model_validate_json(record.value)
        events[event.action_id] = event
    assert sorted(events) == sorted(action_ids)
    assert [events[action_id].action for action_id in action_ids] == [
        "creator_frozen",
        "adjustment_proposed",
        "adjustment_approved",
    ]
    for action_id, event in events.items():
        stored = await _scalar(
            engine, "SELECT encode(hash, 'hex') FROM operator_actions WHERE id = :id", id=action_id
        )
        assert event.hash == stored
    assert events[approved.action.id].details == {
        "adjustment_id": proposed.adjustment.id,
        "asset": "DIAMOND",
        "amount_minor": -1_000,
    }
    await assert_books_sound(engine)
