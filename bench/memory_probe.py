"""Memory probe: what grows inside one `giftledger run` under a steady stream.

    python -m bench.memory_probe [--minutes 8] [--rate 700] [--interval-s 60]
                                 [--snapshot-every-s 120] [--frames 12]
                                 [--account-cache N] [--no-tracemalloc] [--out DIR]

1. A fresh database on the machine's server (`bench.harness`: `DATABASE_URL`, else
   127.0.0.1:5432, else the embedded PostgreSQL), migrated to head and dropped at the end; the
   embedded broker (or `KAFKA_BOOTSTRAP_SERVERS`), topics of a fresh prefix.
2. One child process running what `giftledger run --payout-rail` runs (`services.app.runner.run`,
   the soak's consumer-0), with tracemalloc on (`--frames` frames a trace) unless
   `--no-tracemalloc`. A thread of the child writes once a second a line of `<out>/memory.tsv`:
   seconds, VmRSS, tracemalloc's traced bytes, what glibc's malloc holds from the system, has in
   use and has free inside its heaps (`mallinfo2`), and the entries of the ledger's two account
   caches. Every `--snapshot-every-s` (the first at half that) it writes `<out>/types-<n>-<s>s.txt`
   (the commonest types among the objects the garbage collector tracks) and, with tracemalloc,
   `<out>/snap-<n>-<s>s.tracemalloc`.
3. The soak's mixed stream (`bench.soak_stream`) at `--rate` records a second, one segment
   (namespace soak<k>, new creators each) per `--interval-s`, each segment's cash-outs over the
   next half span (not waiting for its main phase to be applied, unlike the soak).
4. At the end: the memory table over time, then the growth between the second snapshot and the
   last by line and by traceback (the first is left out: it holds the warm-up), in KiB a minute.

Reading it: RSS growing while malloc's "free" column grows and "in use" does not is memory the C
allocator keeps in holes of its heap, not objects; growth in tracemalloc or in the type counts
is objects, found by the snapshot diff. `--account-cache` sets LEDGER_ACCOUNT_CACHE_SIZE_MAX for
the child, so that the account caches reach their bound within the probe and what still grows
is something else. Run two probes at once to compare settings (e.g. one with
`MALLOC_ARENA_MAX=2` or `MALLOC_MMAP_THRESHOLD_=...` in its environment). tracemalloc slows the
consumer and its traces take memory of their own: compare RSS only between runs without it.
Nothing is judged: the probe prints what it measured; the files stay in `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.consumer_workers import rss_bytes_of
from bench.harness import admin_url, fresh_database
from bench.ingest_bench import kafka, say
from bench.soak_stream import Publisher, make_segment, new_producer
from schemas.topics import all_topics
from services.runtime.embedded_broker import create_topics

CHILD_FLAG = "--child"
STOP_TIMEOUT_S = 60.0
TOP_COUNT = 25
TRACEBACK_FRAMES_SHOWN = 10
MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
TYPE_COUNT = 40
CACHES_FOUND_AFTER_S = 30.0
SETTLE_S = 20.0  # after the last segment, before the child is stopped


# The child: `giftledger run --payout-rail` with tracemalloc and a sampling thread.


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2`: what malloc holds, in use and free, outside Python's view."""

    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS.split()]


def _malloc_figures() -> tuple[int, int, int]:
    """(bytes malloc has from the system (heaps and mmaps), in use, free within its heaps);
    zeros where glibc's mallinfo2 is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return 0, 0, 0
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.arena + info.hblkhd, info.uordblks + info.hblkhd, info.fordblks


def _account_caches() -> tuple[list[object], list[object]]:
    """The process's `AccountDirectory` and `AccountFacts` objects (the ledger's account caches),
    found among the objects the garbage collector tracks."""
    from ledger.accounts import AccountDirectory
    from ledger.store import AccountFacts

    objects = gc.get_objects()
    return (
        [item for item in objects if isinstance(item, AccountDirectory)],
        [item for item in objects if isinstance(item, AccountFacts)],
    )


def _cached_accounts(caches: tuple[list[object], list[object]]) -> tuple[int, int]:
    directories, facts = caches
    return (
        sum(len(getattr(item, "_ids_by_name", ())) for item in directories),
        sum(len(getattr(item, "_facts", ())) for item in facts),
    )


def _write_type_counts(path: Path) -> None:
    """The commonest types among the objects the garbage collector tracks, with their counts."""
    counts = Counter(type(item).__name__ for item in gc.get_objects())
    path.write_text(
        "".join(f"{count}\t{name}\n" for name, count in counts.most_common(TYPE_COUNT)),
        encoding="utf-8",
    )


def _sample(out: Path, snapshot_every_s: float, traced: bool, stop: threading.Event) -> None:
    started = time.monotonic()
    next_snapshot = started + snapshot_every_s / 2  # a first one early, after the warm-up
    number = 0
    caches: tuple[list[object], list[object]] = ([], [])
    with (out / "memory.tsv").open("w", encoding="utf-8") as table:
        table.write(
            "seconds\trss_bytes\ttraced_bytes\tmalloc_bytes\tmalloc_used\tmalloc_free"
            "\tcached_accounts\taccount_facts\n"
        )
        while not stop.wait(1.0):
            now = time.monotonic()
            if not caches[0] and now - started > CACHES_FOUND_AFTER_S:
                caches = _account_caches()
            size = tracemalloc.get_traced_memory()[0] if traced else 0
            held, used, free = _malloc_figures()
            accounts, facts = _cached_accounts(caches)
            table.write(
                f"{now - started:.0f}\t{rss_bytes_of(os.getpid())}\t{size}"
                f"\t{held}\t{used}\t{free}\t{accounts}\t{facts}\n"
            )
            table.flush()
            if now >= next_snapshot:
                number += 1
                stamp = f"{number}-{now - started:.0f}s"
                _write_type_counts(out / f"types-{stamp}.txt")
                if traced:
                    snapshot = tracemalloc.take_snapshot()
                    snapshot.dump(str(out / f"snap-{stamp}.tracemalloc"))
                    del snapshot
                next_snapshot = now + snapshot_every_s


def child_main(out: Path, snapshot_every_s: float, frames: int) -> None:
    from services.app.runner import run
    from services.runtime.settings import get_settings

    traced = frames > 0
    if traced:
        tracemalloc.start(frames)
    stop = threading.Event()
    sampler = threading.Thread(
        target=_sample, args=(out, snapshot_every_s, traced, stop), daemon=True
    )
    sampler.start()
    try:
        asyncio.run(run(get_settings(), with_payout_rail=True))
    finally:
        stop.set()
        sampler.join()


# The parent: database, broker, stream, child, report.


def report_memory(out: Path) -> None:
    rows = (out / "memory.tsv").read_text(encoding="utf-8").splitlines()[1:]
    samples = [tuple(int(float(cell)) for cell in row.split("\t")) for row in rows]
    say(
        "seconds  RSS MiB  traced MiB  malloc held MiB  in use MiB  free MiB"
        "  cached accounts  account facts"
    )
    for seconds, rss, traced, held, used, free, accounts, facts in samples[
        :: max(len(samples) // 20, 1)
    ]:
        say(
            f"{seconds:7d}  {rss / 2**20:7.1f}  {traced / 2**20:10.1f}  {held / 2**20:15.1f}"
            f"  {used / 2**20:10.1f}  {free / 2**20:8.1f}  {accounts:15,d}  {facts:13,d}"
        )


def _short(filename: str) -> str:
    """A traced file's name without the installation's directories."""
    for directory in (*sys.path[1:], os.getcwd()):
        if directory and filename.startswith(directory + os.sep):
            return filename[len(directory) + 1 :]
    return filename


def report_snapshots(out: Path) -> None:
    paths = sorted(out.glob("snap-*.tracemalloc"), key=lambda path: int(path.stem.split("-")[1]))
    if len(paths) < 3:
        say(f"{len(paths)} snapshots: too few to compare (the first is the warm-up)")
        return
    first, last = paths[1], paths[-1]
    minutes = (int(last.stem.split("-")[2][:-1]) - int(first.stem.split("-")[2][:-1])) / 60
    older = tracemalloc.Snapshot.load(str(first))
    newer = tracemalloc.Snapshot.load(str(last))
    noise = tracemalloc.Filter(False, tracemalloc.__file__)
    older, newer = older.filter_traces([noise]), newer.filter_traces([noise])
    say(f"growth from {first.name} to {last.name} ({minutes:.1f} min), by line:")
    for stat in newer.compare_to(older, "lineno")[:TOP_COUNT]:
        frame = stat.traceback[0]
        say(
            f"  {stat.size_diff / 1024 / minutes:+9.1f} KiB/min  {stat.count_diff:+8d} blocks"
            f"  {_short(frame.filename)}:{frame.lineno}"
        )
    say("by traceback (the top ones, innermost frame last):")
    for stat in newer.compare_to(older, "traceback")[:8]:
        say(f"  {stat.size_diff / 1024 / minutes:+9.1f} KiB/min  {stat.count_diff:+8d} blocks")
        for frame in list(stat.traceback)[-TRACEBACK_FRAMES_SHOWN:]:
            say(f"      {_short(frame.filename)}:{frame.lineno}")


async def publish(publisher: Publisher, out: Path, args: argparse.Namespace) -> None:
    span_count = max(round(args.minutes * 60 / args.interval_s), 1)
    records = round(args.rate * args.interval_s)
    segments = []
    for index in range(1, span_count + 1):
        segment = await asyncio.to_thread(make_segment, out, index, records, args.rate, args.seed)
        segments.append(segment)
    say(f"stream: {span_count} segments of {records:,} records at {args.rate:g}/s")
    loop = asyncio.get_running_loop()
    started = loop.time()
    cashouts: list[asyncio.Task[None]] = []
    for number, segment in enumerate(segments):
        await publisher.main_phase(segment, started + number * args.interval_s, args.interval_s)
        cashouts.append(asyncio.create_task(publisher.cashouts(segment, args.interval_s / 2)))
    await asyncio.gather(*cashouts)
    await publisher.flush()
    say(f"published {publisher.sent:,} records in {loop.time() - started:.0f} s")


async def parent(args: argparse.Namespace, out: Path) -> None:
    tag = secrets.token_hex(3)
    prefix = f"probe{tag}."
    async with (
        admin_url() as (maintenance, _),
        fresh_database(maintenance) as url,
        kafka() as (bootstrap, broker_source, _),
    ):
        from services.runtime.settings import get_settings

        await create_topics(bootstrap, all_topics(prefix), get_settings().kafka_partition_count)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_PREFIX": prefix,
            "KAFKA_CONSUMER_GROUP": f"giftledger.probe{tag}",
            "PAYOUT_RAIL_FAILURE_RATE": "0",
            "PAYOUT_RAIL_RETURN_RATE": "0",
        }
        if args.account_cache:
            env["LEDGER_ACCOUNT_CACHE_SIZE_MAX"] = str(args.account_cache)
        frames = 0 if args.no_tracemalloc else args.frames
        command = [
            sys.executable, "-m", "bench.memory_probe", CHILD_FLAG,
            str(out), str(args.snapshot_every_s), str(frames),
        ]  # fmt: skip
        with (out / "consumer.log").open("wb") as log:
            child = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        say(f"consumer: pid {child.pid}, broker {broker_source}, logs in {out}")
        producer = new_producer(bootstrap)
        await producer.start()
        try:
            await publish(Publisher(producer, prefix), out, args)
            await asyncio.sleep(SETTLE_S)
        finally:
            await producer.stop()
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                child.kill()
                await child.wait()
    await asyncio.to_thread(_remove_streams, out)
    report_memory(out)
    report_snapshots(out)


def _remove_streams(out: Path) -> None:
    for stream in out.glob("*.jsonl.gz*"):
        stream.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHILD_FLAG]:
        child_main(Path(argv[1]), float(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.memory_probe")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=700.0)
    parser.add_argument("--interval-s", type=float, default=60.0)
    parser.add_argument("--snapshot-every-s", type=float, default=120.0)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--account-cache", type=int, default=0)
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="giftledger-memory-"))
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(parent(args, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
