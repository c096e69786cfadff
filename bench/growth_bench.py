"""Growth benchmark: how the ledger's batch path slows as the transfers table grows.

One fresh database, migrated to head (`DATABASE_URL`, else 127.0.0.1:5432, else an embedded
server), and the chart of `bench.ledger_bench` (a funding account and `--accounts` accounts).
Then a stream of gifts' transfers is posted through the batch path `bench.ledger_bench`
measures (`--writers` tasks, batches of `--batch-size`, each batch a unit of work of one
`Ledger`) until `--total` transfers are stored, and each `--step` transfers print their rate:

    after 1,000,000 transfers: 25,000 transfers/s (blocks read 0.40 a transfer; ...)
    ...
    growth ratio: 0.88

The ratio is the last step's rate over the first's. Each step also prints the blocks the
database read into shared buffers per transfer (what grows once the id indexes' pages no longer
stay in memory; the machine's other load does not change it much) and the sizes of
`transfer_keys`' index and of the transfers partitions with their indexes.

The stream is generated in chunks of `CHUNK_BATCHES` batches per writer, outside the clock (a
chunk at a time in memory, so any `--total` fits), then posted by the writers, on the clock.
`--warmup` transfers are posted first and left out of the steps.

Each transfer is a gift's: an event id (`gift-<n>`), an `occurred_at` advancing
`TRANSFERS_PER_MS` events per millisecond, each event up to `--disorder-ms` late (events of
several Kafka partitions arrive interleaved), and its transfer id:

- `--ids time-ordered` (the default): production's, `gift_transfer_id` of
  `services.ingestion.event_transfers`, the event's `occurred_at` milliseconds then 74 bits of
  its name hash: inserts land near the indexes' right edge;
- `--ids random`: the name-based (version 5) id gifts had before (`legacy_gift_transfer_id`),
  random-looking: each insert lands on a random page of the id indexes.

Run: python -m bench.growth_bench [--total 10000000] [--step 1000000]
                                  [--ids time-ordered|random] [--accounts 10000]
                                  [--batch-size 1000] [--writers 2] [--disorder-ms 2000]
                                  [--warmup 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness import (
    Chart,
    admin_url,
    check_between,
    fresh_database,
    machine_line,
    server_version,
)
from bench.ledger_bench import (
    ACCOUNT_COUNT_MAX,
    AMOUNT_MAX,
    TRANSFERS_PER_MS,
    WORKLOAD_SEED,
    WRITER_COUNT_MAX,
    batch_writer,
    create_bench_chart,
    credits_posted_sum,
)
from ledger.database import create_engine
from ledger.model import TRANSFER_BATCH_SIZE_MAX, PostResult, Transfer, TransferCode
from ledger.service import Ledger
from services.ingestion.event_transfers import gift_transfer_id, legacy_gift_transfer_id

ID_KINDS = ("time-ordered", "random")
TOTAL_MAX = 100_000_000
DISORDER_MS_MAX = 3_600_000
WARMUP_DEFAULT = 20_000
WARMUP_MAX = 1_000_000
# Batches per writer generated ahead of the clock: the memory the stream holds at a time.
CHUNK_BATCHES = 50
# The stream's first event; later ones follow at TRANSFERS_PER_MS a millisecond.
STREAM_START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

# The sizes, and the blocks this database has read into shared buffers (from the OS or the
# disk) since it was created: what grows when the indexes' pages no longer stay in memory.
_SIZES_AND_READS = text(
    """
    SELECT pg_indexes_size('transfer_keys') AS keys_bytes,
           (SELECT COALESCE(sum(pg_total_relation_size(inhrelid)), 0)
            FROM pg_inherits WHERE inhparent = 'transfers'::regclass) AS transfers_bytes,
           (SELECT blks_read FROM pg_stat_database
            WHERE datname = current_database()) AS blocks_read
    """
)


@dataclass(frozen=True, slots=True)
class Settings:
    total: int
    step: int
    ids: str
    accounts: int
    batch_size: int
    writers: int
    disorder_ms: int
    warmup: int


@dataclass(frozen=True, slots=True)
class Step:
    transfers_after: int
    transfers: int
    seconds: float
    keys_index_bytes: int
    transfers_bytes: int
    blocks_read: int

    @property
    def transfers_per_s(self) -> float:
        return self.transfers / self.seconds

    @property
    def blocks_read_per_transfer(self) -> float:
        return self.blocks_read / self.transfers


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.growth_bench", description=__doc__)
    parser.add_argument("--total", type=int, default=10_000_000)
    parser.add_argument("--step", type=int, default=1_000_000)
    parser.add_argument("--ids", choices=ID_KINDS, default="time-ordered")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument(
        "--disorder-ms",
        type=int,
        default=2_000,
        help="each event's occurred_at is up to this much earlier than the stream's clock",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=WARMUP_DEFAULT,
        help="transfers posted first, off the record (connections, plans and account facts)",
    )
    arguments = parser.parse_args(argv)
    check_between(parser, "--total", arguments.total, 1, TOTAL_MAX)
    check_between(parser, "--step", arguments.step, 1, arguments.total)
    check_between(parser, "--accounts", arguments.accounts, 2, ACCOUNT_COUNT_MAX)
    check_between(parser, "--batch-size", arguments.batch_size, 1, TRANSFER_BATCH_SIZE_MAX)
    check_between(parser, "--writers", arguments.writers, 1, WRITER_COUNT_MAX)
    check_between(parser, "--disorder-ms", arguments.disorder_ms, 0, DISORDER_MS_MAX)
    check_between(parser, "--warmup", arguments.warmup, 0, WARMUP_MAX)
    return Settings(
        total=arguments.total,
        step=arguments.step,
        ids=arguments.ids,
        accounts=arguments.accounts,
        batch_size=arguments.batch_size,
        writers=arguments.writers,
        disorder_ms=arguments.disorder_ms,
        warmup=arguments.warmup,
    )


# The stream.


def gift_stream(rng: random.Random, chart: Chart, settings: Settings) -> Iterator[Transfer]:
    """The warm-up's and then `settings.total` gifts' transfers, one at a time, from the
    funding account to accounts chosen uniformly, ids as production derives them from each
    gift's event."""
    for index in range(settings.warmup + settings.total):
        event_id = f"gift-{index:012d}"
        # Drawn for both kinds of ids, so that both streams credit the same amounts to the
        # same accounts.
        clock_ms = index // TRANSFERS_PER_MS - rng.randrange(settings.disorder_ms + 1)
        if settings.ids == "random":
            transfer = legacy_gift_transfer_id(event_id)
        else:
            transfer = gift_transfer_id(event_id, STREAM_START + timedelta(milliseconds=clock_ms))
        yield Transfer(
            id=transfer,
            debit_account_id=chart.funding_id,
            credit_account_id=rng.choice(chart.account_ids),
            amount=rng.randint(1, AMOUNT_MAX),
            code=TransferCode.SYNTHETIC,
        )


def take_batches(stream: Iterator[Transfer], count: int, batch_size: int) -> list[list[Transfer]]:
    """Up to `count` batches of `batch_size` from `stream` (fewer, and the last one shorter, at
    its end)."""
    batches: list[list[Transfer]] = []
    for _ in range(count):
        batch = [transfer for _, transfer in zip(range(batch_size), stream, strict=False)]
        if not batch:
            break
        batches.append(batch)
    return batches


# Posting, step by step.


async def post_chunk(
    ledger: Ledger, batches: Sequence[Sequence[Transfer]], writers: int
) -> tuple[Counter[PostResult], float]:
    """The chunk's batches, `writers` at a time (ledger_bench's batch path); the results'
    counts and the seconds it took."""
    started = time.perf_counter()
    per_writer = await asyncio.gather(
        *(batch_writer(ledger, batches[writer::writers]) for writer in range(writers))
    )
    seconds = time.perf_counter() - started
    return Counter(result for results in per_writer for result in results), seconds


async def sizes_and_reads(engine: AsyncEngine) -> tuple[int, int, int]:
    """Bytes of transfer_keys' index, of the transfers partitions with their indexes, and the
    blocks the database has read into shared buffers so far."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))
        row = (await conn.execute(_SIZES_AND_READS)).one()
    return int(row.keys_bytes), int(row.transfers_bytes), int(row.blocks_read)


async def post_transfers(
    ledger: Ledger, stream: Iterator[Transfer], count: int, settings: Settings
) -> tuple[float, int]:
    """Post the next `count` transfers of `stream`, a chunk at a time; the seconds spent
    posting (not generating) and the sum of their amounts."""
    seconds_sum = 0.0
    amount_sum = 0
    posted = 0
    while posted < count:
        batches_left = -(-(count - posted) // settings.batch_size)
        batch_count = min(CHUNK_BATCHES * settings.writers, batches_left)
        batches = take_batches(stream, batch_count, settings.batch_size)
        chunk_transfers = sum(len(batch) for batch in batches)
        assert chunk_transfers > 0, "the stream ended early"
        counts, seconds = await post_chunk(ledger, batches, settings.writers)
        refused = {result: n for result, n in counts.items() if result is not PostResult.OK}
        assert not refused, f"not OK: {refused}"
        assert counts[PostResult.OK] == chunk_transfers
        amount_sum += sum(transfer.amount for batch in batches for transfer in batch)
        seconds_sum += seconds
        posted += chunk_transfers
    return seconds_sum, amount_sum


async def post_stream(
    engine: AsyncEngine, stream: Iterator[Transfer], settings: Settings
) -> tuple[list[Step], int]:
    """The warm-up, then `settings.total` transfers step by step, each step's rate printed as
    it ends. Returns the steps and the sum of all the amounts posted."""
    ledger = Ledger(engine)
    _, amount_sum = await post_transfers(ledger, stream, settings.warmup, settings)
    _, _, blocks_read_before = await sizes_and_reads(engine)
    steps: list[Step] = []
    posted = 0
    while posted < settings.total:
        step_transfers = min(settings.step, settings.total - posted)
        seconds, step_amount_sum = await post_transfers(ledger, stream, step_transfers, settings)
        amount_sum += step_amount_sum
        posted += step_transfers
        keys_bytes, transfers_bytes, blocks_read = await sizes_and_reads(engine)
        step = Step(
            posted,
            step_transfers,
            seconds,
            keys_bytes,
            transfers_bytes,
            blocks_read - blocks_read_before,
        )
        blocks_read_before = blocks_read
        steps.append(step)
        print(
            f"after {posted:,} transfers: {step.transfers_per_s:,.0f} transfers/s"
            f" (blocks read {step.blocks_read_per_transfer:.2f} a transfer; transfer_keys"
            f" index {mib(keys_bytes)}, transfers with indexes {mib(transfers_bytes)})",
            flush=True,
        )
    return steps, amount_sum


# Report.


async def shared_buffers_setting(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        return str((await conn.execute(text("SHOW shared_buffers"))).scalar_one())


def mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def growth_ratio(steps: Sequence[Step]) -> float:
    return steps[-1].transfers_per_s / steps[0].transfers_per_s


async def run(settings: Settings) -> None:
    print(machine_line(), flush=True)
    async with admin_url() as (maintenance_url, source), fresh_database(maintenance_url) as url:
        engine = create_engine(url, pool_size=settings.writers + 1, pool_overflow_max=0)
        try:
            chart = await create_bench_chart(engine, settings.accounts)
            version = await server_version(engine)
            shared_buffers = await shared_buffers_setting(engine)
            before = await credits_posted_sum(engine)
            stream = gift_stream(random.Random(WORKLOAD_SEED), chart, settings)
            steps, amount_sum = await post_stream(engine, stream, settings)
            grown = await credits_posted_sum(engine) - before
        finally:
            await engine.dispose()
    assert grown == amount_sum, f"credits posted grew by {grown}, expected {amount_sum}"
    print(f"growth ratio: {growth_ratio(steps):.2f}")
    print(
        f"settings: ids {settings.ids}, total {settings.total:,}, step {settings.step:,},"
        f" batch_size {settings.batch_size}, writers {settings.writers},"
        f" accounts {settings.accounts}, disorder_ms {settings.disorder_ms},"
        f" warmup {settings.warmup:,} transfers (not in the steps)"
        f", postgresql {version}, shared_buffers {shared_buffers}, server {source}"
    )
    print(f"{machine_line()} (at the end)")
    print(
        "checks: every transfer OK, credits posted grew by exactly the amounts posted",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_settings(argv)))


if __name__ == "__main__":
    main()
