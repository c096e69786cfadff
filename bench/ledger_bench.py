"""Ledger posting benchmark: `Ledger` batches against one transaction per transfer, and against
PostgreSQL's own ceiling for the same rows.

The ledger's paths post into one fresh database, migrated to head:

- `batch`: `--writers` asyncio tasks post batches of `--batch-size` through one `Ledger`, each
  batch in a unit of work of its own (`async for tx in ledger.transactions(): async with tx:
  await tx.post(batch, last=True)`, as `Ledger.post` posts: the write links the chain itself)
  on a pooled connection (so each writer holds one connection at a time). Its transfers are
  plain and new, and none can break a balance rule (the funding account has none; half the
  credited accounts guard their debits, which these transfers do not touch), so `post` gives
  each batch to the write of new transfers (`post_new`'s statement) without walking it
  (`ledger/store.py`).
- `walked`: the same on a workload of its own (`--walked-transfers`), each batch posted with
  `lock_accounts_first=True`: its accounts locked in id order and read, then the batch walked
  in Python and written by the general statement, as a batch is when a transfer could break a
  balance rule, holds a pending transfer or a chain (the cash-out desk posts so). Printed as
  `batch/walked`, what skipping the walk gives.
- `baseline`: what a plain implementation does, per transfer: BEGIN; insert the transfer's key;
  update the debit account, then the credit account, each guarded by its balance rule and
  returning the new balance; insert the transfer row; link it into the hash chain (the same
  tamper evidence the batch path gives); COMMIT. Each writer keeps one connection. This is
  giftledger's own Python (SQLAlchemy, one round trip per statement), kept as a third row.

The plain paths (`bench.plain_paths`, asyncpg directly, no hash chain) post into a second fresh
database migrated the same way, so that `ledger.verify` still checks the ledger's:

- `naive`: a straightforward service in SQL, one transaction per transfer (one call of a PL/pgSQL
  function, one round trip), from `--naive-connections` connections (8);
- `ceiling`: the batch path's rows and aggregated account updates, written by one hand-written
  `unnest` statement per batch of `--batch-size`, `--writers` connections, no ledger logic.

Two workloads, from a seeded `random.Random`: `spread` credits accounts uniformly, `hot` credits
one account with 30 % of the transfers. Every transfer debits the same funding account. The
batch path and the ceiling take turns, `--rounds` times, each round a slice of the workload
(the ceiling writes the slice the batch path has just written), and each path's rate is its
transfers over the sum of its rounds' times: a machine whose speed drifts during the run (other
work, a neighbour) slows both, not whichever ran second. Before each timed run, its database is
vacuumed and analyzed (untimed), so that no path meets the dead rows of the one before it,
whatever autovacuum did meanwhile. Beside each path's rate: the CPU a transfer of this process
and of the PostgreSQL server (all its processes, from /proc, when it runs on this machine) over
the path's run, and the cores the two kept busy: on a machine the batch path keeps busy, its
rate against the ceiling's is the ratio of their CPU a transfer.

Run: python -m bench.ledger_bench [--transfers N] [--accounts 10000] [--batch-size 1000]
                                  [--writers 2] [--rounds 4] [--baseline-transfers M]
                                  [--walked-transfers W] [--naive-transfers K]
                                  [--naive-connections 8] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.harness import (
    ASSET,
    CALIBRATION_NAME,
    Chart,
    admin_url,
    check_between,
    create_chart,
    fresh_database,
    postmaster_pid,
    python_loop_s,
    server_version,
    verify_ledger,
)
from bench.plain_paths import (
    asyncpg_dsn,
    check_plain_run,
    install_naive_function,
    plain_totals,
    run_ceiling_path,
    run_naive_path,
)
from bench.process_cpu import tree_cpu_seconds_of
from ledger.chain import append_link
from ledger.chart import AccountKind, AccountSpec
from ledger.database import create_engine
from ledger.ids import time_ordered_id
from ledger.model import (
    TRANSFER_BATCH_SIZE_MAX,
    AccountFlags,
    BatchOutcome,
    PostResult,
    StoredTransfer,
    Transfer,
    TransferCode,
)
from ledger.service import Ledger
from services.runtime.collector import settle_collector

WORKLOAD_SEED = 20_240_601
AMOUNT_MAX = 10_000
HOT_SHARE = 0.3
VARIANTS = ("spread", "hot")
# In the order they run, per variant; ratios are the batch path's rate over each other's.
PATHS = ("batch", "ceiling", "walked", "naive", "baseline")
PATH_NOTES = {
    "batch": "Ledger units of work, batches, hash chain linked per batch (SQLAlchemy)",
    "ceiling": "one unnest INSERT/UPDATE statement per batch, no reads, no walk, no chain",
    "walked": "as batch, but accounts locked and read first and the batch walked in Python",
    "naive": "one SQL function call = one transaction per transfer, no hash chain (asyncpg)",
    "baseline": "giftledger's Python per transfer, 5 round trips + chain link (SQLAlchemy)",
}
NAIVE_WORKLOAD_SEED = WORKLOAD_SEED + 1
WALKED_WORKLOAD_SEED = WORKLOAD_SEED + 2
CONFLICT_RETRY_COUNT_MAX = 5
WRITER_COUNT_MAX = 64
ROUND_COUNT_MAX = 100
ACCOUNT_COUNT_MAX = 1_000_000
TRANSFER_ID_KINDS = ("time-ordered", "random")
# Time-ordered ids advance their millisecond every this many transfers (50,000 a second).
TRANSFERS_PER_MS = 50

_INSERT_KEY = text("INSERT INTO transfer_keys (id, created_at) VALUES (:id, now())")

_DEBIT = text(
    """
    UPDATE accounts SET debits_posted = debits_posted + :amount
    WHERE id = :id
      AND (flags & 1 = 0 OR debits_posted + debits_pending + :amount <= credits_posted)
    RETURNING asset, credits_posted - debits_posted AS balance
    """
)

_CREDIT = text(
    """
    UPDATE accounts SET credits_posted = credits_posted + :amount
    WHERE id = :id
      AND (flags & 2 = 0 OR credits_posted + credits_pending + :amount <= debits_posted)
    RETURNING asset, credits_posted - debits_posted AS balance
    """
)

_INSERT_TRANSFER = text(
    """
    INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, asset, code, flags,
                           debit_balance_after, credit_balance_after, created_at)
    VALUES (:id, :debit_account_id, :credit_account_id, :amount, :asset, :code, :flags,
            :debit_balance_after, :credit_balance_after, now())
    RETURNING created_at
    """
)


@dataclass(frozen=True, slots=True)
class Settings:
    transfers: int
    accounts: int
    batch_size: int
    writers: int
    rounds: int
    baseline_transfers: int
    walked_transfers: int
    naive_transfers: int
    naive_connections: int
    transfer_ids: str
    json_path: Path | None


@dataclass(frozen=True, slots=True)
class Measurement:
    variant: str
    path: str
    transfers: int
    seconds: float
    process_cpu_s: float = 0.0  # this process's CPU over the path's run
    server_cpu_s: float | None = None  # the PostgreSQL server's, when it runs on this machine

    @property
    def transfers_per_s(self) -> float:
        return self.transfers / self.seconds

    def cpu_per_transfer_us(self) -> str:
        """This process's and the server's CPU a transfer, and the cores they kept busy."""
        process_us = self.process_cpu_s / self.transfers * 1e6
        if self.server_cpu_s is None:
            return f"{process_us:>8.1f} {'n/a':>8} {'n/a':>6}"
        server_us = self.server_cpu_s / self.transfers * 1e6
        cores = (self.process_cpu_s + self.server_cpu_s) / self.seconds
        return f"{process_us:>8.1f} {server_us:>8.1f} {cores:>6.2f}"


def cpu_seconds(server_pid: int | None) -> tuple[float, float | None]:
    """This process's CPU time so far, and the PostgreSQL server's (`server_pid`'s tree)."""
    server_s = tree_cpu_seconds_of(server_pid)
    return time.process_time(), server_s


def spent_since(
    before: tuple[float, float | None], server_pid: int | None
) -> tuple[float, float | None]:
    process_s, server_s = cpu_seconds(server_pid)
    if server_s is None or before[1] is None:
        return process_s - before[0], None
    return process_s - before[0], server_s - before[1]


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_bench", description=__doc__)
    parser.add_argument("--transfers", type=int, default=200_000, help="per variant, batch path")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="turns the batch path and the ceiling take, each on a slice of the workload",
    )
    parser.add_argument(
        "--baseline-transfers", type=int, default=5_000, help="per variant, baseline path"
    )
    parser.add_argument(
        "--walked-transfers", type=int, default=50_000, help="per variant, walked path"
    )
    parser.add_argument(
        "--naive-transfers", type=int, default=20_000, help="per variant, naive path"
    )
    parser.add_argument(
        "--naive-connections",
        type=int,
        default=8,
        help="concurrent connections of the naive path (one transaction per transfer)",
    )
    parser.add_argument(
        "--transfer-ids",
        choices=TRANSFER_ID_KINDS,
        default="random",
        help="random (the default, the harder case: production's name-based and version 4 ids"
        " of legs other than gifts) or time-ordered (UUID version 7 layout, as gifts' ids are)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    arguments = parser.parse_args(argv)
    counts = (
        arguments.transfers,
        arguments.baseline_transfers,
        arguments.walked_transfers,
        arguments.naive_transfers,
    )
    if min(counts) < 1:
        parser.error(
            "--transfers, --baseline-transfers, --walked-transfers and --naive-transfers must be"
            " positive"
        )
    check_between(parser, "--naive-connections", arguments.naive_connections, 1, WRITER_COUNT_MAX)
    check_between(parser, "--accounts", arguments.accounts, 2, ACCOUNT_COUNT_MAX)
    check_between(parser, "--batch-size", arguments.batch_size, 1, TRANSFER_BATCH_SIZE_MAX)
    check_between(parser, "--writers", arguments.writers, 1, WRITER_COUNT_MAX)
    check_between(parser, "--rounds", arguments.rounds, 1, ROUND_COUNT_MAX)
    if arguments.transfers < arguments.rounds:
        parser.error("--transfers must be at least --rounds")
    return Settings(
        transfers=arguments.transfers,
        accounts=arguments.accounts,
        batch_size=arguments.batch_size,
        writers=arguments.writers,
        rounds=arguments.rounds,
        baseline_transfers=arguments.baseline_transfers,
        walked_transfers=arguments.walked_transfers,
        naive_transfers=arguments.naive_transfers,
        naive_connections=arguments.naive_connections,
        transfer_ids=arguments.transfer_ids,
        json_path=arguments.json,
    )


# The chart.


def bench_account(index: int) -> AccountSpec:
    """Even accounts have no balance rule; odd ones must not be debited beyond their credits."""
    flags = AccountFlags.NONE if index % 2 == 0 else AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    return AccountSpec(f"bench:{index}", ASSET, AccountKind.SYNTHETIC, flags=flags)


async def create_bench_chart(engine: AsyncEngine, account_count: int) -> Chart:
    """The funding account and `account_count` accounts, then ANALYZE of every table."""
    specs = [bench_account(index) for index in range(account_count)]
    return await create_chart(engine, specs, analyze_table=None)


# The workload.


def make_workload(
    rng: random.Random, variant: str, count: int, chart: Chart, transfer_ids: str
) -> list[Transfer]:
    """Plain transfers from the funding account; `hot` credits one account 30 % of the time.

    Time-ordered ids start at the current millisecond; random ids come from `rng`.
    """
    hot_account_id = chart.account_ids[0]
    start_ms = time.time_ns() // 1_000_000
    transfers: list[Transfer] = []
    for index in range(count):
        if transfer_ids == "random":
            transfer_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        else:
            transfer_id = time_ordered_id(start_ms + index // TRANSFERS_PER_MS, rng.getrandbits(74))
        if variant == "hot" and rng.random() < HOT_SHARE:
            credit_account_id = hot_account_id
        else:
            credit_account_id = rng.choice(chart.account_ids)
        transfers.append(
            Transfer(
                id=transfer_id,
                debit_account_id=chart.funding_id,
                credit_account_id=credit_account_id,
                amount=rng.randint(1, AMOUNT_MAX),
                code=TransferCode.SYNTHETIC,
            )
        )
    return transfers


# The batch path.


async def post_one_batch(
    ledger: Ledger, batch: Sequence[Transfer], walked: bool = False
) -> BatchOutcome:
    async for tx in ledger.transactions(retry_count_max=CONFLICT_RETRY_COUNT_MAX):
        async with tx:
            outcome = await tx.post(batch, lock_accounts_first=walked, last=True)
    return outcome


async def batch_writer(
    ledger: Ledger, batches: Sequence[Sequence[Transfer]], walked: bool = False
) -> list[PostResult]:
    results: list[PostResult] = []
    for batch in batches:
        results.extend((await post_one_batch(ledger, batch, walked)).results)
    return results


async def run_batch_path(
    engine: AsyncEngine, transfers: Sequence[Transfer], settings: Settings, walked: bool = False
) -> tuple[list[PostResult], float]:
    """The batch path, or with `walked` the walked one (the module's docstring)."""
    batches = [
        transfers[start : start + settings.batch_size]
        for start in range(0, len(transfers), settings.batch_size)
    ]
    ledger = Ledger(engine)  # one, shared by the writers, as a service shares its own
    started = time.perf_counter()
    per_writer = await asyncio.gather(
        *(
            batch_writer(ledger, batches[writer :: settings.writers], walked)
            for writer in range(settings.writers)
        )
    )
    seconds = time.perf_counter() - started
    return [result for results in per_writer for result in results], seconds


# The baseline: one transaction per transfer.


async def post_one_transfer(conn: AsyncConnection, transfer: Transfer) -> PostResult:
    """One transfer in its own transaction, as a plain implementation posts it.

    Every transfer debits the funding account first, so two writers lock accounts in the same
    order and cannot deadlock.
    """
    async with conn.begin() as transaction:
        await conn.execute(_INSERT_KEY, {"id": transfer.id})
        debit = (
            await conn.execute(_DEBIT, {"id": transfer.debit_account_id, "amount": transfer.amount})
        ).first()
        if debit is None:
            await transaction.rollback()
            return PostResult.EXCEEDS_CREDITS
        credit = (
            await conn.execute(
                _CREDIT, {"id": transfer.credit_account_id, "amount": transfer.amount}
            )
        ).first()
        if credit is None:
            await transaction.rollback()
            return PostResult.EXCEEDS_DEBITS
        if credit.asset != debit.asset:
            await transaction.rollback()
            return PostResult.ASSET_MISMATCH
        stored = {
            "id": transfer.id,
            "debit_account_id": transfer.debit_account_id,
            "credit_account_id": transfer.credit_account_id,
            "amount": transfer.amount,
            "asset": debit.asset,
            "code": int(transfer.code),
            "flags": int(transfer.flags),
            "debit_balance_after": debit.balance,
            "credit_balance_after": credit.balance,
        }
        created_at = (await conn.execute(_INSERT_TRANSFER, stored)).scalar_one()
        # The same tamper evidence as the batch path: each transaction links into the chain.
        fields = StoredTransfer(
            **stored,
            seq=0,
            pending_id=None,
            timeout_s=None,
            expires_at=None,
            rate_card_version=None,
            event_id=None,
            metadata=None,
            created_at=created_at,
        )
        await append_link(conn, [fields])
    return PostResult.OK


async def baseline_writer(engine: AsyncEngine, transfers: Sequence[Transfer]) -> list[PostResult]:
    async with engine.connect() as conn:
        return [await post_one_transfer(conn, transfer) for transfer in transfers]


async def run_baseline_path(
    engine: AsyncEngine, transfers: Sequence[Transfer], settings: Settings
) -> tuple[list[PostResult], float]:
    started = time.perf_counter()
    per_writer = await asyncio.gather(
        *(
            baseline_writer(engine, transfers[writer :: settings.writers])
            for writer in range(settings.writers)
        )
    )
    seconds = time.perf_counter() - started
    return [result for results in per_writer for result in results], seconds


# Checks.


async def credits_posted_sum(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        total = (
            await conn.execute(text("SELECT CAST(sum(credits_posted) AS bigint) FROM accounts"))
        ).scalar_one()
    assert isinstance(total, int)
    return total


def check_run(
    label: str, transfers: Sequence[Transfer], results: Sequence[PostResult], grown: int
) -> None:
    """Every transfer OK, and the credits posted grew by exactly what was posted."""
    assert len(results) == len(transfers), f"{label}: {len(results)} results"
    refused = Counter(result for result in results if result is not PostResult.OK)
    assert not refused, f"{label}: not OK: {dict(refused)}"
    expected = sum(transfer.amount for transfer in transfers)
    assert grown == expected, f"{label}: credits posted grew by {grown}, expected {expected}"


async def vacuum(dsn: str) -> None:
    """`VACUUM ANALYZE` of the database behind `dsn`, untimed: each timed run starts from tables
    without dead rows and with fresh statistics, whatever autovacuum did before it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def measure(
    engine: AsyncEngine,
    variant: str,
    path: str,
    transfers: Sequence[Transfer],
    settings: Settings,
    server_pid: int | None = None,
) -> Measurement:
    await vacuum(asyncpg_dsn(engine.url.render_as_string(hide_password=False)))
    before = await credits_posted_sum(engine)
    cpu_before = cpu_seconds(server_pid)
    if path == "baseline":
        results, seconds = await run_baseline_path(engine, transfers, settings)
    else:
        results, seconds = await run_batch_path(engine, transfers, settings, path == "walked")
    process_s, server_s = spent_since(cpu_before, server_pid)
    check_run(f"{variant}/{path}", transfers, results, await credits_posted_sum(engine) - before)
    return Measurement(variant, path, len(transfers), seconds, process_s, server_s)


async def measure_plain(
    dsn: str,
    variant: str,
    path: str,
    transfers: Sequence[Transfer],
    settings: Settings,
    server_pid: int | None = None,
) -> Measurement:
    """The naive or the ceiling path in the plain database; checks its rows and totals."""
    label = f"{variant}/{path}"
    await vacuum(dsn)
    before = await plain_totals(dsn)
    cpu_before = cpu_seconds(server_pid)
    retried = 0
    if path == "naive":
        posted, seconds = await run_naive_path(dsn, transfers, settings.naive_connections)
    else:
        posted, retried, seconds = await run_ceiling_path(
            dsn, transfers, settings.batch_size, settings.writers, ASSET
        )
    process_s, server_s = spent_since(cpu_before, server_pid)
    if retried:
        print(f"{label}: {retried} batches run again after a deadlock")
    assert posted == len(transfers), f"{label}: posted {posted} of {len(transfers)}"
    check_plain_run(label, transfers, before, await plain_totals(dsn))
    return Measurement(variant, path, len(transfers), seconds, process_s, server_s)


Item = TypeVar("Item")


def in_rounds(items: Sequence[Item], rounds: int) -> list[Sequence[Item]]:
    """`items` in `rounds` consecutive slices of about the same size."""
    bounds = [len(items) * index // rounds for index in range(rounds + 1)]
    return [items[start:end] for start, end in itertools.pairwise(bounds)]


def print_round(number: int, batch: Measurement, ceiling: Measurement) -> None:
    print(
        f"{batch.variant} round {number}: batch {batch.transfers_per_s:,.0f} /s, ceiling"
        f" {ceiling.transfers_per_s:,.0f} /s, batch/ceiling"
        f" {batch.transfers_per_s / ceiling.transfers_per_s:.2f}",
        flush=True,
    )


def summed(rounds: Sequence[Measurement]) -> Measurement:
    """One path's rounds as one measurement: their transfers over the sum of their times."""
    first = rounds[0]
    server_cpus = [m.server_cpu_s for m in rounds]
    return Measurement(
        first.variant,
        first.path,
        sum(m.transfers for m in rounds),
        sum(m.seconds for m in rounds),
        sum(m.process_cpu_s for m in rounds),
        None if None in server_cpus else sum(s for s in server_cpus if s is not None),
    )


# Report.


def ratios(measurements: Sequence[Measurement]) -> dict[str, dict[str, float]]:
    """The batch path's throughput over each other path's, per other path and variant."""
    rates = {(m.variant, m.path): m.transfers_per_s for m in measurements}
    return {
        other: {variant: rates[variant, "batch"] / rates[variant, other] for variant in VARIANTS}
        for other in PATHS
        if other != "batch"
    }


def print_report(
    measurements: Sequence[Measurement],
    settings_used: dict[str, Any],
    ratio_by_path: dict[str, dict[str, float]],
) -> None:
    print(
        f"{'variant':<8} {'path':<9} {'transfers':>10} {'seconds':>8} {'transfers/s':>12}"
        f" {'cpu µs a transfer: this process':>31} {'postgresql':>8} {'cores':>6}"
    )
    for m in measurements:
        print(
            f"{m.variant:<8} {m.path:<9} {m.transfers:>10,} {m.seconds:>8.2f}"
            f" {m.transfers_per_s:>12,.0f} {'':>23}{m.cpu_per_transfer_us()}"
        )
    for path in PATHS:
        print(f"  {path}: {PATH_NOTES[path]}")
    print(
        "  (naive links no hash chain: a plain service has none, so the batch path's chain is"
        " counted against giftledger; the ceiling stores running balances of 0)"
    )
    for other in ("naive", "ceiling", "walked", "baseline"):
        for variant, ratio in ratio_by_path[other].items():
            print(f"{variant} batch/{other} ratio: {ratio:.2f}")
    print(
        "batch/baseline: "
        + ", ".join(
            f"{variant} {ratio:.1f}x" for variant, ratio in ratio_by_path["baseline"].items()
        )
    )
    print("settings: " + ", ".join(f"{key} {value}" for key, value in settings_used.items()))


def write_json(
    path: Path,
    measurements: Sequence[Measurement],
    settings_used: dict[str, Any],
    ratio_by_path: dict[str, dict[str, float]],
) -> None:
    figures = {
        "settings": settings_used,
        "measurements": [
            {
                "variant": m.variant,
                "path": m.path,
                "transfers": m.transfers,
                "seconds": round(m.seconds, 3),
                "transfers_per_s": round(m.transfers_per_s),
                "process_cpu_s": round(m.process_cpu_s, 3),
                "server_cpu_s": None if m.server_cpu_s is None else round(m.server_cpu_s, 3),
            }
            for m in measurements
        ],
        **{
            f"batch_over_{other}": {key: round(value, 2) for key, value in by_variant.items()}
            for other, by_variant in ratio_by_path.items()
        },
        "ratios": {
            f"{variant} batch/{other}": round(ratio, 2)
            for other, by_variant in ratio_by_path.items()
            for variant, ratio in by_variant.items()
        },
    }
    path.write_text(json.dumps(figures, indent=2) + "\n")


# Main.


async def plain_chart(url: str, account_count: int) -> Chart:
    """The same chart in the plain database, and the naive path's function."""
    engine = create_engine(url, pool_size=1)
    try:
        chart = await create_bench_chart(engine, account_count)
    finally:
        await engine.dispose()
    await install_naive_function(asyncpg_dsn(url))
    return chart


async def run(settings: Settings) -> None:
    loop_s_at_start = python_loop_s()
    async with (
        admin_url() as (maintenance_url, source),
        fresh_database(maintenance_url) as url,
        fresh_database(maintenance_url) as plain_url,
    ):
        engine = create_engine(url, pool_size=settings.writers + 1, pool_overflow_max=0)
        plain_dsn = asyncpg_dsn(plain_url)
        try:
            chart = await create_bench_chart(engine, settings.accounts)
            server_pid = await postmaster_pid(engine)
            # Created the same way, so with the same ids: the workloads fit both databases.
            assert await plain_chart(plain_url, settings.accounts) == chart
            rng = random.Random(WORKLOAD_SEED)
            # A generator of its own, so the batch and baseline workloads stay what they were.
            naive_rng = random.Random(NAIVE_WORKLOAD_SEED)
            walked_rng = random.Random(WALKED_WORKLOAD_SEED)
            measurements: list[Measurement] = []
            for variant in VARIANTS:
                batch_workload = make_workload(
                    rng, variant, settings.transfers, chart, settings.transfer_ids
                )
                baseline_workload = make_workload(
                    rng, variant, settings.baseline_transfers, chart, settings.transfer_ids
                )
                naive_workload = make_workload(
                    naive_rng, variant, settings.naive_transfers, chart, settings.transfer_ids
                )
                walked_workload = make_workload(
                    walked_rng, variant, settings.walked_transfers, chart, settings.transfer_ids
                )
                # As `giftledger run` settles its collector once it has loaded what it needs.
                # The workloads, held for the whole run as no service holds its transfers, are
                # then out of every collection: without it, collections took about a tenth of
                # the batch path's CPU (bench/README.md, 2026-12-05, afternoon).
                settle_collector()
                batch_rounds: list[Measurement] = []
                ceiling_rounds: list[Measurement] = []
                # The ceiling writes the batch path's very transfers, in the plain database.
                for number, workload in enumerate(in_rounds(batch_workload, settings.rounds), 1):
                    batch_rounds.append(
                        await measure(engine, variant, "batch", workload, settings, server_pid)
                    )
                    ceiling_rounds.append(
                        await measure_plain(
                            plain_dsn, variant, "ceiling", workload, settings, server_pid
                        )
                    )
                    print_round(number, batch_rounds[-1], ceiling_rounds[-1])
                measurements.append(summed(batch_rounds))
                measurements.append(summed(ceiling_rounds))
                measurements.append(
                    await measure(engine, variant, "walked", walked_workload, settings, server_pid)
                )
                measurements.append(
                    await measure_plain(
                        plain_dsn, variant, "naive", naive_workload, settings, server_pid
                    )
                )
                measurements.append(
                    await measure(
                        engine, variant, "baseline", baseline_workload, settings, server_pid
                    )
                )
            version = await server_version(engine)
        finally:
            await engine.dispose()
        verify_s = await verify_ledger(url)
    settings_used = {
        "writers": settings.writers,
        "rounds": settings.rounds,
        "naive_connections": settings.naive_connections,
        "batch_size": settings.batch_size,
        "accounts": settings.accounts,
        "transfer_ids": settings.transfer_ids,
        "postgresql": version,
        "cpus": os.cpu_count(),
        "server": source,
        f"{CALIBRATION_NAME}_at_start": round(loop_s_at_start, 3),
        f"{CALIBRATION_NAME}_at_end": round(python_loop_s(), 3),
    }
    ratio_by_path = ratios(measurements)
    print_report(measurements, settings_used, ratio_by_path)
    print(
        "checks: batch, walked and baseline: every transfer OK, credits posted grew by exactly"
        f" the amounts posted, verify found no problems ({verify_s:.1f} s); naive and ceiling:"
        " one transfer row and one key per transfer, credits and debits posted grew by exactly"
        " the amounts"
    )
    if settings.json_path is not None:
        write_json(settings.json_path, measurements, settings_used, ratio_by_path)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_settings(argv)))


if __name__ == "__main__":
    main()
