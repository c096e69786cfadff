"""Turning a batch of Kafka records into ledger transfers, exactly once in effect.

One batch is one database transaction (one a run, when an event_id comes twice in it:
`decision_runs`): its topic's handler (`handlers.HANDLERS`) drops the events already applied,
posts the new ones' transfers through the `Ledger`, and records every applied `event_id` with
the hash of its payload, all before the commit. The caller commits Kafka
offsets only after this returns, so a crash anywhere means redelivery, and redelivery finds
every event already applied.

Every record ends in exactly one place: applied, duplicate, dead-lettered (with the reason), or
parked (a reversal whose gift has not arrived yet, a payout result whose cash-out's request has
not: retried until a deadline, then dead-lettered).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from ledger.service import Ledger
from schemas import topics
from services.cashout.desk import CashoutDesk
from services.ingestion.event_store import PARKED_READ_COUNT_MAX, EventStore
from services.ingestion.handlers import HANDLERS, HandlerContext
from services.ingestion.records import (
    BatchReport,
    DeadLetter,
    InputRecord,
    ParsedEvent,
    parse_records,
)
from services.rates.rate_cards import RateCardBook
from services.runtime import metrics
from services.runtime.settings import PAYOUT_PARK_COUNT_MAX_DEFAULT, PAYOUT_PARK_S_DEFAULT


def decision_runs(topic: str, parsed: list[ParsedEvent]) -> list[list[ParsedEvent]]:
    """The batch's events cut, in order, into runs in which no event_id comes twice, each run
    decided in a transaction of its own after the one before, as if it were a batch of its own;
    one run when no event_id repeats, as usual.

    A handler compares a later copy of an event_id in its batch with the first copy, taken as
    seen; but the first copy may yet be refused once found new (a reversal of another
    creator's gift, a tip of a charge credited already, a payout result the cash-out does not
    take). Not applied, it is not seen: in a later batch its copy is decided as itself, and a
    corrected payload under its event_id applied. Decided after it, in a run of their own,
    its copies get that verdict in its batch too, wherever Kafka cut the batches. Gifts are
    left whole: a gift found new is always applied (`claim_applied`)."""
    if topic == topics.GIFTS_SENT or not parsed:
        return [parsed]
    runs: list[list[ParsedEvent]] = [[]]
    seen: set[str] = set()
    for item in parsed:
        event_id = item.event.event_id
        if event_id in seen:
            runs.append([])
            seen = set()
        seen.add(event_id)
        runs[-1].append(item)
    return runs


class Ingestor:
    """Applies batches of records of one topic to the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        rate_cards: RateCardBook,
        desk: CashoutDesk,
        *,
        park_s: float,
        payout_park_s: float = PAYOUT_PARK_S_DEFAULT,
        payout_park_count_max: int = PAYOUT_PARK_COUNT_MAX_DEFAULT,
    ) -> None:
        """`park_s`: how long a reversal waits for its gift; `payout_park_s` and
        `payout_park_count_max`: how long a payout result waits for its cash-out's request (0:
        it does not) and how many may wait at once (`EventStore`)."""
        # The deployment's topic prefix (the desk's): parked events and dead letters are
        # recorded under it.
        self.topic_prefix = desk.topic_prefix
        self.events = EventStore(
            desk.topic_prefix,
            park_s,
            payout_park_s=payout_park_s,
            payout_park_count_max=payout_park_count_max,
        )
        self.context = HandlerContext(ledger, rate_cards, desk, self.events)
        self.counts = metrics.IngestCounts()

    @property
    def ledger(self) -> Ledger:
        return self.context.ledger

    @property
    def desk(self) -> CashoutDesk:
        return self.context.desk

    @property
    def rate_cards(self) -> RateCardBook:
        return self.context.rate_cards

    @rate_cards.setter
    def rate_cards(self, book: RateCardBook) -> None:
        self.context.rate_cards = book

    async def process(self, topic: str, records: Sequence[InputRecord]) -> BatchReport:
        """Apply one batch of `topic` (the contract's name, without prefix).

        Returns what became of each record; dead letters are for the caller to publish before it
        commits the offsets. Database errors propagate, and the caller retries the same batch.
        A record dead-lettered already (its batch comes again after its dead letters were
        published) is dead-lettered again as it was, not decided anew
        (`EventStore.dead_lettered_before`): a record is applied or dead-lettered, never both.
        A batch in which an event_id comes twice is decided in runs (`decision_runs`), each in
        a transaction of its own, so that each record's verdict is the one it would get in a
        batch of its own.
        """
        handler = HANDLERS.get(topic)
        if handler is None:
            raise ValueError(f"{topic} is not a consumed topic")
        async with self.ledger.connect() as conn:
            verdicts = await self.events.dead_lettered_before(conn, topic, records)
        parsed: list[ParsedEvent] = []
        report = BatchReport()
        for outcome in parse_records(topic, records):
            record = outcome.record
            if verdicts and (verdict := verdicts.get((record.partition, record.offset))):
                report.dead_letters.append(verdict)  # dead-lettered before: again, as it was
            elif isinstance(outcome, DeadLetter):
                report.dead_letters.append(outcome)
            else:
                parsed.append(outcome)
        runs = decision_runs(topic, parsed)
        await handler(self.context, runs[0], report)
        for run in runs[1:]:
            later = BatchReport()
            await handler(self.context, run, later)
            report.absorb(later)
        self._count(topic, len(records), report)
        return report

    async def dead_letter(self, topic: str, letters: Sequence[DeadLetter]) -> BatchReport:
        """Record records that could not be applied (`services.app.poison`) as dead letters of
        `topic`, in a transaction of their own; counted as consumed and dead-lettered (or as
        duplicates, those whose rows were written before: `_count`)."""
        report = BatchReport(dead_letters=list(letters))
        async with self.ledger.begin() as conn:
            report.dead_letters_recorded = await self.events.record_dead_letters(
                conn, topic, report.dead_letters
            )
        self._count(topic, len(letters), report)
        return report

    async def retry_parked(
        self,
        topic: str,
        limit: int = PARKED_READ_COUNT_MAX,
        *,
        publish_dead_letters: Callable[[list[DeadLetter]], Awaitable[None]] | None = None,
    ) -> BatchReport:
        """Try parked events of `topic` again; past their deadline they are dead-lettered.

        The verdicts are committed first (`HandlerContext.sweeping`); then the dead letters are
        published with `publish_dead_letters` (without it, the caller publishes them), and only
        then do their events leave the parking. A sweep that stops between the two (a failed
        publish, a crash) leaves them parked with their verdict recorded, so the next sweep
        publishes the same verdict again: a parked event is applied or dead-lettered, never
        both, even when its gift arrives meanwhile."""
        async with self.ledger.connect() as conn:
            parsed = await self.events.read_parked(conn, topic, limit)
        report = BatchReport()
        if not parsed:
            return report
        sweep_context = dataclasses.replace(self.context, sweeping=True)
        await HANDLERS[topic](sweep_context, parsed, report)
        self.counts.unparked_applied += report.applied
        self.counts.unparked_duplicates += report.duplicates
        metrics.EVENTS_APPLIED.labels(topic).inc(report.applied)
        if report.dead_letters:
            if publish_dead_letters is not None:
                await publish_dead_letters(report.dead_letters)
            published = [letter.event_id for letter in report.dead_letters if letter.event_id]
            async with self.ledger.begin() as conn:
                await self.events.unpark(conn, topic, published)
        # Counted once they have left the parking: a sweep that stops before (a failed publish)
        # gives the same verdicts again, and the next one counts them.
        self.counts.unparked_dead_lettered += len(report.dead_letters)
        for letter in report.dead_letters:
            metrics.EVENTS_DEAD_LETTERED.labels(topic, letter.error).inc()
        return report

    def _count(self, topic: str, consumed: int, report: BatchReport) -> None:
        """Count what became of a batch's records. A dead letter counts as dead-lettered once,
        when its row in `dead_letters` is written, so the count is the table's: given again to
        its record, which came again (its batch rewound, or read again after a crash or a
        rebalance), it is a duplicate, a redelivered record that changed nothing."""
        counts = self.counts
        duplicates = report.duplicates + report.dead_letters_again
        counts.consumed += consumed
        counts.applied += report.applied
        counts.duplicates += duplicates
        counts.parked += report.parked
        counts.dead_lettered += len(report.dead_letters_recorded)
        for letter in report.dead_letters_recorded:
            counts.dead_letter_errors[letter.error] = (
                counts.dead_letter_errors.get(letter.error, 0) + 1
            )
            metrics.EVENTS_DEAD_LETTERED.labels(topic, letter.error).inc()
        metrics.EVENTS_CONSUMED.labels(topic).inc(consumed)
        metrics.EVENTS_APPLIED.labels(topic).inc(report.applied)
        metrics.EVENTS_DUPLICATE.labels(topic).inc(duplicates)
        metrics.EVENTS_PARKED.labels(topic).inc(report.parked)
