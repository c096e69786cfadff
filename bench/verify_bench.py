"""Verify benchmark: `giftledger verify --full` against the incremental `giftledger verify`, on
one ledger of `--transfers` transfers.

1. A fresh database (on `DATABASE_URL`'s server, else 127.0.0.1:5432, else the embedded
   PostgreSQL), migrated to head, with `--accounts` DIAMOND accounts without balance rules and a
   funding account.
2. `--transfers` plain transfers (random version 4 ids, the harder case: production's gift ids
   are time-ordered, its other legs' ids name-based and random in order; 1 to 10,000 each;
   uniform over the accounts; all from the funding account) posted through the ledger's fast
   batch path (`Ledger.post_new`, batches of `--batch-size`, `--writers` units of work at a
   time): each batch is a link of the hash chain.
3. `giftledger verify --full` (`services.commands.books.verify_command`, the command itself:
   every check in one snapshot, then the checkpoint recorded), timed.
4. `--added-percent` more transfers (1 % by default) posted the same way, then `giftledger
   verify` (incremental: what was added since the checkpoint), timed.
5. Both times, per transfer, and `verify full/incremental ratio: NN` on a line of its own.

Run: python -m bench.verify_bench [--transfers 4000000] [--added-percent 1] [--accounts 10000]
                                  [--batch-size 1000] [--writers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness import (
    ASSET,
    Chart,
    admin_url,
    check_between,
    create_chart,
    fresh_database,
    machine_line,
)
from ledger.chart import AccountKind, AccountSpec
from ledger.database import create_engine
from ledger.model import TRANSFER_BATCH_SIZE_MAX, NewTransfers, TransferCode
from ledger.service import Ledger
from services.commands.books import verify_command
from services.commands.common import EXIT_OK

WORKLOAD_SEED = 20_261_204
AMOUNT_MAX = 10_000
ACCOUNT_COUNT_MAX = 1_000_000
TRANSFER_COUNT_MAX = 100_000_000
WRITER_COUNT_MAX = 16
PROGRESS_EVERY_TRANSFERS = 500_000
# A full check of millions of transfers runs single statements for minutes.
VERIFY_STATEMENT_TIMEOUT_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Settings:
    transfers: int
    added_percent: float
    accounts: int
    batch_size: int
    writers: int

    @property
    def added_transfers(self) -> int:
        return max(1, round(self.transfers * self.added_percent / 100))


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.verify_bench", description=__doc__)
    parser.add_argument("--transfers", type=int, default=4_000_000)
    parser.add_argument("--added-percent", type=float, default=1.0)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--writers", type=int, default=2)
    arguments = parser.parse_args(argv)
    check_between(parser, "--transfers", arguments.transfers, 1, TRANSFER_COUNT_MAX)
    if not 0 < arguments.added_percent <= 100:
        parser.error("--added-percent must be above 0 and at most 100")
    check_between(parser, "--accounts", arguments.accounts, 1, ACCOUNT_COUNT_MAX)
    check_between(parser, "--batch-size", arguments.batch_size, 1, TRANSFER_BATCH_SIZE_MAX)
    check_between(parser, "--writers", arguments.writers, 1, WRITER_COUNT_MAX)
    return Settings(
        transfers=arguments.transfers,
        added_percent=arguments.added_percent,
        accounts=arguments.accounts,
        batch_size=arguments.batch_size,
        writers=arguments.writers,
    )


async def create_bench_chart(engine: AsyncEngine, account_count: int) -> Chart:
    """The funding account and `account_count` accounts without balance rules, then ANALYZE of
    the accounts table."""
    specs = [
        AccountSpec(f"bench:{index}", ASSET, AccountKind.SYNTHETIC)
        for index in range(account_count)
    ]
    return await create_chart(engine, specs, analyze_table="accounts")


def make_batch(chart: Chart, seed: int, size: int) -> NewTransfers:
    """One batch of plain transfers from the funding account, the same for the same seed."""
    rng = random.Random(seed)
    batch = NewTransfers()
    for _ in range(size):
        batch.add(
            transfer_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            debit_account_id=chart.funding_id,
            credit_account_id=rng.choice(chart.account_ids),
            amount=rng.randint(1, AMOUNT_MAX),
            code=TransferCode.SYNTHETIC,
            rate_card_version=None,
            event_id=None,
            metadata_text=None,
        )
    return batch


async def post_transfers(
    engine: AsyncEngine, chart: Chart, count: int, first_batch: int, settings: Settings
) -> tuple[float, int]:
    """Post `count` transfers in batches numbered from `first_batch`; (seconds, batches)."""
    batch_count = -(-count // settings.batch_size)
    ledger = Ledger(engine)
    posted = 0

    async def writer(offset: int) -> None:
        nonlocal posted
        for index in range(offset, batch_count, settings.writers):
            size = min(settings.batch_size, count - index * settings.batch_size)
            await ledger.post_new(make_batch(chart, WORKLOAD_SEED + first_batch + index, size))
            before = posted
            posted += size
            if posted // PROGRESS_EVERY_TRANSFERS > before // PROGRESS_EVERY_TRANSFERS:
                print(f"  posted {posted:,} of {count:,}", flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(writer(offset) for offset in range(settings.writers)))
    return time.perf_counter() - started, batch_count


async def timed_verify(engine: AsyncEngine, *, full: bool) -> float:
    """Run `giftledger verify` (`--full` or not) as the command does; it must pass."""
    started = time.perf_counter()
    exit_code = await verify_command(engine, argparse.Namespace(full=full))
    seconds = time.perf_counter() - started
    assert exit_code == EXIT_OK, f"verify {'--full ' if full else ''}found problems"
    return seconds


async def run(settings: Settings) -> None:
    print(machine_line())
    async with admin_url() as (maintenance_url, source), fresh_database(maintenance_url) as url:
        engine = create_engine(
            url,
            pool_size=settings.writers + 1,
            pool_overflow_max=0,
            statement_timeout_ms=VERIFY_STATEMENT_TIMEOUT_MS,
        )
        try:
            chart = await create_bench_chart(engine, settings.accounts)
            post_s, batches = await post_transfers(engine, chart, settings.transfers, 0, settings)
            print(
                f"posted {settings.transfers:,} transfers in {post_s:.1f} s"
                f" ({settings.transfers / post_s:,.0f}/s, {batches:,} links), server: {source}"
            )
            full_s = await timed_verify(engine, full=True)
            added = settings.added_transfers
            added_s, _ = await post_transfers(engine, chart, added, batches, settings)
            print(f"posted {added:,} more transfers in {added_s:.1f} s")
            incremental_s = await timed_verify(engine, full=False)
        finally:
            await engine.dispose()
    print(f"{machine_line()} (at the end)")
    print(
        f"verify --full: {full_s:.2f} s for {settings.transfers:,} transfers"
        f" ({full_s / settings.transfers * 1e6:.1f} µs a transfer)"
    )
    print(
        f"verify (incremental): {incremental_s:.2f} s for the {added:,} transfers added"
        f" ({incremental_s / added * 1e6:.1f} µs a transfer added)"
    )
    print(f"verify full/incremental ratio: {full_s / incremental_s:.1f}")
    print(
        f"settings: {settings.accounts:,} accounts, batches of {settings.batch_size:,},"
        f" {settings.writers} writers, {settings.added_percent:g} % added"
    )


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_settings(argv)))


if __name__ == "__main__":
    main()
