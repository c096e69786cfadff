"""The payout rail: the bank side of a cash-out, simulated.

`PayoutRailService` reads `payouts.requested` (the approved cash-outs the ledger's outbox emits),
hands each to a `PayoutProvider`, and reports what the provider says on `payouts.updated`, keyed
by the creator, at the time the provider says it happens. `SimulatedBank` is the provider shipped
here: it pays most transfers after a short delay, fails a configured share with a bank's failure
code, and lets another share be paid and then come back (`returned`) later. A real provider (an
HTTP API with webhooks) fits the same `PayoutProvider` interface.

Determinism. The simulated outcome of a cash-out depends only on `(seed, cashout_id)`: the bank
derives its draws from SHA-256, never from a random generator's state, so the same requests give
the same reports in every run, process and order. A report's `event_id` depends only on the
cash-out and the status, and its `occurred_at` is the request's `occurred_at` plus the report's
delay (the bank's value date), not the wall clock. A report sent twice is therefore byte-for-byte
the same event, which the ledger dedupes as a no-op rather than dead-lettering it as an
`event_id` conflict (the ledger compares whole payloads, `occurred_at` included).

Delivery. At least once, with duplicates that are harmless as above:
- A request for a cash-out this process has already taken (a redelivery, or the outbox sending
  twice) is not submitted again: a bounded LRU of cash-out ids remembers them. A duplicate that
  arrives while the first one's reports are still scheduled waits for them. Once a cash-out's
  reports are all sent, the LRU keeps only a digest of its request (to tell a repeat with another
  payload), not the request: about 230 bytes a cash-out instead of about 1.6 KiB, so the default
  100,000 take about 22 MiB.
- A request's offset is committed only once every report of its cash-out has been sent (the
  commit of a partition moves to the first record whose reports are not all out yet). So a crash,
  a `stop()` or a rebalance never loses a report: the requests whose reports were not all sent are
  delivered again and submitted again, and their reports, repeated or not, carry the same
  event_ids and payloads as before.
- `stop()` sends nothing half-done: pending report timers are cancelled; whatever they would have
  sent is sent again after redelivery. A report that was already handed to the producer when the
  timer was cancelled may still reach the broker; its repeat is deduped.

Backpressure. At most `in_flight_max` cash-outs wait for their reports at once; above that, the
service pauses fetching (it keeps polling, so it stays in its consumer group) until reports go out.

Cancellation. An operator who cancels a stale hold sends a `PayoutCancelRequested` on the same
topic, keyed by the same creator, so it comes after the request it cancels. For a cash-out none
of whose reports has started to go out, the rail stops its pending reports and asks the provider
to cancel the payout (`PayoutProvider.cancel`); when the provider stops it, the rail reports it
`failed` with the failure code `cancelled` (`CANCELLED_FAILURE_CODE`), the bank's confirmation
that the payout will not be made, which the ledger needs before the cash-out may be resubmitted;
when the provider says it is too late, the payout's reports go out as they come. A cash-out
already reported on (or with a report on its way), or never taken by this process (all its
reports went out before a restart, or its request offset would not have been committed), is
left as it is: too late. The cancellation's confirmation is not a settlement: no money moved, so
it is not entered in the bank's journal or its settlement files.

Malformed requests come from our own outbox, so they are a bug rather than input to dead-letter:
they are logged and skipped (their offsets are committed).

Settlement files. Given a directory (`PAYOUT_RAIL_SETTLEMENT_DIR`), the bank keeps books there: each
report sent is appended to its journal, and each UTC day's settlement file is written once the day
is over, with the breaks `RailSettings.settlement_breaks` asks for (services/payout_rail/
settlement.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
)
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas import topics
from schemas.events import (
    FAILURE_CODE_LENGTH_MAX,
    ID_LENGTH_MAX,
    PayoutRequested,
    PayoutStatus,
    PayoutUpdated,
)
from schemas.payout_cancel import PayoutCancelRequested, parse_payout_cancel
from services.payout_rail.settlement import SettlementBooks, SettlementBreak
from services.runtime.retry import RetryPolicy, retry

logger = logging.getLogger(__name__)

T = TypeVar("T")

GROUP_SUFFIX = ".payout-rail"
PAID_DELAY_MS_MAX = 600_000
RETURN_DELAY_MS_MAX = 3_600_000
CODE_COUNT_MAX = 64
IN_FLIGHT_MAX_DEFAULT = 10_000
SEEN_CASHOUTS_MAX_DEFAULT = 100_000
REQUEST_DIGEST_BYTES = 16
POLL_TIMEOUT_MS = 200
# How long the broker may hold a fetch of payout requests that finds none. The embedded broker
# holds it that long even when requests arrive meanwhile, so it adds to a payout's latency:
# aiokafka's default of 500 ms is longer than the bank's own delay to pay. The same as the
# default of `consumer_cashout_fetch_wait_ms_max`, which `giftledger run` passes; the benches'
# bank is built without the settings, and a test holds the two defaults equal.
FETCH_WAIT_MS_MAX_DEFAULT = 50
POLL_BACKOFF_S = 1.0
# How often the running rail looks for a day whose settlement file is due.
SETTLEMENT_CHECK_INTERVAL_S = 60.0
# The broker away for about an hour (1,000 tries, 2.5 to 5 s apart once backed off) is waited
# out; past that the rail stops with the error.
KAFKA_RETRY_POLICY = RetryPolicy(retry_count_max=1_000, backoff_ms_first=100, backoff_ms_max=5_000)


def _is_transient(error: BaseException) -> bool:
    """The broker or the network away for a while."""
    return isinstance(error, KafkaError | OSError | TimeoutError)


DRAW_BITS = 64
DRAW_RANGE = 1 << DRAW_BITS

REPORTS_SENT = Counter(
    "giftledger_payout_rail_reports_total",
    "Reports the payout rail sent on payouts.updated, by status.",
    ["status"],
)
REQUESTS_SKIPPED = Counter(
    "giftledger_payout_rail_requests_skipped_total",
    "payouts.requested records the rail did not submit, by reason.",
    ["reason"],
)
CANCELS = Counter(
    "giftledger_payout_rail_cancels_total",
    "Payout cancellations the rail read, by what became of them: cancelled (the provider"
    " stopped the payout; reported failed), too_late (reported on already, or the provider"
    " had paid), unknown (never taken by this process) or repeated (a cancellation read"
    " again while the first is answered).",
    ["outcome"],
)
IN_FLIGHT = Gauge(
    "giftledger_payout_rail_in_flight",
    "Cash-outs submitted whose reports are not all sent yet.",
)

DEFAULT_FAILURE_CODES = (
    "account_closed",
    "invalid_account_number",
    "insufficient_funds",
    "R01",
    "AC04",
)
DEFAULT_RETURN_CODES = ("R01", "AC04", "account_closed")
# The failure code of the report that confirms a cancelled payout will not be made.
CANCELLED_FAILURE_CODE = "cancelled"


@dataclass(frozen=True)
class PayoutOutcome:
    """One report a provider will make about a payout, `delay_ms` after its submission."""

    status: PayoutStatus
    failure_code: str | None
    delay_ms: int

    def __post_init__(self) -> None:
        if (self.status == "paid") != (self.failure_code is None):
            raise ValueError(f"a {self.status} outcome with failure_code {self.failure_code!r}")
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must not be negative, got {self.delay_ms}")


class PayoutProvider(Protocol):
    """Where payouts go. `submit` sends one payout and returns the reports it will produce, in
    the order of their delays: one terminal `paid` or `failed`, or `paid` then `returned`.

    `submit` may be called again for a payout it has already taken (after a redelivery); a real
    provider passes `cashout_id` as its idempotency key, and must return the same outcomes.

    `cancel` asks the provider to stop a payout it was given and has not reported on: True when
    the payout will not be made, False when it is too late (the outcomes `submit` gave stand).
    It may be called again for the same payout and must give the same answer."""

    async def submit(self, request: PayoutRequested) -> list[PayoutOutcome]: ...

    async def cancel(self, request: PayoutRequested) -> bool: ...


def _code_list_ok(codes: tuple[str, ...], name: str) -> None:
    if not codes:
        raise ValueError(f"{name} must not be empty")
    for code in codes:
        if not 1 <= len(code) <= FAILURE_CODE_LENGTH_MAX or not all(
            "!" <= char <= "~" for char in code
        ):
            raise ValueError(
                f"{name}: {code!r} is not 1-{FAILURE_CODE_LENGTH_MAX} visible ASCII characters"
            )


class RailSettings(BaseModel):
    """How the simulated bank behaves. Rates are probabilities, not money, so floats are fine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Outcomes depend on it only.")
    paid_delay_ms: int = Field(
        default=200,
        ge=0,
        le=PAID_DELAY_MS_MAX,
        description="When a payout is reported paid, or failed, after its submission.",
    )
    failure_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Share of payouts that fail."
    )
    return_rate: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Share of payouts reported paid, then returned `return_delay_ms` later.",
    )
    return_delay_ms: int = Field(
        default=1_000,
        ge=0,
        le=RETURN_DELAY_MS_MAX,
        description="How long after its `paid` report a returned payout is reported returned.",
    )
    failure_codes: tuple[str, ...] = Field(default=DEFAULT_FAILURE_CODES, max_length=CODE_COUNT_MAX)
    return_codes: tuple[str, ...] = Field(default=DEFAULT_RETURN_CODES, max_length=CODE_COUNT_MAX)
    settlement_breaks: frozenset[SettlementBreak] = Field(
        default=frozenset(),
        description="Breaks written into the settlement files (payout_rail/settlement.py).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.failure_rate + self.return_rate > 1.0:
            raise ValueError(
                f"failure_rate + return_rate is {self.failure_rate + self.return_rate}, above 1"
            )
        _code_list_ok(self.failure_codes, "failure_codes")
        _code_list_ok(self.return_codes, "return_codes")
        return self


def _threshold(rate: float) -> int:
    """The count of 64-bit draws below which an event of probability `rate` happens."""
    # rate is in [0, 1] and 2**64 is a power of two, so the product is exact.
    return min(int(rate * DRAW_RANGE), DRAW_RANGE)


class SimulatedBank(PayoutProvider):
    """A bank whose every answer is a pure function of `(settings.seed, cashout_id)`.

    One 64-bit draw from SHA-256 of `"{seed}:{cashout_id}"` picks the outcome by integer
    comparison: below the failure threshold it fails, below failure + return thresholds it is paid
    and then returned, otherwise it is paid. A second draw from the same digest picks the code.
    """

    def __init__(self, settings: RailSettings) -> None:
        self.settings = settings
        self._failure_below = _threshold(settings.failure_rate)
        self._return_below = min(self._failure_below + _threshold(settings.return_rate), DRAW_RANGE)

    def outcomes_for(self, cashout_id: str) -> list[PayoutOutcome]:
        """The reports a payout of `cashout_id` produces, in order; no I/O, no state."""
        settings = self.settings
        digest = hashlib.sha256(f"{settings.seed}:{cashout_id}".encode()).digest()
        outcome_draw = int.from_bytes(digest[0:8], "big")
        code_draw = int.from_bytes(digest[8:16], "big")
        if outcome_draw < self._failure_below:
            code = settings.failure_codes[code_draw % len(settings.failure_codes)]
            return [PayoutOutcome("failed", code, settings.paid_delay_ms)]
        paid = PayoutOutcome("paid", None, settings.paid_delay_ms)
        if outcome_draw < self._return_below:
            code = settings.return_codes[code_draw % len(settings.return_codes)]
            returned_ms = settings.paid_delay_ms + settings.return_delay_ms
            return [paid, PayoutOutcome("returned", code, returned_ms)]
        return [paid]

    async def submit(self, request: PayoutRequested) -> list[PayoutOutcome]:
        return self.outcomes_for(request.cashout_id)

    async def cancel(self, request: PayoutRequested) -> bool:
        """The simulated bank makes a payout when it reports it: one not reported on yet can
        always be stopped."""
        return True


REPORT_EVENT_ID_PREFIX = "rail:"


def report_event_id(cashout_id: str, status: PayoutStatus) -> str:
    """The event_id of the `status` report about `cashout_id`: the same every time.

    `rail:<status>:<cashout_id>` while that fits in an event_id, else
    `rail:<status>#<sha256 of cashout_id>`; the status holds neither `:` nor `#`, so the two forms
    never collide. Event ids are unique per topic, so these only need to be unique in
    `payouts.updated`.
    """
    readable = f"{REPORT_EVENT_ID_PREFIX}{status}:{cashout_id}"
    if len(readable) <= ID_LENGTH_MAX:
        return readable
    return f"{REPORT_EVENT_ID_PREFIX}{status}#{hashlib.sha256(cashout_id.encode()).hexdigest()}"


def build_cancel_report(request: PayoutRequested, cancel: PayoutCancelRequested) -> PayoutUpdated:
    """The `failed` report confirming that a cancelled payout will not be made; deterministic
    given the cancellation (its time is the cancellation's)."""
    return PayoutUpdated(
        event_id=report_event_id(request.cashout_id, "failed"),
        occurred_at=cancel.occurred_at,
        cashout_id=request.cashout_id,
        status="failed",
        failure_code=CANCELLED_FAILURE_CODE,
    )


def build_report(request: PayoutRequested, outcome: PayoutOutcome) -> PayoutUpdated:
    """The `payouts.updated` event for one outcome; deterministic given the request."""
    return PayoutUpdated(
        event_id=report_event_id(request.cashout_id, outcome.status),
        occurred_at=request.occurred_at + timedelta(milliseconds=outcome.delay_ms),
        cashout_id=request.cashout_id,
        status=outcome.status,
        failure_code=outcome.failure_code,
    )


class _PartitionProgress:
    """Offsets of one partition taken but not yet finished; what may be committed."""

    def __init__(self) -> None:
        self._open: dict[int, bool] = {}  # offset -> finished, in the order taken
        self.committable: int | None = None
        self.committed: int | None = None

    def take(self, offset: int) -> None:
        self._open.setdefault(offset, False)

    def finish(self, offset: int) -> None:
        if offset not in self._open:
            return  # taken before a rebalance reset this partition's progress
        self._open[offset] = True
        while self._open:
            first = next(iter(self._open))
            if not self._open[first]:
                break
            del self._open[first]
            self.committable = first + 1


@dataclass(eq=False)
class _Job:
    """One cash-out submitted by this process, and the records waiting for its reports."""

    request: PayoutRequested
    waiting: list[tuple[Any, int]] = field(default_factory=list)
    finished: bool = False
    task: asyncio.Task[None] | None = None
    reports_sent: int = 0
    # A report is being handed to the broker: too late to cancel.
    sending: bool = False
    # A cancellation of it was read: its reports are stopped while the provider is asked.
    cancelling: bool = False


def _request_digest(request: PayoutRequested) -> bytes:
    """What the LRU keeps of a finished cash-out's request: enough to tell a repeat of it from a
    request with another payload under the same cash-out id."""
    return hashlib.blake2b(
        request.model_dump_json().encode(), digest_size=REQUEST_DIGEST_BYTES
    ).digest()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: PayoutRailService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._service._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._service._on_assigned(set(assigned))


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "payout rail: the fetch loop died; no more payouts are taken",
            exc_info=task.exception(),
        )


class PayoutRailService:
    """Consumes `<prefix>payouts.requested`, reports on `<prefix>payouts.updated`.

    The consumer group is `<consumer_group>.payout-rail`; a fresh group starts from the earliest
    offset. See the module's docstring for the delivery, idempotency and shutdown guarantees.
    """

    def __init__(
        self,
        provider: PayoutProvider,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "",
        consumer_group: str = "giftledger",
        session_timeout_ms: int = 10_000,
        fetch_wait_ms_max: int = FETCH_WAIT_MS_MAX_DEFAULT,
        in_flight_max: int = IN_FLIGHT_MAX_DEFAULT,
        seen_cashouts_max: int = SEEN_CASHOUTS_MAX_DEFAULT,
        settlement_books: SettlementBooks | None = None,
    ) -> None:
        assert 1_000 <= session_timeout_ms <= 300_000, session_timeout_ms
        assert 1 <= fetch_wait_ms_max <= 10_000, fetch_wait_ms_max
        assert 1 <= in_flight_max <= 1_000_000, in_flight_max
        assert in_flight_max <= seen_cashouts_max <= 10_000_000, seen_cashouts_max
        self.provider = provider
        self.bootstrap_servers = bootstrap_servers
        self.requests_topic = topics.prefixed(topic_prefix, topics.PAYOUTS_REQUESTED)
        self.reports_topic = topics.prefixed(topic_prefix, topics.PAYOUTS_UPDATED)
        self.group_id = f"{consumer_group}{GROUP_SUFFIX}"
        self._session_timeout_ms = session_timeout_ms
        self._fetch_wait_ms_max = fetch_wait_ms_max
        self._in_flight_max = in_flight_max
        self._seen_max = seen_cashouts_max
        # Cash-outs taken, oldest first: the job while its reports are not all sent, then only
        # the digest of its request (`_request_digest`).
        self._seen: OrderedDict[str, _Job | bytes] = OrderedDict()
        self._progress: dict[Any, _PartitionProgress] = {}
        self._jobs: set[_Job] = set()
        self._consumer: Any = None
        self._producer: Any = None
        self._loop_task: asyncio.Task[None] | None = None
        self._books = settlement_books
        self._delivery_task: asyncio.Task[None] | None = None
        self._paused = False
        self._stopping = asyncio.Event()
        self.reports_sent = 0

    @property
    def in_flight_count(self) -> int:
        """Cash-outs submitted whose reports are not all sent yet."""
        return len(self._jobs)

    def assigned_partition_count(self) -> int:
        return 0 if self._consumer is None else len(self._consumer.assignment())

    def is_in_flight(self, cashout_id: str) -> bool:
        """Whether this process has taken a payout of `cashout_id` whose reports are not all
        sent yet (and that was not cancelled)."""
        job = self._seen.get(cashout_id)
        return isinstance(job, _Job) and not job.finished

    @property
    def remembered_count(self) -> int:
        """Cash-outs the duplicate check remembers: at most `seen_cashouts_max`."""
        return len(self._seen)

    async def start(self) -> None:
        if self._loop_task is not None:
            raise RuntimeError("the payout rail is already running")
        self._stopping.clear()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id="giftledger-payout-rail",
            acks="all",
            linger_ms=5,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id="giftledger-payout-rail",
            group_id=self.group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_wait_ms_max,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(self._session_timeout_ms // 4, 500),
        )
        try:
            await self._producer.start()
            self._consumer.subscribe([self.requests_topic], listener=_Rebalance(self))
            await self._consumer.start()
        except BaseException:
            await self._close_clients()
            raise
        self._loop_task = asyncio.create_task(self._run(), name="payout-rail")
        self._loop_task.add_done_callback(_report_crash)
        if self._books is not None:
            self._delivery_task = asyncio.create_task(
                self._deliver_settlement_files(self._books), name="payout-rail-settlement"
            )
        logger.info("payout rail consuming %s as %s", self.requests_topic, self.group_id)

    async def stop(self) -> None:
        """Stop fetching, cancel pending reports, commit what is finished, close. Idempotent."""
        self._stopping.set()
        if self._delivery_task is not None:
            self._delivery_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery_task
            self._delivery_task = None
        if self._loop_task is not None:
            self._loop_task.cancel()
            # A loop that died has been logged by _report_crash already.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
            self._loop_task = None
        jobs = [job.task for job in self._jobs if job.task is not None]
        for task in jobs:
            task.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        if jobs:
            logger.info("payout rail stopped with %d cash-outs not fully reported", len(jobs))
        self._jobs.clear()
        IN_FLIGHT.set(0)
        if self._consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._commit(set(self._progress))
        await self._close_clients()
        self._progress.clear()
        self._seen.clear()
        self._paused = False

    async def _close_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        while not self._stopping.is_set():
            self._apply_backpressure()
            capacity = max(self._in_flight_max - len(self._jobs), 1)
            try:
                batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=capacity)
            except KafkaError as error:
                logger.warning(
                    "payout rail: fetch failed (%r); retry in %s s", error, POLL_BACKOFF_S
                )
                await asyncio.sleep(POLL_BACKOFF_S)
                continue
            for partition, records in batches.items():
                for record in records:
                    self._take(partition, record)
            try:
                await self._commit(set(self._progress))
            except KafkaError as error:
                # Typically a rebalance; the progress stays and the next round commits it.
                logger.warning("payout rail: commit failed (%r); will retry", error)

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        if len(self._jobs) >= self._in_flight_max:
            # Pause on every round: partitions assigned since the last round start unpaused.
            consumer.pause(*consumer.assignment())
            if not self._paused:
                logger.info("payout rail: %d cash-outs in flight; fetching paused", len(self._jobs))
            self._paused = True
        elif self._paused:
            consumer.resume(*consumer.paused())
            self._paused = False

    def _take(self, partition: Any, record: Any) -> None:
        progress = self._progress.setdefault(partition, _PartitionProgress())
        progress.take(record.offset)
        try:
            request = PayoutRequested.model_validate_json(record.value)
        except (ValidationError, TypeError) as error:
            cancel = parse_payout_cancel(record.value) if record.value else None
            if cancel is not None:
                self._cancel(cancel)
                progress.finish(record.offset)
                return
            REQUESTS_SKIPPED.labels("malformed").inc()
            logger.error(
                "payout rail: skipping malformed request at %s:%d offset %d: %s",
                partition.topic,
                partition.partition,
                record.offset,
                str(error).replace("\n", " ")[:500],
            )
            progress.finish(record.offset)
            return
        job = self._seen.get(request.cashout_id)
        if job is not None:
            self._seen.move_to_end(request.cashout_id)
            REQUESTS_SKIPPED.labels("duplicate").inc()
            if isinstance(job, bytes):
                same = job == _request_digest(request)
            else:
                same = job.request == request
            if not same:
                logger.warning(
                    "payout rail: cash-out %s requested again with a different payload; "
                    "ignored, it was submitted already",
                    request.cashout_id,
                )
            if isinstance(job, bytes) or job.finished:
                progress.finish(record.offset)
            else:
                job.waiting.append((partition, record.offset))
            return
        job = _Job(request, [(partition, record.offset)])
        self._seen[request.cashout_id] = job
        while len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)
        self._jobs.add(job)
        IN_FLIGHT.set(len(self._jobs))
        job.task = asyncio.create_task(self._report(job), name=f"payout-{request.cashout_id}")

    async def _report(self, job: _Job) -> None:
        request = job.request
        outcomes = await self._retrying(
            f"submitting {request.cashout_id}", lambda: self.provider.submit(request)
        )
        loop = asyncio.get_running_loop()
        submitted_at = loop.time()
        for outcome in sorted(outcomes, key=lambda outcome: outcome.delay_ms):
            wait_s = submitted_at + outcome.delay_ms / 1000 - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            report = build_report(request, outcome)
            value = report.model_dump_json().encode()
            job.sending = True
            await self._retrying(
                f"reporting {request.cashout_id} {outcome.status}",
                functools.partial(self._send, request.creator_id, value),
            )
            job.sending = False
            self._book(request, report)
            REPORTS_SENT.labels(outcome.status).inc()
            self.reports_sent += 1
            job.reports_sent += 1
        self._finish(job)

    def _book(self, request: PayoutRequested, report: PayoutUpdated) -> None:
        """Enter a sent report in the bank's journal, when the bank keeps one."""
        if self._books is None:
            return
        try:
            self._books.record(request, report)
        except OSError as error:
            logger.error(
                "payout rail: %s %s was reported but not written to the journal: %r",
                request.cashout_id,
                report.status,
                error,
            )

    async def _deliver_settlement_files(self, books: SettlementBooks) -> None:
        """Write each day's settlement file once it is due, until the rail stops."""
        while not self._stopping.is_set():
            try:  # reading a day's journal may take a while: not on the event loop
                await asyncio.to_thread(books.deliver_due, datetime.now(UTC))
            except (OSError, ValueError) as error:
                logger.error("payout rail: a settlement file could not be written: %r", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SETTLEMENT_CHECK_INTERVAL_S)

    def _cancel(self, cancel: PayoutCancelRequested) -> None:
        """Stop the payout of `cancel.cashout_id` if none of its reports has started to go out:
        its reports are stopped and the provider is asked (`_stop_payout`). The `CANCELS`
        counter says what became of it."""
        job = self._seen.get(cancel.cashout_id)
        if job is None:
            CANCELS.labels("unknown").inc()
            return
        if isinstance(job, _Job) and job.cancelling:
            CANCELS.labels("repeated").inc()  # sent twice by the outbox: answered once
            return
        if isinstance(job, bytes) or job.finished or job.reports_sent or job.sending:
            CANCELS.labels("too_late").inc()
            return
        if job.task is not None:
            job.task.cancel()  # waiting for the provider or a report's time: nothing sent
        job.cancelling = True
        job.task = asyncio.create_task(
            self._stop_payout(job, cancel), name=f"payout-cancel-{cancel.cashout_id}"
        )

    async def _stop_payout(self, job: _Job, cancel: PayoutCancelRequested) -> None:
        """Ask the provider to stop the payout; report `failed` (`cancelled`) when it did, else
        let the payout's reports go out as the provider gives them."""
        request = job.request
        stopped = await self._retrying(
            f"cancelling {request.cashout_id}", lambda: self.provider.cancel(request)
        )
        if not stopped:
            CANCELS.labels("too_late").inc()
            logger.info("payout rail: payout of cash-out %s made already", request.cashout_id)
            await self._report(job)
            return
        report = build_cancel_report(request, cancel)
        job.sending = True
        await self._retrying(
            f"reporting {request.cashout_id} cancelled",
            functools.partial(self._send, request.creator_id, report.model_dump_json().encode()),
        )
        job.sending = False
        CANCELS.labels("cancelled").inc()
        REPORTS_SENT.labels("failed").inc()
        self.reports_sent += 1
        job.reports_sent += 1
        logger.info("payout rail: payout of cash-out %s cancelled", request.cashout_id)
        self._finish(job)

    def _finish(self, job: _Job) -> None:
        """The job sent all its reports, or was cancelled: its records may be committed."""
        job.finished = True
        job.task = None
        self._jobs.discard(job)
        cashout_id = job.request.cashout_id
        if self._seen.get(cashout_id) is job:
            self._seen[cashout_id] = _request_digest(job.request)
        IN_FLIGHT.set(len(self._jobs))
        for partition, offset in job.waiting:
            progress = self._progress.get(partition)
            if progress is not None:
                progress.finish(offset)
        job.waiting.clear()

    async def _send(self, creator_id: str, value: bytes) -> None:
        await self._producer.send_and_wait(self.reports_topic, value=value, key=creator_id.encode())

    async def _retrying(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        def report(error: BaseException, retry_number: int, wait_ms: int) -> None:
            logger.warning(
                "payout rail: %s failed (%r); retry %d in at most %d ms",
                what,
                error,
                retry_number,
                wait_ms,
            )

        return await retry(action, KAFKA_RETRY_POLICY, is_transient=_is_transient, on_retry=report)

    async def _commit(self, partitions: set[Any]) -> None:
        offsets = {}
        for partition in partitions:
            progress = self._progress.get(partition)
            if progress is None or progress.committable is None:
                continue
            if progress.committable != progress.committed:
                offsets[partition] = progress.committable
        if not offsets:
            return
        await self._consumer.commit(offsets)
        for partition, offset in offsets.items():
            self._progress[partition].committed = offset

    async def _on_revoked(self, revoked: set[Any]) -> None:
        try:
            await self._commit(revoked & set(self._progress))
        except KafkaError as error:
            logger.warning("payout rail: commit on revocation failed (%r)", error)
        for partition in revoked:
            # Jobs still running keep sending their reports; the new owner of the partition
            # submits the uncommitted requests again, and the repeated reports are identical.
            self._progress.pop(partition, None)

    def _on_assigned(self, assigned: set[Any]) -> None:
        for partition in assigned:
            self._progress[partition] = _PartitionProgress()


def simulated_rail(
    settings: RailSettings,
    bootstrap_servers: str,
    *,
    topic_prefix: str = "",
    consumer_group: str = "giftledger",
    session_timeout_ms: int = 10_000,
    fetch_wait_ms_max: int = FETCH_WAIT_MS_MAX_DEFAULT,
    in_flight_max: int = IN_FLIGHT_MAX_DEFAULT,
    settlement_dir: Path | None = None,
) -> PayoutRailService:
    """A `PayoutRailService` in front of a `SimulatedBank` configured by `settings`; with
    `settlement_dir`, the bank keeps its books and writes its settlement files there."""
    books = None
    if settlement_dir is not None:
        books = SettlementBooks(
            settlement_dir, seed=settings.seed, breaks=settings.settlement_breaks
        )
    return PayoutRailService(
        SimulatedBank(settings),
        bootstrap_servers,
        topic_prefix=topic_prefix,
        consumer_group=consumer_group,
        session_timeout_ms=session_timeout_ms,
        fetch_wait_ms_max=fetch_wait_ms_max,
        in_flight_max=in_flight_max,
        seen_cashouts_max=max(SEEN_CASHOUTS_MAX_DEFAULT, in_flight_max),
        settlement_books=books,
    )
