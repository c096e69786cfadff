"""The consumers: a FastStream app with one batch subscriber per ledger topic, in one group.

Each batch goes through the `Ingestor` in one database transaction; its dead letters are then
published to `<topic>.dlq`; only after both do the Kafka offsets move (manual acknowledgement).
A database outage blocks the batch in a bounded-backoff retry loop: the partition pauses, nothing
is skipped. If the retries run out, the batch is rewound (seek) so it is fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from schemas import topics
from services.app.poison import apply_isolating_poison
from services.app.rebalance_logs import lower_rebalance_commit_errors
from services.cashout.outbox import OUTBOX_BATCH_SIZE_MAX, OUTBOX_POLL_INTERVAL_S, OutboxRelay
from services.cashout.outbox_retention import OUTBOX_PRUNE_INTERVAL_S, prune_published
from services.ingestion.event_store import PARKING_TOPICS
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import (
    BatchReport,
    DeadLetter,
    Header,
    InputRecord,
    kafka_headers,
)
from services.rates.rate_cards import RATE_CARD_REFRESH_S, load_rate_cards
from services.runtime import metrics
from services.runtime.database import error_text
from services.runtime.retry import RetryPolicy, retry
from services.runtime.settings import Settings

logger = logging.getLogger(__name__)

PARK_SWEEP_INTERVAL_S = 1.0
LAG_REFRESH_INTERVAL_S = 5.0
RETRY_BACKOFF_MS_MIN = 50
DLQ_SEND_TIMEOUT_S = 30.0
# A record the producer (its `max_request_size`) or the broker (its message size limit) refuses
# for its size: a dead letter is the original record and more headers, so it can be.
TOO_LARGE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
# What the broker says of one record it will not store, whatever the topic's state: corrupt or
# invalid (a record without a key on a compacted topic, on some brokers).
RECORD_REFUSED_ERRORS = (*TOO_LARGE_ERRORS, CorruptRecordException)
# The key a dead letter is sent with when its record had none and no value either (a keyless
# tombstone, which Kafka and the Java and librdkafka producers allow): a record needs a key or a
# value to be sent, and the value stays as it was, null. Empty, not null; `dlq.key_null` says so.
NULL_KEY_STAND_IN = b""
# The largest key a dead letter sent without its value keeps (upstream keys are creator ids, at
# most 128 characters): a longer one may be what made the record too large.
STAND_IN_KEY_BYTES_MAX = 1_024
DLQ_PUBLISH_RETRY_COUNT_MAX = 5
# The producer's batches per partition (aiokafka's default is 16 KiB). The outbox relay sends a
# round of up to 2,000 rows at once (about 250 a partition of 8, 0.3 - 0.5 KiB each), and a send
# that finds its partition's batch full waits until that batch has left: a round of 500 took
# 58 - 82 ms to send with 16 KiB, 24 - 33 ms with 256 KiB (bench/README.md, 2026-12-05).
# Brokers take 1 MiB a request by default.
PRODUCER_BATCH_BYTES = 256 * 1024
REWIND_PAUSE_S = 1.0
# Batches of these topics queue outbox rows (`services.cashout.desk`): once one commits, this
# process's relay starts a pass at once instead of at its next poll (OUTBOX_POLL_INTERVAL_S, which
# stays for the rows other processes queue). The poll alone kept a cash-out's payout waiting up to
# a poll's length before it left, and again for its status.
OUTBOX_QUEUEING_TOPICS = frozenset({topics.CASHOUTS_REQUESTED, topics.PAYOUTS_UPDATED})
# The topics a cash-out's way to `paid` goes through: batches of their own bound
# (`batch_size_max`) and fetches of their own wait (`fetch_wait_ms_max`).
CASHOUT_TOPICS = frozenset({topics.CASHOUTS_REQUESTED, topics.PAYOUTS_UPDATED})

TOPIC_DESCRIPTIONS = {
    topics.GIFTS_SENT: "Gifts on short videos and LIVE streams; credit the creator's Diamonds.",
    topics.GIFTS_REVERSED: "Refunded, charged-back or fraudulent gifts; claw the Diamonds back.",
    topics.TIPS_RECEIVED: "Tips through the card processor; the creator gets 100 %.",
    topics.FUND_REWARDED: "Creator Fund period rewards, in a currency.",
    topics.MARKETPLACE_PAID: "Creator Marketplace brand payments, less the platform fee.",
    topics.CREATORS_UPDATED: "Eligibility facts about a creator; the latest occurred_at wins.",
    topics.CASHOUTS_REQUESTED: "A creator asks to turn Diamonds or a currency balance into money.",
    topics.PAYOUTS_UPDATED: "The bank or payout rail reports on a payout: paid, failed, returned.",
}

# The pool's own timeout (`sqlalchemy.exc.TimeoutError`: no connection free within
# `pool_timeout`) is not a DBAPI error, and not `asyncio.TimeoutError` either.
TRANSIENT_DATABASE_ERRORS = (
    OperationalError,
    InterfaceError,
    OSError,
    asyncio.TimeoutError,
    PoolTimeoutError,
)


# Worth retrying: a statement or lock wait cancelled by its timeout, the server shutting down or
# restarting, a transaction that lost a race its retries did not win (serialization failure,
# deadlock), a read-only transaction (the server is a standby, as after a failover), and the
# classes of connection exceptions (08) and of insufficient resources (53: too many
# connections, disk full, out of memory).
TRANSIENT_SQLSTATES = frozenset(
    {"57014", "55P03", "57P01", "57P02", "57P03", "40001", "40P01", "25006"}
)
TRANSIENT_SQLSTATE_CLASSES = ("08", "53")


def is_database_outage(error: BaseException) -> bool:
    """Whether `error` says the database cannot do the work now, rather than that the work is
    wrong: then the batch waits and is tried again, and none of its records is taken for a
    poison (`services.app.poison`) and dead-lettered."""
    if isinstance(error, TRANSIENT_DATABASE_ERRORS):
        return True
    if isinstance(error, DBAPIError):
        sqlstate = str(getattr(error.orig, "sqlstate", "") or "")
        return (
            bool(error.connection_invalidated)
            or sqlstate in TRANSIENT_SQLSTATES
            or sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES)
            # What the driver said, not SQLAlchemy's message, which adds the statement: a
            # statement that mentions connections failing for its data is not an outage.
            or "connection" in str(error.orig).lower()
        )
    return False


def _input_record(record: Any, logical_topic: str) -> InputRecord:
    return InputRecord(
        topic=logical_topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=kafka_headers(record.headers) if record.headers else (),
    )


def dead_letter_key(letter: DeadLetter) -> bytes | None:
    """The key a dead letter is sent with: the original's, unless the record had neither key
    nor value, which no producer sends: then `NULL_KEY_STAND_IN`."""
    if letter.record.key is None and letter.record.value is None:
        return NULL_KEY_STAND_IN
    return letter.record.key


def dead_letter_headers(letter: DeadLetter, source_topic: str) -> list[Header]:
    """The original headers, then ours naming the error and where the input came from, and
    `dlq.key_null` when the record had no key and its dead letter carries a stand-in."""
    ours: list[Header] = [
        ("dlq.error", letter.error.encode()),
        ("dlq.detail", letter.detail.encode("utf-8", "replace")),
        ("dlq.source.topic", source_topic.encode()),
        ("dlq.source.partition", str(letter.record.partition).encode()),
        ("dlq.source.offset", str(letter.record.offset).encode()),
    ]
    if letter.event_id is not None:
        ours.append(("dlq.event_id", letter.event_id.encode("utf-8", "replace")))
    if letter.record.key is None and letter.record.value is None:
        ours.append(("dlq.key_null", b"true"))
    return [*letter.record.headers, *ours]


def stand_in_key(letter: DeadLetter) -> bytes:
    """The key of a dead letter sent without its value: the original key, unless it is over
    `STAND_IN_KEY_BYTES_MAX` (a key may be what made the record too large), then the hex
    SHA-256 of it (the same key gives the same stand-in key); `NULL_KEY_STAND_IN` for a record
    without a key, since a record needs a key or a value."""
    key = letter.record.key
    if key is None:
        return NULL_KEY_STAND_IN
    if len(key) <= STAND_IN_KEY_BYTES_MAX:
        return key
    return hashlib.sha256(key).hexdigest().encode()


def stand_in_headers(letter: DeadLetter, source_topic: str) -> list[Header]:
    """The headers of a dead letter sent without its value, since it was refused with it: ours
    (not the original's, which may be what made it too large), `dlq.value_omitted`, the
    original value's size in bytes, `dlq.key_omitted`, the original key's, when it is left out
    too (`stand_in_key`: the key is then its SHA-256), and `dlq.key_null` when the record had
    no key."""
    value_bytes = 0 if letter.record.value is None else len(letter.record.value)
    ours = [
        header
        for header in dead_letter_headers(letter, source_topic)[len(letter.record.headers) :]
        if header[0] != "dlq.key_null"
    ]
    omitted: list[Header] = [("dlq.value_omitted", str(value_bytes).encode())]
    key = letter.record.key
    if key is None:
        omitted.append(("dlq.key_null", b"true"))
    elif stand_in_key(letter) != key:
        omitted.append(("dlq.key_omitted", str(len(key)).encode()))
    return [*ours, *omitted]


def refuses_the_letter(error: BaseException) -> bool:
    """Whether a send's failure is about the dead letter itself, which the same send would meet
    at every try (so its batch would be rewound for ever and stall its partition), rather than
    about the producer, the broker or the topic (down, unreachable, not authorised), which a
    later try may get past: the broker refusing the record (`RECORD_REFUSED_ERRORS`), or the
    producer refusing its arguments before it sends anything (an error that is not Kafka's)."""
    if isinstance(error, RECORD_REFUSED_ERRORS):
        return True
    return not isinstance(error, (KafkaError, OSError, asyncio.TimeoutError))


def _refused(error: BaseException) -> asyncio.Future[Any]:
    """A send's outcome that is `error`, as the producer's own refusals arrive."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


async def _noop_decoder(message: Any) -> None:
    """Keep FastStream from decoding: the ingestor reads the raw records itself."""
    return


async def _batch_parser(
    records: tuple[Any, ...], faststream_parser: Callable[[tuple[Any, ...]], Awaitable[Any]]
) -> Any:
    """FastStream's batch parser, but for a batch it cannot parse.

    It decodes every header value as UTF-8 for its own message, and Kafka's header values are
    any bytes, or null: such a header made it raise before the handler ran, so the batch was
    neither applied nor rewound, and the next batch's commit passed it, its records lost. The
    handler reads the records themselves (`raw_message`), headers and all; so such a batch is
    parsed from copies without headers, and the message keeps the records as they came."""
    try:
        return await faststream_parser(records)
    except (UnicodeDecodeError, AttributeError, TypeError):
        headerless = tuple(dataclasses.replace(record, headers=[]) for record in records)
        message = await faststream_parser(headerless)
        message.raw_message = records
        return message


class _TogetherStartingBroker(KafkaBroker):
    """A KafkaBroker that starts its subscribers together instead of one after another.

    A subscriber's start returns once its consumer has joined its group, and a join waits for
    the group to settle: about half the session timeout on the embedded broker. With one group
    per topic, eight joins in a row took 24 s with a 6 s session timeout; together, 3 s. If one
    subscriber fails to start, the others' starts are cancelled and its error propagates as is."""

    async def start(self) -> None:
        await self.connect()
        starts = [asyncio.ensure_future(subscriber.start()) for subscriber in self.subscribers]
        try:
            await asyncio.gather(*starts)
        except BaseException:
            for start in starts:
                start.cancel()
            await asyncio.gather(*starts, return_exceptions=True)
            raise
        for publisher in self.publishers:
            await publisher.start()
        self.running = True


class ConsumerService:
    """Builds the broker and subscribers; `start()` and `stop()` run them."""

    def __init__(self, settings: Settings, ingestor: Ingestor, bootstrap_servers: str) -> None:
        if ingestor.topic_prefix != settings.kafka_topic_prefix:
            raise ValueError(
                f"the ingestor records under topic prefix {ingestor.topic_prefix!r},"
                f" the consumers read {settings.kafka_topic_prefix!r}"
            )
        self.settings = settings
        self.ingestor = ingestor
        self.bootstrap_servers = bootstrap_servers
        lower_rebalance_commit_errors()
        self.broker = _TogetherStartingBroker(
            bootstrap_servers,
            client_id="giftledger",
            logger=logging.getLogger("giftledger.kafka"),
            log_level=logging.DEBUG,
            graceful_timeout=30.0,
        )
        self._producer: Any = None
        self._outbox: OutboxRelay | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._outbox_due = asyncio.Event()
        self._lag_labels: set[tuple[str, int]] = set()  # the lag gauges this service set
        self._subscribers: dict[str, Any] = {}
        for topic in topics.CONSUMED_TOPICS:
            self._register(topic)

    def name(self, topic: str) -> str:
        return f"{self.settings.kafka_topic_prefix}{topic}"

    def batch_size_max(self, topic: str) -> int:
        """Cash-out requests and payout results are applied a batch at a time (one read per
        kind of fact, one post per round: `services.cashout.desk`), but each locks creators and
        cash-outs until its commit: their batches have a bound of their own
        (`consumer_cashout_batch_size_max`), so the relay and the bank hear about the first
        ones without waiting for a big batch to commit."""
        if topic in CASHOUT_TOPICS:
            return min(
                self.settings.consumer_batch_size_max,
                self.settings.consumer_cashout_batch_size_max,
            )
        return self.settings.consumer_batch_size_max

    def fetch_wait_ms_max(self, topic: str) -> int:
        """Gifts, the stream LIVE bursts come on, are fetched with a short wait: the embedded
        broker holds a fetch for its whole wait even when records arrive meanwhile. So are the
        cash-out topics, whose records each cross a fetch on a cash-out's way to `paid` (with
        the bank's fetch of its payout request). The other topics wait longer, since every
        fetch that finds nothing costs CPU on both sides."""
        if topic == topics.GIFTS_SENT:
            return self.settings.consumer_gift_fetch_wait_ms_max
        if topic in CASHOUT_TOPICS:
            return self.settings.consumer_cashout_fetch_wait_ms_max
        return self.settings.consumer_fetch_wait_ms_max

    def group_id(self, topic: str) -> str:
        """One consumer group per topic, so that a process joining or leaving rebalances each
        topic's partitions on their own instead of every subscriber of every topic at once."""
        return f"{self.settings.kafka_consumer_group}.{topic}"

    def _register(self, topic: str) -> None:
        settings = self.settings
        subscriber = self.broker.subscriber(
            self.name(topic),
            batch=True,
            group_id=self.group_id(topic),
            auto_offset_reset="earliest",
            # An upstream's transactional producer (Kafka Streams, an exactly-once pipeline)
            # may abort what it wrote: its aborted records are never applied.
            isolation_level="read_committed",
            max_records=self.batch_size_max(topic),
            fetch_max_bytes=settings.consumer_fetch_max_bytes,
            max_partition_fetch_bytes=settings.consumer_partition_fetch_max_bytes,
            batch_timeout_ms=settings.consumer_batch_wait_ms,
            fetch_max_wait_ms=self.fetch_wait_ms_max(topic),
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 4, 500),
            ack_policy=AckPolicy.MANUAL,
            # Never answer a batch: FastStream publishes a handler's result (here None, an empty
            # record) to the topic a record's `reply_to` header names, so an upstream would
            # choose where giftledger writes, its own input topics included.
            no_reply=True,
            parser=_batch_parser,
            decoder=_noop_decoder,
            title=f"on_{topic.replace('.', '_')}",
            description=TOPIC_DESCRIPTIONS[topic],
        )

        async def handle(body: Any, msg: KafkaMessage) -> None:
            await self._handle_batch(topic, msg)

        subscriber(handle)
        self._subscribers[topic] = subscriber

    async def _handle_batch(self, topic: str, msg: KafkaMessage) -> None:
        started = time.monotonic()
        raw = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        try:  # nothing may leave this handler unacknowledged: a later ack would pass the batch
            records = [_input_record(record, topic) for record in raw]
            metrics.BATCH_SIZE.observe(len(records))
            report = await self._apply(topic, records)
        except Exception as error:
            await self._rewind(msg, f"batch of {len(raw)} from {topic} not applied", error)
            return
        metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
        if topic in OUTBOX_QUEUEING_TOPICS and report.applied:
            self._outbox_due.set()
        try:
            await self._publish_dead_letters(topic, report.dead_letters)
        except Exception as error:
            # Never commit the offsets past a dead letter the topic has not got: the batch
            # comes again, its applied events are duplicates, its dead letters are sent again.
            metrics.DEAD_LETTER_PUBLISH_FAILURES.labels(topic).inc()
            await self._rewind(msg, f"dead letters of a batch from {topic} not published", error)
            return
        try:
            await msg.ack()
        except CommitFailedError:
            # The group rebalanced while the batch was applied (a member joined, left or was
            # too slow to answer): its partitions may be another member's now, which reads the
            # batch again from the last committed offsets, and its events come back as
            # duplicates. What a rebalance does; not an error of the batch.
            logger.warning(
                "offsets of a batch of %d from %s not committed: the group rebalanced while it"
                " was applied, so it is read again and its events come back as duplicates",
                len(raw),
                topic,
            )

    async def _rewind(self, msg: KafkaMessage, what: str, error: BaseException) -> None:
        """Leave the batch's offsets where they were, so that it is fetched again."""
        logger.warning("%s (%s); rewinding", what, error_text(error))
        await asyncio.sleep(REWIND_PAUSE_S)
        await msg.nack()

    async def _apply(self, topic: str, records: list[InputRecord]) -> BatchReport:
        """The batch applied through the ingestor: outages retried (`_with_database_retry`),
        a poison record isolated and dead-lettered (`services.app.poison`)."""

        async def apply(part: Sequence[InputRecord]) -> BatchReport:
            return await self._with_database_retry(
                topic, lambda: self.ingestor.process(topic, part)
            )

        async def dead_letter(letters: Sequence[DeadLetter]) -> BatchReport:
            return await self._with_database_retry(
                topic, lambda: self.ingestor.dead_letter(topic, letters)
            )

        return await apply_isolating_poison(
            topic,
            records,
            apply=apply,
            dead_letter=dead_letter,
            is_outage=is_database_outage,
            attempts_max=self.settings.consumer_poison_attempts_max,
        )

    async def _with_database_retry(
        self, topic: str, work: Callable[[], Awaitable[BatchReport]]
    ) -> BatchReport:
        """`work()`, paused and tried again while the database is unavailable. The outage is
        logged once as a warning when it starts and once when it ends; the retries in between
        only at debug level."""

        retried = 0

        def report(error: BaseException, retry_number: int, wait_ms: int) -> None:
            nonlocal retried
            retried = retry_number
            metrics.DATABASE_RETRIES.labels(topic).inc()
            logger.log(
                logging.WARNING if retry_number == 1 else logging.DEBUG,
                "database unavailable for %s (%s); retry %d in at most %d ms",
                topic,
                error_text(error),
                retry_number,
                wait_ms,
            )

        policy = RetryPolicy(
            retry_count_max=self.settings.consumer_db_retry_count_max,
            backoff_ms_first=RETRY_BACKOFF_MS_MIN,
            backoff_ms_max=self.settings.consumer_db_retry_backoff_ms_max,
        )
        result = await retry(work, policy, is_transient=is_database_outage, on_retry=report)
        if retried:
            logger.warning("database back for %s after %d retries", topic, retried)
        return result

    async def _publish_dead_letters(self, topic: str, letters: list[DeadLetter]) -> None:
        """Send `letters` to `<topic>.dlq` and wait for the broker's acknowledgement, tried again
        with backoff (DLQ_PUBLISH_RETRY_COUNT_MAX times) while the broker does not take them."""
        if not letters:
            return

        def report(error: BaseException, retry_number: int, wait_ms: int) -> None:
            logger.log(
                logging.WARNING if retry_number == 1 else logging.DEBUG,
                "dead letters of %s not published (%s); retry %d in at most %d ms",
                topic,
                error_text(error),
                retry_number,
                wait_ms,
            )

        policy = RetryPolicy(
            retry_count_max=DLQ_PUBLISH_RETRY_COUNT_MAX,
            backoff_ms_first=RETRY_BACKOFF_MS_MIN,
            backoff_ms_max=self.settings.consumer_db_retry_backoff_ms_max,
        )
        await retry(
            lambda: self._send_dead_letters(topic, letters),
            policy,
            is_transient=lambda error: True,
            on_retry=report,
        )

    async def _send_dead_letters(self, topic: str, letters: list[DeadLetter]) -> None:
        """Each letter as the original record with our headers; one that the producer or the
        broker refuses for itself (`refuses_the_letter`: too large, a record near the size
        limit grown by the headers; invalid) as a stand-in without the value and the original
        headers (`stand_in_headers`), so that it cannot stall its partition: the record stays at
        its source offset, where a re-drive reads it. A stand-in refused in turn is the topic's
        or the broker's failure: it propagates, and the batch is sent again."""
        if self._producer is None:
            raise RuntimeError("the dead-letter producer is not running")
        source = self.name(topic)
        target = self.name(topics.dead_letter_topic(topic))

        async def send(key: bytes | None, value: bytes | None, headers: list[Header]) -> Any:
            assert self._producer is not None
            try:
                return await self._producer.send(
                    target, value=value, key=key, partition=None, headers=headers
                )
            except Exception as error:
                if not refuses_the_letter(error):
                    raise
                return _refused(error)

        sends = [
            await send(
                dead_letter_key(letter), letter.record.value, dead_letter_headers(letter, source)
            )
            for letter in letters
        ]
        outcomes = await asyncio.wait_for(
            asyncio.gather(*sends, return_exceptions=True), DLQ_SEND_TIMEOUT_S
        )
        refused: list[tuple[DeadLetter, BaseException]] = []
        for letter, outcome in zip(letters, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                continue
            if not refuses_the_letter(outcome):
                raise outcome
            refused.append((letter, outcome))
        stand_ins = [
            await send(stand_in_key(letter), None, stand_in_headers(letter, source))
            for letter, _ in refused
        ]
        await asyncio.wait_for(asyncio.gather(*stand_ins), DLQ_SEND_TIMEOUT_S)
        for letter, error in refused:
            metrics.DEAD_LETTERS_WITHOUT_VALUE.labels(topic).inc()
            logger.warning(
                "dead letter of %s partition %d offset %d sent without its value: refused with"
                " it (%s)",
                topic,
                letter.record.partition,
                letter.record.offset,
                error_text(error),
            )

    async def _sweep_parked(self, topic: str) -> None:
        """Retry the parked events of `topic` (reversals, payout results) every second."""

        async def publish(letters: list[DeadLetter]) -> None:
            await self._publish_dead_letters(topic, letters)

        async def retry() -> None:
            await self.ingestor.retry_parked(topic, publish_dead_letters=publish)

        await self._every(PARK_SWEEP_INTERVAL_S, f"parked {topic} events not retried", retry)

    async def publish_outbox_once(self, limit: int = OUTBOX_BATCH_SIZE_MAX) -> int:
        """One round of the outbox relay (`services.cashout.outbox`)."""
        if self._outbox is None:
            raise RuntimeError("the consumer service is not started")
        return await self._outbox.publish_once(limit)

    async def _publish_outbox(self) -> None:
        async def publish_all() -> None:
            """One pass of the relay: rounds until one comes back short."""
            if self._outbox is None:
                raise RuntimeError("the consumer service is not started")
            await self._outbox.publish_all()

        await self._every(
            OUTBOX_POLL_INTERVAL_S, "outbox not published", publish_all, due=self._outbox_due
        )

    async def _prune_outbox(self) -> None:
        async def prune() -> None:
            deleted = await prune_published(
                self.ingestor.ledger,
                self.settings.kafka_topic_prefix,
                self.settings.outbox_retention_hours,
            )
            if deleted:
                metrics.OUTBOX_ROWS_PRUNED.inc(deleted)
                logger.info(
                    "deleted %d published outbox rows older than %d hours",
                    deleted,
                    self.settings.outbox_retention_hours,
                )

        await self._every(OUTBOX_PRUNE_INTERVAL_S, "outbox not pruned", prune)

    async def _refresh_rate_cards(self) -> None:
        async def reload() -> None:
            async with self.ingestor.ledger.connect() as conn:
                self.ingestor.rate_cards = await load_rate_cards(conn)

        await self._every(RATE_CARD_REFRESH_S, "rate cards not reloaded", reload)

    async def _every(
        self,
        interval_s: float,
        failure: str,
        job: Callable[[], Awaitable[None]],
        *,
        due: asyncio.Event | None = None,
    ) -> None:
        """Run `job` every `interval_s`, and at once whenever `due` is set (cleared as the
        round starts), until the service stops; a failed round is logged and the next one tries
        again."""
        wake = self._stopping if due is None else due  # `stop()` sets both
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), interval_s)
            if self._stopping.is_set():
                return
            if due is not None:
                due.clear()
            try:
                await job()
            except Exception as error:
                logger.warning("%s this round (%s)", failure, error_text(error))

    async def _refresh_lag(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), LAG_REFRESH_INTERVAL_S)
            await self.refresh_lag_once()

    async def refresh_lag_once(self) -> None:
        """Set `giftledger_consumer_lag` for each partition this process holds, and remove the
        gauges of those it held and no longer does: another member reports them now, and a
        gauge left behind would keep a lag that no longer exists."""
        holding: set[tuple[str, int]] = set()
        for topic, subscriber in self._subscribers.items():
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            for partition in consumer.assignment():
                label = (self.name(topic), partition.partition)
                holding.add(label)
                highwater = consumer.highwater(partition)
                if highwater is None:
                    continue
                with contextlib.suppress(Exception):
                    position = await consumer.position(partition)
                    metrics.CONSUMER_LAG.labels(*label).set(max(highwater - position, 0))
        for label in self._lag_labels - holding:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(*label)
        self._lag_labels = holding

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id="giftledger-dlq",
            acks="all",
            linger_ms=5,
            max_batch_size=PRODUCER_BATCH_BYTES,
        )
        await self._producer.start()
        self._outbox = OutboxRelay(self.ingestor.ledger, self.ingestor.desk, self._producer)
        await self.broker.start()
        self._tasks = [
            *(
                asyncio.create_task(self._sweep_parked(topic), name=f"sweep-parked-{topic}")
                for topic in sorted(PARKING_TOPICS)
            ),
            asyncio.create_task(self._refresh_lag(), name="refresh-lag"),
            asyncio.create_task(self._refresh_rate_cards(), name="refresh-rate-cards"),
            asyncio.create_task(self._publish_outbox(), name="publish-outbox"),
        ]
        if self.settings.outbox_retention_hours:
            self._tasks.append(asyncio.create_task(self._prune_outbox(), name="prune-outbox"))

    async def stop(self) -> None:
        self._stopping.set()
        self._outbox_due.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def dead_letter_producer(self) -> Any:
        """The producer dead letters (and the outbox) are published with, once started."""
        if self._producer is None:
            raise RuntimeError("the consumer service is not started")
        return self._producer

    @property
    def topics(self) -> list[str]:
        """The contract's names of the topics this service consumes."""
        return list(self._subscribers)

    def assigned_partition_count(self) -> int:
        total = 0
        for subscriber in self._subscribers.values():
            consumer = getattr(subscriber, "consumer", None)
            if consumer is not None:
                total += len(consumer.assignment())
        return total
