"""What the benchmarks set up and check the same way.

- The server: `DATABASE_URL`'s, else 127.0.0.1:5432 when it answers, else the embedded
  PostgreSQL (`admin_url`); a fresh database `giftledger_bench_<random>` on it, migrated to head
  and dropped at the end (`fresh_database`, which the tests use too, with their own prefix); its
  version; its main process when it runs on this machine, whose CPU the benchmarks read
  (`postmaster_pid`); `ledger.verify.verify` at the end (`verify_ledger`).
- The bench chart: a funding account and the accounts it credits (`create_chart`).
- The machine: the CPU time of a fixed Python loop, what one core gives Python now, the
  calibration every benchmark prints (`python_loop_s`, `machine_line`); the wall time of a
  `SELECT 1` round trip, what a statement costs before its own work, which the cash-out bench
  prints beside it (`statement_round_trip_us`).
- The arguments: a number between two bounds, else the usage and an error (`check_between`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.process_cpu import parent_pid_of
from ledger.accounts import ensure_accounts_in
from ledger.chart import AccountKind, AccountSpec
from ledger.database import create_engine, to_async_url
from ledger.migrate import upgrade_to_head
from ledger.verify import verify
from services.runtime.embedded_postgres import EmbeddedPostgres

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SERVER_PROBE_TIMEOUT_S = 3
VERIFY_STATEMENT_TIMEOUT_MS = 600_000
ASSET = "DIAMOND"
FUNDING_ACCOUNT = AccountSpec("bench:funding", ASSET, AccountKind.SYNTHETIC)
CALIBRATION_ADDITIONS = 5_000_000
# The calibration's name in the benchmarks' output and JSON: `python_loop_5m_additions_s`.
CALIBRATION_NAME = f"python_loop_{CALIBRATION_ADDITIONS // 1_000_000}m_additions_s"


# The server and the fresh database.


async def _server_answers(url: str) -> bool:
    probe = create_async_engine(url, connect_args={"timeout": SERVER_PROBE_TIMEOUT_S})
    try:
        async with probe.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OSError, TimeoutError, SQLAlchemyError):
        return False
    finally:
        await probe.dispose()
    return True


@contextlib.asynccontextmanager
async def admin_url() -> AsyncIterator[tuple[str, str]]:
    """(url of a maintenance database, where the server comes from)."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield to_async_url(configured), "DATABASE_URL"
    elif await _server_answers(DEFAULT_ADMIN_URL):
        yield DEFAULT_ADMIN_URL, "127.0.0.1:5432"
    else:
        async with EmbeddedPostgres() as server:
            yield server.url("postgres"), "embedded"


@contextlib.asynccontextmanager
async def fresh_database(
    maintenance_url: str, prefix: str = "giftledger_bench"
) -> AsyncIterator[str]:
    """The URL of a new database `<prefix>_<random>` on the server of `maintenance_url`, migrated
    to head; dropped at the end, whatever happens. The tests' own databases come from here too
    (`tests/fresh_database.py`)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(maintenance_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(maintenance_url).set(database=name).render_as_string(hide_password=False)
        try:
            engine = create_engine(url, pool_size=2)
            try:
                await upgrade_to_head(engine)
            finally:
                await engine.dispose()
            yield url
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def server_version(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        return str((await conn.execute(text("SHOW server_version"))).scalar_one())


async def verify_ledger(url: str) -> float:
    """Run ledger.verify.verify, which must find nothing; returns the seconds it took."""
    engine = create_engine(url, pool_size=1, statement_timeout_ms=VERIFY_STATEMENT_TIMEOUT_MS)
    started = time.perf_counter()
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot
            problems = await verify(conn)
    finally:
        await engine.dispose()
    assert not problems, f"verify found problems: {problems[:10]}"
    return time.perf_counter() - started


# The bench chart.


@dataclass(frozen=True, slots=True)
class Chart:
    """The benchmark's accounts: the funding account and the ones it credits."""

    funding_id: int
    account_ids: list[int]


async def create_chart(
    engine: AsyncEngine, specs: Sequence[AccountSpec], analyze_table: str | None
) -> Chart:
    """`FUNDING_ACCOUNT` and `specs`, then ANALYZE of `analyze_table` (None: every table).

    ANALYZE so that no plan is made while the planner believes the accounts table empty.
    """
    async with engine.begin() as conn:
        ids = await ensure_accounts_in(conn, [FUNDING_ACCOUNT, *specs])
    analyze = "ANALYZE" if analyze_table is None else f"ANALYZE {analyze_table}"
    async with engine.begin() as conn:
        await conn.execute(text(analyze))
    return Chart(ids[FUNDING_ACCOUNT.name], [ids[spec.name] for spec in specs])


# The machine.


def fixed_loop_s(additions: int, clock: Callable[[], float]) -> float:
    """The seconds by `clock` of a fixed Python loop of `additions` additions."""
    started = clock()
    total = 0
    for number in range(additions):
        total += number
    assert total > 0
    return clock() - started


def python_loop_s() -> float:
    """CPU seconds of a fixed Python loop (5 million additions): the machine's calibration, what
    one core gives Python now, to read one run's figures beside another's. CPU time rather than
    wall time, so that other work on the machine weighs on it less."""
    return fixed_loop_s(CALIBRATION_ADDITIONS, time.process_time)


ROUND_TRIP_NAME = "select_1_round_trip_us"
ROUND_TRIPS_TIMED = 1_000


async def statement_round_trip_us(engine: AsyncEngine, count: int = ROUND_TRIPS_TIMED) -> float:
    """The median wall microseconds of `SELECT 1` through `engine` on one connection, `count`
    times: what every statement costs before its own work (SQLAlchemy, the driver, the socket,
    both processes waking up). A path of many small statements pays it per statement, a batched
    path per batch, so two machines with the same `python_loop_s` can give them different
    ratios."""
    select_1 = text("SELECT 1")
    timings_s: list[float] = []
    async with engine.connect() as conn:
        await conn.execute(select_1)  # prepared and cached before the clock
        for _ in range(count):
            started = time.perf_counter()
            await conn.execute(select_1)
            timings_s.append(time.perf_counter() - started)
    return statistics.median(timings_s) * 1e6


def load_average() -> str:
    """The machine's load average over 1, 5 and 15 minutes, as `uptime` shows it."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def machine_line() -> str:
    return (
        f"machine: {os.cpu_count()} CPUs, load average {load_average()}; "
        f"{CALIBRATION_NAME} {python_loop_s():.3f}"
    )


# The arguments.


def check_between(
    parser: argparse.ArgumentParser, flag: str, value: int, low: int, high: int
) -> None:
    """The usage and `<flag> must be between <low> and <high>` (exit 2) unless low <= value <=
    high."""
    if not low <= value <= high:
        parser.error(f"{flag} must be between {low:,} and {high:,}")


async def postmaster_pid(engine: AsyncEngine) -> int | None:
    """The PostgreSQL server's main process when it runs on this machine: the parent of this
    connection's backend, both named `postgres`; else None."""
    async with engine.connect() as conn:
        backend = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
    parent = parent_pid_of(backend)
    if parent is None or not all(is_postgres(pid) for pid in (backend, parent)):
        return None
    return parent


def is_postgres(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    return False
