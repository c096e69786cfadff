"""Re-driving dead letters: a dead letter's original record (its bytes, key and headers, read back
from its source topic at its partition and offset) published again to that topic and partition,
once whatever refused it has been fixed (the gift a reversal waited for has arrived, the cash-out
a bank report names exists).

The consumers take the copy like any record. Its event_id is the original's, so an event applied
meanwhile is a duplicate; a copy that still cannot apply goes to `<topic>.dlq` again, with the
provenance headers below kept, and becomes a dead letter of its own.

- An operator picks dead letters by id, or by topic (and error, and a range of `recorded_at`),
  at most `REDRIVE_COUNT_MAX` per request, oldest first.
- Each dead letter is re-driven at most once (`dead_letter_redrives`, keyed by the dead letter).
  A request repeated with its idempotency key re-drives only what it has not re-driven yet, and
  never a dead letter recorded after its first re-drive.
- A copy that fails again is never picked by a re-drive by topic, only by its id: nothing loops.
  It is told apart by its place (the copy's partition and offset) and its record (the re-driven
  letter's); any other dead letter is picked wherever it is, one at a place an earlier copy took
  (a topic whose offsets started again) too.
- Each re-driven dead letter is one operator action (`dead_letter_redriven` on
  `dead-letter:<id>`, keyed on `operator.actions` by the source record's key), recorded with its
  `dead_letter_redrives` row only after the broker has acknowledged the copy. A crash in between
  sends the copy again when the request is repeated: at least once, and the consumers' idempotency
  makes the second copy a duplicate.
- The re-drives of one deployment (topic prefix) take one lock, so two requests never send the
  same dead letter at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas import topics
from schemas.events import ID_LENGTH_MAX
from services.ingestion.records import (
    Header,
    InputRecord,
    is_dead_lettered_record,
    kafka_headers,
)
from services.operator.actions_log import (
    MESSAGE_KEY_DETAIL,
    ActionKeyConflictError,
    OperatorAction,
    act_as,
    check_action,
    find_action,
    load_action,
    normalized_details,
    record_action,
)
from services.runtime.kafka_offsets import end_offsets

REDRIVE_COUNT_MAX: Final = 1_000
# A source record's key longer than this is not kept in its re-drive's details (upstream keys
# are creator ids, at most 128 characters); the action's message is then keyed by its target.
MESSAGE_KEY_LENGTH_MAX: Final = 1_024
# The largest partition and offset Kafka has: the details checked before a copy is sent carry
# them, so that those of the copy sent are no longer.
PARTITION_MAX: Final = 2**31 - 1
OFFSET_MAX: Final = 2**63 - 1
REDRIVE_OF_HEADER: Final = "giftledger-redrive-of"
REDRIVE_KEY_HEADER: Final = "giftledger-redrive-key"
PROVENANCE_HEADERS: Final = frozenset({REDRIVE_OF_HEADER, REDRIVE_KEY_HEADER})
ACTION: Final = "dead_letter_redriven"
SOURCE_READ_WAIT_S: Final = 5.0
SEND_TIMEOUT_S: Final = 30.0
FETCH_WAIT_MS: Final = 500
FETCH_RECORD_COUNT_MAX: Final = 500
CLIENT_ID: Final = "giftledger-redrive"
_LOCK_NAMESPACE: Final = b"giftledger.redrive:"

Outcome = Literal["redriven", "already_redriven", "source_unavailable"]


class DeadLetterNotFoundError(LookupError):
    """Some of the dead letters named by id do not exist in this deployment."""

    def __init__(self, missing: Sequence[int]) -> None:
        self.missing = list(missing)
        super().__init__(f"no dead letter {', '.join(str(id_) for id_ in missing)}")


@dataclass(frozen=True, slots=True)
class DeadLetterSelection:
    """Which dead letters a request re-drives: `dead_letter_ids`, or those of `topic` (with
    `error`, recorded in `[recorded_from, recorded_to)`), oldest first, at most `limit`."""

    dead_letter_ids: tuple[int, ...] = ()
    topic: str | None = None
    error: str | None = None
    recorded_from: datetime | None = None
    recorded_to: datetime | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= REDRIVE_COUNT_MAX:
            raise ValueError(f"limit must be between 1 and {REDRIVE_COUNT_MAX}")
        if self.dead_letter_ids:
            if any(value is not None for value in self._filter_values()):
                raise ValueError("name dead letters by id, or by topic, error and time: not both")
            if len(self.dead_letter_ids) > REDRIVE_COUNT_MAX:
                raise ValueError(f"at most {REDRIVE_COUNT_MAX} dead letter ids per request")
            if any(id_ < 1 for id_ in self.dead_letter_ids):
                raise ValueError("dead letter ids are positive integers")
            return
        if self.topic not in topics.CONSUMED_TOPICS:
            raise ValueError(
                f"topic must be one of {', '.join(topics.CONSUMED_TOPICS)} (without the prefix)"
                " when no dead letter id is given"
            )
        for moment in (self.recorded_from, self.recorded_to):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError("recorded_from and recorded_to need a time zone")
        # recorded_to at or before recorded_from is an empty range: it selects nothing.

    def _filter_values(self) -> tuple[object, ...]:
        return (self.topic, self.error, self.recorded_from, self.recorded_to)

    def document(self) -> dict[str, Any]:
        """The request as the action log records it (JSON)."""
        if self.dead_letter_ids:
            return {"dead_letter_ids": sorted(set(self.dead_letter_ids))}
        return {
            "topic": self.topic,
            "error": self.error,
            "recorded_from": None if self.recorded_from is None else self.recorded_from.isoformat(),
            "recorded_to": None if self.recorded_to is None else self.recorded_to.isoformat(),
            "limit": self.limit,
        }


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    id: int
    topic: str
    partition: int
    offset: int
    event_id: str | None
    error: str
    value_sha256: bytes | None  # of the record's value (NULL before migration 0030)
    redrive_action_id: int | None
    copy_partition: int | None
    copy_offset: int | None


@dataclass(frozen=True, slots=True)
class SourceRecord:
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...]


@dataclass(frozen=True, slots=True)
class RedriveOutcome:
    """What one request did with one dead letter."""

    dead_letter_id: int
    topic: str
    event_id: str | None
    error: str
    outcome: Outcome
    operator_action_id: int | None
    copy_partition: int | None
    copy_offset: int | None

    def document(self) -> dict[str, Any]:
        return {
            "dead_letter_id": self.dead_letter_id,
            "topic": self.topic,
            "event_id": self.event_id,
            "error": self.error,
            "outcome": self.outcome,
            "operator_action_id": self.operator_action_id,
            "copy_partition": self.copy_partition,
            "copy_offset": self.copy_offset,
        }


@dataclass(frozen=True, slots=True)
class RedriveRequest:
    """Who asks, why, under which idempotency key, for which dead letters."""

    idempotency_key: str
    actor: str
    reason: str
    ticket: str | None
    selection: DeadLetterSelection


def letter_action_key(request_key: str, dead_letter_id: int) -> str:
    """The idempotency key of the action that re-drives one dead letter for a request:
    `<request key>#<id>` while it fits, else `redrive#<sha256 of the request key>#<id>`."""
    readable = f"{request_key}#{dead_letter_id}"
    if len(readable) <= ID_LENGTH_MAX:
        return readable
    return f"redrive#{hashlib.sha256(request_key.encode()).hexdigest()}#{dead_letter_id}"


def redrive_headers(
    original: Sequence[Header], dead_letter_id: int, request_key: str
) -> list[Header]:
    """The original headers (less the provenance of an earlier re-drive), then ours."""
    kept = [(name, value) for name, value in original if name not in PROVENANCE_HEADERS]
    return [
        *kept,
        (REDRIVE_OF_HEADER, str(dead_letter_id).encode()),
        (REDRIVE_KEY_HEADER, request_key.encode()),
    ]


def is_source_of(
    topic: str,
    value_sha256: bytes | None,
    event_id: str | None,
    record: SourceRecord,
) -> bool:
    """Whether `record`, read at a dead letter's partition and offset of `topic`, is the one
    the dead letter was made of: by its value's hash, or by its event_id (a topic recreated,
    or an embedded broker restarted, puts other records at the same offsets). A dead letter
    recorded with neither is taken to match."""
    if value_sha256 is None and event_id is None:
        return True
    as_consumed = InputRecord(topic, 0, 0, record.key, record.value)
    return is_dead_lettered_record(topic, as_consumed, value_sha256, event_id)


def _lock_key(topic_prefix: str) -> int:
    digest = hashlib.sha256(_LOCK_NAMESPACE + topic_prefix.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# Which dead letters -------------------------------------------------------------------------

_BY_ID = text(
    """
    SELECT d.id, d.topic, d.kafka_partition AS partition, d.kafka_offset AS "offset",
           d.event_id, d.error, d.value_sha256, r.operator_action_id AS redrive_action_id,
           r.kafka_partition AS copy_partition,
           r.kafka_offset AS copy_offset
    FROM dead_letters d
    LEFT JOIN dead_letter_redrives r ON r.dead_letter_id = d.id
    WHERE d.topic_prefix = :prefix AND d.id = ANY(CAST(:ids AS bigint[]))
    ORDER BY d.id
    """
)
# Not re-driven yet, or re-driven by this request; never the copy of an earlier re-drive failing
# again; never recorded after this request's first re-drive. A copy that failed again is a later
# dead letter at the place the copy took, of the re-driven letter's record (its value's hash, or
# recorded without one, its event_id): a topic whose offsets started again puts other records
# at the places of earlier copies, and those are dead letters like any.
_BY_TOPIC = text(
    """
    SELECT d.id, d.topic, d.kafka_partition AS partition, d.kafka_offset AS "offset",
           d.event_id, d.error, d.value_sha256, r.operator_action_id AS redrive_action_id,
           r.kafka_partition AS copy_partition,
           r.kafka_offset AS copy_offset
    FROM dead_letters d
    LEFT JOIN dead_letter_redrives r ON r.dead_letter_id = d.id
    WHERE d.topic_prefix = :prefix AND d.topic = :topic
      AND (CAST(:error AS text) IS NULL OR d.error = :error)
      AND (CAST(:recorded_from AS timestamptz) IS NULL OR d.recorded_at >= :recorded_from)
      AND (CAST(:recorded_to AS timestamptz) IS NULL OR d.recorded_at < :recorded_to)
      AND (CAST(:as_of AS timestamptz) IS NULL OR d.recorded_at <= :as_of)
      AND (r.dead_letter_id IS NULL OR r.idempotency_key = :key)
      AND NOT EXISTS (
          SELECT 1 FROM dead_letter_redrives copy
          JOIN dead_letters original ON original.id = copy.dead_letter_id
          WHERE copy.topic_prefix = d.topic_prefix AND copy.topic = d.topic
            AND copy.kafka_partition = d.kafka_partition AND copy.kafka_offset = d.kafka_offset
            AND original.id < d.id
            AND (d.value_sha256 = original.value_sha256
                 OR (original.value_sha256 IS NULL
                     AND (original.event_id IS NULL OR d.event_id = original.event_id))))
    ORDER BY d.id
    LIMIT :limit
    """
)
_FIRST_OF_REQUEST = text(
    "SELECT operator_action_id, redriven_at FROM dead_letter_redrives"
    " WHERE topic_prefix = :prefix AND idempotency_key = :key"
    " ORDER BY redriven_at, dead_letter_id LIMIT 1"
)
_RECORD = text(
    """
    INSERT INTO dead_letter_redrives (dead_letter_id, operator_action_id, idempotency_key,
                                      topic_prefix, topic, kafka_partition, kafka_offset)
    VALUES (:dead_letter_id, :action_id, :key, :prefix, :topic, :partition, :offset)
    """
)


async def select_dead_letters(
    conn: AsyncConnection, topic_prefix: str, request: RedriveRequest
) -> list[StoredDeadLetter]:
    """The dead letters `request` names; raises `DeadLetterNotFoundError` for unknown ids and
    `ActionKeyConflictError` when its key was used by a request with other content."""
    first = (
        await conn.execute(
            _FIRST_OF_REQUEST, {"prefix": topic_prefix, "key": request.idempotency_key}
        )
    ).first()
    if first is not None:
        recorded = await load_action(conn, first.operator_action_id)
        assert recorded is not None, "a re-drive names its recorded action"
        _check_same_request(recorded, request)
    selection = request.selection
    if selection.dead_letter_ids:
        ids = sorted(set(selection.dead_letter_ids))
        rows = await conn.execute(_BY_ID, {"prefix": topic_prefix, "ids": ids})
        letters = [StoredDeadLetter(**row._mapping) for row in rows]
        missing = sorted(set(ids) - {letter.id for letter in letters})
        if missing:
            raise DeadLetterNotFoundError(missing)
        return letters
    rows = await conn.execute(
        _BY_TOPIC,
        {
            "prefix": topic_prefix,
            "topic": selection.topic,
            "error": selection.error,
            "recorded_from": selection.recorded_from,
            "recorded_to": selection.recorded_to,
            "as_of": None if first is None else first.redriven_at,
            "key": request.idempotency_key,
            "limit": selection.limit,
        },
    )
    return [StoredDeadLetter(**row._mapping) for row in rows]


def _check_same_request(recorded: OperatorAction, request: RedriveRequest) -> None:
    given = (request.actor, request.reason, request.ticket, request.selection.document())
    stored = (
        recorded.actor,
        recorded.reason,
        recorded.ticket,
        recorded.details.get("request"),
    )
    if given != stored:
        raise ActionKeyConflictError(recorded)


# The source records -------------------------------------------------------------------------


async def read_source_records(
    bootstrap_servers: str,
    topic_name: str,
    places: Sequence[tuple[int, int]],
    wait_s: float = SOURCE_READ_WAIT_S,
) -> dict[tuple[int, int], SourceRecord]:
    """The records of `topic_name` at these (partition, offset) places that are still there,
    read within `wait_s`; a place whose record is gone (retention) is left out."""
    wanted = set(places)
    found: dict[tuple[int, int], SourceRecord] = {}
    if not wanted:
        return found
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id=CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    async with asyncio.timeout(wait_s):
        await consumer.start()
    try:
        async with asyncio.timeout(wait_s):
            await consumer.topics()  # the cluster's metadata: which partitions exist
            existing = consumer.partitions_for_topic(topic_name) or set()
            # a partition that is not there (a topic made again with fewer) holds nothing
            wanted = {place for place in wanted if place[0] in existing}
            if not wanted:
                return found
            partitions = sorted({TopicPartition(topic_name, partition) for partition, _ in wanted})
            ends = await end_offsets(consumer, partitions, wait_s)  # assigns them
            for partition, offset in sorted(wanted):
                place = TopicPartition(topic_name, partition)
                if (partition, offset) in found or offset >= ends[place]:
                    continue
                consumer.seek(place, offset)
                await _read_up_to(consumer, place, offset, wanted, found)
    finally:
        await consumer.stop()
    return found


async def _read_up_to(
    consumer: Any,
    place: Any,
    offset: int,
    wanted: set[tuple[int, int]],
    found: dict[tuple[int, int], SourceRecord],
) -> None:
    """Fetch from the consumer's position until it passes `offset`, keeping the wanted records
    seen on the way. A fetch that finds nothing proves nothing (a broker may hold a fetch for
    its whole wait, and one sent before the seek is dropped), so only the position tells: a
    record not met before it passed is no longer in the log (retention moved the log's start
    past it, or compaction took it). The caller's timeout bounds the wait."""
    while await consumer.position(place) <= offset:
        batches = await consumer.getmany(
            place, timeout_ms=FETCH_WAIT_MS, max_records=FETCH_RECORD_COUNT_MAX
        )
        for record in batches.get(place, []):
            if (place.partition, record.offset) in wanted:
                found[(place.partition, record.offset)] = SourceRecord(
                    record.key,
                    record.value,
                    kafka_headers(record.headers),
                )


# Re-driving ---------------------------------------------------------------------------------


@asynccontextmanager
async def redrive_producer(bootstrap_servers: str) -> AsyncIterator[Any]:
    """A producer configured as the service's own (every replica acknowledges)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, client_id=CLIENT_ID, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


class DeadLetterRedriver:
    """Re-drives the dead letters of one deployment (its topic prefix) on one Kafka cluster."""

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap_servers: str,
        topic_prefix: str,
        *,
        database_role: str | None,
    ) -> None:
        self._engine = engine
        self._bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        # The role the transaction acts as (the services' writer role), when given.
        self._database_role = database_role

    async def redrive(self, request: RedriveRequest) -> list[RedriveOutcome]:
        """Re-drive what `request` selects; one outcome per dead letter selected, in id order.

        One transaction holds the deployment's re-drive lock from the selection to the commit
        of what was sent; the action log is appended to only after the broker's acknowledgements,
        so its head is locked for a moment only."""
        prefix = self.topic_prefix
        async with self._engine.begin() as conn:
            await act_as(conn, self._database_role)
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(prefix)}
            )
            letters = await select_dead_letters(conn, prefix, request)
            pending = [letter for letter in letters if letter.redrive_action_id is None]
            sources = await self._read_sources(pending)
            to_send = [letter for letter in pending if letter.id in sources]
            # Nothing is sent that the log would then refuse to record: a copy sent but not
            # recorded would leave its letter un-redriven, to be sent again on every retry.
            for letter in to_send:
                await self._check_recordable(conn, request, letter, sources[letter.id])
            copies = await self._publish(to_send, sources, request.idempotency_key)
            sent = {
                letter.id: await self._record(conn, request, letter, sources[letter.id], copy)
                for letter, copy in zip(to_send, copies, strict=True)
            }
        return [_outcome(letter, sent.get(letter.id)) for letter in letters]

    async def _read_sources(self, letters: Sequence[StoredDeadLetter]) -> dict[int, SourceRecord]:
        """The source record of each letter still in its topic, by dead letter id: the record
        at its partition and offset, if it is the one the letter was made of (its value's hash,
        or its event_id: a topic recreated, or an embedded broker restarted, puts other records
        at the same offsets); a dead letter recorded with neither is taken as it is found."""
        found: dict[int, SourceRecord] = {}
        for topic in sorted({letter.topic for letter in letters}):
            of_topic = [letter for letter in letters if letter.topic == topic]
            records = await read_source_records(
                self._bootstrap_servers,
                topics.prefixed(self.topic_prefix, topic),
                [(letter.partition, letter.offset) for letter in of_topic],
            )
            for letter in of_topic:
                record = records.get((letter.partition, letter.offset))
                if record is not None and is_source_of(
                    letter.topic, letter.value_sha256, letter.event_id, record
                ):
                    found[letter.id] = record
        return found

    async def _publish(
        self,
        letters: Sequence[StoredDeadLetter],
        sources: dict[int, SourceRecord],
        request_key: str,
    ) -> list[Any]:
        """Send each letter's copy to its source topic and partition; the broker's
        acknowledgements (with the copy's partition and offset), in order."""
        if not letters:
            return []
        async with redrive_producer(self._bootstrap_servers) as producer:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                sends = []
                for letter in letters:
                    record = sources[letter.id]
                    sends.append(
                        await producer.send(
                            topics.prefixed(self.topic_prefix, letter.topic),
                            value=record.value,
                            key=record.key,
                            partition=letter.partition,
                            headers=redrive_headers(record.headers, letter.id, request_key),
                        )
                    )
                return list(await asyncio.gather(*sends))

    async def _check_recordable(
        self,
        conn: AsyncConnection,
        request: RedriveRequest,
        letter: StoredDeadLetter,
        record: SourceRecord,
    ) -> None:
        """Raise what `_record` would raise for this letter, before its copy is sent: a field the
        log cannot take (`InvalidActionError`; the details with the largest copy position, so
        that they are checked at their longest) or the letter's action key used already, by
        another action (`ActionKeyConflictError`: the letter is not re-driven, so the key's
        action is not its re-drive)."""
        key = letter_action_key(request.idempotency_key, letter.id)
        check_action(
            idempotency_key=key,
            actor=request.actor,
            action=ACTION,
            target=_target(letter),
            reason=request.reason,
            ticket=request.ticket,
        )
        normalized_details(_details(request, letter, record, PARTITION_MAX, OFFSET_MAX))
        recorded = await find_action(conn, key)
        if recorded is not None:
            raise ActionKeyConflictError(recorded)

    async def _record(
        self,
        conn: AsyncConnection,
        request: RedriveRequest,
        letter: StoredDeadLetter,
        record: SourceRecord,
        copy: Any,
    ) -> _Sent:
        """The operator action and the re-drive row of one acknowledged copy."""
        action, _ = await record_action(
            conn,
            idempotency_key=letter_action_key(request.idempotency_key, letter.id),
            actor=request.actor,
            action=ACTION,
            target=_target(letter),
            reason=request.reason,
            ticket=request.ticket,
            details=_details(request, letter, record, copy.partition, copy.offset),
            topic_prefix=self.topic_prefix,
        )
        await conn.execute(
            _RECORD,
            {
                "dead_letter_id": letter.id,
                "action_id": action.id,
                "key": request.idempotency_key,
                "prefix": self.topic_prefix,
                "topic": letter.topic,
                "partition": copy.partition,
                "offset": copy.offset,
            },
        )
        return _Sent(action.id, copy.partition, copy.offset)


@dataclass(frozen=True, slots=True)
class _Sent:
    action_id: int
    copy_partition: int
    copy_offset: int


def _target(letter: StoredDeadLetter) -> str:
    return f"dead-letter:{letter.id}"


def _details(
    request: RedriveRequest,
    letter: StoredDeadLetter,
    record: SourceRecord,
    copy_partition: int,
    copy_offset: int,
) -> dict[str, Any]:
    """The details the re-drive of one letter records, its copy at `copy_partition` and
    `copy_offset`; the source record's key among them when the log can hold it."""
    details: dict[str, Any] = {
        "request": request.selection.document(),
        "request_key": request.idempotency_key,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "event_id": letter.event_id,
        "error": letter.error,
        "copy_partition": copy_partition,
        "copy_offset": copy_offset,
    }
    source_key = _text_key(record.key)
    if source_key is not None:
        details[MESSAGE_KEY_DETAIL] = source_key
    return details


def _text_key(key: bytes | None) -> str | None:
    """The record's key as text, when it is UTF-8, not empty, without NUL characters (which the
    log refuses) and at most `MESSAGE_KEY_LENGTH_MAX` characters; else None, and the action's
    message is keyed by its target (`actions_log.message_key`)."""
    if not key:
        return None
    try:
        text_key = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text_key or len(text_key) > MESSAGE_KEY_LENGTH_MAX:
        return None
    return text_key


def _outcome(letter: StoredDeadLetter, sent: _Sent | None) -> RedriveOutcome:
    if sent is not None:
        return RedriveOutcome(
            letter.id,
            letter.topic,
            letter.event_id,
            letter.error,
            "redriven",
            sent.action_id,
            sent.copy_partition,
            sent.copy_offset,
        )
    if letter.redrive_action_id is not None:
        return RedriveOutcome(
            letter.id,
            letter.topic,
            letter.event_id,
            letter.error,
            "already_redriven",
            letter.redrive_action_id,
            letter.copy_partition,
            letter.copy_offset,
        )
    return RedriveOutcome(
        letter.id,
        letter.topic,
        letter.event_id,
        letter.error,
        "source_unavailable",
        None,
        None,
        None,
    )
