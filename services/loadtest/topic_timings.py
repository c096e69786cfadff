"""Per-topic timing of a load test's consumers: for each topic, the batches the consumers handed to
the ingestor, their records, and the time `Ingestor.process` took on them (parsing, the
handler's transaction and its commit; batches of different topics overlap on the event loop, so
the seconds of all topics add up to more than the run took). What tells where a mixed stream
spends its time against a stream of gifts alone: many small batches on the quieter topics cost a
transaction and a commit each."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.service import Ledger
from services.app.bootstrap import load_ingestor_as
from services.cashout.desk import CashoutDesk
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import BatchReport, InputRecord
from services.rates.rate_cards import RateCardBook
from services.runtime.settings import Settings


@dataclass(slots=True)
class TopicTiming:
    batches: int = 0
    records: int = 0
    seconds: float = 0.0


class TimedIngestor(Ingestor):
    """The product's `Ingestor`, noting per topic what `process` took (`timings`)."""

    def __init__(
        self,
        ledger: Ledger,
        rate_cards: RateCardBook,
        desk: CashoutDesk,
        *,
        park_s: float,
        payout_park_s: float,
        payout_park_count_max: int,
    ) -> None:
        super().__init__(
            ledger,
            rate_cards,
            desk,
            park_s=park_s,
            payout_park_s=payout_park_s,
            payout_park_count_max=payout_park_count_max,
        )
        self.timings: dict[str, TopicTiming] = {}

    async def process(self, topic: str, records: Sequence[InputRecord]) -> BatchReport:
        started = time.perf_counter()
        try:
            return await super().process(topic, records)
        finally:
            timing = self.timings.setdefault(topic, TopicTiming())
            timing.batches += 1
            timing.records += len(records)
            timing.seconds += time.perf_counter() - started


async def load_timed_ingestor(settings: Settings, engine: AsyncEngine) -> TimedIngestor:
    """A `TimedIngestor` built as `services.app.bootstrap.load_ingestor` builds the product's."""
    return await load_ingestor_as(TimedIngestor, settings, engine)


def timings_document(timings: dict[str, TopicTiming]) -> dict[str, dict[str, float]]:
    """Per topic (sorted): batches, records, records a batch, ms a batch, µs a record."""
    document: dict[str, dict[str, float]] = {}
    for topic, timing in sorted(timings.items()):
        batches = max(timing.batches, 1)
        document[topic] = {
            "batches": timing.batches,
            "records": timing.records,
            "records_per_batch": round(timing.records / batches, 1),
            "ms_per_batch": round(timing.seconds * 1000.0 / batches, 2),
            "us_per_record": round(timing.seconds * 1e6 / max(timing.records, 1), 1),
            "seconds": round(timing.seconds, 3),
        }
    return document
