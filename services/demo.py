"""`giftledger demo`: the whole pipeline on the embedded defaults, with a summary at the end.

Starts (or connects to) PostgreSQL and the broker, migrates, starts the consumers and the
simulated bank, publishes the sample stream, waits until every record is accounted for, then
sends the sample cash-outs and waits until each is decided and answered by the bank, prints a
finance summary, and keeps running until Ctrl-C (or exits at once with --no-wait).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import socket
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
from services.api import create_app, serve_api
from services.consumer import ConsumerService
from services.database_runtime import engine_as_role, open_database
from services.kafka_runtime import open_kafka
from services.payout_rail import PayoutRailService
from services.runner import start_consumers, start_payout_rail, stop_on_signals
from services.sample_stream import SampleRecord, sample_cashouts, sample_stream
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


async def _wait_for_cashouts(
    engine: AsyncEngine,
    service: ConsumerService,
    rail: PayoutRailService,
    consumed_before: int,
    cashout_ids: list[str],
    out: TextIO,
) -> bool:
    """Until every request is decided, every payout answered and every answer applied. Only
    these cash-outs count: the database may hold others', open for reasons of their own."""
    deadline = time.monotonic() + SETTLE_WAIT_S
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            open_count = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM cashouts"
                        " WHERE cashout_id = ANY(CAST(:ids AS text[]))"
                        " AND status IN ('requested', 'held', 'submitted')"
                    ),
                    {"ids": cashout_ids},
                )
            ).scalar_one()
        consumed = service.ingestor.counts.consumed - consumed_before
        expected = len(cashout_ids) + rail.reports_sent
        _progress(out, "cash-outs", min(consumed, expected), expected)
        if open_count == 0 and rail.in_flight_count == 0 and consumed >= expected:
            return True
        await asyncio.sleep(POLL_INTERVAL_S)
    out.write("\n")
    return False


async def print_cashouts(engine: AsyncEngine, out: TextIO) -> None:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT status, coalesce(rejected_rule, failure_code, '') AS why,"
                    " count(*) AS n, sum(amount)::bigint AS requested FROM cashouts"
                    " GROUP BY 1, 2 ORDER BY 1, 2"
                )
            )
        ).all()
    out.write("\nCash-outs by status (count, Diamonds requested)\n")
    for row in rows:
        why = f" ({row.why})" if row.why else ""
        requested = format_amount(row.requested, "DIAMOND")
        out.write(f"  {row.status + why:<32} {row.n:>4}   {requested:>22}\n")


async def _start_api(
    engine: AsyncEngine, settings: Settings, stop: asyncio.Event, out: TextIO
) -> asyncio.Task[None] | None:
    """Serve the finance API until `stop`; a busy port is reported, not fatal, for a demo."""
    try:
        probe = socket.create_server((settings.api_host, settings.api_port))
    except OSError as error:
        out.write(f"finance API not started: {settings.api_host}:{settings.api_port}: {error}\n")
        return None
    probe.close()
    app = create_app(engine, settings)
    return asyncio.create_task(serve_api(app, settings.api_host, settings.api_port, stop))


def _print_api(settings: Settings, demo_token: str | None, out: TextIO) -> None:
    base = f"http://{settings.api_host}:{settings.api_port}"
    out.write(f"\nFinance API on {base} (OpenAPI: {base}/docs)\n")
    if demo_token is not None:
        out.write(f"  token for this run (role finance): {demo_token}\n")
    out.write(
        f"  try: curl -H 'Authorization: Bearer <token>' {base}/v1/creators/creator-00/balances\n"
    )


async def run_demo(settings: Settings, *, wait: bool, out: TextIO = sys.stdout) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    records = sample_stream()
    demo_defaults: dict[str, object] = {
        # New consumer groups form in about half a session timeout on the embedded broker.
        "kafka_session_timeout_ms": DEMO_SESSION_TIMEOUT_MS,
        # A bank that fails or returns some payouts, so that every path shows.
        "payout_rail_failure_rate": 0.2,
        "payout_rail_return_rate": 0.2,
        "payout_rail_return_delay_ms": 500,
    }
    unset = {
        key: value for key, value in demo_defaults.items() if key not in settings.model_fields_set
    }
    settings = settings.model_copy(update=unset)
    demo_token = None
    if not settings.api_tokens:
        # No token configured: make one for this run only, so the API can be tried at once.
        demo_token = secrets.token_urlsafe(24)
        digest = hashlib.sha256(demo_token.encode()).hexdigest()
        settings = settings.model_copy(update={"api_tokens": {digest: "finance"}})
    async with open_database(settings) as engine, open_kafka(settings) as bootstrap_servers:
        await upgrade_to_head(engine)
        out.write(f"broker {bootstrap_servers}; database migrated\n")
        rail = start_payout_rail(settings, bootstrap_servers)
        await rail.start()
        writer = engine_as_role(engine, settings, settings.database_writer_role)
        service = await start_consumers(settings, writer, bootstrap_servers)
        api = await _start_api(engine, settings, stop, out)
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
            cashouts = sample_cashouts()
            consumed_before = service.ingestor.counts.consumed
            await _publish(producer, settings.kafka_topic_prefix, cashouts, out)
            cashout_ids = [json.loads(record.value)["event_id"] for record in cashouts]
            settled = settled and await _wait_for_cashouts(
                engine, service, rail, consumed_before, cashout_ids, out
            )
            sound = await print_summary(engine, service, out)
            await print_cashouts(engine, out)
            if api is not None:
                _print_api(settings, demo_token, out)
            if not settled:
                out.write("not every record was accounted for in time\n")
            if wait and settled and sound:
                out.write("\nconsumers keep running; Ctrl-C stops them\n")
                await stop.wait()
            return 0 if settled and sound else 1
        finally:
            stop.set()
            if api is not None:
                await api
            await producer.stop()
            await service.stop()
            await rail.stop()
            await writer.dispose()
