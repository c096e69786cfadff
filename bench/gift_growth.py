"""Gift growth benchmark: how the consumer's gift path slows as the applied events grow, by the
kind of event id upstream sends.

`bench.growth_bench` holds the ledger's batch path with production's transfer ids, which
giftledger makes time-ordered. A gift also records its event in `applied_events`, whose primary
key `(topic, event_id)` every gift inserts into, and there the id is upstream's: the contract
lets upstream choose any string. Random ids (version 4 UUIDs, what many services send) land on
a random page of that index, which stops fitting in memory as it grows; time-ordered ids
(version 7 UUIDs, ULIDs) land near its right edge.

One fresh database, migrated to head (`DATABASE_URL`, else 127.0.0.1:5432, else an embedded
server). Gifts (`bench.ingest_bench`'s generator: the same creators, coins and seed, one gift a
millisecond; every creator's account created first) are fed to `Ingestor.process`, the call a
consumer makes for every batch, in batches of `--batch-size`, with no Kafka, until `--total`
gifts are applied. Each `--step` prints:

    after 1,000,000 gifts: 21,000 gifts/s; CPU a gift: consumer 20.1 µs, server 24.3 µs;
      blocks read 0.02 a gift; applied_events' key 75 MiB

then `gift growth ratio: 0.NN` (the last step's rate over the first's) and `gift server cpu
growth ratio: N.NN` (the server's CPU a gift in the last step over the first's). The records are
generated a chunk at a time off the clock. `--warmup` gifts go first and are left out of the steps.

- `--event-ids random`: `str(uuid4)` from a seeded generator;
- `--event-ids time-ordered`: a version 7 UUID of the gift's `occurred_at` (`ledger.ids.
  time_ordered_id`), the rest random.

Run: python -m bench.gift_growth [--total 5000000] [--step 500000]
                                 [--event-ids random|time-ordered] [--batch-size 2000]
                                 [--warmup 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.gift_profile import Records, apply_all, batches_of
from bench.harness import (
    admin_url,
    fresh_database,
    machine_line,
    postmaster_pid,
    server_version,
)
from bench.ingest_bench import CREATOR_COUNT, LIVE_CREATOR_ID
from bench.process_cpu import tree_cpu_seconds_of
from ledger import chart
from ledger.database import create_engine
from ledger.ids import time_ordered_id, unix_ms_of
from services.app.bootstrap import build_ingestor
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.collector import settle_collector
from services.runtime.settings import Settings as ServiceSettings

EVENT_ID_KINDS = ("random", "time-ordered")
CHUNK_GIFTS = 50_000  # generated at a time, off the clock
TOTAL_MAX = 100_000_000
ID_SEED = 7_202_612
ACCOUNTS_AT_ONCE = 5_000

_KEY_SIZE_AND_READS = text(
    """
    SELECT pg_relation_size('applied_events_pkey') AS key_bytes,
           (SELECT blks_read FROM pg_stat_database
            WHERE datname = current_database()) AS blocks_read
    """
)


@dataclass(frozen=True, slots=True)
class Settings:
    total: int
    step: int
    event_ids: str
    batch_size: int
    warmup: int


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.gift_growth", description=__doc__)
    parser.add_argument("--total", type=int, default=5_000_000)
    parser.add_argument("--step", type=int, default=500_000)
    parser.add_argument("--event-ids", choices=EVENT_ID_KINDS, default="random")
    parser.add_argument("--batch-size", type=int, default=ServiceSettings().consumer_batch_size_max)
    parser.add_argument("--warmup", type=int, default=20_000)
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.total <= TOTAL_MAX:
        parser.error(f"--total must be between 1 and {TOTAL_MAX:,}")
    if not 1 <= arguments.step <= arguments.total:
        parser.error("--step must be between 1 and --total")
    if not 1 <= arguments.batch_size <= ServiceSettings().consumer_batch_size_max * 10:
        parser.error("--batch-size must be positive and at most ten times the consumers'")
    if not 0 <= arguments.warmup <= TOTAL_MAX:
        parser.error(f"--warmup must be between 0 and {TOTAL_MAX:,}")
    return Settings(
        arguments.total, arguments.step, arguments.event_ids, arguments.batch_size, arguments.warmup
    )


class GiftRecords(Records):
    """`gift_profile`'s gifts as a consumer receives them (`ingest_bench`'s generator), under
    event ids of the kind asked for."""

    def __init__(self, event_ids: str) -> None:
        if event_ids not in EVENT_ID_KINDS:
            raise ValueError(f"event ids are one of {EVENT_ID_KINDS}, not {event_ids!r}")
        super().__init__()
        self._event_ids = event_ids
        self._id_rng = random.Random(ID_SEED)

    def event_id(self, tag: str, index: int, occurred_at: datetime) -> str:
        if self._event_ids == "random":
            return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))
        return str(time_ordered_id(unix_ms_of(occurred_at), self._id_rng.getrandbits(74)))


@dataclass(frozen=True, slots=True)
class Step:
    gifts_after: int
    gifts: int
    wall_s: float
    consumer_cpu_s: float
    server_cpu_s: float | None  # None: the server is not on this machine
    blocks_read: int
    key_bytes: int

    @property
    def gifts_per_s(self) -> float:
        return self.gifts / self.wall_s

    def per_gift_us(self, seconds: float) -> float:
        return seconds / self.gifts * 1e6


async def apply_records(ingestor: Ingestor, records: Sequence[InputRecord], size: int) -> None:
    """Every record applied, in batches of `size` (`gift_profile.apply_all`: a dead letter or a
    duplicate fails the run)."""
    await apply_all(ingestor, batches_of(records, size))


async def create_creator_accounts(ingestor: Ingestor) -> None:
    """Every creator's Diamonds account, created before the warm-up (as the ledger's own
    call does for a batch's new creators), so that no step pays for the Zipf tail's first
    gifts more than another."""
    creators = [LIVE_CREATOR_ID, *(f"creator-{rank}" for rank in range(1, CREATOR_COUNT + 1))]
    for start in range(0, len(creators), ACCOUNTS_AT_ONCE):
        specs = [
            chart.creator_diamonds_available(c) for c in creators[start : start + ACCOUNTS_AT_ONCE]
        ]
        await ingestor.ledger.account_ids(specs)


async def key_size_and_reads(engine: AsyncEngine) -> tuple[int, int]:
    """Bytes of `applied_events`' primary key, and the blocks the database has read into shared
    buffers so far."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))
        row = (await conn.execute(_KEY_SIZE_AND_READS)).one()
    return int(row.key_bytes), int(row.blocks_read)


async def apply_step(
    ingestor: Ingestor,
    records: GiftRecords,
    gifts: int,
    batch_size: int,
    postmaster: int | None,
) -> tuple[float, float, float | None]:
    """`gifts` more gifts applied, a chunk at a time: wall, consumer CPU and server CPU seconds
    spent applying them (generating is off the clock)."""
    wall_s = consumer_s = 0.0
    server_s: float | None = 0.0
    left = gifts
    while left:
        chunk = records.take(min(CHUNK_GIFTS, left))
        server_before = tree_cpu_seconds_of(postmaster)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await apply_records(ingestor, chunk, batch_size)
        wall_s += time.perf_counter() - wall_before
        consumer_s += time.process_time() - cpu_before
        server_after = tree_cpu_seconds_of(postmaster)
        if server_s is None or server_before is None or server_after is None:
            server_s = None
        else:
            server_s += server_after - server_before
        left -= len(chunk)
    return wall_s, consumer_s, server_s


def step_line(step: Step) -> str:
    server = "n/a" if step.server_cpu_s is None else f"{step.per_gift_us(step.server_cpu_s):.1f} µs"
    return (
        f"after {step.gifts_after:,} gifts: {step.gifts_per_s:,.0f} gifts/s; CPU a gift:"
        f" consumer {step.per_gift_us(step.consumer_cpu_s):.1f} µs, server {server};"
        f" blocks read {step.blocks_read / step.gifts:.2f} a gift;"
        f" applied_events' key {step.key_bytes / 2**20:,.0f} MiB"
    )


def ratio_lines(steps: Sequence[Step]) -> list[str]:
    first, last = steps[0], steps[-1]
    lines = [f"gift growth ratio: {last.gifts_per_s / first.gifts_per_s:.2f}"]
    if first.server_cpu_s and last.server_cpu_s is not None:
        growth = last.per_gift_us(last.server_cpu_s) / first.per_gift_us(first.server_cpu_s)
        lines.append(f"gift server cpu growth ratio: {growth:.2f}")
    return lines


async def run(settings: Settings) -> list[Step]:
    print(machine_line(), flush=True)
    service_settings = ServiceSettings()
    records = GiftRecords(settings.event_ids)
    steps: list[Step] = []
    async with admin_url() as (maintenance_url, source), fresh_database(maintenance_url) as url:
        engine = create_engine(url, pool_size=2, pool_overflow_max=0)
        try:
            async with engine.connect() as conn:
                rate_cards = await load_rate_cards(conn)
                shared_buffers = (await conn.execute(text("SHOW shared_buffers"))).scalar_one()
            ingestor = build_ingestor(service_settings, engine, rate_cards)
            await create_creator_accounts(ingestor)
            await apply_records(ingestor, records.take(settings.warmup), settings.batch_size)
            settle_collector()
            version = await server_version(engine)
            postmaster = await postmaster_pid(engine)
            _, blocks_before = await key_size_and_reads(engine)
            applied = 0
            while applied < settings.total:
                gifts = min(settings.step, settings.total - applied)
                wall_s, consumer_s, server_s = await apply_step(
                    ingestor, records, gifts, settings.batch_size, postmaster
                )
                applied += gifts
                key_bytes, blocks = await key_size_and_reads(engine)
                step = Step(
                    applied, gifts, wall_s, consumer_s, server_s, blocks - blocks_before, key_bytes
                )
                blocks_before = blocks
                steps.append(step)
                print(step_line(step), flush=True)
            async with engine.connect() as conn:
                stored = (
                    await conn.execute(text("SELECT count(*) FROM applied_events"))
                ).scalar_one()
        finally:
            await engine.dispose()
    expected = settings.warmup + settings.total
    assert stored == expected, f"applied_events holds {stored:,} events, expected {expected:,}"
    for line in ratio_lines(steps):
        print(line)
    print(
        f"settings: event ids {settings.event_ids}, total {settings.total:,}, step"
        f" {settings.step:,}, batches of {settings.batch_size:,}, warmup {settings.warmup:,}"
        f" gifts (not in the steps), postgresql {version}, shared_buffers {shared_buffers},"
        f" server {source}"
    )
    print(f"{machine_line()} (at the end)")
    print(f"checks: every gift applied, none dead-lettered; applied_events holds {stored:,} events")
    return steps


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_settings(argv)))


if __name__ == "__main__":
    main()
