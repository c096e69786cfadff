"""The payout rail: the simulated bank's outcomes as a pure function, and the service against a
real broker (the session's `kafka_bootstrap`), on topics with a prefix of this module's own."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from pydantic import ValidationError

from schemas import topics
from schemas.events import ID_LENGTH_MAX, PayoutRequested, PayoutUpdated
from schemas.payout_cancel import PayoutCancelRequested
from services.app.bootstrap import build_payout_rail
from services.payout_rail.rail import (
    DEFAULT_FAILURE_CODES,
    DEFAULT_RETURN_CODES,
    PayoutOutcome,
    PayoutRailService,
    RailSettings,
    SimulatedBank,
    build_cancel_report,
    build_report,
    report_event_id,
    simulated_rail,
)
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import Settings

PARTITION_COUNT = 4
SESSION_TIMEOUT_MS = 6_000
ASSIGNMENT_WAIT_S = 30.0
RECEIVE_WAIT_S = 30.0
QUIET_S = 1.0
STARTED_AT = datetime(2026, 11, 3, 18, 0, tzinfo=UTC)

# High rates so that 20 cash-outs include failures and returns; fixed ids and seed make it sure.
E2E_SETTINGS = RailSettings(
    seed=11,
    paid_delay_ms=100,
    failure_rate=0.3,
    return_rate=0.3,
    return_delay_ms=300,
    failure_codes=("account_closed", "AC04"),
    return_codes=("R01",),
)


def cashout_ids(count: int, start: int = 0) -> list[str]:
    return [f"cashout-{index:05d}" for index in range(start, start + count)]


def payout_request(cashout_id: str, index: int) -> PayoutRequested:
    return PayoutRequested(
        event_id=f"payout-request-{cashout_id}",
        occurred_at=STARTED_AT + timedelta(seconds=index),
        cashout_id=cashout_id,
        creator_id=f"creator-{index % 5}",
        amount=1_000 + index,
        currency="USD",
        payout_account_ref=f"pa_{index:04d}x",
    )


# --- the simulated bank, no broker -------------------------------------------------------------


def test_outcomes_are_deterministic_under_a_seed() -> None:
    ids = cashout_ids(200)
    settings = RailSettings(seed=7, failure_rate=0.3, return_rate=0.3)
    first = [SimulatedBank(settings).outcomes_for(cashout_id) for cashout_id in ids]
    again = [SimulatedBank(settings).outcomes_for(cashout_id) for cashout_id in reversed(ids)]
    other_seed = RailSettings(seed=8, failure_rate=0.3, return_rate=0.3)
    other = [SimulatedBank(other_seed).outcomes_for(cashout_id) for cashout_id in ids]
    assert first == list(reversed(again))
    assert first != other
    differing = sum(1 for mine, theirs in zip(first, other, strict=True) if mine != theirs)
    assert differing >= 50, differing


async def test_submit_answers_what_outcomes_for_says() -> None:
    bank = SimulatedBank(E2E_SETTINGS)
    request = payout_request("cashout-submit", 0)
    assert await bank.submit(request) == bank.outcomes_for("cashout-submit")


@pytest.mark.parametrize(
    ("failure_rate", "return_rate"), [(0.05, 0.02), (0.3, 0.2), (0.0, 0.0), (1.0, 0.0)]
)
def test_failure_and_return_rates_are_roughly_respected(
    failure_rate: float, return_rate: float
) -> None:
    count = 2_000
    settings = RailSettings(
        seed=3,
        paid_delay_ms=250,
        return_delay_ms=4_000,
        failure_rate=failure_rate,
        return_rate=return_rate,
    )
    bank = SimulatedBank(settings)
    kinds: Counter[str] = Counter()
    for cashout_id in cashout_ids(count):
        outcomes = bank.outcomes_for(cashout_id)
        kind = "/".join(outcome.status for outcome in outcomes)
        kinds[kind] += 1
        if kind == "failed":
            assert outcomes == [PayoutOutcome("failed", outcomes[0].failure_code, 250)]
            assert outcomes[0].failure_code in DEFAULT_FAILURE_CODES
        elif kind == "paid/returned":
            assert outcomes[0] == PayoutOutcome("paid", None, 250)
            assert outcomes[1].delay_ms == 4_250
            assert outcomes[1].failure_code in DEFAULT_RETURN_CODES
        else:
            assert outcomes == [PayoutOutcome("paid", None, 250)]
    assert set(kinds) <= {"paid", "failed", "paid/returned"}
    # Within about 4.5 standard deviations of a binomial count (and exact at rates 0 and 1).
    for kind, rate in (("failed", failure_rate), ("paid/returned", return_rate)):
        expected = count * rate
        spread = 4.5 * (count * rate * (1 - rate)) ** 0.5
        assert abs(kinds[kind] - expected) <= spread, (kind, kinds[kind], expected)


def test_failure_codes_are_drawn_from_all_configured() -> None:
    bank = SimulatedBank(RailSettings(seed=5, failure_rate=0.5, return_rate=0.5))
    failure_codes: set[str | None] = set()
    return_codes: set[str | None] = set()
    for cashout_id in cashout_ids(500):
        outcomes = bank.outcomes_for(cashout_id)
        if outcomes[-1].status == "failed":
            failure_codes.add(outcomes[-1].failure_code)
        else:
            return_codes.add(outcomes[-1].failure_code)
    assert failure_codes == set(DEFAULT_FAILURE_CODES)
    assert return_codes == set(DEFAULT_RETURN_CODES)


@pytest.mark.parametrize(
    "values",
    [
        {"failure_rate": 0.7, "return_rate": 0.4},
        {"failure_rate": -0.1},
        {"return_rate": 1.5},
        {"paid_delay_ms": -1},
        {"paid_delay_ms": 600_001},
        {"failure_codes": ()},
        {"return_codes": ("has space",)},
        {"failure_codes": ("x" * 65,)},
        {"surprise": 1},
    ],
)
def test_settings_out_of_bounds_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RailSettings(**values)


def test_reports_are_deterministic_and_valid() -> None:
    request = payout_request("cashout-report", 3)
    outcome = PayoutOutcome("returned", "R01", 1_500)
    first = build_report(request, outcome).model_dump_json()
    assert first == build_report(request, outcome).model_dump_json()
    report = PayoutUpdated.model_validate_json(first)
    assert report.event_id == "rail:returned:cashout-report"
    assert report.occurred_at == request.occurred_at + timedelta(milliseconds=1_500)
    assert report.failure_code == "R01"
    long_id = "c" * ID_LENGTH_MAX
    ids = {report_event_id(long_id, status) for status in ("paid", "failed", "returned")}
    assert len(ids) == 3
    assert all(len(event_id) <= ID_LENGTH_MAX for event_id in ids)
    assert report_event_id(long_id, "paid") != report_event_id("c" * (ID_LENGTH_MAX - 1), "paid")
    with pytest.raises(ValueError, match="failure_code"):
        PayoutOutcome("paid", "R01", 0)
    with pytest.raises(ValueError, match="failure_code"):
        PayoutOutcome("failed", None, 0)


# --- the service, against the broker -----------------------------------------------------------


@dataclass
class RailTopics:
    bootstrap_servers: str
    prefix: str
    producer: Any

    async def publish(self, value: bytes, key: str) -> None:
        await self.producer.send_and_wait(
            self.prefix + topics.PAYOUTS_REQUESTED, value=value, key=key.encode()
        )

    async def publish_request(self, request: PayoutRequested) -> None:
        await self.publish(request.model_dump_json().encode(), request.creator_id)

    def reader(self) -> ReportReader:
        return ReportReader(self.bootstrap_servers, self.prefix + topics.PAYOUTS_UPDATED)

    def rail(self, settings: RailSettings, group: str, **options: Any) -> PayoutRailService:
        return simulated_rail(
            settings,
            self.bootstrap_servers,
            topic_prefix=self.prefix,
            consumer_group=group,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            **options,
        )


class ReportReader:
    """Every record of the reports topic from its start, read without a consumer group."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self.records: list[Any] = []

    async def __aenter__(self) -> ReportReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.consumer.stop()

    async def read_until(self, done: Callable[[list[Any]], bool], timeout_s: float) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.records)} reports within {timeout_s} s")
            await self.drain(0.2)
        return self.records

    async def drain(self, timeout_s: float) -> list[Any]:
        batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000))
        for batch in batches.values():
            self.records.extend(batch)
        return self.records

    def reports(self) -> list[tuple[str, PayoutUpdated]]:
        return [
            (record.key.decode(), PayoutUpdated.model_validate_json(record.value))
            for record in self.records
        ]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rail_topics(kafka_bootstrap: str) -> AsyncIterator[RailTopics]:
    prefix = f"rail{uuid.uuid4().hex[:8]}."
    names = [prefix + topics.PAYOUTS_REQUESTED, prefix + topics.PAYOUTS_UPDATED]
    await create_topics(kafka_bootstrap, names, PARTITION_COUNT)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        yield RailTopics(kafka_bootstrap, prefix, producer)
    finally:
        await producer.stop()


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


async def committed_total(bootstrap_servers: str, group_id: str, topic: str) -> int:
    """The sum over a topic's partitions of the group's committed offsets (records done).

    Read through a consumer of the group with a manual assignment, which does not join the group
    (Tansu answers the admin client's OffsetFetch in a form aiokafka cannot decode)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, number) for number in range(PARTITION_COUNT)]
        consumer.assign(partitions)
        offsets = [await consumer.committed(partition) for partition in partitions]
    finally:
        await consumer.stop()
    return sum(offset for offset in offsets if offset is not None and offset > 0)


async def wait_for_commits(rail: PayoutRailService, expected: int) -> None:
    deadline = time.monotonic() + RECEIVE_WAIT_S
    while True:
        total = await committed_total(rail.bootstrap_servers, rail.group_id, rail.requests_topic)
        if total == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"committed {total} records, expected {expected}")
        await asyncio.sleep(0.2)


def kind_of(statuses: list[str]) -> str:
    return "/".join(statuses)


async def test_the_rail_fetches_payout_requests_with_the_cash_out_topics_wait(
    rail_topics: RailTopics,
) -> None:
    """`giftledger run --payout-rail` builds the bank with the cash-out topics' fetch wait, not
    aiokafka's 500 ms, which the embedded broker would hold a payout request for."""
    settings = Settings(
        kafka_topic_prefix=rail_topics.prefix,
        kafka_consumer_group=f"wait{uuid.uuid4().hex[:8]}",
        kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
        consumer_cashout_fetch_wait_ms_max=37,
    )
    rail = build_payout_rail(settings, rail_topics.bootstrap_servers)
    await rail.start()
    try:
        assert rail._consumer._fetch_max_wait_ms == 37
    finally:
        await rail.stop()
    # Built without the settings (the benches' bank), the rail waits as long as their default.
    setting_default = Settings.model_fields["consumer_cashout_fetch_wait_ms_max"].default
    rail_default = simulated_rail(E2E_SETTINGS, rail_topics.bootstrap_servers)._fetch_wait_ms_max
    assert rail_default == setting_default == 50


async def test_each_cash_out_gets_exactly_its_terminal_reports(rail_topics: RailTopics) -> None:
    bank = SimulatedBank(E2E_SETTINGS)
    ids = cashout_ids(20)
    requests = [payout_request(cashout_id, index) for index, cashout_id in enumerate(ids)]
    expected = {cashout_id: bank.outcomes_for(cashout_id) for cashout_id in ids}
    kinds = {kind_of([outcome.status for outcome in outcomes]) for outcomes in expected.values()}
    assert kinds == {"paid", "failed", "paid/returned"}, "the fixed seed must cover every kind"
    expected_count = sum(len(outcomes) for outcomes in expected.values())

    rail = rail_topics.rail(E2E_SETTINGS, f"g-{uuid.uuid4().hex[:8]}")
    assert rail.group_id.endswith(".payout-rail")
    await rail.start()
    try:
        await wait_for(
            lambda: rail.assigned_partition_count() == PARTITION_COUNT,
            ASSIGNMENT_WAIT_S,
            "partitions assigned",
        )
        async with rail_topics.reader() as reader:
            for request in requests:
                await rail_topics.publish_request(request)
            # The outbox sending one twice, while its reports are still scheduled.
            await rail_topics.publish_request(requests[0])
            await rail_topics.publish(b'{"cashout_id": "half a request"', key="creator-0")
            await reader.read_until(lambda records: len(records) >= expected_count, RECEIVE_WAIT_S)

            # A redelivery after its reports went out; the sentinel behind it on the same
            # partition (same key) shows when the rail has read past it.
            await rail_topics.publish_request(requests[1])
            sentinel = payout_request("cashout-sentinel", 21)
            sentinel = sentinel.model_copy(update={"creator_id": requests[1].creator_id})
            await rail_topics.publish_request(sentinel)
            sentinel_count = len(bank.outcomes_for(sentinel.cashout_id))
            await reader.read_until(
                lambda records: len(records) >= expected_count + sentinel_count, RECEIVE_WAIT_S
            )
            await asyncio.sleep(E2E_SETTINGS.return_delay_ms / 1000 + QUIET_S)
            await reader.drain(0.5)
            received = reader.reports()

        expected[sentinel.cashout_id] = bank.outcomes_for(sentinel.cashout_id)
        creators = {request.cashout_id: request.creator_id for request in [*requests, sentinel]}
        origins = {request.cashout_id: request for request in [*requests, sentinel]}
        assert len(received) == expected_count + sentinel_count
        by_cashout: dict[str, list[PayoutUpdated]] = {}
        for key, report in received:
            assert key == creators[report.cashout_id]
            by_cashout.setdefault(report.cashout_id, []).append(report)
        assert set(by_cashout) == set(expected)
        for cashout_id, reports in by_cashout.items():
            outcomes = expected[cashout_id]
            # One creator's reports share a partition, so they arrive in the order sent.
            assert [(r.status, r.failure_code) for r in reports] == [
                (o.status, o.failure_code) for o in outcomes
            ]
            for report, outcome in zip(reports, outcomes, strict=True):
                assert report.event_id == report_event_id(cashout_id, outcome.status)
                assert report == build_report(origins[cashout_id], outcome)
            codes = {report.failure_code for report in reports} - {None}
            if outcomes[-1].status == "failed":
                assert codes <= set(E2E_SETTINGS.failure_codes)
            elif outcomes[-1].status == "returned":
                assert codes <= set(E2E_SETTINGS.return_codes)
        assert rail.reports_sent == len(received)
        assert rail.in_flight_count == 0
        # 20 requests, a duplicate, a malformed record, a late duplicate and the sentinel.
        await wait_for_commits(rail, 24)
    finally:
        await rail.stop()


async def test_stop_cancels_pending_reports_and_their_requests_come_again(
    rail_topics: RailTopics,
) -> None:
    # Its own topics: the records of the test above would be consumed by a fresh group too.
    prefix = f"rail{uuid.uuid4().hex[:8]}."
    names = [prefix + topics.PAYOUTS_REQUESTED, prefix + topics.PAYOUTS_UPDATED]
    await create_topics(rail_topics.bootstrap_servers, names, PARTITION_COUNT)
    own = RailTopics(rail_topics.bootstrap_servers, prefix, rail_topics.producer)
    group = f"g-{uuid.uuid4().hex[:8]}"
    requests = [payout_request(cashout_id, 0) for cashout_id in cashout_ids(3, start=100)]
    slow = RailSettings(seed=1, paid_delay_ms=60_000, failure_rate=0.0, return_rate=0.0)
    fast = slow.model_copy(update={"paid_delay_ms": 50})

    rail = own.rail(slow, group, in_flight_max=2)
    await rail.start()
    try:
        await wait_for(
            lambda: rail.assigned_partition_count() == PARTITION_COUNT,
            ASSIGNMENT_WAIT_S,
            "partitions assigned",
        )
        for request in requests:  # one creator: one partition, taken in order
            await own.publish_request(request)
        await wait_for(lambda: rail.in_flight_count == 2, RECEIVE_WAIT_S, "two in flight")
        await asyncio.sleep(QUIET_S)
        assert rail.in_flight_count == 2, "fetching goes on past in_flight_max"
    finally:
        await rail.stop()
    assert rail.reports_sent == 0
    assert await committed_total(own.bootstrap_servers, rail.group_id, rail.requests_topic) == 0

    again = own.rail(fast, group)
    await again.start()
    try:
        async with own.reader() as reader:
            records = await reader.read_until(lambda records: len(records) >= 3, RECEIVE_WAIT_S)
            await asyncio.sleep(QUIET_S)
            records = await reader.drain(0.3)
        received = [json.loads(record.value) for record in records]
        assert sorted(report["cashout_id"] for report in received) == [
            request.cashout_id for request in requests
        ]
        assert {report["status"] for report in received} == {"paid"}
        await wait_for_commits(again, 3)
    finally:
        await again.stop()


class _PaidBeforeTheCancel(SimulatedBank):
    """A bank that had made every payout by the time a cancellation reached it."""

    async def cancel(self, request: PayoutRequested) -> bool:
        return False


def _cancel_of(request: PayoutRequested) -> PayoutCancelRequested:
    return PayoutCancelRequested(
        event_id=f"{request.cashout_id}:cancel",
        occurred_at=request.occurred_at + timedelta(minutes=5),
        cashout_id=request.cashout_id,
        creator_id=request.creator_id,
        cancel=True,
    )


@pytest.mark.parametrize("provider_stops_it", [True, False])
async def test_a_cancelled_payout_is_confirmed_failed_only_when_the_provider_stops_it(
    rail_topics: RailTopics, provider_stops_it: bool
) -> None:
    prefix = f"rail{uuid.uuid4().hex[:8]}."
    names = [prefix + topics.PAYOUTS_REQUESTED, prefix + topics.PAYOUTS_UPDATED]
    await create_topics(rail_topics.bootstrap_servers, names, PARTITION_COUNT)
    own = RailTopics(rail_topics.bootstrap_servers, prefix, rail_topics.producer)
    settings = RailSettings(seed=1, paid_delay_ms=1_000, failure_rate=0.0, return_rate=0.0)
    provider = SimulatedBank(settings) if provider_stops_it else _PaidBeforeTheCancel(settings)
    rail = PayoutRailService(
        provider,
        own.bootstrap_servers,
        topic_prefix=prefix,
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=SESSION_TIMEOUT_MS,
    )
    request = payout_request("cashout-cancelled", 0)
    cancel = _cancel_of(request)
    await rail.start()
    try:
        await wait_for(
            lambda: rail.assigned_partition_count() == PARTITION_COUNT,
            ASSIGNMENT_WAIT_S,
            "partitions assigned",
        )
        async with own.reader() as reader:
            await own.publish_request(request)
            await wait_for(lambda: rail.is_in_flight(request.cashout_id), RECEIVE_WAIT_S, "taken")
            await own.publish(cancel.model_dump_json().encode(), request.creator_id)
            await reader.read_until(lambda records: len(records) >= 1, RECEIVE_WAIT_S)
            await asyncio.sleep(settings.paid_delay_ms / 1000 + QUIET_S)
            await reader.drain(0.5)
            received = [report for _, report in reader.reports()]
        await wait_for_commits(rail, 2)
    finally:
        await rail.stop()
    if provider_stops_it:
        assert received == [build_cancel_report(request, cancel)]
        assert (received[0].status, received[0].failure_code) == ("failed", "cancelled")
    else:  # too late: the payout's own report, and no confirmation
        assert received == [build_report(request, PayoutOutcome("paid", None, 1_000))]
