"""Turning a batch of Kafka records into ledger transfers, exactly once in effect.

One batch is one database transaction: look up which events were already applied, post the new
events' transfers through the ledger's fast path, and record every applied `event_id` with the
hash of its payload, all before the commit. The caller commits Kafka offsets only after this
returns, so a crash anywhere means redelivery, and redelivery finds every event already applied.

Every record ends in exactly one place: applied, duplicate, dead-lettered (with the reason), or
parked (a reversal whose gift has not arrived yet, retried until a deadline, then dead-lettered).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import jiter
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chain import metadata_json
from ledger.chart import AccountSpec
from ledger.model import PostResult, StoredTransfer, Transfer, TransferCode, TransferFlags
from ledger.posting import (
    NewTransfers,
    post_batch,
    post_new_batch,
    read_stored,
    run_with_conflict_retry,
)
from ledger.service import Ledger
from schemas import topics
from schemas.events import (
    CONSUMED_EVENT_MODELS,
    CashoutRequested,
    Event,
    FundRewarded,
    GiftReversed,
    GiftSent,
    MarketplacePaid,
    PayoutUpdated,
    TipReceived,
)
from services import metrics
from services.cashouts import (
    CashoutDesk,
    CashoutLimits,
    hold_source,
    hold_target,
    load_cashout,
    request_accounts,
    settlement_accounts,
)
from services.eligibility import EligibilitySettings
from services.event_transfers import (
    GIFT_DIAMOND_SOURCE,
    LEDGER_TOPICS,
    GiftTransfer,
    Leg,
    batch_coin_leg,
    fund_legs,
    gift_transfer,
    marketplace_legs,
    reversal_legs,
    tip_legs,
    transfer_id,
)
from services.pricing import RateCardBook
from services.profiles import apply_creator_updates

JSON_DEPTH_MAX = 16
# As plain ints: IntFlag members cost an enum lookup at each use in the per-transfer loop.
_NO_FLAGS = int(TransferFlags.NONE)
_LINKED = int(TransferFlags.LINKED)
EVENT_ID_PATTERN = re.compile(r"[!-~]{1,128}")
ERROR_DETAIL_LENGTH_MAX = 1_000


# Which of a batch's event ids were applied: one primary-key probe per id, whatever the table's
# statistics say. Written as `topic = :topic AND event_id = ANY(:ids)`, the planner, until the
# table's first ANALYZE, read every row of the topic and filtered them: 45-75 ms a batch at
# 300,000 applied events, growing with the table, against 3-5 ms for the probes.
SELECT_APPLIED = text(
    """
    SELECT wanted.event_id, a.payload_sha256
    FROM unnest(CAST(:ids AS text[])) AS wanted(event_id)
    CROSS JOIN LATERAL (
        SELECT payload_sha256 FROM applied_events
        WHERE topic = :topic AND event_id = wanted.event_id
        LIMIT 1
    ) a
    """
)
_SELECT_PARKED = text(
    """
    SELECT wanted.event_id, p.payload
    FROM unnest(CAST(:ids AS text[])) AS wanted(event_id)
    CROSS JOIN LATERAL (
        SELECT payload FROM parked_events
        WHERE topic_prefix = :prefix AND topic = :topic AND event_id = wanted.event_id
        LIMIT 1
    ) p
    """
)


class InputRecord(NamedTuple):
    """One consumed Kafka record, independent of the client library. A named tuple: built for
    every record, at half a frozen dataclass's cost."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: InputRecord
    error: str
    detail: str
    event_id: str | None = None


@dataclass
class BatchReport:
    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    still_waiting: set[str] = field(default_factory=set)

    def absorb(self, other: BatchReport) -> None:
        """Add what a unit of work reported (its counts and dead letters) to this report."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.parked += other.parked
        self.dead_letters += other.dead_letters


@dataclass(slots=True)
class _Parsed:
    record: InputRecord
    event: Event
    payload_sha256: bytes
    from_parking: bool = False
    parked_until: datetime | None = None


def _depth(value: Any, limit: int) -> int:
    depth, frontier = 0, [value]
    while frontier:
        depth += 1
        if depth > limit:
            return depth
        children: list[Any] = []
        for item in frontier:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        frontier = children
    return depth - 1


def _short(text_value: str) -> str:
    """A detail fit for a header and a text column: bounded, valid UTF-8, no NUL."""
    cleaned = text_value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\0")
    return cleaned[:ERROR_DETAIL_LENGTH_MAX]


def _valid_event_id(value: object) -> str | None:
    """The payload's event_id, for a dead letter, only when it is a well-formed id."""
    if isinstance(value, str) and EVENT_ID_PATTERN.fullmatch(value):
        return value
    return None


def parse_record(topic: str, record: InputRecord) -> _Parsed | DeadLetter:
    """Decode and validate one record; anything wrong becomes a dead letter naming why."""
    if record.value is None:
        return DeadLetter(record, "empty_value", "the record has no value")
    try:
        record.value.decode("utf-8")
    except UnicodeDecodeError as error:
        return DeadLetter(record, "invalid_utf8", _short(str(error)))
    try:
        # The parser pydantic uses, so both read the same JSON; a key given twice is refused,
        # since parsers differ on which of its values counts.
        decoded = jiter.from_json(record.value, catch_duplicate_keys=True, cache_mode="keys")
    except (ValueError, RecursionError) as error:
        return DeadLetter(record, "malformed_json", _short(str(error)))
    # One object and no array (at most one "{" and no "[" in the text) is one level deep: the
    # walk is for the records that may nest.
    may_nest = record.value.count(b"{") > 1 or b"[" in record.value
    if may_nest and _depth(decoded, JSON_DEPTH_MAX) > JSON_DEPTH_MAX:
        return DeadLetter(record, "malformed_json", f"nested deeper than {JSON_DEPTH_MAX}")
    model: type[BaseModel] = CONSUMED_EVENT_MODELS[topic]
    try:
        event = model.model_validate_json(record.value)
    except ValidationError as error:
        detail = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False)
        )
        event_id = decoded.get("event_id") if isinstance(decoded, dict) else None
        return DeadLetter(record, "schema_violation", _short(detail), _valid_event_id(event_id))
    assert isinstance(event, Event)
    canonical = event.model_dump_json().encode("utf-8")
    return _Parsed(record, event, hashlib.sha256(canonical).digest())


def _legs_without_lookup(event: Event) -> tuple[list[Leg], int | None]:
    """The legs of a tip, a fund reward or a marketplace payment (gifts: `gift_transfer`)."""
    if isinstance(event, TipReceived):
        return tip_legs(event), None
    if isinstance(event, FundRewarded):
        return fund_legs(event), None
    if isinstance(event, MarketplacePaid):
        return marketplace_legs(event), None
    raise AssertionError(f"no legs for {type(event).__name__}")


def _leg_accounts(event: Event) -> list[AccountSpec]:
    """The accounts a reversal touches, known before its gift is looked up."""
    assert isinstance(event, GiftReversed)
    legs = reversal_legs(event, coins=1, milli_diamonds=1)
    return [spec for leg in legs for spec in (leg.debit, leg.credit)]


_GIFT_DIAMONDS = int(TransferCode.GIFT_DIAMONDS)
_COIN_ACCOUNTS = (batch_coin_leg(1, 1).debit, batch_coin_leg(1, 1).credit)


def _add_batch_coins(
    batch: NewTransfers,
    gifts: list[_Parsed],
    planned: dict[str, GiftTransfer],
    account_ids: dict[str, int],
) -> None:
    """One coin transfer per rate card version for the gifts applied in this transaction.

    Its id is new on every attempt: it is stored only with the gifts it counts, in the same
    transaction, and a redelivered gift is filtered out before it is counted again."""
    coins_by_version: dict[int, tuple[int, int]] = {}
    for item in gifts:
        assert isinstance(item.event, GiftSent)
        version = planned[item.event.event_id].rate_card_version
        coins, count = coins_by_version.get(version, (0, 0))
        coins_by_version[version] = (coins + item.event.coins * item.event.count, count + 1)
    for version, (coins, count) in sorted(coins_by_version.items()):
        leg = batch_coin_leg(coins, count)
        batch.add(
            uuid.uuid4(),
            account_ids[leg.debit.name],
            account_ids[leg.credit.name],
            leg.amount,
            int(leg.code),
            version,
            None,
            metadata_json(leg.metadata),
        )


def _gift_diamonds_id(gift_event_id: str) -> uuid.UUID:
    return transfer_id(topics.GIFTS_SENT, gift_event_id, "diamonds")


def _gift_coins(gift_diamonds: StoredTransfer) -> int:
    """A gift's coins, as recorded on its diamonds transfer."""
    assert gift_diamonds.metadata is not None
    return int(gift_diamonds.metadata["coins"])


def _headers_json(headers: tuple[tuple[str, bytes], ...]) -> str:
    """Kafka headers as JSON text: keys and values base64, since either may hold any byte."""
    return json.dumps(
        [
            [
                base64.b64encode(key.encode("utf-8", "surrogateescape")).decode("ascii"),
                base64.b64encode(value).decode("ascii"),
            ]
            for key, value in headers
        ]
    )


def headers_from_json(encoded: list[list[str]]) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (base64.b64decode(key).decode("utf-8", "surrogateescape"), base64.b64decode(value))
        for key, value in encoded
    )


class Ingestor:
    """Applies batches of records of one topic to the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        rate_cards: RateCardBook,
        *,
        park_retry_s: float = 300.0,
        conflict_retry_count_max: int = 5,
        desk: CashoutDesk | None = None,
        topic_prefix: str = "",
    ) -> None:
        self.ledger = ledger
        self.rate_cards = rate_cards
        self.desk = desk or CashoutDesk(CashoutLimits(), EligibilitySettings(), topic_prefix)
        if self.desk.topic_prefix != topic_prefix:
            raise ValueError("the cash-out desk and the ingestor serve different topic prefixes")
        # The deployment's topic prefix: parked events and dead letters are recorded under it.
        self.topic_prefix = topic_prefix
        self.park_retry_s = park_retry_s
        self.counts = metrics.IngestCounts()
        self._conflict_retry_count_max = conflict_retry_count_max

    async def process(self, topic: str, records: Sequence[InputRecord]) -> BatchReport:
        """Apply one batch of `topic` (the contract's name, without prefix).

        Returns what became of each record; dead letters are for the caller to publish before it
        commits the offsets. Database errors propagate, and the caller retries the same batch.
        """
        parsed: list[_Parsed] = []
        report = BatchReport()
        for record in records:
            outcome = parse_record(topic, record)
            if isinstance(outcome, DeadLetter):
                report.dead_letters.append(outcome)
            else:
                parsed.append(outcome)
        await self._apply(topic, parsed, report)
        self._count(topic, len(records), report)
        return report

    async def retry_parked(self, topic: str, limit: int = 1_000) -> BatchReport:
        """Try parked events of `topic` again; past their deadline they are dead-lettered."""
        async with self.ledger.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT event_id, payload, headers, kafka_partition, kafka_offset,"
                        " retry_until FROM parked_events"
                        " WHERE topic = :topic AND topic_prefix = :prefix"
                        " ORDER BY parked_at LIMIT :limit"
                    ),
                    {"topic": topic, "prefix": self.topic_prefix, "limit": limit},
                )
            ).all()
        parsed: list[_Parsed] = []
        report = BatchReport()
        for row in rows:
            record = InputRecord(
                topic,
                row.kafka_partition,
                row.kafka_offset,
                None,
                bytes(row.payload),
                headers_from_json(row.headers),
            )
            outcome = parse_record(topic, record)
            assert not isinstance(outcome, DeadLetter), "only valid events are parked"
            outcome.from_parking = True
            outcome.parked_until = row.retry_until
            parsed.append(outcome)
        if parsed:
            await self._apply(topic, parsed, report)
            self.counts.unparked_applied += report.applied
            self.counts.unparked_duplicates += report.duplicates
            self.counts.unparked_dead_lettered += len(report.dead_letters)
            metrics.EVENTS_APPLIED.labels(topic).inc(report.applied)
            for letter in report.dead_letters:
                metrics.EVENTS_DEAD_LETTERED.labels(topic, letter.error).inc()
        return report

    def _count(self, topic: str, consumed: int, report: BatchReport) -> None:
        counts = self.counts
        counts.consumed += consumed
        counts.applied += report.applied
        counts.duplicates += report.duplicates
        counts.parked += report.parked
        counts.dead_lettered += len(report.dead_letters)
        for letter in report.dead_letters:
            counts.dead_letter_errors[letter.error] = (
                counts.dead_letter_errors.get(letter.error, 0) + 1
            )
            metrics.EVENTS_DEAD_LETTERED.labels(topic, letter.error).inc()
        metrics.EVENTS_CONSUMED.labels(topic).inc(consumed)
        metrics.EVENTS_APPLIED.labels(topic).inc(report.applied)
        metrics.EVENTS_DUPLICATE.labels(topic).inc(report.duplicates)
        metrics.EVENTS_PARKED.labels(topic).inc(report.parked)

    async def _apply(self, topic: str, parsed: list[_Parsed], report: BatchReport) -> None:
        if topic == topics.CREATORS_UPDATED:
            await self._apply_profiles(parsed, report)
            return
        if topic in (topics.CASHOUTS_REQUESTED, topics.PAYOUTS_UPDATED):
            await self._apply_cashouts(topic, parsed, report)
            return
        if topic not in LEDGER_TOPICS:
            raise ValueError(f"{topic} is not a ledger topic")
        if topic == topics.GIFTS_SENT:
            await self._apply_gifts(parsed, report)
            return
        planned: dict[str, tuple[list[Leg], int | None]] = {}
        specs: list[AccountSpec] = []
        for item in parsed:
            if isinstance(item.event, GiftReversed):
                specs += _leg_accounts(item.event)
            elif item.event.event_id not in planned:  # only a first copy can be applied
                legs, version = _legs_without_lookup(item.event)
                planned[item.event.event_id] = (legs, version)
                specs += [spec for leg in legs for spec in (leg.debit, leg.credit)]
        account_ids = await self.ledger.accounts.ids(specs)
        early_letters = list(report.dead_letters)
        batch_report = await run_with_conflict_retry(
            self.ledger.engine,
            lambda conn: self._apply_in(conn, topic, parsed, planned, account_ids, early_letters),
            self._conflict_retry_count_max,
        )
        report.absorb(batch_report)

    async def _apply_gifts(self, parsed: list[_Parsed], report: BatchReport) -> None:
        """Gifts take the ledger's path for new transfers: each fresh gift is one transfer,
        stored with no lookup of its id, since its `event_id` was not applied yet."""
        gifts: dict[str, GiftTransfer] = {}
        specs = [GIFT_DIAMOND_SOURCE, *_COIN_ACCOUNTS]
        for item in parsed:
            event = item.event
            if event.event_id not in gifts:  # only a first copy can be applied
                assert isinstance(event, GiftSent)
                gift = gift_transfer(event, self.rate_cards.in_force_at(event.occurred_at))
                gifts[event.event_id] = gift
                specs.append(gift.creator_account)
        account_ids = await self.ledger.accounts.ids(specs)
        early_letters = list(report.dead_letters)
        batch_report = await run_with_conflict_retry(
            self.ledger.engine,
            lambda conn: self._apply_gifts_in(conn, parsed, gifts, account_ids, early_letters),
            self._conflict_retry_count_max,
        )
        report.absorb(batch_report)

    async def _apply_gifts_in(
        self,
        conn: AsyncConnection,
        items: list[_Parsed],
        gifts: dict[str, GiftTransfer],
        account_ids: dict[str, int],
        early_letters: list[DeadLetter],
    ) -> BatchReport:
        """The transaction of one batch of gifts. A gift applied meanwhile by another consumer
        fails it on the event's or the transfer's unique key (`LedgerConflictError`): the batch
        runs again, and then finds that gift applied.

        The applied events and dead letters are written first: the ledger's write locks the
        platform's accounts, which every consumer's batch of gifts updates, until the commit."""
        report = BatchReport()
        fresh = await self._drop_applied(conn, topics.GIFTS_SENT, items, report)
        await self._record_applied(conn, topics.GIFTS_SENT, fresh)
        letters = [*early_letters, *report.dead_letters]
        await self._record_dead_letters(conn, topics.GIFTS_SENT, letters)
        batch = NewTransfers()
        source_id = account_ids[GIFT_DIAMOND_SOURCE.name]
        for item in fresh:
            gift = gifts[item.event.event_id]
            batch.add(
                gift.transfer_id,
                source_id,
                account_ids[gift.creator_account.name],
                gift.milli_diamonds,
                _GIFT_DIAMONDS,
                gift.rate_card_version,
                item.event.event_id,
                gift.metadata_text,
            )
        _add_batch_coins(batch, fresh, gifts, account_ids)
        if batch:
            await post_new_batch(conn, batch, self.ledger.account_facts)
        report.applied = len(fresh)
        return report

    async def _apply_profiles(self, items: list[_Parsed], report: BatchReport) -> None:
        """Creator profile updates: a projection, not transfers, but applied exactly like them:
        deduplicated by event_id and recorded in the same transaction."""
        early_letters = list(report.dead_letters)

        async def unit_of_work(conn: AsyncConnection) -> BatchReport:
            batch_report = BatchReport()
            fresh = await self._drop_applied(conn, topics.CREATORS_UPDATED, items, batch_report)
            updates = [item.event for item in fresh]
            await apply_creator_updates(conn, updates)  # type: ignore[arg-type]
            await self._record_applied(conn, topics.CREATORS_UPDATED, fresh)
            letters = [*early_letters, *batch_report.dead_letters]
            await self._record_dead_letters(conn, topics.CREATORS_UPDATED, letters)
            batch_report.applied = len(fresh)
            return batch_report

        batch_report = await run_with_conflict_retry(
            self.ledger.engine, unit_of_work, self._conflict_retry_count_max
        )
        report.absorb(batch_report)

    async def _apply_cashouts(self, topic: str, items: list[_Parsed], report: BatchReport) -> None:
        """Cash-out requests and payout results, one at a time in one transaction per batch."""
        specs: list[AccountSpec] = []
        for item in items:
            if isinstance(item.event, CashoutRequested):
                specs += request_accounts(item.event)
            elif isinstance(item.event, PayoutUpdated):
                async with self.ledger.engine.connect() as conn:
                    cashout = await load_cashout(conn, item.event.cashout_id)
                if cashout is not None:
                    specs += [
                        hold_source(cashout.creator_id, cashout.asset),
                        hold_target(cashout.creator_id, cashout.asset),
                        *settlement_accounts(cashout.payout_currency),
                    ]
        account_ids = await self.ledger.accounts.ids(specs)
        early_letters = list(report.dead_letters)

        async def unit_of_work(conn: AsyncConnection) -> BatchReport:
            batch_report = BatchReport()
            fresh = await self._drop_applied(conn, topic, items, batch_report)
            applied: list[_Parsed] = []
            for item in fresh:
                event = item.event
                if isinstance(event, CashoutRequested):
                    await self.desk.request(conn, event, self.rate_cards, account_ids)
                    applied.append(item)
                    continue
                assert isinstance(event, PayoutUpdated)
                refusal = await self.desk.payout_result(conn, event, self.rate_cards, account_ids)
                if refusal is None:
                    applied.append(item)
                else:
                    detail = f"payout {event.status} for cash-out {event.cashout_id}: {refusal}"
                    batch_report.dead_letters.append(
                        DeadLetter(item.record, refusal[:64], detail, event.event_id)
                    )
            await self._record_applied(conn, topic, applied)
            letters = [*early_letters, *batch_report.dead_letters]
            await self._record_dead_letters(conn, topic, letters)
            batch_report.applied = len(applied)
            return batch_report

        batch_report = await run_with_conflict_retry(
            self.ledger.engine, unit_of_work, self._conflict_retry_count_max
        )
        report.absorb(batch_report)

    async def _apply_in(
        self,
        conn: AsyncConnection,
        topic: str,
        items: list[_Parsed],
        planned: dict[str, tuple[list[Leg], int | None]],
        account_ids: dict[str, int],
        early_letters: list[DeadLetter],
    ) -> BatchReport:
        """The transaction of one batch; `early_letters` (bad input found before it) are
        recorded with it."""
        report = BatchReport()
        fresh = await self._drop_applied(conn, topic, items, report)
        if topic == topics.GIFTS_REVERSED:
            fresh = await self._plan_reversals(conn, fresh, planned, account_ids, report)
        transfers: list[Transfer] = []
        owners: list[_Parsed] = []
        for item in fresh:
            legs, version = planned[item.event.event_id]
            for position, leg in enumerate(legs):
                last = position == len(legs) - 1
                transfers.append(
                    Transfer(
                        id=self._leg_transfer_id(topic, item.event, leg),
                        debit_account_id=account_ids[leg.debit.name],
                        credit_account_id=account_ids[leg.credit.name],
                        amount=leg.amount,
                        code=leg.code,
                        flags=_NO_FLAGS if last else _LINKED,
                        rate_card_version=version,
                        event_id=item.event.event_id,
                        metadata=leg.metadata,
                    )
                )
                owners.append(item)
        outcome = await post_batch(conn, transfers, self.ledger.account_facts)
        results_by_event: dict[str, list[PostResult]] = {}
        for item, result in zip(owners, outcome.results, strict=False):
            results_by_event.setdefault(item.event.event_id, []).append(result)
        applied: list[_Parsed] = []
        for item in fresh:
            results = results_by_event[item.event.event_id]
            if all(result is PostResult.OK for result in results):
                applied.append(item)
            elif all(result is PostResult.EXISTS for result in results):
                report.duplicates += 1
            else:
                refused = sorted({r.value for r in results if r is not PostResult.OK})
                error = "already_reversed" if topic == topics.GIFTS_REVERSED else "ledger_refused"
                report.dead_letters.append(
                    DeadLetter(item.record, error, ", ".join(refused), item.event.event_id)
                )
        await self._record_applied(conn, topic, applied)
        await self._record_dead_letters(conn, topic, [*early_letters, *report.dead_letters])
        await self._unpark(
            conn, topic, [item for item in items if item.event.event_id not in report.still_waiting]
        )
        report.applied = len(applied)
        return report

    @staticmethod
    def _leg_transfer_id(topic: str, event: Event, leg: Leg) -> uuid.UUID:
        # A gift is reversed at most once, whatever the reversal event's id.
        if isinstance(event, GiftReversed):
            return transfer_id(topic, event.gift_event_id, leg.name)
        return transfer_id(topic, event.event_id, leg.name)

    async def _drop_applied(
        self, conn: AsyncConnection, topic: str, items: list[_Parsed], report: BatchReport
    ) -> list[_Parsed]:
        """Keep the items seen for the first time. Each copy of an event_id already applied,
        parked, or earlier in this batch is a duplicate when its payload hash matches, else a
        conflict: the same verdict wherever Kafka happened to cut the batches."""
        if not items:
            return []
        ids = [item.event.event_id for item in items]
        rows = await conn.execute(SELECT_APPLIED, {"topic": topic, "ids": ids})
        known = {row.event_id: bytes(row.payload_sha256) for row in rows}
        if topic == topics.GIFTS_REVERSED:
            known = {**await self._parked_hashes(conn, topic, items), **known}
        fresh: list[_Parsed] = []
        for item in items:
            stored_hash = known.get(item.event.event_id)
            if stored_hash is None:
                fresh.append(item)
                known[item.event.event_id] = item.payload_sha256
            elif stored_hash == item.payload_sha256:
                report.duplicates += 1
            else:
                report.dead_letters.append(
                    DeadLetter(
                        item.record,
                        "event_id_conflict",
                        "event_id already seen with a different payload",
                        item.event.event_id,
                    )
                )
        return fresh

    async def _parked_hashes(
        self, conn: AsyncConnection, topic: str, items: list[_Parsed]
    ) -> dict[str, bytes]:
        """Payload hashes of events this deployment parked that these items (not the parked
        ones) repeat."""
        ids = [item.event.event_id for item in items if not item.from_parking]
        if not ids:
            return {}
        rows = await conn.execute(
            _SELECT_PARKED, {"prefix": self.topic_prefix, "topic": topic, "ids": ids}
        )
        hashes: dict[str, bytes] = {}
        for row in rows:
            parked = parse_record(topic, InputRecord(topic, 0, 0, None, bytes(row.payload)))
            assert not isinstance(parked, DeadLetter), "only valid events are parked"
            hashes[row.event_id] = parked.payload_sha256
        return hashes

    async def _plan_reversals(
        self,
        conn: AsyncConnection,
        items: list[_Parsed],
        planned: dict[str, tuple[list[Leg], int | None]],
        account_ids: dict[str, int],
        report: BatchReport,
    ) -> list[_Parsed]:
        """Price each reversal from its gift's stored transfers; park those whose gift is
        missing (or dead-letter them once their parking deadline has passed)."""
        reversals = [item for item in items if isinstance(item.event, GiftReversed)]
        gift_ids = [
            _gift_diamonds_id(item.event.gift_event_id)  # type: ignore[attr-defined]
            for item in reversals
        ]
        stored, _ = await read_stored(conn, gift_ids)
        now = datetime.now(UTC)
        ready: list[_Parsed] = []
        to_park: list[_Parsed] = []
        for item in reversals:
            event = item.event
            assert isinstance(event, GiftReversed)
            gift_diamonds: StoredTransfer | None = stored.get(
                _gift_diamonds_id(event.gift_event_id)
            )
            if gift_diamonds is not None:
                creator_account = account_ids[_leg_accounts(event)[2].name]
                if gift_diamonds.credit_account_id != creator_account:
                    report.dead_letters.append(
                        DeadLetter(
                            item.record,
                            "creator_mismatch",
                            f"gift {event.gift_event_id} was sent to another creator",
                            event.event_id,
                        )
                    )
                    continue
                planned[event.event_id] = (
                    reversal_legs(event, _gift_coins(gift_diamonds), gift_diamonds.amount),
                    gift_diamonds.rate_card_version,
                )
                ready.append(item)
            elif item.from_parking and item.parked_until is not None and item.parked_until <= now:
                report.dead_letters.append(
                    DeadLetter(
                        item.record,
                        "gift_not_found",
                        f"gift {event.gift_event_id} did not arrive before {item.parked_until}",
                        event.event_id,
                    )
                )
            elif item.from_parking:
                report.still_waiting.add(event.event_id)
            else:
                to_park.append(item)
        await self._park(conn, topics.GIFTS_REVERSED, to_park, now)
        report.parked += len(to_park)
        return ready

    async def _park(
        self, conn: AsyncConnection, topic: str, items: list[_Parsed], now: datetime
    ) -> None:
        if not items:
            return
        await conn.execute(
            text(
                """
                INSERT INTO parked_events (topic_prefix, topic, event_id, payload, headers,
                                           kafka_partition, kafka_offset, waiting_for, retry_until)
                SELECT :prefix, :topic, * FROM unnest(
                    CAST(:event_ids AS text[]), CAST(:payloads AS bytea[]),
                    CAST(:headers AS text[])::jsonb[], CAST(:partitions AS integer[]),
                    CAST(:offsets AS bigint[]), CAST(:waiting_for AS text[]),
                    CAST(:retry_until AS timestamptz[]))
                ON CONFLICT (topic_prefix, topic, event_id) DO NOTHING
                """
            ),
            {
                "prefix": self.topic_prefix,
                "topic": topic,
                "event_ids": [item.event.event_id for item in items],
                "payloads": [item.record.value for item in items],
                "headers": [_headers_json(item.record.headers) for item in items],
                "partitions": [item.record.partition for item in items],
                "offsets": [item.record.offset for item in items],
                "waiting_for": [
                    f"gift {item.event.gift_event_id}"  # type: ignore[attr-defined]
                    for item in items
                ],
                "retry_until": [now + timedelta(seconds=self.park_retry_s)] * len(items),
            },
        )

    async def _unpark(self, conn: AsyncConnection, topic: str, items: list[_Parsed]) -> None:
        done = [item.event.event_id for item in items if item.from_parking]
        if done:
            await conn.execute(
                text(
                    "DELETE FROM parked_events WHERE topic_prefix = :prefix AND topic = :topic"
                    " AND event_id = ANY(CAST(:ids AS text[]))"
                ),
                {"prefix": self.topic_prefix, "topic": topic, "ids": done},
            )

    @staticmethod
    async def _record_applied(conn: AsyncConnection, topic: str, items: list[_Parsed]) -> None:
        if not items:
            return
        await conn.execute(
            text(
                """
                INSERT INTO applied_events (topic, event_id, payload_sha256, creator_id,
                                            occurred_at, kafka_partition, kafka_offset)
                SELECT :topic, * FROM unnest(
                    CAST(:event_ids AS text[]), CAST(:hashes AS bytea[]),
                    CAST(:creator_ids AS text[]), CAST(:occurred_at AS timestamptz[]),
                    CAST(:partitions AS integer[]), CAST(:offsets AS bigint[]))
                """
            ),
            {
                "topic": topic,
                "event_ids": [item.event.event_id for item in items],
                "hashes": [item.payload_sha256 for item in items],
                "creator_ids": [getattr(item.event, "creator_id", None) for item in items],
                "occurred_at": [item.event.occurred_at for item in items],
                "partitions": [item.record.partition for item in items],
                "offsets": [item.record.offset for item in items],
            },
        )

    async def _record_dead_letters(
        self, conn: AsyncConnection, topic: str, letters: list[DeadLetter]
    ) -> None:
        """One row per source record, keyed by the Kafka topic it was read from (prefix, topic,
        partition, offset): a record dead-lettered again, when its batch runs again, keeps the
        row it has."""
        if not letters:
            return
        await conn.execute(
            text(
                """
                INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset,
                                          event_id, error, detail)
                SELECT :prefix, :topic, * FROM unnest(
                    CAST(:partitions AS integer[]), CAST(:offsets AS bigint[]),
                    CAST(:event_ids AS text[]), CAST(:errors AS text[]),
                    CAST(:details AS text[]))
                ON CONFLICT DO NOTHING
                """
            ),
            {
                "prefix": self.topic_prefix,
                "topic": topic,
                "partitions": [letter.record.partition for letter in letters],
                "offsets": [letter.record.offset for letter in letters],
                "event_ids": [letter.event_id for letter in letters],
                "errors": [letter.error for letter in letters],
                "details": [letter.detail for letter in letters],
            },
        )
