"""After a database restore: move the consumer groups' committed offsets back to what the
database holds, so that every record applied after the backup is delivered again.

A restored database has lost what was applied after its backup, but each consumer group's
committed offsets are still those of the moment before the restore: without a rewind, Kafka never
delivers those records again. For each consumed topic (`<prefix><topic>`, group
`<KAFKA_CONSUMER_GROUP>.<topic>`) and partition, the database's position is one past the highest
offset it has a record of: `applied_events` (every applied event, keyed by topic and event_id,
without the deployment's prefix), `dead_letters` and `parked_events` (both kept by topic prefix).
A batch is applied in one transaction, in offset order within a partition, so every record of a
partition up to that offset was settled in the database (applied, a duplicate, dead-lettered or
parked). The rewind commits that position where it is behind the group's committed offset, never
ahead of it; what comes again is applied anew (the database lost it) or found a duplicate (the
idempotency keys). A partition the database has no record of is left as is and reported, or,
when asked, rewound to the beginning of its log.

A topic's offsets may have started again (the topic recreated, or the embedded broker, which
keeps its log in memory, restarted): the database then holds rows of the topic's earlier life,
at offsets the log now gives other records or has not reached. The broker says which rows are of
the log as it is now. A row at or past the partition's end offset cannot be: it is ignored, and
counted. Below the end, the position is one past the last record of the log that the database
holds at its place (the same event_id in `applied_events` or `parked_events`, the same value
hash in `dead_letters`), found by reading the log back from the highest offset the database has
a row at, at most `CHECKED_RECORD_COUNT_MAX` records: usually the first record read is the
database's. When none of them is, the partition is taken as one the database has no record of.

`applied_events` does not record the topic prefix: in a database that other deployments (another
`KAFKA_TOPIC_PREFIX`) share, their rows would count as this deployment's and could stop the
rewind short, so the rewind is refused there (`OtherDeploymentsError`).

The groups must have no running consumer. The rewind joins each group as its only member and
must be given every partition of the topic within a bounded wait: a consumer still running keeps
some (or the join waits for it), and nothing is committed. It then commits as that member, which
works on Apache Kafka and on the embedded Tansu alike: Tansu keeps a consumer that stopped without
leaving (aiokafka leaves only from generation 1 on) listed as a member until another joins, and
refuses an offset commit from outside the group (UNKNOWN_MEMBER_ID) while it does, so a
commit with no membership, as `kafka-consumer-groups --reset-offsets` makes, fails there. A
refused rewind waits (bounded) for the groups it joined to form again without it before it
returns: Tansu 0.6 leaves a group whose last member leaves during a rebalance unable to form
again, which consumers stopped right after the refusal would otherwise do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import topics
from services.ingestion.records import DeadLetter, InputRecord, parse_record, value_sha256
from services.runtime.kafka_offsets import end_offsets

logger = logging.getLogger(__name__)

# Every request to the broker (metadata, offsets, a commit, a group's description) is bounded.
KAFKA_REQUEST_TIMEOUT_S: Final = 30.0
JOIN_WAIT_S_DEFAULT: Final = 60.0
JOIN_WAIT_S_MAX: Final = 600.0
ASSIGNMENT_POLL_S: Final = 0.2
# How long a refusal waits for the groups it joined to form again without it (`_settle`).
SETTLE_WAIT_S_MAX: Final = 60.0
SETTLED_STATES: Final = frozenset({"Stable", "Empty", "Dead"})
CLIENT_ID: Final = "giftledger-offsets-rewind"
# How many records of a partition's log are read back, at most, to find the last one the
# database holds (`_last_held`), and how many a fetch and a look-up take.
CHECKED_RECORD_COUNT_MAX: Final = 10_000
CHECK_BATCH_RECORD_COUNT_MAX: Final = 500
FETCH_WAIT_MS: Final = 500

# For each consumed topic and partition the database has a record of (applied events, of any
# prefix: the table does not record it; this deployment's dead letters and parked events): the
# highest offset below the partition's end offset (`:ends`, as the broker gives it; none for a
# partition the topic does not have), and how many rows are at or past it. One scan of each table.
_DATABASE_POSITIONS = text(
    """
    WITH ends AS (
        SELECT * FROM unnest(CAST(:end_topics AS text[]), CAST(:end_partitions AS integer[]),
                             CAST(:ends AS bigint[])) AS e(topic, kafka_partition, end_offset)
    )
    SELECT r.topic, r.kafka_partition,
           max(r.kafka_offset) FILTER (
               WHERE e.end_offset IS NULL OR r.kafka_offset < e.end_offset) AS highest,
           count(*) FILTER (WHERE r.kafka_offset >= e.end_offset) AS past_end
    FROM (
        SELECT topic, kafka_partition, kafka_offset FROM applied_events
        WHERE topic = ANY(CAST(:topics AS text[]))
        UNION ALL
        SELECT topic, kafka_partition, kafka_offset FROM dead_letters
        WHERE topic_prefix = :prefix AND topic = ANY(CAST(:topics AS text[]))
        UNION ALL
        SELECT topic, kafka_partition, kafka_offset FROM parked_events
        WHERE topic_prefix = :prefix AND topic = ANY(CAST(:topics AS text[]))
    ) r
    LEFT JOIN ends e ON e.topic = r.topic AND e.kafka_partition = r.kafka_partition
    GROUP BY r.topic, r.kafka_partition
    """
)
# Which of these records of one partition's log the database holds at their place: an applied
# or parked event of the same event_id there, a dead letter of the same value there (recorded
# before value hashes, of the same event_id; with neither, taken as the same record, as a
# re-drive takes it). Index look-ups only: the primary keys, `dead_letters_source`.
_HELD_AT_PLACE = text(
    """
    SELECT c.kafka_offset
    FROM unnest(CAST(:offsets AS bigint[]), CAST(:event_ids AS text[]),
                CAST(:hashes AS bytea[])) AS c(kafka_offset, event_id, value_sha256)
    WHERE EXISTS (
              SELECT 1 FROM applied_events a
              WHERE a.topic = :topic AND a.event_id = c.event_id
                AND a.kafka_partition = :partition AND a.kafka_offset = c.kafka_offset)
       OR EXISTS (
              SELECT 1 FROM parked_events p
              WHERE p.topic_prefix = :prefix AND p.topic = :topic AND p.event_id = c.event_id
                AND p.kafka_partition = :partition AND p.kafka_offset = c.kafka_offset)
       OR EXISTS (
              SELECT 1 FROM dead_letters d
              WHERE d.topic_prefix = :prefix AND d.topic = :topic
                AND d.kafka_partition = :partition AND d.kafka_offset = c.kafka_offset
                AND (d.value_sha256 = c.value_sha256
                     OR (d.value_sha256 IS NULL
                         AND (d.event_id IS NULL OR d.event_id = c.event_id))))
    """
)
# The topic prefixes of other deployments that left rows in this database.
_OTHER_PREFIXES = text(
    """
    SELECT DISTINCT topic_prefix FROM (
        SELECT topic_prefix FROM dead_letters WHERE topic_prefix <> :prefix
        UNION ALL
        SELECT topic_prefix FROM parked_events WHERE topic_prefix <> :prefix
        UNION ALL
        SELECT topic_prefix FROM outbox WHERE topic_prefix <> :prefix
    ) other
    ORDER BY topic_prefix
    """
)


class OtherDeploymentsError(Exception):
    """The database holds rows of other deployments (topic prefixes), whose applied events cannot
    be told from this deployment's."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        self.prefixes = list(prefixes)
        shown = ", ".join(repr(prefix) for prefix in self.prefixes)
        super().__init__(
            f"this database holds rows of other deployments (topic prefixes {shown}):"
            " applied_events does not record the prefix, so their applied events would count"
            " as this deployment's and could stop the rewind short; nothing was changed"
        )


class GroupsNotStoppedError(Exception):
    """A group did not give the rewind every partition of its topic: a consumer still runs."""

    def __init__(self, groups: Mapping[str, str]) -> None:
        self.groups = dict(groups)
        described = "; ".join(f"{group}: {why}" for group, why in sorted(self.groups.items()))
        super().__init__(
            "consumers still hold partitions (stop every `giftledger run` of this deployment"
            f" first); nothing was changed: {described}"
        )


def group_id(consumer_group: str, topic: str) -> str:
    """The consumer group of one consumed topic, as `ConsumerService.group_id` names it."""
    return f"{consumer_group}.{topic}"


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where the consumers read: the cluster, the topic prefix and the consumer group prefix."""

    bootstrap_servers: str
    topic_prefix: str
    consumer_group: str
    session_timeout_ms: int

    def kafka_topic(self, topic: str) -> str:
        return topics.prefixed(self.topic_prefix, topic)

    def group(self, topic: str) -> str:
        return group_id(self.consumer_group, topic)


# The database's side ---------------------------------------------------------------------


async def other_prefixes(conn: AsyncConnection, topic_prefix: str) -> list[str]:
    rows = await conn.execute(_OTHER_PREFIXES, {"prefix": topic_prefix})
    return [str(row.topic_prefix) for row in rows]


@dataclass(frozen=True, slots=True)
class DatabasePosition:
    """What the database holds of one partition of a consumed topic, against its log as the
    broker gives it now."""

    # One past the last record of the log the database holds at its place; None: none found.
    next_offset: int | None
    # The highest offset below the log's end that the database has a row at, when its record
    # was read back from the log (None: not read, its place gone from the log, or no such row).
    highest: int | None = None
    # Rows at or past the log's end offset (`end`): of an earlier life of the topic, ignored.
    past_end: int = 0
    end: int | None = None
    # The lowest offset read back, when no record read was the database's.
    checked_from: int | None = None


async def database_positions(
    conn: AsyncConnection, deployment: Deployment
) -> dict[tuple[str, int], DatabasePosition]:
    """(contract topic, partition) → what the database holds of it, for every partition of a
    consumed topic it has rows of (of the log as it is now: see the module's docstring). Raises
    `OtherDeploymentsError` when other deployments share the database."""
    others = await other_prefixes(conn, deployment.topic_prefix)
    if others:
        raise OtherDeploymentsError(others)
    async with _reader(deployment) as reader:
        ends, beginnings = await _log_bounds(reader, deployment)
        keys = sorted(ends)
        rows = (
            await conn.execute(
                _DATABASE_POSITIONS,
                {
                    "prefix": deployment.topic_prefix,
                    "topics": list(topics.CONSUMED_TOPICS),
                    "end_topics": [topic for topic, _ in keys],
                    "end_partitions": [partition for _, partition in keys],
                    "ends": [ends[key] for key in keys],
                },
            )
        ).all()
        positions: dict[tuple[str, int], DatabasePosition] = {}
        for row in rows:
            key = (str(row.topic), int(row.kafka_partition))
            highest = None if row.highest is None else int(row.highest)
            past_end = int(row.past_end)
            end = ends.get(key)
            if highest is None or end is None or highest < beginnings[key]:
                # nothing below the end, a partition the topic does not have, or a place the
                # log no longer holds (retention): nothing to read back
                next_offset = None if highest is None else highest + 1
                positions[key] = DatabasePosition(next_offset, None, past_end, end)
                continue
            next_offset, checked_from = await _last_held(
                conn, reader, deployment, key, highest, beginnings[key]
            )
            positions[key] = DatabasePosition(
                next_offset,
                highest,
                past_end,
                end,
                checked_from if next_offset is None else None,
            )
    return positions


# The log's side of the database's position ------------------------------------------------


@contextlib.asynccontextmanager
async def _reader(deployment: Deployment) -> AsyncIterator[Any]:
    """A consumer outside any group, reading whatever is in the log (aborted records too)."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=deployment.bootstrap_servers,
        client_id=CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(KAFKA_REQUEST_TIMEOUT_S * 1000),
    )
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()


async def _log_bounds(
    reader: Any, deployment: Deployment
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Each consumed topic's partitions: their end offsets (right on the embedded broker too:
    `kafka_offsets.end_offsets`) and their beginnings, by (contract topic, partition)."""
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        await reader.topics()  # the cluster's metadata
    places: dict[TopicPartition, tuple[str, int]] = {}
    for topic in topics.CONSUMED_TOPICS:
        kafka_topic = deployment.kafka_topic(topic)
        partitions = reader.partitions_for_topic(kafka_topic)
        if not partitions:
            raise LookupError(f"the broker does not know topic {kafka_topic!r}")
        for partition in partitions:
            places[TopicPartition(kafka_topic, partition)] = (topic, partition)
    wanted = sorted(places)
    ends = await end_offsets(reader, wanted, KAFKA_REQUEST_TIMEOUT_S)
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        beginnings = await reader.beginning_offsets(wanted)
    return (
        {places[place]: int(offset) for place, offset in ends.items()},
        {places[place]: int(offset) for place, offset in beginnings.items()},
    )


async def _last_held(
    conn: AsyncConnection,
    reader: Any,
    deployment: Deployment,
    key: tuple[str, int],
    highest: int,
    beginning: int,
) -> tuple[int | None, int]:
    """One past the last record of the log, at `highest` or below, that the database holds at
    its place, reading the log back from `highest` (the record there first, then batches), at
    most `CHECKED_RECORD_COUNT_MAX` records and not below `beginning`; None when none of them
    is. Also the lowest offset read."""
    topic, partition = key
    place = TopicPartition(deployment.kafka_topic(topic), partition)
    floor = max(beginning, highest + 1 - CHECKED_RECORD_COUNT_MAX)
    upper = highest + 1
    batch = 1  # usually the record at the highest offset is the database's
    while upper > floor:
        lower = max(floor, upper - batch)
        records = await _read_range(reader, place, lower, upper)
        held = await _held_offsets(conn, deployment.topic_prefix, topic, partition, records)
        if held:
            return max(held) + 1, lower
        upper = lower
        batch = CHECK_BATCH_RECORD_COUNT_MAX
    return None, floor


async def _read_range(reader: Any, place: Any, lower: int, upper: int) -> list[InputRecord]:
    """The records of the log at offsets `lower` to `upper - 1` that are there (an offset may
    hold none: a transaction's marker, a record compacted away), `upper` being at most the end.
    The reader is assigned `place` alone, so that it fetches nothing else meanwhile."""
    found: list[InputRecord] = []
    reader.assign([place])
    reader.seek(place, lower)
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        while await reader.position(place) < upper:
            batches = await reader.getmany(
                place, timeout_ms=FETCH_WAIT_MS, max_records=CHECK_BATCH_RECORD_COUNT_MAX
            )
            found += [
                InputRecord(place.topic, place.partition, record.offset, record.key, record.value)
                for record in batches.get(place, [])
                if lower <= record.offset < upper
            ]
    return found


async def _held_offsets(
    conn: AsyncConnection, topic_prefix: str, topic: str, partition: int, records: list[InputRecord]
) -> set[int]:
    """The offsets of `records` (of `topic`'s `partition`) that the database holds there."""
    if not records:
        return set()
    event_ids: list[str | None] = []
    for record in records:
        parsed = parse_record(topic, record)
        event_ids.append(
            parsed.event_id if isinstance(parsed, DeadLetter) else parsed.event.event_id
        )
    rows = await conn.execute(
        _HELD_AT_PLACE,
        {
            "prefix": topic_prefix,
            "topic": topic,
            "partition": partition,
            "offsets": [record.offset for record in records],
            "event_ids": event_ids,
            "hashes": [value_sha256(record.value) for record in records],
        },
    )
    return {int(row.kafka_offset) for row in rows}


# The plan ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """One partition: where its group is, what the database holds, and what the rewind commits
    (`target`; None: left as is)."""

    partition: int
    committed: int | None
    database_next: int | None
    beginning: int
    target: int | None
    note: str
    # The database's rows at or past the log's end offset, ignored (an earlier life of the topic).
    past_end: int = 0

    @property
    def records_again(self) -> int:
        """How many records the rewind delivers again."""
        if self.target is None or self.committed is None:
            return 0
        return self.committed - self.target


@dataclass(frozen=True, slots=True)
class TopicPlan:
    topic: str
    kafka_topic: str
    group: str
    partitions: list[PartitionPlan]
    # Partitions the database names that the topic does not have (a topic recreated smaller).
    missing_partitions: list[int]
    members_listed: int | None = None

    @property
    def changes(self) -> list[PartitionPlan]:
        return [plan for plan in self.partitions if plan.target is not None]


def plan_partition(
    partition: int,
    committed: int | None,
    database: DatabasePosition | None,
    beginning: int,
    *,
    unknown_to_beginning: bool,
) -> PartitionPlan:
    """What to commit for one partition: never ahead of `committed`."""
    database_next = None if database is None else database.next_offset
    about_database = _about_database(database)

    def plan(target: int | None, note: str) -> PartitionPlan:
        return PartitionPlan(
            partition,
            committed,
            database_next,
            beginning,
            target,
            "; ".join([*about_database, note]),
            0 if database is None else database.past_end,
        )

    if committed is None:
        return plan(None, "no committed offset: the group starts at the beginning of the log")
    if database_next is None:
        if committed <= beginning:
            return plan(
                None, "no record of this log in the database; the group is at its beginning"
            )
        if unknown_to_beginning:
            return plan(
                beginning, "no record of this log in the database: rewound to the log's beginning"
            )
        return plan(
            None,
            "no record of this log in the database: left as is (--unknown-to-beginning rewinds it"
            " to the log's beginning)",
        )
    if database_next >= committed:
        return plan(None, "the database is not behind the group")
    if database_next < beginning:
        lost = (
            f"offsets {database_next} to {beginning - 1} are no longer in the log (retention):"
            " those records cannot be delivered again"
        )
        if beginning < committed:
            return plan(beginning, f"{lost}; rewound to the log's beginning")
        return plan(None, lost)
    return plan(database_next, f"rewind: {committed - database_next} records again")


def _about_database(database: DatabasePosition | None) -> list[str]:
    """What the plan of a partition says of the database's rows of an earlier life of its topic."""
    if database is None:
        return []
    said: list[str] = []
    if database.past_end:
        said.append(
            f"{database.past_end} database rows at or past the log's end ({database.end})"
            " ignored: an earlier life of the topic"
        )
    if database.highest is not None:
        if database.next_offset is None:
            said.append(
                f"no record of the log at offsets {database.checked_from} to {database.highest}"
                " is the one the database has there: an earlier life of the topic"
            )
        elif database.next_offset <= database.highest:
            said.append(
                f"the database's rows at offsets {database.next_offset} to {database.highest} are"
                " of other records than the log's: an earlier life of the topic"
            )
    return said


def plan_topic(
    topic: str,
    kafka_topic: str,
    group: str,
    partitions: Sequence[int],
    committed: Mapping[int, int | None],
    beginnings: Mapping[int, int],
    positions: Mapping[tuple[str, int], DatabasePosition],
    *,
    unknown_to_beginning: bool,
    members_listed: int | None = None,
) -> TopicPlan:
    plans = [
        plan_partition(
            partition,
            committed[partition],
            positions.get((topic, partition)),
            beginnings[partition],
            unknown_to_beginning=unknown_to_beginning,
        )
        for partition in sorted(partitions)
    ]
    missing = sorted(
        partition
        for known_topic, partition in positions
        if known_topic == topic and partition not in set(partitions)
    )
    return TopicPlan(topic, kafka_topic, group, plans, missing, members_listed)


# The broker's side -------------------------------------------------------------------------


def _committed_value(offset: int | None) -> int | None:
    """A committed offset as the client gives it: -1 or None when the group has none."""
    return None if offset is None or offset < 0 else int(offset)


@contextlib.asynccontextmanager
async def _admin(bootstrap_servers: str) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id=CLIENT_ID,
        request_timeout_ms=int(KAFKA_REQUEST_TIMEOUT_S * 1000),
    )
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _partitions(admin: Any, kafka_topic: str) -> list[int]:
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        described = await admin.describe_topics([kafka_topic])
    for entry in described:
        if entry["topic"] == kafka_topic and entry["error_code"] == 0:
            return sorted(int(partition["partition"]) for partition in entry["partitions"])
    raise LookupError(f"the broker does not know topic {kafka_topic!r}")


@dataclass(frozen=True, slots=True)
class GroupState:
    state: str
    members: int


async def _group_state(admin: Any, group: str) -> GroupState:
    """The group's state and how many members the broker lists: live ones, and on Tansu also
    consumers that stopped without leaving. One group a request: aiokafka 0.14 reads a
    DescribeGroups v3 answer (the version it picks on Kafka and Tansu) with the v2 layout, which
    goes wrong after the first group."""
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        responses = await admin.describe_consumer_groups([group])
    for response in responses:
        for described in response.groups:
            if described[1] == group:
                return GroupState(str(described[2]), len(described[5]))
    return GroupState("Dead", 0)


async def _settle(bootstrap_servers: str, groups: Sequence[str], wait_s: float) -> None:
    """After a refused join, wait (at most `wait_s`) until each group's remaining members have
    joined again (Stable, or Empty). Tansu 0.6 leaves a group whose last member leaves in the
    middle of a rebalance unable to form again (every later join hangs), so consumers stopped
    right after a refusal would otherwise break their groups."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    pending = set(groups)
    async with _admin(bootstrap_servers) as admin:
        while pending and loop.time() < deadline:
            for group in sorted(pending):
                if (await _group_state(admin, group)).state in SETTLED_STATES:
                    pending.discard(group)
            if pending:
                await asyncio.sleep(ASSIGNMENT_POLL_S)
    if pending:
        logger.warning("groups still rebalancing after %s s: %s", wait_s, ", ".join(pending))


async def _admin_committed(
    admin: Any, group: str, kafka_topic: str, partitions: Sequence[int]
) -> dict[int, int | None]:
    """The group's committed offsets, partitions named (OffsetFetch for "every partition" makes
    Tansu 0.6 drop the connection)."""
    wanted = [TopicPartition(kafka_topic, partition) for partition in partitions]
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        found = await admin.list_consumer_group_offsets(group, partitions=wanted)
    return {
        partition: _committed_value(
            found[TopicPartition(kafka_topic, partition)].offset
            if TopicPartition(kafka_topic, partition) in found
            else None
        )
        for partition in partitions
    }


async def _beginnings(consumer: Any, kafka_topic: str, partitions: Sequence[int]) -> dict[int, int]:
    wanted = [TopicPartition(kafka_topic, partition) for partition in partitions]
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        found = await consumer.beginning_offsets(wanted)
    return {tp.partition: int(offset) for tp, offset in found.items()}


async def plan_without_joining(
    deployment: Deployment,
    positions: Mapping[tuple[str, int], DatabasePosition],
    *,
    unknown_to_beginning: bool,
) -> list[TopicPlan]:
    """The plan from the groups' committed offsets as they are now, changing nothing (a dry
    run): the members each group lists are reported."""
    plans: list[TopicPlan] = []
    reader = AIOKafkaConsumer(
        bootstrap_servers=deployment.bootstrap_servers,
        client_id=CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=int(KAFKA_REQUEST_TIMEOUT_S * 1000),
    )
    async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
        await reader.start()
    try:
        async with _admin(deployment.bootstrap_servers) as admin:
            for topic in topics.CONSUMED_TOPICS:
                kafka_topic = deployment.kafka_topic(topic)
                group = deployment.group(topic)
                partitions = await _partitions(admin, kafka_topic)
                plans.append(
                    plan_topic(
                        topic,
                        kafka_topic,
                        group,
                        partitions,
                        await _admin_committed(admin, group, kafka_topic, partitions),
                        await _beginnings(reader, kafka_topic, partitions),
                        positions,
                        unknown_to_beginning=unknown_to_beginning,
                        members_listed=(await _group_state(admin, group)).members,
                    )
                )
    finally:
        await reader.stop()
    return plans


def _member(deployment: Deployment, topic: str) -> Any:
    """A consumer of `topic`'s group that commits only what it is told to."""
    return AIOKafkaConsumer(
        deployment.kafka_topic(topic),
        bootstrap_servers=deployment.bootstrap_servers,
        client_id=CLIENT_ID,
        group_id=deployment.group(topic),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=deployment.session_timeout_ms,
        heartbeat_interval_ms=max(deployment.session_timeout_ms // 4, 500),
        request_timeout_ms=int(KAFKA_REQUEST_TIMEOUT_S * 1000),
    )


async def _join(member: Any, kafka_topic: str, wait_s: float) -> str | None:
    """Join the member's group and wait, at most `wait_s`, until it is given every partition of
    `kafka_topic`. Returns None, or why it was not given them all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    try:
        async with asyncio.timeout(wait_s):
            await member.start()
    except TimeoutError:
        return f"no answer to joining within {wait_s:g} s"
    except KafkaError as error:
        return f"joining failed: {type(error).__name__}: {error}"
    while True:
        partitions = member.partitions_for_topic(kafka_topic) or set()
        assigned = {tp.partition for tp in member.assignment()}
        if partitions and assigned >= partitions:
            return None
        if loop.time() >= deadline:
            return f"given {len(assigned)} of {len(partitions)} partitions within {wait_s:g} s"
        await asyncio.sleep(ASSIGNMENT_POLL_S)


async def _stop(member: Any) -> None:
    """Leave the group; a member that cannot leave in time is left to the session timeout."""
    try:
        async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
            await member.stop()
    except TimeoutError:
        logger.warning("a rewind member did not stop within %s s", KAFKA_REQUEST_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class RewindResult:
    plans: list[TopicPlan]
    # Topics whose changes the broker refused, with the error (the others were committed).
    failed: dict[str, str]


async def rewind_as_members(
    deployment: Deployment,
    positions: Mapping[tuple[str, int], DatabasePosition],
    *,
    unknown_to_beginning: bool,
    wait_s: float = JOIN_WAIT_S_DEFAULT,
) -> RewindResult:
    """Join every group, refuse (`GroupsNotStoppedError`, nothing committed) unless each gave
    every partition of its topic, then commit each partition's target as the group's member
    and leave. The committed offsets are read as the member, after the join, so no consumer
    can move them between the reading and the commit."""
    if not 0 < wait_s <= JOIN_WAIT_S_MAX:
        raise ValueError(f"wait_s must be in (0, {JOIN_WAIT_S_MAX:g}]")
    members = {topic: _member(deployment, topic) for topic in topics.CONSUMED_TOPICS}
    refusals: dict[str, str] = {}
    try:
        joined = await asyncio.gather(
            *(
                _join(member, deployment.kafka_topic(topic), wait_s)
                for topic, member in members.items()
            )
        )
        for topic, refusal in zip(members, joined, strict=True):
            if refusal is not None:
                refusals[deployment.group(topic)] = refusal
        if not refusals:
            return await _commit_as_members(
                deployment, members, positions, unknown_to_beginning=unknown_to_beginning
            )
    finally:
        await asyncio.gather(*(_stop(member) for member in members.values()))
    settle_s = min(2 * deployment.session_timeout_ms / 1000, SETTLE_WAIT_S_MAX)
    await _settle(deployment.bootstrap_servers, sorted(refusals), settle_s)
    raise GroupsNotStoppedError(refusals)


async def _commit_as_members(
    deployment: Deployment,
    members: Mapping[str, Any],
    positions: Mapping[tuple[str, int], DatabasePosition],
    *,
    unknown_to_beginning: bool,
) -> RewindResult:
    """Each group's plan from its committed offsets as its member reads them, and its changes
    committed; a topic whose commit the broker refuses is reported, the others stand."""
    plans: list[TopicPlan] = []
    for topic, member in members.items():
        kafka_topic = deployment.kafka_topic(topic)
        partitions = sorted(member.partitions_for_topic(kafka_topic))
        committed: dict[int, int | None] = {}
        for partition in partitions:
            async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
                offset = await member.committed(TopicPartition(kafka_topic, partition))
            committed[partition] = _committed_value(offset)
        plans.append(
            plan_topic(
                topic,
                kafka_topic,
                deployment.group(topic),
                partitions,
                committed,
                await _beginnings(member, kafka_topic, partitions),
                positions,
                unknown_to_beginning=unknown_to_beginning,
            )
        )
    failed: dict[str, str] = {}
    for plan in plans:
        changes = {
            TopicPartition(plan.kafka_topic, change.partition): change.target
            for change in plan.changes
        }
        if not changes:
            continue
        try:
            async with asyncio.timeout(KAFKA_REQUEST_TIMEOUT_S):
                await members[plan.topic].commit(changes)
        except (KafkaError, TimeoutError) as error:  # reported; the other topics stand
            failed[plan.topic] = f"{type(error).__name__}: {error}"
            logger.error("rewinding %s failed: %s", plan.group, failed[plan.topic])
        else:
            logger.info("rewound %s: %s", plan.group, changes)
    return RewindResult(plans, failed)


# The operator actions log ----------------------------------------------------------------

ACTION: Final = "consumer_offsets_rewound"
# The details' share of the log's limit (DETAILS_JSON_LENGTH_MAX) that every partition's change
# may take; past it, per topic counts only.
DETAILS_PARTITIONS_LENGTH_MAX: Final = 12_000


def action_target(deployment: Deployment) -> str:
    return f"consumer-groups:{deployment.topic_prefix}{deployment.consumer_group}"


def action_details(
    deployment: Deployment, result: RewindResult, *, unknown_to_beginning: bool
) -> dict[str, Any]:
    """What the log keeps of a rewind: every partition moved as `[partition, from, to]` per
    topic, or per topic the count of partitions and records when that is too long."""
    committed = [plan for plan in result.plans if plan.topic not in result.failed]
    moved = {
        plan.kafka_topic: [
            [change.partition, change.committed, change.target] for change in plan.changes
        ]
        for plan in committed
        if plan.changes
    }
    details: dict[str, Any] = {
        "consumer_group": deployment.consumer_group,
        "topic_prefix": deployment.topic_prefix,
        "unknown_to_beginning": unknown_to_beginning,
        "records_again": sum(change.records_again for plan in committed for change in plan.changes),
    }
    if len(json.dumps(moved, separators=(",", ":"))) <= DETAILS_PARTITIONS_LENGTH_MAX:
        details["rewound"] = moved
    else:
        details["rewound_counts"] = {
            plan.kafka_topic: {
                "partitions": len(plan.changes),
                "records_again": sum(change.records_again for change in plan.changes),
            }
            for plan in committed
            if plan.changes
        }
    past_end = {
        plan.kafka_topic: sum(partition.past_end for partition in plan.partitions)
        for plan in result.plans
        if any(partition.past_end for partition in plan.partitions)
    }
    if past_end:
        details["rows_past_log_end"] = past_end
    if result.failed:
        details["failed_topics"] = sorted(result.failed)
    return details
