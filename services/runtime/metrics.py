"""Prometheus metrics of the consumers, and plain counts that tests and the demo can read."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "giftledger_events_consumed_total", "Input records taken from Kafka.", ["topic"]
)
EVENTS_APPLIED = Counter(
    "giftledger_events_applied_total", "Events whose transfers were committed.", ["topic"]
)
EVENTS_DUPLICATE = Counter(
    "giftledger_events_duplicate_total",
    "Redelivered records that changed nothing: applied or dead-lettered before.",
    ["topic"],
)
EVENTS_DEAD_LETTERED = Counter(
    "giftledger_events_dead_lettered_total",
    "Inputs sent to the dead-letter topic, by error: each once, as its dead_letters row is "
    "written.",
    ["topic", "error"],
)
EVENTS_PARKED = Counter(
    "giftledger_events_parked_total",
    "Events parked until what they refer to arrives (a reversal before its gift, a payout"
    " result before its cash-out's request).",
    ["topic"],
)
BATCH_SIZE = Histogram(
    "giftledger_batch_size",
    "Records per consumed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000),
)
COMMIT_SECONDS = Histogram(
    "giftledger_batch_commit_seconds",
    "Time from a batch's arrival to its database commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "giftledger_consumer_lag",
    "High watermark minus the consumer's position, per partition.",
    ["topic", "partition"],
)
TRANSFER_PARTITION_MONTHS_AHEAD = Gauge(
    "giftledger_transfer_partition_months_ahead",
    "Months after the current one (UTC) whose transfers partition exists, up to the first"
    " without one, as of the last upkeep; -1 when the current month has none.",
)
OUTBOX_ROWS_PRUNED = Counter(
    "giftledger_outbox_rows_pruned_total",
    "Published outbox rows deleted once older than OUTBOX_RETENTION_HOURS.",
)
OUTBOX_ROWS_PUBLISHED = Counter(
    "giftledger_outbox_rows_published_total",
    "Outbox rows this process's relay sent and marked published.",
)
OUTBOX_ROUND_SECONDS = Histogram(
    "giftledger_outbox_round_seconds",
    "Time from an outbox round's claim to its mark's commit (a pass overlaps its rounds).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LEDGER_CONFLICTS_RETRIED = Counter(
    "giftledger_ledger_conflicts_retried_total",
    "Ledger units of work run again after losing a race with another writer, by kind"
    " (unique_key, deadlock, serialization_failure).",
    ["kind"],
)
DATABASE_RETRIES = Counter(
    "giftledger_database_retries_total", "Batches retried after a database error.", ["topic"]
)
DEAD_LETTERS_WITHOUT_VALUE = Counter(
    "giftledger_dead_letters_without_value_total",
    "Dead letters sent without their value, which the producer or the broker refused with it "
    "(too large with the headers, or invalid); the record stays at its source offset.",
    ["topic"],
)
DEAD_LETTER_PUBLISH_FAILURES = Counter(
    "giftledger_dead_letter_publish_failures_total",
    "Batches rewound because their dead letters could not be published.",
    ["topic"],
)
POISON_RECORDS = Counter(
    "giftledger_poison_records_total",
    "Records dead-lettered as processing_failed: alone, they still failed to apply.",
    ["topic"],
)


@dataclass
class IngestCounts:
    """Running totals of what happened to consumed records.

    Every consumed record ends in exactly one of applied, duplicates, dead_lettered or parked;
    a parked record later moves to applied, duplicates or dead_lettered (counted in unparked_*).
    """

    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    parked: int = 0
    unparked_applied: int = 0
    unparked_duplicates: int = 0
    unparked_dead_lettered: int = 0
    dead_letter_errors: dict[str, int] = field(default_factory=dict)

    @property
    def still_parked(self) -> int:
        return (
            self.parked
            - self.unparked_applied
            - self.unparked_duplicates
            - self.unparked_dead_lettered
        )

    def balanced(self) -> bool:
        """consumed = applied + duplicates + dead-lettered + still parked."""
        settled = (
            self.applied
            + self.unparked_applied
            + self.duplicates
            + self.unparked_duplicates
            + self.dead_lettered
            + self.unparked_dead_lettered
            + self.still_parked
        )
        return self.consumed == settled
