"""End to end: events published to the real broker end up in the real ledger exactly once."""

from __future__ import annotations

import asyncio
import random
import re
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from confluent_kafka import Producer
from prometheus_client import start_http_server
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.queries import creator_balances
from ledger.verify import verify
from schemas import topics
from services.cashout.eligibility import creator_eligibility
from services.rates.rate_cards import add_rate_card, load_rate_cards
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import EligibilitySettings
from tests import event_factory as make
from tests.api_server import free_port
from tests.ingestion_fixtures import RunningConsumers, wait_until
from tests.ledger_helpers import ledger_problems, one_snapshot

REPLY_WAIT_S = 2.0
TRANSACTION_WAIT_S = 30.0


async def _balances(engine: AsyncEngine, creator_id: str) -> dict[str, int]:
    async with engine.connect() as conn:
        return {b.name.split(":", 2)[2]: b.posted for b in await creator_balances(conn, creator_id)}


async def _applied(engine: AsyncEngine, event_ids: list[str]) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM applied_events WHERE event_id = ANY(:ids)"),
                    {"ids": event_ids},
                )
            ).scalar_one()
        )


async def _publish_and_wait(
    consumers: RunningConsumers, engine: AsyncEngine, topic: str, events: list[dict[str, object]]
) -> None:
    for event in events:
        await consumers.publish(topic, event)
    ids = [str(event["event_id"]) for event in events]

    async def all_applied() -> bool:
        return await _applied(engine, ids) == len(set(ids))

    await wait_until(all_applied)


def _creator() -> str:
    return f"creator-{uuid.uuid4().hex[:10]}"


async def test_gifts_on_video_and_live_credit_half_their_coins_as_diamonds(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    events = [make.gift(creator, coins=10), make.gift(creator, coins=99, count=3, surface="live")]
    await _publish_and_wait(consumers, engine, topics.GIFTS_SENT, events)
    # (10 + 297) coins at 500 milli-diamonds per coin
    assert await _balances(engine, creator) == {"DIAMOND:available": 153_500}
    async with engine.connect() as conn:
        surfaces = (
            await conn.execute(
                text(
                    "SELECT metadata->>'surface', rate_card_version FROM transfers"
                    " WHERE event_id = ANY(:ids) AND code = 1 ORDER BY amount"
                ),
                {"ids": [e["event_id"] for e in events]},
            )
        ).all()
    assert [tuple(row) for row in surfaces] == [("video", 1), ("live", 1)]


async def test_tip_credits_the_creator_in_full_and_books_both_fees(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    await _publish_and_wait(
        consumers, engine, topics.TIPS_RECEIVED, [make.tip(creator, 500, 25, 30)]
    )
    assert await _balances(engine, creator) == {"USD:wallet": 500}
    async with engine.connect() as conn:
        fees: dict[str, int] = dict(
            (
                await conn.execute(
                    text(
                        "SELECT c.name, sum(t.amount) FROM transfers t"
                        " JOIN transfer_codes c ON c.code = t.code"
                        " JOIN accounts a ON a.id = t.credit_account_id"
                        " WHERE t.event_id IN (SELECT event_id FROM applied_events"
                        "   WHERE creator_id = :creator) GROUP BY c.name"
                    ),
                    {"creator": creator},
                )
            ).all()
        )
    assert fees == {"tip": 500, "tip_fan_fee": 25, "tip_processor_fee": 30}


async def test_fund_rewards_and_marketplace_payments_land_in_currency_wallets(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    await _publish_and_wait(
        consumers, engine, topics.FUND_REWARDED, [make.fund_reward(creator, 2_500)]
    )
    await _publish_and_wait(
        consumers,
        engine,
        topics.MARKETPLACE_PAID,
        [make.marketplace_payment(creator, 10_000, 2_000)],
    )
    assert await _balances(engine, creator) == {"EUR:wallet": 2_500, "GBP:wallet": 8_000}


async def test_a_redelivered_gift_credits_diamonds_once(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    gift = make.gift(creator, coins=4)
    duplicates_before = consumers.ingestor.counts.duplicates
    await _publish_and_wait(consumers, engine, topics.GIFTS_SENT, [gift, gift, gift])

    async def counted() -> bool:
        return consumers.ingestor.counts.duplicates >= duplicates_before + 2

    await wait_until(counted)
    assert await _balances(engine, creator) == {"DIAMOND:available": 2_000}


async def test_reversal_after_its_gift_claws_the_diamonds_back_even_below_zero(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    big, small = make.gift(creator, coins=100), make.gift(creator, coins=2)
    await _publish_and_wait(consumers, engine, topics.GIFTS_SENT, [big])
    await _publish_and_wait(
        consumers, engine, topics.GIFTS_REVERSED, [make.reversal(creator, str(big["event_id"]))]
    )
    assert await _balances(engine, creator) == {"DIAMOND:available": 0}
    await _publish_and_wait(consumers, engine, topics.GIFTS_SENT, [small])
    assert await _balances(engine, creator) == {"DIAMOND:available": 1_000}


async def test_reversal_before_its_gift_waits_for_it(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    gift = make.gift(creator, coins=6)
    early = make.reversal(creator, str(gift["event_id"]))
    await consumers.publish(topics.GIFTS_REVERSED, early)

    async def parked() -> bool:
        async with engine.connect() as conn:
            count = await conn.execute(
                text("SELECT count(*) FROM parked_events WHERE event_id = :id"),
                {"id": early["event_id"]},
            )
            return bool(count.scalar_one() == 1)

    await wait_until(parked)
    await _publish_and_wait(consumers, engine, topics.GIFTS_SENT, [gift])
    await wait_until(lambda: _applied_one(engine, str(early["event_id"])))
    assert await _balances(engine, creator) == {"DIAMOND:available": 0}


async def _applied_one(engine: AsyncEngine, event_id: str) -> bool:
    return await _applied(engine, [event_id]) == 1


async def test_the_ledger_verifies_after_ingestion(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    assert await ledger_problems(engine) == []
    assert consumers.ingestor.counts.balanced()


async def test_creator_updates_feed_the_eligibility_rules(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    older = make.creator_update(creator, followers=25_000)
    newer = {**make.creator_update(creator, followers=900), "occurred_at": "2099-01-01T00:00:00Z"}
    await _publish_and_wait(consumers, engine, topics.CREATORS_UPDATED, [newer, older])
    async with engine.connect() as conn:
        report = await creator_eligibility(conn, creator, EligibilitySettings())
    assert report.first_failed_rule == "followers"
    assert [rule.seen for rule in report.rules if rule.rule == "followers"] == ["900"]


async def test_prometheus_metrics_count_what_the_consumers_did(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    await _publish_and_wait(consumers, engine, topics.GIFTS_SENT, [make.gift(_creator())])
    port = free_port()
    start_http_server(port, addr="127.0.0.1")
    body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    applied = re.search(r'giftledger_events_applied_total\{topic="gifts.sent"\} (\d+)', body)
    assert applied is not None
    assert float(applied.group(1)) >= 1
    assert "giftledger_batch_commit_seconds_bucket" in body
    assert "giftledger_events_consumed_total" in body


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return str(response.read().decode())


async def test_a_gift_is_priced_by_the_rate_card_in_force_when_it_occurred(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    start = datetime(2090, 1, 1, tzinfo=UTC) + timedelta(minutes=random.randint(0, 10**6))
    async with engine.begin() as conn:
        card = await add_rate_card(
            conn,
            effective_from=start,
            milli_diamonds_per_coin=700,
            diamonds_per_usd=200,
            created_by="ingestion-test",
        )
    async with engine.connect() as conn:
        consumers.ingestor.rate_cards = await load_rate_cards(conn)
    creator = _creator()
    before = make.gift(creator, coins=10)
    after = {**make.gift(creator, coins=10), "occurred_at": (start + timedelta(days=1)).isoformat()}
    await _publish_and_wait(consumers, engine, topics.GIFTS_SENT, [before, after])
    assert await _balances(engine, creator) == {"DIAMOND:available": 10 * 500 + 10 * 700}
    async with one_snapshot(engine) as conn:
        versions = await conn.execute(
            text("SELECT rate_card_version FROM transfers WHERE event_id = :id AND code = 1"),
            {"id": after["event_id"]},
        )
        assert versions.scalar_one() == card.version
        assert await verify(conn) == []


async def test_gifts_and_cash_outs_are_fetched_with_short_waits_and_the_others_with_a_longer_one(
    consumers: RunningConsumers,
) -> None:
    settings = consumers.service.settings
    waits = {
        topic: subscriber.consumer._fetch_max_wait_ms
        for topic, subscriber in consumers.service._subscribers.items()
    }
    assert waits.pop(topics.GIFTS_SENT) == settings.consumer_gift_fetch_wait_ms_max == 20
    cashout_wait_ms = settings.consumer_cashout_fetch_wait_ms_max
    assert waits.pop(topics.CASHOUTS_REQUESTED) == cashout_wait_ms == 50
    assert waits.pop(topics.PAYOUTS_UPDATED) == cashout_wait_ms
    assert len(waits) == len(consumers.service.topics) - 3
    assert set(waits.values()) == {settings.consumer_fetch_wait_ms_max} == {200}


async def test_a_reply_to_header_makes_the_consumers_publish_nothing(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    """An upstream record's `reply_to` header names a topic; FastStream answered each batch
    there with the handler's result (an empty record), so an upstream chose where giftledger
    wrote: another service's topic, or giftledger's own input, where the answer came back as
    a record no upstream sent. Nothing is published there now."""
    trap = f"{consumers.prefix}reply-trap"
    await create_topics(consumers.bootstrap_servers, [trap], 1)
    own_input = consumers.prefix + topics.TIPS_RECEIVED
    creator = _creator()
    gifts = [make.gift(creator, coins=2) for _ in range(3)]
    tip = make.tip(creator, 1_000)
    await consumers.publish(topics.GIFTS_SENT, gifts[0], headers=[("reply_to", trap.encode())])
    await consumers.publish(topics.TIPS_RECEIVED, tip, headers=[("reply_to", own_input.encode())])
    await consumers.publish(topics.GIFTS_SENT, gifts[1], headers=[("reply_to", own_input.encode())])
    # The gift after them on their partition (one creator, one key) is applied once their
    # batches' handlers have returned, when an answer would have been sent.
    await _publish_and_wait(consumers, engine, topics.GIFTS_SENT, gifts[2:])
    await _publish_and_wait(consumers, engine, topics.TIPS_RECEIVED, [make.tip(creator, 10)])
    await asyncio.sleep(REPLY_WAIT_S)
    assert await _records_of(consumers.bootstrap_servers, trap) == []
    tips = await _records_of(consumers.bootstrap_servers, own_input)
    assert [record for record in tips if not record.value] == []


async def _records_of(bootstrap_servers: str, topic: str) -> list[Any]:
    """Every record of `topic` read within `REPLY_WAIT_S` from its start."""
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await reader.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + REPLY_WAIT_S
        while time.monotonic() < deadline:
            for batch in (await reader.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await reader.stop()
    return records


def _publish_in_transactions(
    bootstrap_servers: str, topic: str, key: bytes, aborted: bytes, committed: bytes
) -> None:
    """One record in a transaction that aborts, then one in a transaction that commits, from
    librdkafka's transactional producer, as an exactly-once upstream writes."""
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "transactional.id": f"up-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(TRANSACTION_WAIT_S)
    producer.begin_transaction()
    producer.produce(topic, value=aborted, key=key)
    assert producer.flush(TRANSACTION_WAIT_S) == 0
    producer.abort_transaction(TRANSACTION_WAIT_S)
    producer.begin_transaction()
    producer.produce(topic, value=committed, key=key)
    producer.commit_transaction(TRANSACTION_WAIT_S)


async def test_the_consumers_apply_what_upstream_transactions_committed_and_only_that(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    """The consumers read committed records only: a transactional upstream's aborted gift is not
    applied where the broker tells it apart (Kafka does; the embedded broker does not, and
    a read_committed reader sees it there too), and its committed one is."""
    levels = {
        subscriber.consumer._isolation_level
        for subscriber in consumers.service._subscribers.values()
    }
    assert levels == {"read_committed"}
    creator = _creator()
    aborted, committed = make.gift(creator, coins=1_000), make.gift(creator, coins=2)
    topic = consumers.prefix + topics.GIFTS_SENT
    await asyncio.to_thread(
        _publish_in_transactions,
        consumers.bootstrap_servers,
        topic,
        creator.encode(),
        make.encode(aborted),
        make.encode(committed),
    )
    await wait_until(lambda: _applied_bool(engine, [committed["event_id"]]))
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=consumers.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
    )
    await reader.start()
    seen: set[bytes] = set()
    try:
        deadline = time.monotonic() + REPLY_WAIT_S
        while time.monotonic() < deadline:
            for batch in (await reader.getmany(timeout_ms=200)).values():
                seen.update(record.value for record in batch if record.key == creator.encode())
    finally:
        await reader.stop()
    aborted_seen = make.encode(aborted) in seen
    assert await _applied(engine, [aborted["event_id"]]) == int(aborted_seen)


async def _applied_bool(engine: AsyncEngine, event_ids: list[str]) -> bool:
    return await _applied(engine, event_ids) == len(event_ids)
