"""`giftledger demo`: the whole pipeline on the embedded defaults, with a summary at the end.

Starts (or connects to) PostgreSQL and the broker, migrates, starts the consumers, publishes the
sample stream, waits until every record is accounted for, prints a finance summary, and then
keeps the consumers running until Ctrl-C (or exits at once with --no-wait).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import TextIO

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.migrate import upgrade_to_head
from ledger.queries import trial_balance
from ledger.verify import verify
from schemas.assets import format_amount
from services.consumer import ConsumerService
from services.database_runtime import open_database
from services.kafka_runtime import open_kafka
from services.runner import start_consumers, stop_on_signals
from services.sample_stream import SampleRecord, sample_stream
from services.settings import Settings

ASSIGNMENT_WAIT_S = 60.0
SETTLE_WAIT_S = 120.0
POLL_INTERVAL_S = 0.2
PROGRESS_BAR_WIDTH = 30
TOP_CREATOR_COUNT = 5
DEMO_SESSION_TIMEOUT_MS = 6_000


def _progress(out: TextIO, label: str, done: int, total: int) -> None:
    filled = PROGRESS_BAR_WIDTH * done // max(total, 1)
    bar = "#" * filled + "." * (PROGRESS_BAR_WIDTH - filled)
    out.write(f"\r{label:<10} [{bar}] {done}/{total}")
    if done >= total:
        out.write("\n")
    out.flush()


async def _wait_for(timeout_s: float, check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(POLL_INTERVAL_S)
    return False


async def _publish(
    producer: AIOKafkaProducer, prefix: str, records: list[SampleRecord], out: TextIO
) -> None:
    for index, record in enumerate(records, start=1):
        await producer.send(prefix + record.topic, value=record.value, key=record.key.encode())
        if index % 250 == 0 or index == len(records):
            await producer.flush()
            _progress(out, "publish", index, len(records))


async def _wait_until_settled(service: ConsumerService, total: int, out: TextIO) -> bool:
    counts = service.ingestor.counts
    deadline = time.monotonic() + SETTLE_WAIT_S
    while time.monotonic() < deadline:
        _progress(out, "ledger", min(counts.consumed, total), total)
        if counts.consumed >= total and counts.still_parked == 0:
            return True
        await asyncio.sleep(POLL_INTERVAL_S)
    out.write("\n")
    return False


async def print_summary(engine: AsyncEngine, service: ConsumerService, out: TextIO) -> bool:
    counts = service.ingestor.counts
    out.write("\nRecords\n")
    out.write(
        f"  consumed {counts.consumed}: applied {counts.applied + counts.unparked_applied}, "
        f"duplicates {counts.duplicates}, dead-lettered "
        f"{counts.dead_lettered + counts.unparked_dead_lettered}, still parked "
        f"{counts.still_parked}\n"
    )
    for error, count in sorted(counts.dead_letter_errors.items()):
        out.write(f"  dead letters: {count} x {error}\n")
    async with engine.connect() as conn:
        top = (
            await conn.execute(
                text(
                    "SELECT creator_id, credits_posted - debits_posted AS balance FROM accounts"
                    " WHERE kind = 'creator_diamonds_available'"
                    " ORDER BY balance DESC, creator_id LIMIT :limit"
                ),
                {"limit": TOP_CREATOR_COUNT},
            )
        ).all()
        surfaces = (
            await conn.execute(
                text(
                    "SELECT metadata->>'surface' AS surface, count(*) AS gifts,"
                    " sum(amount)::bigint AS milli_diamonds FROM transfers WHERE code = 1"
                    " GROUP BY 1 ORDER BY 1"
                )
            )
        ).all()
        lines = await trial_balance(conn)
        problems = await verify(conn)
    out.write("\nTop creators by Diamonds available\n")
    for row in top:
        out.write(f"  {row.creator_id:<14} {format_amount(row.balance, 'DIAMOND'):>20}\n")
    out.write("\nDiamonds issued by surface\n")
    for row in surfaces:
        amount = format_amount(row.milli_diamonds, "DIAMOND")
        out.write(f"  {row.surface:<6} {row.gifts:>6} gifts {amount:>20}\n")
    out.write("\nTrial balance (posted, credits minus debits)\n")
    for line in lines:
        if line.account_name.startswith("platform:"):
            out.write(f"  {line.account_name:<40} {format_amount(line.balance, line.asset):>22}\n")
    for asset in sorted({line.asset for line in lines}):
        total = sum(line.balance for line in lines if line.asset == asset)
        out.write(f"  {'total ' + asset:<40} {format_amount(total, asset):>22}\n")
    out.write("\nverify: " + ("every invariant holds\n" if not problems else "BROKEN\n"))
    for problem in problems:
        out.write(f"  {problem.check}: {problem.detail}\n")
    return not problems and counts.balanced()


async def run_demo(settings: Settings, *, wait: bool, out: TextIO = sys.stdout) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    records = sample_stream()
    if "kafka_session_timeout_ms" not in settings.model_fields_set:
        # New consumer groups form in about half a session timeout on the embedded broker.
        settings = settings.model_copy(update={"kafka_session_timeout_ms": DEMO_SESSION_TIMEOUT_MS})
    async with open_database(settings) as engine, open_kafka(settings) as bootstrap_servers:
        await upgrade_to_head(engine)
        out.write(f"broker {bootstrap_servers}; database migrated\n")
        service = await start_consumers(settings, engine, bootstrap_servers)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=10)
        await producer.start()
        try:
            expected = len(service.topics) * settings.kafka_partition_count
            out.write("waiting for the consumer groups to form...\n")
            await _wait_for(
                ASSIGNMENT_WAIT_S, lambda: service.assigned_partition_count() >= expected
            )
            await _publish(producer, settings.kafka_topic_prefix, records, out)
            settled = await _wait_until_settled(service, len(records), out)
            sound = await print_summary(engine, service, out)
            if not settled:
                out.write("not every record was accounted for in time\n")
            if wait and settled and sound:
                out.write("\nconsumers keep running; Ctrl-C stops them\n")
                await stop.wait()
            return 0 if settled and sound else 1
        finally:
            await producer.stop()
            await service.stop()
