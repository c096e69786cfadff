"""`giftledger loadtest`: generate (or take) a stream, run it through the whole pipeline, and check
the ledger against the stream's expected end state.

Steps, in one process, as `giftledger demo` runs:

1. The stream: `--events N` generates one into the output directory (namespace `lt<seed>x<random>`,
   so that a second run against the same database finds nothing of the first); `FILE` takes a
   stream and its `FILE.expected.json` (a stream already applied to this database is refused).
2. PostgreSQL and the broker (`DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`, or the embedded ones),
   the schema migrated, topics of a fresh prefix `<KAFKA_TOPIC_PREFIX>lt<random>.`, consumers in a
   fresh consumer group writing as the writer role, and the simulated bank with
   `failure_rate=0` and `return_rate=0` (every held cash-out ends paid). The rules the expected
   state assumes (rate card, FX, cash-out limits, eligibility) are checked against this
   deployment first; a difference stops the run, as its result could not match.
3. Replay the stream up to its cash-out phase; wait until the consumers' own counters say every
   record was consumed and no reversal is still parked. Then replay the cash-outs and wait until
   every record (and every report of the bank) is consumed, the outbox is drained and no cash-out
   is open. A wait gives up when nothing moves for `stall_s`.
4. `verify` the ledger; compare, for the stream's namespace, every creator's available DIAMOND
   and currency balances, that nothing is left pending, the events applied per topic, the dead
   letters per topic and reason, the cash-outs per outcome, and the duplicates counted.
5. Report: events/s (records of the main phase over the time from the first send until they are
   all settled, and the peak over a 2 s window), the consumed count sampled every 0.5 s, the lag
   (records published and not yet consumed), and latency percentiles. The replayer, the
   consumers and the bank share one process and one event loop (and the machine's cores with the
   broker and PostgreSQL), as in `giftledger demo`. Events keep their recorded
   `occurred_at` (it decides the rate card and the daily limits), so latency is measured from the
   moment the replayer handed the record to the producer to the event's `applied_at` (the start
   of the transaction that applied it, so slightly early). About one event in 100 is sampled (by
   a hash of its event_id, first send only; at most 200,000 samples). Writes `loadtest.json`,
   `summary.txt`, `throughput.png` and `latency.png` (PNG charts need matplotlib, in the `dev`
   extra) into the output directory.

Dead letters are counted from the run's DLQ topics (`<prefix><topic>.dlq`, by `dlq.error`, a
record counted once per source partition and offset): they are what the contract promises. The
`dead_letters` table (the rows of the run's topic prefix) is compared with them, and a difference
is reported as a warning. The run has a prefix of its own, so it publishes only the outbox rows it
wrote and retries only the reversals it parked, even beside a deployment on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import re
import secrets
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.migrate import upgrade_to_head
from ledger.verify import verify
from schemas import topics
from services.app.consumer import ConsumerService
from services.app.runner import start_consumers, start_payout_rail
from services.cashout.eligibility import get_eligibility_settings
from services.loadtest.generator import (
    ExpectedState,
    StreamFormatError,
    StreamShape,
    add_shape_arguments,
    generate,
    load_expected,
    shape_from_arguments,
)
from services.loadtest.replay import (
    ReplayMode,
    StreamRecord,
    add_pacing_arguments,
    pacing_from_arguments,
    replay,
)
from services.payout_rail.rail import PayoutRailService
from services.rates.rate_cards import load_rate_cards
from services.runtime.database import engine_as_role, open_database, safe_url
from services.runtime.kafka import open_kafka
from services.runtime.settings import Settings, get_settings

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 0.5
RATE_WINDOW_SAMPLES = 4  # rates are shown over 2 s
SAMPLES_MAX = 200_000
LATENCY_SAMPLE_ONE_IN = 100
LATENCY_SAMPLES_MAX = 200_000
LATENCY_QUERY_CHUNK = 10_000
ASSIGNMENT_WAIT_S = 90.0
STALL_S_DEFAULT = 120.0
POLL_INTERVAL_S = 0.2
SESSION_TIMEOUT_MS = 6_000
MISMATCHES_SHOWN_MAX = 20
PERCENTILES = (50, 90, 95, 99)
EVENT_ID_PATTERN = re.compile(rb'"event_id"\s*:\s*"([!-~]{1,128}?)"')
STREAM_FILE_NAME = "stream.jsonl.gz"
DLQ_READ_WAIT_S = 60.0
DLQ_QUIET_S = 1.0


class LoadtestError(RuntimeError):
    """The run cannot start or cannot be judged (a usage or environment problem)."""


# Measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """Counters at `t_s` seconds after the first replay began."""

    t_s: float
    published: int  # stream records handed to the producer
    consumed: int  # records the consumers took (stream records and the bank's reports)
    reports: int  # reports the simulated bank sent


class SendTimes:
    """Wall-clock send times of sampled events: about one event_id in `one_in`, first send only
    (a duplicate or a conflicting record later does not move it), at most `samples_max`."""

    def __init__(
        self, one_in: int = LATENCY_SAMPLE_ONE_IN, samples_max: int = LATENCY_SAMPLES_MAX
    ) -> None:
        self.one_in = one_in
        self.samples_max = samples_max
        self.times: dict[tuple[str, str], float] = {}
        self.published = 0

    def __call__(self, record: StreamRecord) -> None:
        self.published += 1
        if len(self.times) >= self.samples_max:
            return
        found = EVENT_ID_PATTERN.search(record.value, 0, 512)
        if found is None or zlib.crc32(found.group(1)) % self.one_in:
            return
        key = (record.topic, found.group(1).decode("ascii"))
        if key not in self.times:
            self.times[key] = time.time()


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (`share` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(share / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


async def latencies_ms(engine: AsyncEngine, send_times: SendTimes) -> list[float]:
    """applied_at minus the send time of each sampled event that was applied, sorted."""
    keys = list(send_times.times)
    found: list[float] = []
    async with engine.connect() as conn:
        for start in range(0, len(keys), LATENCY_QUERY_CHUNK):
            chunk = keys[start : start + LATENCY_QUERY_CHUNK]
            rows = await conn.execute(
                text(
                    "SELECT topic, event_id, extract(epoch FROM applied_at)::float8 AS at"
                    " FROM applied_events WHERE (topic, event_id) IN"
                    " (SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:ids AS text[])))"
                ),
                {"topics": [key[0] for key in chunk], "ids": [key[1] for key in chunk]},
            )
            for row in rows:
                found.append((row.at - send_times.times[(row.topic, row.event_id)]) * 1000.0)
    return sorted(found)


# Observing and comparing ---------------------------------------------------------------------


async def read_dead_letter_topics(
    bootstrap_servers: str, prefix: str, expected_count: int, wait_s: float = DLQ_READ_WAIT_S
) -> dict[str, dict[str, int]]:
    """Dead letters per source topic (the contract's name) and `dlq.error`, read from every
    `<prefix><topic>.dlq` from the start: until at least `expected_count` are there and nothing
    more comes for a moment, or `wait_s`. A record dead-lettered twice (redelivered) counts
    once: they are told apart by their source partition and offset."""
    consumer = AIOKafkaConsumer(
        *(
            topics.prefixed(prefix, topics.dead_letter_topic(name))
            for name in topics.CONSUMED_TOPICS
        ),
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    seen: dict[tuple[str, str, str], str] = {}
    await consumer.start()
    try:
        deadline = time.monotonic() + wait_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for partition, records in batches.items():
                source = partition.topic.removeprefix(prefix).removesuffix(
                    topics.DEAD_LETTER_SUFFIX
                )
                for record in records:
                    headers = {key: bytes(value).decode() for key, value in record.headers or ()}
                    place = (
                        source,
                        headers.get("dlq.source.partition", ""),
                        headers.get("dlq.source.offset", str(record.offset)),
                    )
                    seen[place] = headers.get("dlq.error", "unknown")
                quiet_since = time.monotonic()
            if len(seen) >= expected_count and time.monotonic() - quiet_since > DLQ_QUIET_S:
                break
    finally:
        await consumer.stop()
    counted: dict[str, dict[str, int]] = {}
    for (source, _, _), error in seen.items():
        by_error = counted.setdefault(source, {})
        by_error[error] = by_error.get(error, 0) + 1
    return counted


@dataclass
class Observed:
    """What the database and the consumers show for one namespace."""

    balances: dict[str, dict[str, int]] = field(default_factory=dict)
    left_pending: list[str] = field(default_factory=list)
    applied_by_topic: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)  # the DLQ topics
    dead_letter_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # the table
    cashouts: dict[str, int] = field(default_factory=dict)
    consumed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    applied: int = 0
    parked: int = 0
    still_parked: int = 0
    reports_sent: int = 0


async def observe(
    conn: AsyncConnection, namespace: str, topic_prefix: str, since: datetime
) -> Observed:
    """The namespace's balances, applied events and cash-outs, and the run's `dead_letters` rows
    (its topic prefix, since `since`), from the database."""
    prefix = namespace + "-"
    observed = Observed()
    rows = await conn.execute(
        text(
            "SELECT creator_id, asset, kind, credits_posted - debits_posted AS posted,"
            " debits_pending, credits_pending FROM accounts"
            " WHERE starts_with(creator_id, :prefix) AND kind IN"
            " ('creator_diamonds_available', 'creator_diamonds_held', 'creator_wallet')"
        ),
        {"prefix": prefix},
    )
    for row in rows:
        if (
            row.debits_pending
            or row.credits_pending
            or (row.kind == "creator_diamonds_held" and row.posted)
        ):
            observed.left_pending.append(
                f"{row.creator_id} {row.asset} {row.kind}: posted {row.posted}, pending "
                f"debits {row.debits_pending}, credits {row.credits_pending}"
            )
        available = row.posted - row.debits_pending
        if row.kind != "creator_diamonds_held" and available:
            observed.balances.setdefault(row.creator_id, {})[row.asset] = available
    rows = await conn.execute(
        text(
            "SELECT topic, count(*) AS n FROM applied_events"
            " WHERE starts_with(event_id, :prefix)"
            " OR (topic = :reports AND (starts_with(event_id, 'rail:paid:' || :prefix)"
            " OR starts_with(event_id, 'rail:failed:' || :prefix)"
            " OR starts_with(event_id, 'rail:returned:' || :prefix)))"
            " GROUP BY topic"
        ),
        {"prefix": prefix, "reports": topics.PAYOUTS_UPDATED},
    )
    observed.applied_by_topic = {row.topic: row.n for row in rows}
    rows = await conn.execute(
        text(
            "SELECT topic, error, count(*) AS n FROM dead_letters"
            " WHERE topic_prefix = :topic_prefix AND recorded_at >= :since"
            " GROUP BY topic, error"
        ),
        {"topic_prefix": topic_prefix, "since": since},
    )
    for row in rows:
        observed.dead_letter_rows.setdefault(row.topic, {})[row.error] = row.n
    rows = await conn.execute(
        text(
            "SELECT status, rejected_rule, count(*) AS n FROM cashouts"
            " WHERE starts_with(creator_id, :prefix) GROUP BY status, rejected_rule"
        ),
        {"prefix": prefix},
    )
    for row in rows:
        name = row.status if row.rejected_rule is None else f"{row.status}:{row.rejected_rule}"
        observed.cashouts[name] = observed.cashouts.get(name, 0) + row.n
    return observed


def _differences(label: str, expected: dict[str, Any], observed: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(expected) | set(observed)):
        if expected.get(key) != observed.get(key):
            lines.append(f"{label} {key}: expected {expected.get(key)}, got {observed.get(key)}")
    return lines


def table_warnings(observed: Observed) -> list[str]:
    """Where the `dead_letters` table disagrees with the DLQ topics. Both are written for every
    dead letter (the row in the batch's transaction, the record after its commit), so a
    difference points at a record published by something other than the consumers."""
    lines = _differences("dead_letters table", observed.dead_letters, observed.dead_letter_rows)
    return [line.replace("expected", "the DLQ topics hold", 1) for line in lines]


def compare(expected: ExpectedState, observed: Observed) -> list[str]:
    """Every difference between the expected end state and what was observed; empty if none."""
    mismatches: list[str] = []
    balance_lines = _differences("balance", expected.balances, observed.balances)
    if balance_lines:
        mismatches.append(f"{len(balance_lines)} creators' balances differ")
        mismatches += balance_lines[:MISMATCHES_SHOWN_MAX]
    if observed.left_pending:
        mismatches.append(f"{len(observed.left_pending)} creator accounts left pending")
        mismatches += observed.left_pending[:MISMATCHES_SHOWN_MAX]
    mismatches += _differences("applied", expected.applied_by_topic, observed.applied_by_topic)
    mismatches += _differences("dead letters", expected.dead_letters, observed.dead_letters)
    mismatches += _differences("cash-outs", expected.cashouts, observed.cashouts)
    # Redelivery (a rebalance) and a bank report sent twice add duplicates, and only those.
    redelivered = max(observed.consumed - expected.records - observed.reports_sent, 0)
    repeated_reports = max(observed.reports_sent - expected.payout_reports, 0)
    allowance = redelivered + repeated_reports
    if not expected.duplicates <= observed.duplicates <= expected.duplicates + allowance:
        mismatches.append(
            f"duplicates: expected {expected.duplicates}"
            + (f" (+ up to {allowance} redelivered)" if allowance else "")
            + f", counted {observed.duplicates}"
        )
    if observed.still_parked:
        mismatches.append(f"{observed.still_parked} reversals still parked")
    return mismatches


async def check_assumptions(
    conn: AsyncConnection, settings: Settings, expected: ExpectedState
) -> list[str]:
    """Where this deployment's rules differ from those the expected state was derived from."""
    assumed = expected.assumptions
    problems: list[str] = []
    start = datetime.fromisoformat(expected.stream_start)
    window = (
        start - timedelta(days=31),
        start + timedelta(days=3, milliseconds=expected.duration_ms),
    )
    book = await load_rate_cards(conn)
    cards = [book.in_force_at(window[0])]
    cards += [card for card in book.cards if window[0] < card.effective_from <= window[1]]
    for card in cards:
        if (card.milli_diamonds_per_coin, card.diamonds_per_usd) != (
            assumed["milli_diamonds_per_coin"],
            assumed["diamonds_per_usd"],
        ):
            problems.append(
                f"rate card {card.version} ({card.milli_diamonds_per_coin} milli-diamonds per "
                f"coin, {card.diamonds_per_usd} diamonds per USD) is in force during the stream"
            )
    rows = await conn.execute(
        text(
            "SELECT currency, effective_from, units_per_usd_numerator AS n,"
            " units_per_usd_denominator AS d FROM fx_rates WHERE effective_from <= :end"
        ),
        {"end": window[1]},
    )
    for row in rows:
        wanted = assumed["fx_units_per_usd"].get(row.currency)
        if wanted is not None and f"{row.n}/{row.d}" not in (f"{wanted}/1", wanted):
            problems.append(f"FX rate {row.currency} {row.n}/{row.d} from {row.effective_from}")
    limits = {
        "cashout_minimum_usd_cents": settings.cashout_minimum_usd_cents,
        "cashout_daily_limit_usd_cents": settings.cashout_daily_limit_usd_cents,
    }
    for name, value in limits.items():
        if value != assumed[name]:
            problems.append(f"{name.upper()} is {value}, the stream assumes {assumed[name]}")
    eligibility = get_eligibility_settings()
    for name, value in assumed["eligibility"].items():
        actual = getattr(eligibility, name)
        same = (
            sorted(actual) == sorted(value)
            if isinstance(value, list)
            else (dict(actual) == value if isinstance(value, dict) else actual == value)
        )
        if not same:
            problems.append(f"ELIGIBILITY_{name.upper()} is {actual}, the stream assumes {value}")
    return problems


# The report ----------------------------------------------------------------------------------


@dataclass
class LoadtestReport:
    matched: bool
    mismatches: list[str]
    stream: str
    namespace: str
    records: int
    mode: str
    speed: float
    rate_per_s: int | None
    bootstrap_servers: str = ""
    topic_prefix: str = ""
    database: str = ""
    main_records: int = 0
    main_seconds: float = 0.0  # first send to every main-phase record settled
    events_per_s: float = 0.0
    peak_events_per_s: float = 0.0
    publish_seconds: float = 0.0
    publish_per_s: float = 0.0
    cashout_seconds: float = 0.0
    total_seconds: float = 0.0
    lag_max: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_samples: int = 0
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    parked: int = 0
    cashouts: dict[str, int] = field(default_factory=dict)
    verify_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def to_document(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["samples"] = [dataclasses.astuple(sample) for sample in self.samples]
        document["sample_columns"] = ["t_s", "published", "consumed", "reports"]
        return document

    def summary(self) -> str:
        lines = [f"giftledger loadtest: {'MATCHED' if self.matched else 'NOT MATCHED'}"]
        lines.append(f"stream    {self.stream}: {self.records} records, namespace {self.namespace}")
        if self.bootstrap_servers:
            lines.append(f"broker    {self.bootstrap_servers}, topics {self.topic_prefix}*")
            lines.append(f"database  {self.database}")
        pacing = {"recorded": f"recorded timing x{self.speed:g}", "rate": f"{self.rate_per_s}/s"}
        lines.append(
            f"publish   {self.main_records} main-phase records in {self.publish_seconds:.1f} s "
            f"({self.publish_per_s:,.0f}/s, {pacing.get(self.mode, 'as fast as possible')})"
        )
        lines.append(
            f"ledger    {self.events_per_s:,.0f} events/s: {self.main_records} records settled "
            f"{self.main_seconds:.1f} s after the first send; peak {self.peak_events_per_s:,.0f}"
            f"/s over {RATE_WINDOW_SAMPLES * SAMPLE_INTERVAL_S:g} s; cash-out phase "
            f"{self.cashout_seconds:.1f} s; "
            f"total {self.total_seconds:.1f} s"
        )
        if self.latency_samples:
            figures = ", ".join(f"{name} {value:,.0f}" for name, value in self.latency_ms.items())
            lines.append(
                f"latency   send -> applied, ms ({self.latency_samples} samples): {figures}"
            )
        lines.append(f"lag       at most {self.lag_max} records published and not yet consumed")
        lines.append(
            f"records   consumed {self.consumed}: applied {self.applied}, duplicates "
            f"{self.duplicates}, dead-lettered {self.dead_lettered}, parked {self.parked} "
            "(then applied or dead-lettered)"
        )
        if self.cashouts:
            outcomes = ", ".join(f"{name} {count}" for name, count in self.cashouts.items())
            lines.append(f"cash-outs {outcomes}")
        lines.append(
            "verify    " + ("every invariant holds" if not self.verify_problems else "BROKEN")
        )
        lines += [f"  {problem}" for problem in self.verify_problems[:MISMATCHES_SHOWN_MAX]]
        lines.append(
            "compare   "
            + ("the ledger matches the expected end state" if not self.mismatches else "")
        )
        lines += [f"  {line}" for line in self.mismatches]
        if self.warnings:
            lines.append("warnings")
            lines += [f"  {line}" for line in self.warnings]
        for name, path in self.files.items():
            lines.append(f"{name:<9} {path}")
        return "\n".join(lines) + "\n"


def _rates(
    samples: list[Sample], window: int = RATE_WINDOW_SAMPLES
) -> list[tuple[float, float, float, int]]:
    """(t, consumed/s, published/s, lag) over a moving window of `window` sample intervals:
    the consumers count a whole batch at once, so rates over one interval are spiky."""
    rows = []
    for before, after in zip(samples, samples[window:], strict=False):
        span = after.t_s - before.t_s
        if span <= 0:
            continue
        rows.append(
            (
                after.t_s,
                (after.consumed - before.consumed) / span,
                (after.published - before.published) / span,
                max(after.published + after.reports - after.consumed, 0),
            )
        )
    return rows


def write_charts(report: LoadtestReport, latencies: list[float], out_dir: Path) -> dict[str, str]:
    """throughput.png (consumed and published per second, and the lag) and latency.png (the
    histogram); nothing when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no charts (pip install matplotlib)")
        return {}
    files: dict[str, str] = {}
    rows = _rates(report.samples)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.plot([r[0] for r in rows], [r[1] for r in rows], label="consumed")
    top.plot([r[0] for r in rows], [r[2] for r in rows], label="published", alpha=0.6)
    top.set_ylabel(f"records / s ({RATE_WINDOW_SAMPLES * SAMPLE_INTERVAL_S:g} s window)")
    top.set_title(f"giftledger loadtest: {report.records} records, {report.events_per_s:,.0f}/s")
    top.legend()
    top.grid(alpha=0.3)
    bottom.plot([r[0] for r in rows], [r[3] for r in rows], color="tab:red")
    bottom.set_ylabel("lag (records)")
    bottom.set_xlabel(f"seconds since the first send (samples every {SAMPLE_INTERVAL_S} s)")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    path = out_dir / "throughput.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    files["throughput"] = str(path)
    if latencies:
        figure, axes = plt.subplots(figsize=(10, 5))
        axes.hist(latencies, bins=60, color="tab:blue")
        styles = iter(("-", "--", "-.", ":"))
        for name, value in report.latency_ms.items():
            if name.startswith("p"):
                axes.axvline(
                    value, linestyle=next(styles), color="tab:red", label=f"{name} {value:,.0f} ms"
                )
        axes.legend()
        axes.set_xlabel("send -> applied (ms)")
        axes.set_ylabel("sampled events")
        axes.set_title(f"latency, {len(latencies)} sampled events")
        figure.tight_layout()
        path = out_dir / "latency.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        files["latency"] = str(path)
    return files


# Running -------------------------------------------------------------------------------------


async def _wait(
    condition: Callable[[], Awaitable[bool]],
    signature: Callable[[], Awaitable[tuple[int, ...]]],
    stall_s: float,
) -> bool:
    """Until `condition` holds; False once `signature` (the progress) stays put for `stall_s`."""
    last = await signature()
    last_change = time.monotonic()
    while True:
        if await condition():
            return True
        await asyncio.sleep(POLL_INTERVAL_S)
        now = await signature()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return False


@dataclass
class _Run:
    settings: Settings
    engine: AsyncEngine
    service: ConsumerService
    rail: PayoutRailService
    bootstrap_servers: str
    expected: ExpectedState
    stream: Path
    out_dir: Path
    pacing: tuple[ReplayMode, float, int | None] = ("max", 1.0, None)
    send_times: SendTimes = field(default_factory=SendTimes)
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0

    def take_sample(self) -> None:
        if len(self.samples) < SAMPLES_MAX:
            self.samples.append(
                Sample(
                    round(time.monotonic() - self.started, 3),
                    self.send_times.published,
                    self.service.ingestor.counts.consumed,
                    self.rail.reports_sent,
                )
            )

    async def sample_forever(self) -> None:
        while True:
            self.take_sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def publish(self, start: int, stop: int | None) -> float:
        mode, speed, rate_per_s = self.pacing
        report = await replay(
            self.stream,
            self.bootstrap_servers,
            topic_prefix=self.settings.kafka_topic_prefix,
            mode=mode,
            speed=speed,
            rate_per_s=rate_per_s,
            resume_from=start,
            stop_at=stop,
            on_send=self.send_times,
            checkpoint_file=self.out_dir / "replay-checkpoint",
        )
        return report.elapsed_s

    async def open_cashouts(self) -> int:
        async with self.engine.connect() as conn:
            open_count = await conn.scalar(
                text(
                    "SELECT count(*) FROM cashouts WHERE starts_with(creator_id, :prefix)"
                    " AND status IN ('requested', 'held', 'submitted')"
                ),
                {"prefix": self.expected.namespace + "-"},
            )
            unpublished = await conn.scalar(
                text(
                    "SELECT count(*) FROM outbox"
                    " WHERE published_at IS NULL AND topic_prefix = :topic_prefix"
                ),
                {"topic_prefix": self.settings.kafka_topic_prefix},
            )
        return int(open_count or 0) + int(unpublished or 0)

    async def applied_so_far(self) -> tuple[int, int]:
        """(events of the namespace applied, its cash-outs recorded), from the database."""
        prefix = self.expected.namespace + "-"
        async with self.engine.connect() as conn:
            applied = await conn.scalar(
                text("SELECT count(*) FROM applied_events WHERE starts_with(event_id, :prefix)"),
                {"prefix": prefix},
            )
            cashouts = await conn.scalar(
                text("SELECT count(*) FROM cashouts WHERE starts_with(creator_id, :prefix)"),
                {"prefix": prefix},
            )
        return int(applied or 0), int(cashouts or 0)

    def main_phase_applied(self) -> int:
        """Events of the main phase that the ledger applies: all but the cash-out requests and
        the bank's reports (the stream's own payout reports are all dead-lettered)."""
        expected = self.expected
        requests = expected.applied_by_topic.get(topics.CASHOUTS_REQUESTED, 0)
        return sum(expected.applied_by_topic.values()) - requests - expected.payout_reports

    async def main_phase_settled(self) -> bool:
        """The counters say every record was consumed and nothing is parked; the database
        confirms every event to apply is there (a redelivery also counts as consumed)."""
        counts = self.service.ingestor.counts
        if counts.consumed < self.expected.cashout_phase_from or counts.still_parked:
            return False
        applied, _ = await self.applied_so_far()
        return applied >= self.main_phase_applied()

    async def all_settled(self) -> bool:
        counts = self.service.ingestor.counts
        if counts.consumed < self.expected.records + self.rail.reports_sent:
            return False
        if counts.still_parked or self.rail.in_flight_count:
            return False
        if await self.open_cashouts():
            return False
        requests = self.expected.applied_by_topic.get(topics.CASHOUTS_REQUESTED, 0)
        _, recorded = await self.applied_so_far()
        return recorded >= requests

    async def progress(self) -> tuple[int, ...]:
        counts = self.service.ingestor.counts
        return (counts.consumed, counts.still_parked, self.rail.reports_sent)

    async def progress_with_cashouts(self) -> tuple[int, ...]:
        return (*await self.progress(), await self.open_cashouts())


async def _wait_for_groups(
    service: ConsumerService, rail: PayoutRailService, partitions: int
) -> bool:
    deadline = time.monotonic() + ASSIGNMENT_WAIT_S
    while time.monotonic() < deadline:
        if (
            service.assigned_partition_count() >= len(service.topics) * partitions
            and rail.assigned_partition_count() >= partitions
        ):
            return True
        await asyncio.sleep(POLL_INTERVAL_S)
    return False


def _prepare_stream(
    events: int | None, file: Path | None, out_dir: Path, seed: int, shape: StreamShape | None
) -> tuple[Path, ExpectedState]:
    if (events is None) == (file is None):
        raise LoadtestError("give either a number of events or a stream file, not both")
    out_dir.mkdir(parents=True, exist_ok=True)
    if file is not None:
        return file, load_expected(file)
    assert events is not None
    path = out_dir / STREAM_FILE_NAME
    namespace = f"lt{seed}x{secrets.token_hex(3)}"
    return path, generate(path, events=events, seed=seed, namespace=namespace, shape=shape)


async def _already_applied(engine: AsyncEngine, namespace: str) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT 1 FROM applied_events WHERE starts_with(event_id, :prefix) LIMIT 1"),
            {"prefix": namespace + "-"},
        )
    return found is not None


def loadtest_settings(settings: Settings) -> Settings:
    """The settings of one run: fresh topics and consumer groups, a bank that always pays."""
    tag = secrets.token_hex(3)
    update: dict[str, Any] = {
        "kafka_topic_prefix": f"{settings.kafka_topic_prefix}lt{tag}.",
        "kafka_consumer_group": f"{settings.kafka_consumer_group}.lt{tag}",
        "payout_rail_failure_rate": 0.0,
        "payout_rail_return_rate": 0.0,
    }
    if "kafka_session_timeout_ms" not in settings.model_fields_set:
        update["kafka_session_timeout_ms"] = SESSION_TIMEOUT_MS
    return settings.model_copy(update=update)


async def _finish(run: _Run, report: LoadtestReport, since: datetime) -> list[float]:
    """Observe, verify and compare; returns the sampled latencies (ms, sorted)."""
    counts = run.service.ingestor.counts
    async with run.engine.connect() as conn:
        observed = await observe(
            conn, run.expected.namespace, run.settings.kafka_topic_prefix, since
        )
        problems = await verify(conn)
    observed.consumed = counts.consumed
    observed.duplicates = counts.duplicates
    observed.applied = counts.applied + counts.unparked_applied
    observed.dead_lettered = counts.dead_lettered + counts.unparked_dead_lettered
    observed.parked = counts.parked
    observed.still_parked = counts.still_parked
    observed.reports_sent = run.rail.reports_sent
    observed.dead_letters = await read_dead_letter_topics(
        run.bootstrap_servers, run.settings.kafka_topic_prefix, run.expected.dead_lettered
    )
    report.warnings += table_warnings(observed)
    report.verify_problems = [f"{problem.check}: {problem.detail}" for problem in problems]
    report.mismatches += compare(run.expected, observed)
    report.matched = not report.mismatches and not report.verify_problems
    report.consumed = observed.consumed
    report.applied = observed.applied
    report.duplicates = observed.duplicates
    report.dead_lettered = observed.dead_lettered
    report.parked = observed.parked
    report.cashouts = dict(sorted(observed.cashouts.items()))
    return await latencies_ms(run.engine, run.send_times)


def _measure(report: LoadtestReport, samples: list[Sample], latencies: list[float]) -> None:
    report.samples = samples
    if report.main_seconds > 0:
        report.events_per_s = report.main_records / report.main_seconds
    if report.publish_seconds > 0:
        report.publish_per_s = report.main_records / report.publish_seconds
    rows = _rates(samples)
    report.peak_events_per_s = max((row[1] for row in rows), default=0.0)
    report.lag_max = max((max(s.published + s.reports - s.consumed, 0) for s in samples), default=0)
    report.latency_samples = len(latencies)
    if latencies:
        report.latency_ms = {f"p{share}": percentile(latencies, share) for share in PERCENTILES}
        report.latency_ms["max"] = latencies[-1]


def _write_outputs(report: LoadtestReport, latencies: list[float], out_dir: Path) -> None:
    report.files = write_charts(report, latencies, out_dir)
    summary_path = out_dir / "summary.txt"
    json_path = out_dir / "loadtest.json"
    report.files["summary"] = str(summary_path)
    report.files["json"] = str(json_path)
    summary_path.write_text(report.summary(), encoding="utf-8")
    json_path.write_text(json.dumps(report.to_document(), indent=1) + "\n", encoding="utf-8")


async def loadtest(
    settings: Settings,
    *,
    events: int | None,
    file: Path | None,
    out_dir: Path,
    seed: int = 1,
    mode: ReplayMode = "max",
    speed: float = 1.0,
    rate_per_s: int | None = None,
    shape: StreamShape | None = None,
    stall_s: float = STALL_S_DEFAULT,
    out: TextIO | None = None,
) -> LoadtestReport:
    """Run a load test (see the module's docstring); `report.matched` says whether the ledger
    reached the expected end state. Prints the summary to `out` when given, and writes it, the
    JSON report and the charts into `out_dir`. Raises `LoadtestError` when the run cannot start:
    both or neither of `events` and `file`, a stream already applied to this database, a
    deployment whose rules differ from the stream's, consumer groups that do not form."""
    stream, expected = await asyncio.to_thread(_prepare_stream, events, file, out_dir, seed, shape)
    settings = loadtest_settings(settings)
    started = time.monotonic()
    async with open_database(settings) as engine, open_kafka(settings) as bootstrap_servers:
        await upgrade_to_head(engine)
        async with engine.connect() as conn:
            problems = await check_assumptions(conn, settings, expected)
            since = (await conn.execute(text("SELECT now()"))).scalar_one()
        if problems:
            raise LoadtestError(
                "this deployment differs from what the stream's expected state assumes: "
                + "; ".join(problems)
            )
        if await _already_applied(engine, expected.namespace):
            raise LoadtestError(
                f"namespace {expected.namespace} is already in this database: replay the stream "
                "into a fresh database, or generate one with another namespace"
            )
        report = LoadtestReport(
            matched=False,
            mismatches=[],
            stream=str(stream),
            namespace=expected.namespace,
            records=expected.records,
            mode=mode,
            speed=speed,
            rate_per_s=rate_per_s,
            bootstrap_servers=bootstrap_servers,
            topic_prefix=settings.kafka_topic_prefix,
            database=safe_url(engine.url.render_as_string(hide_password=False)),
            main_records=expected.cashout_phase_from,
        )
        logger.info("loadtest: database and broker ready after %.1f s", time.monotonic() - started)
        rail = start_payout_rail(settings, bootstrap_servers)
        await rail.start()
        writer = engine_as_role(engine, settings, settings.database_writer_role)
        service = await start_consumers(settings, writer, bootstrap_servers)
        logger.info("loadtest: consumers started after %.1f s", time.monotonic() - started)
        run = _Run(settings, engine, service, rail, bootstrap_servers, expected, stream, out_dir)
        run.pacing = (mode, speed, rate_per_s)
        sampler: asyncio.Task[None] | None = None
        try:
            if not await _wait_for_groups(service, rail, settings.kafka_partition_count):
                raise LoadtestError(f"the consumer groups did not form in {ASSIGNMENT_WAIT_S} s")
            logger.info("loadtest: consumer groups formed after %.1f s", time.monotonic() - started)
            run.started = time.monotonic()
            sampler = asyncio.create_task(run.sample_forever(), name="loadtest-sampler")
            await _run_phases(run, report, stall_s)
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            run.take_sample()
            report.total_seconds = time.monotonic() - started
            latencies = await _finish(run, report, since)
            logger.info("loadtest: verified and compared after %.1f s", time.monotonic() - started)
        finally:
            if sampler is not None:
                sampler.cancel()
            await service.stop()
            await rail.stop()
            await writer.dispose()
            logger.info("loadtest: services stopped after %.1f s", time.monotonic() - started)
    _measure(report, run.samples, latencies)
    await asyncio.to_thread(_write_outputs, report, latencies, out_dir)
    if out is not None:
        out.write(report.summary())
    return report


async def _run_phases(run: _Run, report: LoadtestReport, stall_s: float) -> None:
    """The main phase, then (once it has settled) the cash-outs."""
    expected = run.expected
    report.publish_seconds = await run.publish(0, expected.cashout_phase_from)
    settled = await _wait(run.main_phase_settled, run.progress, stall_s)
    report.main_seconds = time.monotonic() - run.started
    logger.info("loadtest: main phase settled: %s, %.1f s", settled, report.main_seconds)
    if not settled:
        report.mismatches.append(f"the main phase did not settle: nothing moved for {stall_s:g} s")
        return
    cashouts_started = time.monotonic()
    await run.publish(expected.cashout_phase_from, None)
    if not await _wait(run.all_settled, run.progress_with_cashouts, stall_s):
        report.mismatches.append(
            f"the cash-out phase did not settle: nothing moved for {stall_s:g} s"
        )
    report.cashout_seconds = time.monotonic() - cashouts_started


# Command line --------------------------------------------------------------------------------


def add_loadtest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        type=Path,
        nargs="?",
        default=None,
        metavar="FILE",
        help="a stream from giftledger generate (with FILE.expected.json); default: generate one",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        metavar="N",
        help="generate a stream of N records (default 100000 when no FILE is given)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write the stream, summary.txt, loadtest.json and the charts "
        "(default: <data dir>/loadtest/<UTC time>)",
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=STALL_S_DEFAULT,
        metavar="S",
        help=f"give up waiting when nothing moves for S seconds (default {STALL_S_DEFAULT:g})",
    )
    add_pacing_arguments(parser, default="max")
    add_shape_arguments(parser)
    parser.epilog = (
        "Exit 0 only when the ledger matches the stream's expected end state and verify holds. "
        "Uses DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS, or starts the embedded ones."
    )


EVENTS_DEFAULT = 100_000


def loadtest_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`giftledger loadtest [--events N] [FILE] [--rate N | --speed X | --max] [--out DIR]`."""
    settings = get_settings()
    if args.file is not None and args.events is not None:
        sys.stderr.write("giftledger: error: give --events or FILE, not both\n")
        return 2
    if args.events is not None and args.events < 1:
        sys.stderr.write("giftledger: error: --events must be positive\n")
        return 2
    if args.stall_s <= 0:
        sys.stderr.write("giftledger: error: --stall-s must be positive\n")
        return 2
    events = args.events if args.file is None and args.events is not None else None
    if args.file is None and events is None:
        events = EVENTS_DEFAULT
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out or settings.data_dir / "loadtest" / stamp
    mode, speed, rate = pacing_from_arguments(args)
    try:
        shape = shape_from_arguments(args)
        report = asyncio.run(
            loadtest(
                settings,
                events=events,
                file=args.file,
                out_dir=out_dir,
                seed=args.seed,
                mode=mode,
                speed=speed,
                rate_per_s=rate,
                shape=shape,
                stall_s=args.stall_s,
                out=out,
            )
        )
    except (LoadtestError, StreamFormatError, ValueError) as error:
        sys.stderr.write(f"giftledger: error: {error}\n")
        return 2
    return 0 if report.matched else 1
