"""Operator recovery against the real broker and database: re-driving dead letters, cancelling a
stale hold, resubmitting a failed payout; the API's routes and the command line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import TransferCode
from ledger.service import Ledger
from schemas import topics
from schemas.events import PayoutRequested
from schemas.payout_cancel import PayoutCancelRequested
from services.api.server import create_app
from services.cashout.recovery import (
    ActionRequest,
    CashoutActionRefusedError,
    CashoutRecovery,
    resubmission_id,
)
from services.cli import main
from services.ingestion.redrive import (
    REDRIVE_KEY_HEADER,
    REDRIVE_OF_HEADER,
    DeadLetterRedriver,
    DeadLetterSelection,
    RedriveOutcome,
    RedriveRequest,
    letter_action_key,
)
from services.operator.actions_log import ActionKeyConflictError, act_as, record_action
from services.payout_rail.rail import RailSettings, simulated_rail
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import Settings, get_settings
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, wait_until
from tests.ledger_helpers import ledger_problems

WRITER_ROLE = "giftledger_writer"
PARTITION_COUNT = 4
# Any hold is stale against this window by the time an operator acts on it.
WINDOW_PASSED_S = 0.001
FINANCE_TOKEN = f"finance-{uuid.uuid4().hex}"
OPERATOR_TOKEN = f"operator-{uuid.uuid4().hex}"


def _creator() -> str:
    return f"creator-{uuid.uuid4().hex[:10]}"


def _key() -> str:
    return f"key-{uuid.uuid4().hex}"


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one_or_none()


async def _balance(engine: AsyncEngine, name: str) -> int:
    """Credits minus debits posted, minus debits pending (the `available` of an account)."""
    value = await _scalar(
        engine,
        "SELECT credits_posted - debits_posted - debits_pending FROM accounts WHERE name = :n",
        n=name,
    )
    return int(value or 0)


async def _available(engine: AsyncEngine, creator: str) -> int:
    return await _balance(engine, f"creator:{creator}:DIAMOND:available")


async def _held(engine: AsyncEngine, creator: str) -> int:
    value = await _scalar(
        engine,
        "SELECT credits_posted + credits_pending - debits_posted FROM accounts WHERE name = :n",
        n=f"creator:{creator}:DIAMOND:held",
    )
    return int(value or 0)


async def _status(engine: AsyncEngine, cashout_id: str) -> tuple[str, str | None] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, failure_code FROM cashouts WHERE cashout_id = :id"),
                {"id": cashout_id},
            )
        ).first()
    return None if row is None else (row.status, row.failure_code)


async def _until_status(engine: AsyncEngine, cashout_id: str, status: str) -> None:
    async def reached() -> bool:
        found = await _status(engine, cashout_id)
        return found is not None and found[0] == status

    await wait_until(reached)


async def _sound(engine: AsyncEngine) -> None:
    assert await ledger_problems(engine) == []


async def _eligible_creator_with(
    consumers: RunningConsumers, engine: AsyncEngine, diamonds: int
) -> str:
    creator = _creator()
    await consumers.publish(topics.CREATORS_UPDATED, make.creator_update(creator))
    await consumers.publish(topics.GIFTS_SENT, make.gift(creator, coins=2, count=diamonds))

    async def ready() -> bool:
        known = await _scalar(engine, "SELECT 1 FROM creators WHERE creator_id = :c", c=creator)
        return known is not None and await _available(engine, creator) == diamonds * 1_000

    await wait_until(ready)
    return creator


async def _submitted_cashout(
    consumers: RunningConsumers, engine: AsyncEngine, creator: str, diamonds: int
) -> str:
    """A cash-out held and sent to the bank (no bank answers in this module unless started)."""
    request = make.cashout_request(creator, diamonds)
    await consumers.publish(topics.CASHOUTS_REQUESTED, request)
    await _until_status(engine, str(request["event_id"]), "submitted")
    return str(request["event_id"])


async def _confirmed(engine: AsyncEngine, cashout_id: str) -> str | None:
    """The failure code of the bank's confirmation that a cancelled payout will not be made."""
    return await _scalar(  # type: ignore[no-any-return]
        engine,
        "SELECT failure_code FROM cashout_cancel_confirmations WHERE cashout_id = :id",
        id=cashout_id,
    )


async def _bank_confirms_cancel(
    consumers: RunningConsumers, engine: AsyncEngine, creator: str, cashout_id: str
) -> None:
    """The bank's `failed` report about a cancelled cash-out, and the ledger's record of it."""
    confirmation = make.payout_update(cashout_id, "failed", "cancelled")
    await consumers.publish(topics.PAYOUTS_UPDATED, confirmation, key=creator)

    async def recorded() -> bool:
        return await _confirmed(engine, cashout_id) == "cancelled"

    await wait_until(recorded)


def _recovery(consumers: RunningConsumers, engine: AsyncEngine, window_s: float) -> CashoutRecovery:
    return CashoutRecovery(
        Ledger(engine),
        consumers.ingestor.desk,
        answer_window_s=window_s,
        database_role=WRITER_ROLE,
    )


def _redriver(consumers: RunningConsumers, engine: AsyncEngine) -> DeadLetterRedriver:
    return DeadLetterRedriver(
        engine, consumers.bootstrap_servers, consumers.prefix, database_role=WRITER_ROLE
    )


def _redrive_request(selection: DeadLetterSelection, key: str) -> RedriveRequest:
    return RedriveRequest(key, "alice", "the cause is fixed", "OPS-7", selection)


async def _dead_letter_ids(engine: AsyncEngine, prefix: str, event_id: str) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id FROM dead_letters WHERE topic_prefix = :prefix AND event_id = :event"
                " ORDER BY id"
            ),
            {"prefix": prefix, "event": event_id},
        )
        return [int(row.id) for row in rows]


def _copies_of(records: list[Any], dead_letter_id: int) -> list[Any]:
    """The records carrying the provenance of a re-drive of `dead_letter_id`."""
    return [
        record
        for record in records
        if dict(record.headers).get(REDRIVE_OF_HEADER) == str(dead_letter_id).encode()
    ]


def _outcomes(outcomes: list[RedriveOutcome]) -> list[tuple[int, str]]:
    return [(outcome.dead_letter_id, outcome.outcome) for outcome in outcomes]


# Re-drive -----------------------------------------------------------------------------------


async def test_a_reversal_dead_lettered_before_its_gift_is_redriven_and_applied_once(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    started = datetime.now(UTC)
    creator = _creator()
    gift = make.gift(creator, coins=8)
    reversal = make.reversal(creator, str(gift["event_id"]))
    await consumers.publish(topics.GIFTS_REVERSED, reversal)

    async def dead_lettered() -> bool:
        return bool(await _dead_letter_ids(engine, consumers.prefix, str(reversal["event_id"])))

    await wait_until(dead_lettered)  # its gift did not come within the parking window
    [letter_id] = await _dead_letter_ids(engine, consumers.prefix, str(reversal["event_id"]))
    await consumers.publish(topics.GIFTS_SENT, gift)  # what was missing arrives

    async def gift_applied() -> bool:
        return await _available(engine, creator) == 4_000

    await wait_until(gift_applied)

    redriver = _redriver(consumers, engine)
    selection = DeadLetterSelection(
        topic=topics.GIFTS_REVERSED, error="gift_not_found", recorded_from=started
    )
    key = _key()
    first = await redriver.redrive(_redrive_request(selection, key))
    assert _outcomes(first) == [(letter_id, "redriven")]

    async def reversed_once() -> bool:
        return await _available(engine, creator) == 0

    await wait_until(reversed_once)
    applied = await _scalar(
        engine,
        "SELECT count(*) FROM applied_events WHERE topic = :t AND event_id = :e",
        t=topics.GIFTS_REVERSED,
        e=reversal["event_id"],
    )
    assert applied == 1

    again = await redriver.redrive(_redrive_request(selection, key))
    assert _outcomes(again) == [(letter_id, "already_redriven")]
    assert (again[0].copy_partition, again[0].copy_offset) == (
        first[0].copy_partition,
        first[0].copy_offset,
    )
    other_key = await redriver.redrive(_redrive_request(selection, _key()))
    assert other_key == [], "a dead letter is re-driven once"
    with pytest.raises(ActionKeyConflictError):
        await redriver.redrive(RedriveRequest(key, "alice", "another reason", "OPS-7", selection))

    records = await consumers.read_topic_until(
        topics.GIFTS_REVERSED, lambda records: bool(_copies_of(records, letter_id))
    )
    [copy] = _copies_of(records, letter_id)
    assert copy.value == json.dumps(reversal).encode()
    assert copy.key == creator.encode()
    assert (copy.partition, copy.offset) == (first[0].copy_partition, first[0].copy_offset)
    assert dict(copy.headers)[REDRIVE_KEY_HEADER] == key.encode()
    assert await _available(engine, creator) == 0
    await _sound(engine)

    # The action is in the log and leaves on operator.actions keyed by the source record's key.
    action_id = first[0].operator_action_id
    assert await _scalar(
        engine, "SELECT target FROM operator_actions WHERE id = :id", id=action_id
    ) == (f"dead-letter:{letter_id}")

    def action_sent(records: list[Any]) -> bool:
        return any(json.loads(record.value)["action_id"] == action_id for record in records)

    published = await consumers.read_topic_until(topics.OPERATOR_ACTIONS, action_sent)
    [message] = [r for r in published if json.loads(r.value)["action_id"] == action_id]
    assert message.key == creator.encode()
    assert json.loads(message.value)["action"] == "dead_letter_redriven"


async def test_a_redriven_record_that_fails_again_is_dead_lettered_once_and_not_redriven_again(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    started = datetime.now(UTC)
    creator = _creator()
    broken = {**make.gift(creator), "coins": 0}
    await consumers.publish(topics.GIFTS_SENT, broken, headers=[("trace", b"t-9")])

    async def dead_lettered(count: int) -> bool:
        ids = await _dead_letter_ids(engine, consumers.prefix, str(broken["event_id"]))
        return len(ids) == count

    await wait_until(lambda: dead_lettered(1))
    [letter_id] = await _dead_letter_ids(engine, consumers.prefix, str(broken["event_id"]))
    redriver = _redriver(consumers, engine)
    [outcome] = await redriver.redrive(
        _redrive_request(DeadLetterSelection(dead_letter_ids=(letter_id,)), _key())
    )
    assert outcome.outcome == "redriven"

    await wait_until(lambda: dead_lettered(2))  # the copy fails the schema again
    copy_letter_id = (await _dead_letter_ids(engine, consumers.prefix, str(broken["event_id"])))[1]
    copy_place = await _scalar(
        engine,
        "SELECT kafka_partition || ':' || kafka_offset FROM dead_letters WHERE id = :id",
        id=copy_letter_id,
    )
    assert copy_place == f"{outcome.copy_partition}:{outcome.copy_offset}"
    dlq = await consumers.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_SENT),
        lambda records: bool(_copies_of(records, letter_id)),
    )
    failed_copy = _copies_of(dlq, letter_id)[0]
    headers = dict(failed_copy.headers)
    assert failed_copy.value == json.dumps(broken).encode()
    assert headers["trace"] == b"t-9"
    assert headers["dlq.error"] == b"schema_violation"
    assert int(headers["dlq.source.offset"]) == outcome.copy_offset

    # A re-drive by topic and error takes neither the re-driven dead letter nor its failed copy.
    selection = DeadLetterSelection(
        topic=topics.GIFTS_SENT, error="schema_violation", recorded_from=started
    )
    assert await redriver.redrive(_redrive_request(selection, _key())) == []
    source = await consumers.read_topic_until(
        topics.GIFTS_SENT, lambda records: bool(_copies_of(records, letter_id))
    )
    assert len(_copies_of(source, letter_id)) == 1
    assert _copies_of(source, copy_letter_id) == []
    assert await dead_lettered(2)


@pytest.mark.parametrize("source_key", ["creator-x\x00y", "k" * 20_000])
async def test_a_record_whose_key_the_log_cannot_hold_is_redriven_once_and_recorded(
    consumers: RunningConsumers, engine: AsyncEngine, source_key: str
) -> None:
    # The log refuses a NUL character, and details over 16,384 characters: such a key is left
    # out of the action's details (its message is keyed by the target), never sent unrecorded.
    broken = {**make.gift(_creator()), "coins": 0}
    await consumers.publish(topics.GIFTS_SENT, broken, key=source_key)

    async def dead_lettered() -> bool:
        return bool(await _dead_letter_ids(engine, consumers.prefix, str(broken["event_id"])))

    await wait_until(dead_lettered)
    [letter_id] = await _dead_letter_ids(engine, consumers.prefix, str(broken["event_id"]))
    request = _redrive_request(DeadLetterSelection(dead_letter_ids=(letter_id,)), _key())
    redriver = _redriver(consumers, engine)
    [first] = await redriver.redrive(request)
    [again] = await redriver.redrive(request)
    assert (first.outcome, again.outcome) == ("redriven", "already_redriven")
    target = f"dead-letter:{letter_id}"
    details = await _scalar(
        engine, "SELECT details FROM operator_actions WHERE target = :t", t=target
    )
    assert "message_key" not in details
    sentinel = make.gift(_creator())
    await consumers.publish(topics.GIFTS_SENT, sentinel, key=source_key)  # behind the copies

    def sentinel_read(records: list[Any]) -> bool:
        return any(json.loads(r.value)["event_id"] == sentinel["event_id"] for r in records)

    records = await consumers.read_topic_until(topics.GIFTS_SENT, sentinel_read)
    assert len(_copies_of(records, letter_id)) == 1


async def test_a_redrive_whose_action_key_is_taken_sends_nothing(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    broken = {**make.gift(creator), "coins": 0}
    await consumers.publish(topics.GIFTS_SENT, broken)

    async def dead_lettered() -> bool:
        return bool(await _dead_letter_ids(engine, consumers.prefix, str(broken["event_id"])))

    await wait_until(dead_lettered)
    [letter_id] = await _dead_letter_ids(engine, consumers.prefix, str(broken["event_id"]))
    request = _redrive_request(DeadLetterSelection(dead_letter_ids=(letter_id,)), _key())
    async with engine.begin() as conn:  # another action took the letter's key
        await act_as(conn, WRITER_ROLE)
        await record_action(
            conn,
            idempotency_key=letter_action_key(request.idempotency_key, letter_id),
            actor="bob",
            action="creator_frozen",
            target=creator,
            reason="unrelated",
            ticket=None,
            details={},
            topic_prefix=consumers.prefix,
        )
    with pytest.raises(ActionKeyConflictError):
        await _redriver(consumers, engine).redrive(request)
    sentinel = make.gift(creator)
    await consumers.publish(topics.GIFTS_SENT, sentinel)  # behind any copy, same partition

    def sentinel_read(records: list[Any]) -> bool:
        return any(json.loads(r.value)["event_id"] == sentinel["event_id"] for r in records)

    records = await consumers.read_topic_until(topics.GIFTS_SENT, sentinel_read)
    assert _copies_of(records, letter_id) == []
    redrives = await _scalar(
        engine, "SELECT count(*) FROM dead_letter_redrives WHERE dead_letter_id = :id", id=letter_id
    )
    assert redrives == 0


async def test_unknown_dead_letter_ids_are_refused_and_nothing_is_recorded(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    redriver = _redriver(consumers, engine)
    key = _key()
    missing = 2**62
    with pytest.raises(LookupError, match=str(missing)):
        await redriver.redrive(
            _redrive_request(DeadLetterSelection(dead_letter_ids=(missing,)), key)
        )
    recorded = await _scalar(
        engine, "SELECT count(*) FROM operator_actions WHERE idempotency_key LIKE :k", k=key + "%"
    )
    assert recorded == 0


def test_a_selection_names_dead_letters_by_id_or_by_topic() -> None:
    with pytest.raises(ValueError, match="not both"):
        DeadLetterSelection(dead_letter_ids=(1,), topic=topics.GIFTS_SENT)
    with pytest.raises(ValueError, match="topic must be one of"):
        DeadLetterSelection()
    with pytest.raises(ValueError, match="limit"):
        DeadLetterSelection(topic=topics.GIFTS_SENT, limit=1_001)


# Cancel a stale hold ------------------------------------------------------------------------


async def test_a_stale_hold_is_cancelled_and_a_late_paid_report_settles_it_once(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 3_000)
    cashout_id = await _submitted_cashout(consumers, engine, creator, 2_000)
    assert await _available(engine, creator) == 1_000_000
    request = ActionRequest(_key(), "alice", "no answer from the bank", "OPS-8")

    with pytest.raises(CashoutActionRefusedError, match="not stale"):
        await _recovery(consumers, engine, 86_400).cancel_stale_hold(cashout_id, request)
    recovery = _recovery(consumers, engine, WINDOW_PASSED_S)
    cancelled = await recovery.cancel_stale_hold(cashout_id, request)
    assert cancelled.recorded
    assert await _status(engine, cashout_id) == ("failed", "operator_cancelled")
    assert await _available(engine, creator) == 3_000_000
    assert await _held(engine, creator) == 0
    await _sound(engine)

    again = await recovery.cancel_stale_hold(cashout_id, request)
    assert (again.recorded, again.action.id) == (False, cancelled.action.id)
    with pytest.raises(CashoutActionRefusedError, match="is failed"):
        await recovery.cancel_stale_hold(cashout_id, ActionRequest(_key(), "bob", "again", None))

    def cancel_sent(records: list[Any]) -> bool:
        return any(json.loads(r.value).get("cancel") is True for r in _about(records, cashout_id))

    requests = await consumers.read_topic_until(topics.PAYOUTS_REQUESTED, cancel_sent)
    sent = [json.loads(record.value) for record in _about(requests, cashout_id)]
    assert [message.get("cancel", False) for message in sent] == [False, True]
    assert {record.key for record in _about(requests, cashout_id)} == {creator.encode()}

    async def outbox_marked() -> bool:  # the relay marks a cancellation sent like any message
        unsent = await _scalar(
            engine,
            "SELECT count(*) FROM outbox WHERE topic_prefix = :prefix AND message_key = :key"
            " AND published_at IS NULL",
            prefix=consumers.prefix,
            key=creator,
        )
        return bool(unsent == 0)

    await wait_until(outbox_marked)

    # The bank had paid already: its report takes the released Diamonds once, however often
    # it comes.
    paid = make.payout_update(cashout_id, "paid")
    await consumers.publish(topics.PAYOUTS_UPDATED, paid, key=creator)
    await _until_status(engine, cashout_id, "paid")
    await consumers.publish(topics.PAYOUTS_UPDATED, paid, key=creator)
    await consumers.publish(topics.GIFTS_SENT, make.gift(creator, coins=2))  # behind it

    async def gift_behind_applied() -> bool:
        return await _available(engine, creator) == 1_001_000

    await wait_until(gift_behind_applied)
    assert await _held(engine, creator) == 0
    paid_money = await _scalar(
        engine,
        "SELECT sum(amount) FROM transfers WHERE metadata->>'cashout_id' = :id AND code = :code"
        " AND asset = 'USD'",
        id=cashout_id,
        code=int(TransferCode.CASHOUT_SETTLED),
    )
    assert paid_money == 1_000  # 10.00 USD settled against cash at the bank, once
    await _sound(engine)


def _about(records: list[Any], cashout_id: str) -> list[Any]:
    return [r for r in records if json.loads(r.value).get("cashout_id") == cashout_id]


async def test_the_bank_drops_a_cancelled_payout_it_has_not_answered(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    rail = simulated_rail(
        RailSettings(seed=3, paid_delay_ms=600_000, failure_rate=0, return_rate=0),
        consumers.bootstrap_servers,
        topic_prefix=consumers.prefix,
        consumer_group=f"rail-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=6_000,
    )
    await rail.start()
    try:
        creator = await _eligible_creator_with(consumers, engine, 2_000)
        cashout_id = await _submitted_cashout(consumers, engine, creator, 2_000)
        await wait_until(lambda: _async(rail.is_in_flight(cashout_id)))
        request = ActionRequest(_key(), "alice", "the bank is silent", None)
        recovery = _recovery(consumers, engine, WINDOW_PASSED_S)
        await recovery.cancel_stale_hold(cashout_id, request)
        await wait_until(lambda: _async(not rail.is_in_flight(cashout_id)))

        async def confirmed() -> bool:
            return await _confirmed(engine, cashout_id) == "cancelled"

        await wait_until(confirmed)
    finally:
        await rail.stop()
    reports = await consumers.read_topic_until(
        topics.PAYOUTS_UPDATED, lambda records: bool(_about(records, cashout_id))
    )
    [report] = [json.loads(record.value) for record in _about(reports, cashout_id)]
    assert (report["status"], report["failure_code"]) == ("failed", "cancelled")  # never paid
    assert await _status(engine, cashout_id) == ("failed", "operator_cancelled")
    assert await _available(engine, creator) == 2_000_000
    # Confirmed: the payout will not be made, so the cash-out may go again.
    again = ActionRequest(_key(), "alice", "the bank dropped it", None)
    resubmitted = await recovery.resubmit_failed_payout(cashout_id, again)
    assert resubmitted.resubmitted.status == "held"
    assert await _available(engine, creator) == 0
    await _sound(engine)


async def test_a_cancelled_payout_is_not_resubmitted_until_the_bank_confirms_it_will_not_pay(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    # The bank is slow, not gone: an operator cancels the stale hold and wants to pay again at
    # once. Were that allowed, the bank's late `paid` of the original would pay the creator twice
    # and take the creator's Diamonds below zero.
    creator = await _eligible_creator_with(consumers, engine, 2_000)
    cashout_id = await _submitted_cashout(consumers, engine, creator, 2_000)
    recovery = _recovery(consumers, engine, WINDOW_PASSED_S)
    await recovery.cancel_stale_hold(cashout_id, ActionRequest(_key(), "alice", "slow", None))
    assert await _available(engine, creator) == 2_000_000
    with pytest.raises(CashoutActionRefusedError, match="has not yet confirmed"):
        await recovery.resubmit_failed_payout(
            cashout_id, ActionRequest(_key(), "alice", "pay it again", None)
        )
    assert await _status(engine, resubmission_id(cashout_id)) is None
    assert await _available(engine, creator) == 2_000_000

    # The bank paid after all: the ledger books the original as paid, once; nothing to resubmit.
    await consumers.publish(
        topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, "paid"), key=creator
    )
    await _until_status(engine, cashout_id, "paid")
    assert await _available(engine, creator) == 0
    with pytest.raises(CashoutActionRefusedError, match="is paid"):
        await recovery.resubmit_failed_payout(
            cashout_id, ActionRequest(_key(), "alice", "pay it again", None)
        )
    await _sound(engine)


async def _async(value: bool) -> bool:
    return value


async def test_a_cancellation_that_comes_after_the_bank_paid_changes_nothing_at_the_bank(
    kafka_bootstrap: str,
) -> None:
    prefix = f"cancel{uuid.uuid4().hex[:8]}."
    await create_topics(
        kafka_bootstrap,
        [prefix + topics.PAYOUTS_REQUESTED, prefix + topics.PAYOUTS_UPDATED],
        PARTITION_COUNT,
    )
    rail = simulated_rail(
        RailSettings(seed=5, paid_delay_ms=50, failure_rate=0, return_rate=0),
        kafka_bootstrap,
        topic_prefix=prefix,
        consumer_group=f"rail-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=6_000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    await rail.start()
    try:

        async def send(message: PayoutRequested | PayoutCancelRequested) -> None:
            await producer.send_and_wait(
                prefix + topics.PAYOUTS_REQUESTED,
                value=message.model_dump_json().encode(),
                key=b"creator-late",
            )

        paid_first, sentinel = (_payout_request(f"cashout-{uuid.uuid4().hex[:8]}") for _ in "ab")
        await send(paid_first)
        await wait_until(lambda: _async(rail.reports_sent == 1))
        await send(
            PayoutCancelRequested(
                event_id=f"{paid_first.cashout_id}:cancel",
                occurred_at=datetime.now(UTC),
                cashout_id=paid_first.cashout_id,
                creator_id="creator-late",
                cancel=True,
            )
        )
        await send(sentinel)  # behind the cancellation, on the same partition
        await wait_until(lambda: _async(rail.reports_sent == 2))
        assert not rail.is_in_flight(paid_first.cashout_id)
    finally:
        await rail.stop()
        await producer.stop()
    assert rail.reports_sent == 2


def _payout_request(cashout_id: str) -> PayoutRequested:
    return PayoutRequested(
        event_id=f"{cashout_id}:payout",
        occurred_at=datetime.now(UTC),
        cashout_id=cashout_id,
        creator_id="creator-late",
        amount=1_000,
        currency="USD",
        payout_account_ref="pa_late_1",
    )


# Resubmit a failed payout -------------------------------------------------------------------


async def test_a_failed_payout_is_resubmitted_to_the_new_account_and_paid_once(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 2_500)
    cashout_id = await _submitted_cashout(consumers, engine, creator, 2_001)
    recovery = _recovery(consumers, engine, 86_400)
    request = ActionRequest(_key(), "alice", "the creator fixed their account", "OPS-9")
    with pytest.raises(CashoutActionRefusedError, match="is submitted"):
        await recovery.resubmit_failed_payout(cashout_id, request)
    failed = make.payout_update(cashout_id, "failed", "account_closed")
    await consumers.publish(topics.PAYOUTS_UPDATED, failed, key=creator)
    await _until_status(engine, cashout_id, "failed")
    assert await _available(engine, creator) == 2_500_000

    fixed = {**make.creator_update(creator), "payout_account_ref": "pa_fixed_2"}
    await consumers.publish(topics.CREATORS_UPDATED, fixed)

    async def account_fixed() -> bool:
        ref = await _scalar(
            engine, "SELECT payout_account_ref FROM creators WHERE creator_id = :c", c=creator
        )
        return bool(ref == "pa_fixed_2")

    await wait_until(account_fixed)
    resubmitted = await recovery.resubmit_failed_payout(cashout_id, request)
    new_id = resubmission_id(cashout_id)
    assert resubmitted.recorded
    assert resubmitted.resubmitted.cashout_id == new_id
    original = resubmitted.original
    new = resubmitted.resubmitted
    assert (new.status, new.payout_account_ref) == ("held", "pa_fixed_2")
    assert (new.amount, new.payout_amount, new.rate_card_version, new.fx_numerator) == (
        original.amount,
        original.payout_amount,
        original.rate_card_version,
        original.fx_numerator,
    )
    assert await _available(engine, creator) == 499_000
    again = await recovery.resubmit_failed_payout(cashout_id, request)
    assert (again.recorded, again.resubmitted.cashout_id) == (False, new_id)
    with pytest.raises(CashoutActionRefusedError, match="resubmitted already"):
        await recovery.resubmit_failed_payout(
            cashout_id, ActionRequest(_key(), "bob", "twice?", None)
        )

    def payout_sent(records: list[Any]) -> bool:
        return bool(_about(records, new_id))

    requests = await consumers.read_topic_until(topics.PAYOUTS_REQUESTED, payout_sent)
    [payout] = [json.loads(record.value) for record in _about(requests, new_id)]
    assert (payout["amount"], payout["currency"], payout["payout_account_ref"]) == (
        1_000,
        "USD",
        "pa_fixed_2",
    )
    await _until_status(engine, new_id, "submitted")
    paid = make.payout_update(new_id, "paid")
    await consumers.publish(topics.PAYOUTS_UPDATED, paid, key=creator)
    await _until_status(engine, new_id, "paid")
    await consumers.publish(topics.PAYOUTS_UPDATED, paid, key=creator)
    await consumers.publish(topics.GIFTS_SENT, make.gift(creator, coins=2))  # behind it

    async def gift_behind_applied() -> bool:
        return await _available(engine, creator) == 500_000

    await wait_until(gift_behind_applied)
    assert await _held(engine, creator) == 0
    assert await _status(engine, cashout_id) == ("failed", "account_closed")
    await _sound(engine)


async def test_a_resubmission_stays_within_the_daily_limit_of_the_original_day(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    # A failed cash-out stops counting toward its day, so the creator may use that room again;
    # its resubmission then counts toward the same day and must still fit in the limit
    # (1,000 USD a day; 200 diamonds a dollar).
    creator = await _eligible_creator_with(consumers, engine, 10_000)
    await consumers.publish(topics.GIFTS_SENT, make.gift(creator, coins=58, count=10_000))

    async def funded() -> bool:
        return await _available(engine, creator) == 300_000_000

    await wait_until(funded)
    same_moment = datetime.now(UTC).isoformat()
    first = {**make.cashout_request(creator, 100_000), "occurred_at": same_moment}  # 500 USD
    await consumers.publish(topics.CASHOUTS_REQUESTED, first)
    first_id = str(first["event_id"])
    await _until_status(engine, first_id, "submitted")
    failed = make.payout_update(first_id, "failed", "account_closed")
    await consumers.publish(topics.PAYOUTS_UPDATED, failed, key=creator)
    await _until_status(engine, first_id, "failed")
    second = {**make.cashout_request(creator, 200_000), "occurred_at": same_moment}  # 1,000 USD
    await consumers.publish(topics.CASHOUTS_REQUESTED, second)
    await _until_status(engine, str(second["event_id"]), "submitted")

    recovery = _recovery(consumers, engine, 86_400)
    request = ActionRequest(_key(), "alice", "the creator fixed their account", None)
    with pytest.raises(CashoutActionRefusedError) as refused:
        await recovery.resubmit_failed_payout(first_id, request)
    day = datetime.fromisoformat(same_moment).date()
    assert str(refused.value) == (
        f"cash-out {first_id} cannot be resubmitted: with creator {creator}'s other cash-outs"
        f" of {day} it would come to 1,500.00 USD, over the daily limit of 1,000.00 USD"
    )
    assert await _status(engine, resubmission_id(first_id)) is None
    assert await _available(engine, creator) == 100_000_000
    assert (
        await _scalar(
            engine,
            "SELECT count(*) FROM operator_actions WHERE target = :id",
            id=first_id,
        )
        == 0
    )

    # The day's other cash-out fails too: the room is back, and the resubmission fits.
    await consumers.publish(
        topics.PAYOUTS_UPDATED,
        make.payout_update(str(second["event_id"]), "failed", "AC04"),
        key=creator,
    )
    await _until_status(engine, str(second["event_id"]), "failed")
    resubmitted = await recovery.resubmit_failed_payout(first_id, request)
    assert resubmitted.resubmitted.status == "held"
    assert await _available(engine, creator) == 200_000_000
    await _sound(engine)


# The API and the command line ---------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest_asyncio.fixture(loop_scope="session")
async def api(consumers: RunningConsumers, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        api_tokens={
            _digest(FINANCE_TOKEN): "finance",
            _digest(OPERATOR_TOKEN): {"role": "operator", "name": "carol"},
        },
        kafka_topic_prefix=consumers.prefix,
        kafka_bootstrap_servers=consumers.bootstrap_servers,
        cashout_answer_window_s=WINDOW_PASSED_S,
    )
    app = create_app(engine, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def _as(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


async def test_finance_may_not_use_the_recovery_routes(api: httpx.AsyncClient) -> None:
    body = {"reason": "trying", "dead_letter_ids": [1]}
    for path in (
        "/v1/operator/dead-letters/redrive",
        "/v1/operator/cashouts/c-1/cancel",
        "/v1/operator/cashouts/c-1/resubmit",
    ):
        answer = await api.post(path, json=body, headers=_as(FINANCE_TOKEN, _key()))
        assert answer.status_code == 403, (path, answer.text)
        unauthenticated = await api.post(path, json=body, headers={"Idempotency-Key": _key()})
        assert unauthenticated.status_code == 401


async def test_an_operator_cancels_and_resubmits_through_the_api(
    api: httpx.AsyncClient, consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 2_000)
    cashout_id = await _submitted_cashout(consumers, engine, creator, 2_000)
    path = f"/v1/operator/cashouts/{cashout_id}"
    key = _key()
    no_key = await api.post(f"{path}/cancel", json={"reason": "x"}, headers=_as(OPERATOR_TOKEN))
    assert no_key.status_code == 422
    no_reason = await api.post(f"{path}/cancel", json={}, headers=_as(OPERATOR_TOKEN, key))
    assert no_reason.status_code == 422
    unknown = await api.post(
        "/v1/operator/cashouts/nope/cancel", json={"reason": "x"}, headers=_as(OPERATOR_TOKEN, key)
    )
    assert unknown.status_code == 404

    cancel = await api.post(
        f"{path}/cancel", json={"reason": "stale hold"}, headers=_as(OPERATOR_TOKEN, key)
    )
    assert cancel.status_code == 200, cancel.text
    document = cancel.json()
    assert (document["recorded"], document["action"]["actor"]) == (True, "carol")
    assert (document["cashout"]["status"], document["cashout"]["failure_code"]) == (
        "failed",
        "operator_cancelled",
    )
    replay = await api.post(
        f"{path}/cancel", json={"reason": "stale hold"}, headers=_as(OPERATOR_TOKEN, key)
    )
    assert (replay.status_code, replay.json()["recorded"]) == (200, False)
    other_content = await api.post(
        f"{path}/cancel", json={"reason": "another"}, headers=_as(OPERATOR_TOKEN, key)
    )
    assert other_content.status_code == 409
    not_failed_twice = await api.post(
        f"{path}/cancel", json={"reason": "again"}, headers=_as(OPERATOR_TOKEN, _key())
    )
    assert not_failed_twice.status_code == 409

    too_soon = await api.post(
        f"{path}/resubmit", json={"reason": "account fixed"}, headers=_as(OPERATOR_TOKEN, _key())
    )
    assert too_soon.status_code == 409, too_soon.text
    assert "has not yet confirmed" in too_soon.text
    await _bank_confirms_cancel(consumers, engine, creator, cashout_id)
    resubmit = await api.post(
        f"{path}/resubmit", json={"reason": "account fixed"}, headers=_as(OPERATOR_TOKEN, _key())
    )
    assert resubmit.status_code == 200, resubmit.text
    assert resubmit.json()["resubmitted"]["cashout_id"] == resubmission_id(cashout_id)
    assert resubmit.json()["resubmitted"]["status"] == "held"
    assert await _available(engine, creator) == 0
    await _sound(engine)


async def test_an_operator_redrives_through_the_api_and_the_command_line(
    api: httpx.AsyncClient,
    consumers: RunningConsumers,
    engine: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    creator = _creator()
    bad = [{**make.gift(creator), "coins": 0} for _ in range(2)]
    for event in bad:
        await consumers.publish(topics.GIFTS_SENT, event)

    async def both_dead_lettered() -> bool:
        found = [await _dead_letter_ids(engine, consumers.prefix, str(e["event_id"])) for e in bad]
        return all(found)

    await wait_until(both_dead_lettered)
    first_id = (await _dead_letter_ids(engine, consumers.prefix, str(bad[0]["event_id"])))[0]
    second_id = (await _dead_letter_ids(engine, consumers.prefix, str(bad[1]["event_id"])))[0]
    body = {"dead_letter_ids": [first_id], "reason": "schema fixed upstream"}
    answer = await api.post(
        "/v1/operator/dead-letters/redrive", json=body, headers=_as(OPERATOR_TOKEN, _key())
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["redriven_count"] == 1
    assert [(d["dead_letter_id"], d["outcome"]) for d in answer.json()["dead_letters"]] == [
        (first_id, "redriven")
    ]
    both = {"dead_letter_ids": [first_id], "topic": topics.GIFTS_SENT, "reason": "x"}
    refused = await api.post(
        "/v1/operator/dead-letters/redrive", json=both, headers=_as(OPERATOR_TOKEN, _key())
    )
    assert refused.status_code == 422

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", consumers.bootstrap_servers)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", consumers.prefix)
    get_settings.cache_clear()
    try:
        argv = ["operator", "redrive", str(first_id), str(second_id), "--reason", "fixed"]
        code = await asyncio.to_thread(main, [*argv, "--as", "dave", "--json"])
        again = await asyncio.to_thread(main, [*argv, "--as", "dave", "--json"])
        nobody = await asyncio.to_thread(main, argv)
    finally:
        get_settings.cache_clear()
    assert (code, again, nobody) == (0, 0, 2)
    first, second = _documents(capsys.readouterr().out)
    assert [(d["dead_letter_id"], d["outcome"]) for d in first["dead_letters"]] == [
        (first_id, "already_redriven"),
        (second_id, "redriven"),
    ]
    assert [d["outcome"] for d in second["dead_letters"]] == ["already_redriven"] * 2


def _documents(printed: str) -> list[Any]:
    """The JSON documents a command printed one after another."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while printed[position:].strip():
        position += len(printed[position:]) - len(printed[position:].lstrip())
        document, position = decoder.raw_decode(printed, position)
        documents.append(document)
    return documents


async def test_an_operator_cancels_and_resubmits_from_the_command_line(
    consumers: RunningConsumers,
    engine: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    creator = await _eligible_creator_with(consumers, engine, 4_000)
    stale = await _submitted_cashout(consumers, engine, creator, 2_000)
    waiting = await _submitted_cashout(consumers, engine, creator, 2_000)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", consumers.prefix)
    monkeypatch.setenv("CASHOUT_ANSWER_WINDOW_S", str(WINDOW_PASSED_S))
    monkeypatch.setenv("OPERATOR_NAME", "erin")
    get_settings.cache_clear()
    try:
        cancel = ["operator", "cancel", stale, "--reason", "no answer in a day"]
        cancelled = await asyncio.to_thread(main, cancel)
        cancelled_again = await asyncio.to_thread(main, cancel)
        resubmit_waiting = ["operator", "resubmit", waiting, "--reason", "too early"]
        refused = await asyncio.to_thread(main, resubmit_waiting)
        unknown = await asyncio.to_thread(main, ["operator", "cancel", "nope", "--reason", "x"])
        resubmit = ["operator", "resubmit", stale, "--reason", "account fixed", "--json"]
        unconfirmed = await asyncio.to_thread(main, resubmit)
        await _bank_confirms_cancel(consumers, engine, creator, stale)
        resubmitted = await asyncio.to_thread(main, resubmit)
    finally:
        get_settings.cache_clear()
    assert (cancelled, cancelled_again, refused, unknown, unconfirmed, resubmitted) == (
        0,
        0,
        1,
        2,
        1,
        0,
    )
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"cash-out {stale}: failed (operator_cancelled)")
    assert "already: action" in lines[1]
    assert f"cash-out {waiting} is submitted" in captured.err
    assert f"cash-out {stale} was cancelled by an operator and the bank" in captured.err
    assert json.loads("\n".join(lines[2:]))["resubmitted"]["cashout_id"] == resubmission_id(stale)
    assert await _available(engine, creator) == 0
    await _sound(engine)
