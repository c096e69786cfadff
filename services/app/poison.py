"""Isolating a poison record: one that fails its batch every time, with an error that is not an
outage (an amount that would overflow an account's totals, a bug a rare input reaches).

Rewinding such a batch would fetch and fail it forever, and stall its partitions. Instead, after
`attempts_max` failures (each logged as a warning) the batch is applied in halves, each half
again in halves while it fails, down to single records; a single record that still fails is
dead-lettered with reason `processing_failed` and the error, and everything else in the batch
is applied. The halves keep the batch's order. Each half commits on its own, which is safe:
applying is idempotent, so a rewind after a later outage finds the applied halves applied.

Outages are not isolated: `apply` retries them itself, and an outage that outlasts its retries
propagates, so the caller rewinds the whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from services.ingestion.records import BatchReport, DeadLetter, InputRecord, parse_record
from services.runtime import metrics
from services.runtime.database import error_text

logger = logging.getLogger(__name__)

PROCESSING_FAILED = "processing_failed"
ERROR_DETAIL_LENGTH_MAX = 500

ApplyRecords = Callable[[Sequence[InputRecord]], Awaitable[BatchReport]]
DeadLetterRecords = Callable[[Sequence[DeadLetter]], Awaitable[BatchReport]]
IsOutage = Callable[[BaseException], bool]


def processing_failed(topic: str, record: InputRecord, error: BaseException) -> DeadLetter:
    """The dead letter of a record that failed alone: the error on one line (`error_text`: its
    type, the driver's message and SQLSTATE, not the statement that failed)."""
    detail = error_text(error)[:ERROR_DETAIL_LENGTH_MAX]
    parsed = parse_record(topic, record)
    event_id = parsed.event_id if isinstance(parsed, DeadLetter) else parsed.event.event_id
    return DeadLetter(record, PROCESSING_FAILED, detail, event_id)


async def apply_isolating_poison(
    topic: str,
    records: Sequence[InputRecord],
    *,
    apply: ApplyRecords,
    dead_letter: DeadLetterRecords,
    is_outage: IsOutage,
    attempts_max: int,
) -> BatchReport:
    """`apply(records)`, tried `attempts_max` times; then split as the module says."""
    if attempts_max < 1:
        raise ValueError("attempts_max must be at least 1")
    failure: Exception | None = None
    for attempt in range(1, attempts_max + 1):
        try:
            return await apply(records)
        except Exception as error:
            if is_outage(error):
                raise
            failure = error
            if attempt < attempts_max:
                logger.warning(
                    "batch of %d from %s failed, attempt %d of %d (%s); trying it again",
                    len(records),
                    topic,
                    attempt,
                    attempts_max,
                    error_text(error),
                )
    assert failure is not None
    logger.warning(
        "batch of %d from %s failed %d times (%s); applying it in halves",
        len(records),
        topic,
        attempts_max,
        error_text(failure),
    )
    return await _split(topic, records, failure, apply, dead_letter, is_outage)


async def _split(
    topic: str,
    records: Sequence[InputRecord],
    failure: Exception,
    apply: ApplyRecords,
    dead_letter: DeadLetterRecords,
    is_outage: IsOutage,
) -> BatchReport:
    """Records that failed together with `failure`: alone, dead-lettered; else each half is
    applied once, and split again if it fails."""
    if len(records) == 1:
        letter = processing_failed(topic, records[0], failure)
        metrics.POISON_RECORDS.labels(topic).inc()
        logger.error(
            "dead-lettered %s partition %d offset %d (event %s) as %s: %s",
            topic,
            letter.record.partition,
            letter.record.offset,
            letter.event_id,
            PROCESSING_FAILED,
            letter.detail,
        )
        return await dead_letter([letter])
    middle = len(records) // 2
    report = BatchReport()
    for half in (records[:middle], records[middle:]):
        try:
            report.absorb(await apply(half))
        except Exception as error:
            if is_outage(error):
                raise
            report.absorb(await _split(topic, half, error, apply, dead_letter, is_outage))
    return report
