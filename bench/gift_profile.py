"""Python per gift in the consumer's path: CPU time and where it goes.

Feeds recorded `gifts.sent` records (the ones `bench.ingest_bench` publishes: same generator, same
seed) to `Ingestor.process`, the call a consumer makes for every batch, against a fresh database,
with no Kafka. CPU time per gift (`time.process_time`) does not depend on how busy the machine is,
where a rate does.

1. warm-up: `--warmup-gifts` gifts (creates the most frequent creators' accounts, fills the
   caches, prepares the statements), then `settle_collector()`, as `giftledger run` does;
2. `--rounds` rounds of `--gifts` new gifts each, in batches of `--batch-size`: the consumer
   process's CPU per gift, and the PostgreSQL server's (its processes from /proc, when it runs on
   this machine), per round;
3. one more round under `cProfile`: the CPU per gift split into the steps of the gift path
   (parse, pricing, the applied events, the ledger's write, the chain link, ...) and into kinds
   of work (validation, payload hash, parameter encoding, ...). The profiler slows Python down,
   so each share of the profiled total is also shown applied to the unprofiled CPU per gift.

Run: python -m bench.gift_profile [--gifts 20000] [--rounds 3] [--batch-size 2000]
                                  [--warmup-gifts 10000] [--top 25] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import admin_url, fresh_database, postmaster_pid, python_loop_s
from bench.ingest_bench import BACKLOG_START, SEED, GiftMaker
from bench.process_cpu import tree_cpu_seconds_of
from ledger.database import create_engine
from schemas import topics
from services.app.bootstrap import build_ingestor
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.collector import settle_collector
from services.runtime.settings import Settings

PARTITION_COUNT = 8
GIFTS_MAX = 1_000_000
ROUNDS_MAX = 20

# Steps of the gift path: (label, functions whose cumulative time counts, functions whose
# cumulative time is taken off). A function is named by the end of its file name and its name.
# The steps do not overlap; parts of a step are listed under it (`STEP_PARTS`).
Functions = tuple[tuple[str, str], ...]
STEPS: tuple[tuple[str, Functions, Functions], ...] = (
    (
        "parse and validate (Ingestor.process before the handler)",
        (("ingestion/ingestor.py", "process"),),
        (("ingestion/handlers.py", "on_gifts_sent"), ("ingestion/ingestor.py", "_count")),
    ),
    (
        "pricing and the gift's transfer (gift_transfer, in_force_at)",
        (
            ("ingestion/event_transfers.py", "gift_transfer"),
            ("rates/rate_cards.py", "in_force_at"),
        ),
        (),
    ),
    ("account ids (Ledger.account_ids)", (("ledger/service.py", "account_ids"),), ()),
    (
        "applied events: lookup and insert (drop_applied, record_applied or claim_applied)",
        (
            ("ingestion/event_store.py", "drop_applied"),
            ("ingestion/event_store.py", "record_applied"),
            ("ingestion/event_store.py", "claim_applied"),
        ),
        (),
    ),
    ("the batch's transfer columns (gift_batch)", (("ingestion/handlers.py", "gift_batch"),), ()),
    ("ledger write (store_new_batch)", (("ledger/store.py", "store_new_batch"),), ()),
    ("chain link (append_link_entries)", (("ledger/chain.py", "append_link_entries"),), ()),
    (
        "transaction begin and commit",
        (
            ("ledger/unit_of_work.py", "__aenter__"),
            ("ledger/unit_of_work.py", "__aexit__"),
        ),
        (("ledger/chain.py", "append_link_entries"),),
    ),
    ("counts and metrics (Ingestor._count)", (("ingestion/ingestor.py", "_count"),), ()),
)
# Parts of a step, shown indented under it: (step label, part label, functions).
STEP_PARTS: tuple[tuple[str, str, Functions], ...] = (
    (
        "ledger write (store_new_batch)",
        "of which the plan (plan_new_batch)",
        (("ledger/decide.py", "plan_new_batch"),),
    ),
    (
        "ledger write (store_new_batch)",
        "of which the chain lines (line_head, line_tail)",
        (("ledger/chain.py", "line_head"), ("ledger/chain.py", "line_tail")),
    ),
    (
        "ledger write (store_new_batch)",
        "of which the write statement (_execute_write)",
        (("ledger/store.py", "_execute_write"),),
    ),
)
# Kinds of work, wherever they happen: (label, substrings of the profiler's function names whose
# own time counts). Builtins are named `~:0(<built-in method ...>)` or `<method '...' of ...>`.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JSON parse for duplicate keys (jiter.from_json)", ("jiter.from_json",)),
    ("pydantic validation (validate_json)", ("'validate_json' of",)),
    (
        "payload hash (model_dump_json, sha256)",
        ("'to_json' of", "pydantic/main.py:model_dump_json", "openssl_sha256"),
    ),
    (
        "asyncpg: bind, encode parameters, send, decode rows (its Python frames and the C below)",
        ("asyncpg/",),
    ),
    ("SQLAlchemy (statement execution, result rows, greenlet switches)", ("sqlalchemy/",)),
    ("waiting (event loop select: not CPU)", ("'poll' of 'select.epoll'", "'select' of")),
)
WAIT_KIND = "waiting (event loop select: not CPU)"


@dataclass(frozen=True, slots=True)
class Options:
    gifts: int
    rounds: int
    batch_size: int
    warmup_gifts: int
    top: int
    json_path: Path | None


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.gift_profile", description=__doc__)
    parser.add_argument("--gifts", type=int, default=20_000, help="gifts per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=Settings().consumer_batch_size_max)
    parser.add_argument("--warmup-gifts", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=25, help="functions listed by own time")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.gifts <= GIFTS_MAX:
        parser.error(f"--gifts must be between 1 and {GIFTS_MAX}")
    if not 1 <= arguments.rounds <= ROUNDS_MAX:
        parser.error(f"--rounds must be between 1 and {ROUNDS_MAX}")
    if not 1 <= arguments.batch_size <= Settings().consumer_batch_size_max * 10:
        parser.error("--batch-size must be positive and at most ten times the consumers'")
    if not 0 <= arguments.warmup_gifts <= GIFTS_MAX:
        parser.error(f"--warmup-gifts must be between 0 and {GIFTS_MAX}")
    return Options(
        gifts=arguments.gifts,
        rounds=arguments.rounds,
        batch_size=arguments.batch_size,
        warmup_gifts=arguments.warmup_gifts,
        top=max(arguments.top, 0),
        json_path=arguments.json,
    )


class Records:
    """The benchmark's gifts as the consumer receives them, a round at a time, each round under
    event ids of its own; creators keep coming as in one long drain."""

    def __init__(self) -> None:
        self._maker = GiftMaker(SEED)
        self._offsets = [0] * PARTITION_COUNT
        self._index = 0

    def event_id(self, tag: str, index: int, occurred_at: datetime) -> str:
        """The id of the `index`-th gift, taken under `tag`."""
        return f"gift-{tag}-{index:09d}"

    def take(self, count: int, tag: str = "") -> list[InputRecord]:
        records: list[InputRecord] = []
        for _ in range(count):
            occurred_at = datetime.fromtimestamp(BACKLOG_START + self._index / 1000, UTC)
            event_id = self.event_id(tag, self._index, occurred_at)
            value, key, _ = self._maker.gift(event_id, occurred_at)
            partition = zlib.crc32(key) % PARTITION_COUNT
            records.append(
                InputRecord(topics.GIFTS_SENT, partition, self._offsets[partition], key, value, ())
            )
            self._offsets[partition] += 1
            self._index += 1
        return records


def batches_of(records: Sequence[InputRecord], size: int) -> list[Sequence[InputRecord]]:
    return [records[start : start + size] for start in range(0, len(records), size)]


async def apply_all(ingestor: Ingestor, batches: Iterable[Sequence[InputRecord]]) -> int:
    applied = 0
    for batch in batches:
        report = await ingestor.process(topics.GIFTS_SENT, batch)
        assert not report.dead_letters, report.dead_letters[:3]
        assert report.applied == len(batch), (report.applied, len(batch))
        applied += report.applied
    return applied


@dataclass(frozen=True, slots=True)
class Round:
    gifts: int
    cpu_s: float
    wall_s: float
    postgres_cpu_s: float | None

    @property
    def cpu_us_per_gift(self) -> float:
        return self.cpu_s / self.gifts * 1e6

    @property
    def postgres_us_per_gift(self) -> float | None:
        if self.postgres_cpu_s is None:
            return None
        return self.postgres_cpu_s / self.gifts * 1e6


async def measure_round(
    ingestor: Ingestor,
    records: Sequence[InputRecord],
    batch_size: int,
    postmaster: int | None,
) -> Round:
    batches = batches_of(records, batch_size)
    postgres_before = tree_cpu_seconds_of(postmaster)  # None: the server is elsewhere
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    applied = await apply_all(ingestor, batches)
    cpu_s = time.process_time() - cpu_started
    wall_s = time.perf_counter() - wall_started
    postgres_after = tree_cpu_seconds_of(postmaster)
    if postgres_before is None or postgres_after is None:
        return Round(applied, cpu_s, wall_s, None)
    return Round(applied, cpu_s, wall_s, postgres_after - postgres_before)


def _named(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    return f"{filename}:{line}({name})" if filename != "~" else name


def _matches(key: tuple[str, int, str], functions: Functions) -> bool:
    filename, _, name = key
    return any(filename.endswith(suffix) and name == wanted for suffix, wanted in functions)


def _cumulative_s(stats: dict[Any, Any], functions: Functions) -> float:
    return float(sum(entry[3] for key, entry in stats.items() if _matches(key, functions)))


def _own_s(stats: dict[Any, Any], substrings: tuple[str, ...]) -> float:
    total = 0.0
    for key, entry in stats.items():
        filename, _, name = key
        label = f"{filename.split('site-packages/')[-1]}:{name}"
        if any(part in label for part in substrings):
            total += entry[2]
    return total


@dataclass
class Breakdown:
    """Profiled seconds by step and by kind, the profiled total (CPU: waits excluded)."""

    gifts: int
    profiled_cpu_s: float
    steps: dict[str, float] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, float] = field(default_factory=dict)
    top: list[tuple[str, float, int]] = field(default_factory=list)


def breakdown(profile: cProfile.Profile, gifts: int, top: int) -> Breakdown:
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total_own_s = sum(entry[2] for entry in stats.values())
    kinds = {label: _own_s(stats, substrings) for label, substrings in KINDS}
    profiled_cpu_s = total_own_s - kinds[WAIT_KIND]
    result = Breakdown(gifts, profiled_cpu_s, kinds=kinds)
    for label, plus, minus in STEPS:
        result.steps[label] = _cumulative_s(stats, plus) - _cumulative_s(stats, minus)
    result.steps["the rest (consumer bookkeeping, event loop, SQLAlchemy outside the steps)"] = (
        profiled_cpu_s - sum(result.steps.values())
    )
    for _, label, functions in STEP_PARTS:
        result.parts[label] = _cumulative_s(stats, functions)
    own = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)
    result.top = [(_named(key), entry[2], entry[1]) for key, entry in own[:top]]
    return result


def _us(seconds: float, gifts: int) -> float:
    return seconds / gifts * 1e6


def print_breakdown(result: Breakdown, unprofiled_us: float) -> dict[str, Any]:
    """Print the steps and kinds; returns them as µs per gift (profiled, and the unprofiled
    estimate: the step's share of the profiled CPU applied to the unprofiled CPU per gift)."""
    gifts, total = result.gifts, result.profiled_cpu_s
    scale = unprofiled_us / _us(total, gifts)
    figures: dict[str, Any] = {"steps": {}, "kinds": {}}
    print(f"\n{'step of the gift path':<78} {'profiled':>9} {'share':>6} {'est.':>7}")
    for label, seconds in result.steps.items():
        us = _us(seconds, gifts)
        print(f"{label:<78} {us:>7.2f}µs {seconds / total:>6.1%} {us * scale:>5.2f}µs")
        figures["steps"][label] = {"profiled_us": us, "estimated_us": us * scale}
        for step, part, _ in STEP_PARTS:
            if step == label:
                part_us = _us(result.parts[part], gifts)
                print(f"  {part:<76} {part_us:>7.2f}µs {'':>6} {part_us * scale:>5.2f}µs")
                figures["steps"][part] = {"profiled_us": part_us, "estimated_us": part_us * scale}
    print(f"{'CPU per gift':<78} {_us(total, gifts):>7.2f}µs {'':>6} {unprofiled_us:>5.2f}µs")
    print(f"\n{'kind of work, wherever it happens (own time)':<78} {'profiled':>9} {'est.':>14}")
    for label, seconds in result.kinds.items():
        us = _us(seconds, gifts)
        estimate = "" if label == WAIT_KIND else f"{us * scale:>5.2f}µs"
        print(f"{label:<78} {us:>7.2f}µs {estimate:>14}")
        figures["kinds"][label] = {"profiled_us": us, "estimated_us": us * scale}
    if result.top:
        print(f"\n{'function (own time, profiled)':<100} {'µs/gift':>8} {'calls':>9}")
        for name, seconds, calls in result.top:
            print(f"{name[-100:]:<100} {_us(seconds, gifts):>8.2f} {calls:>9,}")
    return figures


async def run(options: Options) -> dict[str, Any]:
    settings = Settings()
    records = Records()
    async with admin_url() as (maintenance_url, source), fresh_database(maintenance_url) as url:
        engine = create_engine(
            url,
            pool_size=settings.db_pool_size,
            pool_overflow_max=settings.db_pool_overflow_max,
            statement_timeout_ms=settings.db_statement_timeout_ms,
        )
        try:
            async with engine.connect() as conn:
                rate_cards = await load_rate_cards(conn)
            ingestor = build_ingestor(settings, engine, rate_cards)
            if options.warmup_gifts:
                warmup = records.take(options.warmup_gifts, "w")
                await apply_all(ingestor, batches_of(warmup, options.batch_size))
            settle_collector()
            postmaster = await postmaster_pid(engine)
            rounds: list[Round] = []
            for index in range(options.rounds):
                taken = records.take(options.gifts, f"r{index}")
                rounds.append(await measure_round(ingestor, taken, options.batch_size, postmaster))
                measured = rounds[-1]
                postgres = measured.postgres_us_per_gift
                print(
                    f"round {index + 1}: {measured.gifts:,} gifts, consumer CPU"
                    f" {measured.cpu_us_per_gift:.1f} µs/gift, PostgreSQL server "
                    + ("n/a" if postgres is None else f"{postgres:.1f} µs/gift")
                    + f", {measured.gifts / measured.wall_s:,.0f} gifts/s wall",
                    flush=True,
                )
            profiled_records = records.take(options.gifts, "p")
            # CPU time, not wall time: SQLAlchemy awaits through greenlets, so a function that
            # runs a statement stays on the profiler's stack while the event loop waits; with a
            # CPU clock, that wait costs (almost) nothing.
            profile = cProfile.Profile(time.process_time_ns, 1e-9)
            profile.enable()
            await apply_all(ingestor, batches_of(profiled_records, options.batch_size))
            profile.disable()
        finally:
            await engine.dispose()
    cpu_median = statistics.median(r.cpu_us_per_gift for r in rounds)
    postgres_values = [r.postgres_us_per_gift for r in rounds if r.postgres_us_per_gift]
    result = breakdown(profile, options.gifts, options.top)
    figures = print_breakdown(result, cpu_median)
    calibration = python_loop_s()
    print(
        f"\nconsumer CPU per gift, median of {len(rounds)} rounds: {cpu_median:.1f} µs"
        f" (rounds: {', '.join(f'{r.cpu_us_per_gift:.1f}' for r in rounds)})"
    )
    if postgres_values:
        postgres_median = statistics.median(postgres_values)
        print(f"PostgreSQL server's CPU per gift, median: {postgres_median:.1f} µs")
    print(
        f"machine: {os.cpu_count()} CPUs, database {source}, batches of {options.batch_size:,},"
        f" a Python loop of 5 million additions: {calibration:.2f} s"
    )
    return {
        "options": {**asdict(options), "json_path": None},
        "rounds": [asdict(r) for r in rounds],
        "consumer_cpu_us_per_gift": cpu_median,
        "postgres_cpu_us_per_gift": statistics.median(postgres_values) if postgres_values else None,
        "breakdown": figures,
        "calibration_s": calibration,
    }


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    figures = asyncio.run(run(options))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
