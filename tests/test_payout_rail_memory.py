"""The payout rail's duplicate check stays small: it remembers at most `seen_cashouts_max`
cash-outs, and a cash-out whose reports are all sent is remembered without its request. Against
the session's broker, on topics of this module's own."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from schemas import topics
from schemas.events import PayoutRequested
from services.payout_rail.rail import PayoutRailService, RailSettings, SimulatedBank
from services.runtime.embedded_broker import create_topics

PARTITION_COUNT = 2
SESSION_TIMEOUT_MS = 6_000
WAIT_S = 60.0
CASHOUT_COUNT = 120
SEEN_MAX = 50
IN_FLIGHT_MAX = 10
SETTINGS = RailSettings(seed=3, paid_delay_ms=10, failure_rate=0.0, return_rate=0.0)


def request_value(cashout_id: str, index: int, amount: int) -> bytes:
    """A request's bytes, built without a `PayoutRequested` object in the test's hands."""
    return json.dumps(
        {
            "event_id": f"payout-request-{cashout_id}",
            "occurred_at": f"2026-11-03T18:{index // 60:02d}:{index % 60:02d}Z",
            "cashout_id": cashout_id,
            "creator_id": f"creator-{index % 7}",
            "amount": amount,
            "currency": "USD",
            "payout_account_ref": f"pa_{index:04d}x",
        }
    ).encode()


def requests_held(prefix: str) -> int:
    """`PayoutRequested` objects alive in this process for the cash-outs named `prefix...`."""
    gc.collect()
    return sum(
        1
        for item in gc.get_objects()
        if isinstance(item, PayoutRequested) and item.cashout_id.startswith(prefix)
    )


async def wait_until(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_S} s")
        await asyncio.sleep(0.05)


async def test_finished_cash_outs_are_remembered_without_their_requests(
    kafka_bootstrap: str,
) -> None:
    prefix = f"railmem{uuid.uuid4().hex[:8]}."
    requests_topic = prefix + topics.PAYOUTS_REQUESTED
    reports_topic = prefix + topics.PAYOUTS_UPDATED
    await create_topics(kafka_bootstrap, [requests_topic, reports_topic], PARTITION_COUNT)
    rail = PayoutRailService(
        SimulatedBank(SETTINGS),
        kafka_bootstrap,
        topic_prefix=prefix,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        in_flight_max=IN_FLIGHT_MAX,
        seen_cashouts_max=SEEN_MAX,  # a small bound, so that the test goes past it
    )
    ids = [f"{prefix}cashout-{index:04d}" for index in range(CASHOUT_COUNT)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=2)
    reader = AIOKafkaConsumer(
        reports_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await producer.start()
    await reader.start()
    await rail.start()
    try:
        await wait_until(
            lambda: rail.assigned_partition_count() == PARTITION_COUNT, "partitions assigned"
        )
        for index, cashout_id in enumerate(ids):
            value = request_value(cashout_id, index, 1_000 + index)
            await producer.send_and_wait(requests_topic, value=value, key=b"k")
            assert rail.remembered_count <= SEEN_MAX
        await wait_until(lambda: rail.reports_sent == CASHOUT_COUNT, "every cash-out reported")
        await wait_until(lambda: rail.in_flight_count == 0, "nothing in flight")
        assert rail.remembered_count == SEEN_MAX
        # The remembered cash-outs keep no request: none of them is alive any more.
        assert requests_held(prefix) == 0

        # A remembered cash-out sent again, with its payload or another, is not paid twice.
        last = len(ids) - 1
        await producer.send_and_wait(
            requests_topic, value=request_value(ids[last], last, 1_000 + last), key=b"k"
        )
        await producer.send_and_wait(
            requests_topic, value=request_value(ids[last - 1], last - 1, 7), key=b"k"
        )
        bank = SimulatedBank(SETTINGS)
        expected = sum(len(bank.outcomes_for(cashout_id)) for cashout_id in ids)
        received = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            batches = await reader.getmany(timeout_ms=200)
            received += sum(len(batch) for batch in batches.values())
        assert received == expected
        assert rail.reports_sent == CASHOUT_COUNT
        assert rail.remembered_count == SEEN_MAX
    finally:
        await rail.stop()
        await reader.stop()
        await producer.stop()
