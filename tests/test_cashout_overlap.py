"""Two consumers deciding the same batch of payout results at once, as in a rebalance (the old
owner still applying the batch that the new owner reads from the committed offsets): each
record ends applied or dead-lettered, never both, whichever consumer decided it."""

from __future__ import annotations

import asyncio
import json
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
from tests.console_http import Feed, new_creator_id
from tests.ingestion_fixtures import make_ingestor

OVERLAPS = 4  # the race showed in 4 of 5 tries before the fix


async def test_a_result_decided_by_one_consumer_is_not_decided_again_by_another(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    for _ in range(OVERLAPS):
        old_owner = await Feed.on(engine)
        new_owner = make_ingestor(engine, rate_cards)
        creator = await old_owner.eligible_creator(new_creator_id("overlap"), 3_000)
        cashout_id = await old_owner.held_cashout(creator, 2_000)
        # Out of order for a held cash-out: `returned` is refused (it was never paid), `paid`
        # applied; decided again after `paid`, `returned` would be applied instead.
        returned = make.payout_update(cashout_id, "returned", failure_code="R01")
        paid = make.payout_update(cashout_id, "paid")
        offset = uuid.uuid4().int % 2**40
        batch = [
            InputRecord(
                topics.PAYOUTS_UPDATED, 3, offset + index, creator.encode(), json.dumps(e).encode()
            )
            for index, e in enumerate((returned, paid))
        ]
        first, second = await asyncio.gather(
            old_owner.ingestor.process(topics.PAYOUTS_UPDATED, batch),
            new_owner.process(topics.PAYOUTS_UPDATED, batch),
        )
        ids = [returned["event_id"], paid["event_id"]]
        async with engine.connect() as conn:
            both = (
                await conn.execute(
                    text(
                        "SELECT a.event_id FROM applied_events a JOIN dead_letters d"
                        " ON d.event_id = a.event_id AND d.topic = a.topic"
                        " AND d.topic_prefix = '' WHERE a.topic = :topic"
                        " AND a.event_id = ANY(:ids)"
                    ),
                    {"topic": topics.PAYOUTS_UPDATED, "ids": ids},
                )
            ).all()
            status = await conn.scalar(
                text("SELECT status FROM cashouts WHERE cashout_id = :id"), {"id": cashout_id}
            )
        assert both == []
        assert status == "paid"
        # Both consumers give the same verdicts: `returned` dead-lettered, `paid` applied once.
        for report in (first, second):
            assert [letter.event_id for letter in report.dead_letters] == [returned["event_id"]]
        assert first.applied + second.applied == 1
