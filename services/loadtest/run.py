"""`giftledger loadtest`: generate (or take) a stream, run it through the whole pipeline, and check
the ledger against the stream's expected end state.

Steps, in one process, as `giftledger demo` runs:

1. The stream: `--events N` generates one into the output directory (namespace `lt<seed>x<random>`,
   so that a second run against the same database finds nothing of the first); `FILE` takes a
   stream and its `FILE.expected.json` (a stream already applied to this database is refused).
2. PostgreSQL and the broker (`DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`, or the embedded ones),
   the schema migrated, topics of a fresh prefix `<KAFKA_TOPIC_PREFIX>lt<random>.`, consumers in a
   fresh consumer group writing as the writer role, and the simulated bank with
   `failure_rate=0` and `return_rate=0` (every held cash-out ends paid). The rules the expected
   state assumes (rate card, FX, cash-out limits, eligibility) are checked against this
   deployment first, each rate at the moments it prices (`check_assumptions`: a gift's rate card
   on the stream's recorded days, a cash-out's rate card and FX when the desk approves it, during
   the run); a difference stops the run, as its result could not match.
3. Replay the stream up to its cash-out phase; wait until the consumers' own counters say every
   record was consumed and no event is still parked. Then replay the cash-outs and wait until
   every record (and every report of the bank) is consumed, the outbox is drained and no cash-out
   is open. A wait gives up when nothing moves for `stall_s`.
4. `verify` the ledger; compare, for the stream's namespace, every creator's available DIAMOND
   and currency balances, that nothing is left pending, the events applied per topic, the dead
   letters per topic and reason, the cash-outs per outcome, and the duplicates counted.
5. Report: events/s (records of the main phase over the time from the first send until they are
   all settled, and the peak: over a 2 s window, never below events/s,
   `services.loadtest.report.peak_rate`), the consumed count sampled every 0.5 s, the lag
   (records published and not yet consumed), the phases (main phase, drain, cash-out phase),
   latency percentiles, the CPU time of the publisher and of this process during the main phase,
   and per topic the batches the consumers applied and the time they took
   (`services.loadtest.topic_timings`). The consumers and the bank share this process and its
   event loop, as in `giftledger demo`; the replayer runs in a process of its own
   (`services.loadtest.publisher`), one per phase; all of them share the machine's cores with
   the broker and PostgreSQL. Events keep their recorded `occurred_at` (it decides the rate card
   and the daily limits), so latency is measured from the moment the replayer handed the record
   to the producer to the event's `applied_at` (the start of the transaction that applied it, so
   slightly early). Paced at a rate the pipeline sustains (`--rate N`, or the recorded timing),
   that is the service time; as fast as possible (`--max`), it is mostly the wait behind the
   backlog. About one event in 100 is sampled (by a hash of its event_id, first send only; at
   most 200,000 samples). Writes `loadtest.json`, `summary.txt`, `throughput.png` and
   `latency.png` (PNG charts need matplotlib, in the `dev` extra) into the output directory.

Dead letters are counted from the run's DLQ topics (`<prefix><topic>.dlq`, by `dlq.error`, a
record counted once per source partition and offset): they are what the contract promises. The
`dead_letters` table (the rows of the run's topic prefix) is compared with them, and a difference
is reported as a warning. The run has a prefix of its own, so it publishes only the outbox rows it
wrote and retries only the reversals it parked, even beside a deployment on the same database.

The parts: `services.loadtest.checks` (the deployment's rules, observing the ledger, comparing),
`services.loadtest.measurements` (samples and latencies), `services.loadtest.pipeline` (the
consumers, the bank and the replays of one run, and when a phase has settled),
`services.loadtest.publisher` (the publisher process), `services.loadtest.topic_timings` (per
topic batches) and `services.loadtest.report` (the summary, the JSON report and the charts); this
module sets the run up, takes it through its phases and judges it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.migrate import upgrade_to_head
from services.app.bootstrap import build_payout_rail
from services.app.consumer import ConsumerService
from services.loadtest.checks import (
    check_assumptions,
    compare,
    observe,
    read_dead_letter_topics,
    table_warnings,
)
from services.loadtest.compare import THRESHOLD_PCT_DEFAULT, compare_files, threshold_pct
from services.loadtest.generator import add_shape_arguments, generate, shape_from_arguments
from services.loadtest.measurements import Latencies, Latency, latencies, sorted_ms
from services.loadtest.pipeline import (
    ASSIGNMENT_WAIT_S,
    PipelineRun,
    StreamRun,
    wait_for_groups,
    wait_until,
)
from services.loadtest.publisher import PublisherError
from services.loadtest.recorded_run import RecordedRun, check_recorded, run_recorded
from services.loadtest.replay import (
    ReplayMode,
    add_pacing_arguments,
    count_records,
    pacing_from_arguments,
)
from services.loadtest.report import LoadtestReport, Phase, add_measurements, write_outputs
from services.loadtest.stream_format import (
    ExpectedState,
    StreamFormatError,
    StreamShape,
    expected_path,
    file_problem,
    load_expected,
)
from services.loadtest.topic_timings import load_timed_ingestor, timings_document
from services.runtime.database import engine_as_role, open_database, safe_url
from services.runtime.kafka import open_kafka
from services.runtime.settings import Settings, get_settings
from services.verification import verify_and_record

logger = logging.getLogger(__name__)

STALL_S_DEFAULT = 120.0
SESSION_TIMEOUT_MS = 6_000
# How long a payout result for an unknown cash-out waits in a run: the streams hold bank reports
# for cash-outs that never exist (`payout_for_unknown_cashout`), which the run waits to see
# dead-lettered; PAYOUT_PARK_S's hour would keep each parked that long.
LOADTEST_PAYOUT_PARK_S = 2.0
STREAM_FILE_NAME = "stream.jsonl.gz"


class LoadtestError(RuntimeError):
    """The run cannot start or cannot be judged (a usage or environment problem)."""


# Running -------------------------------------------------------------------------------------


def _prepare_stream(
    events: int | None, file: Path | None, out_dir: Path, seed: int, shape: StreamShape | None
) -> tuple[Path, ExpectedState | None, int]:
    """(the stream, its expected state or None for a recorded stream, its record count)."""
    if (events is None) == (file is None):
        raise LoadtestError("give either a number of events or a stream file, not both")
    out_dir.mkdir(parents=True, exist_ok=True)
    if file is not None:
        if not expected_path(file).exists():
            if not file.exists():
                raise LoadtestError(f"{file} does not exist")
            return file, None, count_records(file)
        expected = load_expected(file)
        return file, expected, expected.records
    assert events is not None
    path = out_dir / STREAM_FILE_NAME
    namespace = f"lt{seed}x{secrets.token_hex(3)}"
    expected = generate(path, events=events, seed=seed, namespace=namespace, shape=shape)
    return path, expected, expected.records


async def _already_applied(engine: AsyncEngine, namespace: str) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT 1 FROM applied_events WHERE starts_with(event_id, :prefix) LIMIT 1"),
            {"prefix": namespace + "-"},
        )
    return found is not None


def loadtest_settings(settings: Settings) -> Settings:
    """The settings of one run: fresh topics and consumer groups, a bank that always pays, a
    payout result for an unknown cash-out parked `LOADTEST_PAYOUT_PARK_S`."""
    tag = secrets.token_hex(3)
    update: dict[str, Any] = {
        "kafka_topic_prefix": f"{settings.kafka_topic_prefix}lt{tag}.",
        "kafka_consumer_group": f"{settings.kafka_consumer_group}.lt{tag}",
        "payout_rail_failure_rate": 0.0,
        "payout_rail_return_rate": 0.0,
        "payout_park_s": LOADTEST_PAYOUT_PARK_S,
    }
    if "kafka_session_timeout_ms" not in settings.model_fields_set:
        update["kafka_session_timeout_ms"] = SESSION_TIMEOUT_MS
    return settings.model_copy(update=update)


async def _finish(run: PipelineRun, report: LoadtestReport, since: datetime) -> None:
    """Observe, verify and compare."""
    counts = run.service.ingestor.counts
    async with run.engine.connect() as conn:
        observed = await observe(
            conn, run.expected.namespace, run.settings.kafka_topic_prefix, since
        )
    # The whole ledger, recorded as `giftledger verify --full` records it (and the demo's), so
    # the console's overview shows this run.
    problems = (await verify_and_record(run.engine, full=True)).problems
    observed.consumed = counts.consumed
    observed.duplicates = counts.duplicates
    observed.applied = counts.applied + counts.unparked_applied
    observed.dead_lettered = counts.dead_lettered + counts.unparked_dead_lettered
    observed.parked = counts.parked
    observed.still_parked = counts.still_parked
    observed.reports_sent = run.rail.reports_sent
    observed.dead_letters = await read_dead_letter_topics(
        run.bootstrap_servers, run.settings.kafka_topic_prefix, run.expected.dead_lettered
    )
    report.warnings += table_warnings(observed)
    report.verify_problems = [f"{problem.check}: {problem.detail}" for problem in problems]
    report.mismatches += compare(run.expected, observed)
    report.matched = not report.mismatches and not report.verify_problems
    report.consumed = observed.consumed
    report.applied = observed.applied
    report.duplicates = observed.duplicates
    report.dead_lettered = observed.dead_lettered
    report.parked = observed.parked
    report.cashouts = dict(sorted(observed.cashouts.items()))


async def loadtest(
    settings: Settings,
    *,
    events: int | None,
    file: Path | None,
    out_dir: Path,
    seed: int = 1,
    mode: ReplayMode = "max",
    speed: float = 1.0,
    rate_per_s: int | None = None,
    shape: StreamShape | None = None,
    stall_s: float = STALL_S_DEFAULT,
    out: TextIO | None = None,
) -> LoadtestReport:
    """Run a load test (see the module's docstring); `report.matched` says whether the ledger
    reached the expected end state. Prints the summary to `out` when given, and writes it, the
    JSON report and the charts into `out_dir`. Raises `LoadtestError` when the run cannot start:
    both or neither of `events` and `file`, a stream already applied to this database, a
    deployment whose rules differ from the stream's, consumer groups that do not form."""
    stream, expected, records = await asyncio.to_thread(
        _prepare_stream, events, file, out_dir, seed, shape
    )
    settings = loadtest_settings(settings)
    started = time.monotonic()
    async with open_database(settings) as engine, open_kafka(settings) as bootstrap_servers:
        await upgrade_to_head(engine)
        async with engine.connect() as conn:
            problems = [] if expected is None else await check_assumptions(conn, settings, expected)
            since = (await conn.execute(text("SELECT now()"))).scalar_one()
        if problems:
            raise LoadtestError(
                "this deployment differs from what the stream's expected state assumes: "
                + "; ".join(problems)
            )
        if expected is not None and await _already_applied(engine, expected.namespace):
            raise LoadtestError(
                f"namespace {expected.namespace} is already in this database: replay the stream "
                "into a fresh database, or generate one with another namespace"
            )
        report = LoadtestReport(
            matched=False,
            mismatches=[],
            stream=str(stream),
            namespace="" if expected is None else expected.namespace,
            records=records,
            mode=mode,
            speed=speed,
            rate_per_s=rate_per_s,
            bootstrap_servers=bootstrap_servers,
            topic_prefix=settings.kafka_topic_prefix,
            database=safe_url(engine.url.render_as_string(hide_password=False)),
            main_records=records if expected is None else expected.cashout_phase_from,
        )
        logger.info("loadtest: database and broker ready after %.1f s", time.monotonic() - started)
        rail = build_payout_rail(settings, bootstrap_servers)
        await rail.start()
        writer = engine_as_role(engine, settings, settings.database_writer_role)
        ingestor = await load_timed_ingestor(settings, writer)
        service = ConsumerService(settings, ingestor, bootstrap_servers)
        await service.start()
        logger.info("loadtest: consumers started after %.1f s", time.monotonic() - started)
        run: PipelineRun | RecordedRun
        if expected is None:
            run = RecordedRun(
                settings,
                engine,
                service,
                rail,
                bootstrap_servers,
                stream,
                records,
                out_dir,
                (mode, speed, rate_per_s),
            )
        else:
            run = PipelineRun(
                settings, engine, service, rail, bootstrap_servers, expected, stream, out_dir
            )
            run.pacing = (mode, speed, rate_per_s)
        sampler: asyncio.Task[None] | None = None
        try:
            if not await wait_for_groups(service, rail, settings.kafka_partition_count):
                raise LoadtestError(f"the consumer groups did not form in {ASSIGNMENT_WAIT_S} s")
            logger.info("loadtest: consumer groups formed after %.1f s", time.monotonic() - started)
            run.started = time.monotonic()
            started_wall_s = time.time()
            sampler = asyncio.create_task(run.sample_forever(), name="loadtest-sampler")
            if isinstance(run, RecordedRun):
                cpu_before_s = time.process_time()
                await run_recorded(run, report, stall_s)
                report.consumer_cpu_s = time.process_time() - cpu_before_s
                _note_main_phase(run, report, run.started + report.main_seconds)
            else:
                await _run_phases(run, report, stall_s)
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            run.take_sample()
            report.total_seconds = time.monotonic() - started
            if isinstance(run, RecordedRun):
                await check_recorded(run, report, since)
            else:
                await _finish(run, report, since)
            measured = await latencies(run.engine, run.send_times, since)
            points = measured.points
            report.warnings += _latencies_left_out(measured)
            report.topics = timings_document(ingestor.timings)
            logger.info("loadtest: verified and compared after %.1f s", time.monotonic() - started)
        finally:
            if sampler is not None:
                sampler.cancel()
            await service.stop()
            await rail.stop()
            await writer.dispose()
            logger.info("loadtest: services stopped after %.1f s", time.monotonic() - started)
    add_measurements(report, run.samples, sorted_ms(points))
    chart_points = [_since_start(point, started_wall_s) for point in points]
    await asyncio.to_thread(write_outputs, report, chart_points, out_dir)
    if out is not None:
        out.write(report.summary())
    return report


def _latencies_left_out(measured: Latencies) -> list[str]:
    """What the latency figures leave out, and why."""
    lines = []
    if measured.applied_before_run:
        lines.append(
            f"latency: {measured.applied_before_run} sampled events were applied before the run "
            "(duplicates now): left out"
        )
    if measured.applied_before_sent:
        lines.append(
            f"latency: {measured.applied_before_sent} sampled events were applied before they "
            "were sent by this machine's clock (the database's clock is behind it): left out"
        )
    return lines


def _since_start(point: Latency, started_wall_s: float) -> Latency:
    """`point` with its send time in seconds since the run started (the charts' clock)."""
    return Latency(round(point.sent_at - started_wall_s, 3), point.ms)


def _note_main_phase(run: StreamRun, report: LoadtestReport, settled_at: float) -> None:
    """The main phase's timing, now that it has settled at `settled_at` (monotonic): the time
    from its first send, the publisher's CPU time, and the phases `main phase` (the publisher
    sending) and `drain` (the consumers catching up after the last send) on the charts' clock."""
    timing = run.send_times.publishes[0]
    report.main_seconds = settled_at - timing.first_send_t
    report.publisher_cpu_s = timing.cpu_s
    report.phases.append(
        Phase("main phase", timing.first_send_t - run.started, timing.done_t - run.started)
    )
    report.phases.append(Phase("drain", timing.done_t - run.started, settled_at - run.started))


async def _run_phases(run: PipelineRun, report: LoadtestReport, stall_s: float) -> None:
    """The main phase, then (once it has settled) the cash-outs."""
    expected = run.expected
    cpu_before_s = time.process_time()
    report.publish_seconds = await run.publish(0, expected.cashout_phase_from)
    settled = await wait_until(run.main_phase_settled, run.progress, stall_s)
    _note_main_phase(run, report, time.monotonic())
    report.consumer_cpu_s = time.process_time() - cpu_before_s
    logger.info("loadtest: main phase settled: %s, %.1f s", settled, report.main_seconds)
    if not settled:
        report.mismatches.append(f"the main phase did not settle: nothing moved for {stall_s:g} s")
        return
    cashouts_started = time.monotonic()
    if expected.cashout_phase_from < expected.records:
        await run.publish(expected.cashout_phase_from, None)
    if not await wait_until(run.all_settled, run.progress_with_cashouts, stall_s):
        report.mismatches.append(
            f"the cash-out phase did not settle: nothing moved for {stall_s:g} s"
        )
    cashouts_settled = time.monotonic()
    report.cashout_seconds = cashouts_settled - cashouts_started
    report.phases.append(
        Phase("cash-out phase", cashouts_started - run.started, cashouts_settled - run.started)
    )


# Command line --------------------------------------------------------------------------------


def add_loadtest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        type=Path,
        nargs="?",
        default=None,
        metavar="FILE",
        help="a stream from giftledger generate (with FILE.expected.json) or giftledger record "
        "(checked without an expected end state); default: generate one. "
        "`loadtest compare A.json B.json`: compare two runs' loadtest.json",
    )
    parser.add_argument("reports", nargs="*", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--threshold-pct",
        type=threshold_pct,
        default=THRESHOLD_PCT_DEFAULT,
        metavar="PCT",
        help="compare: B is worse when a gated measure is worse by more than PCT percent "
        f"(default {THRESHOLD_PCT_DEFAULT:g})",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        metavar="N",
        help="generate a stream of N records (default 100000 when no FILE is given)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write the stream, summary.txt, loadtest.json and the charts "
        "(default: <data dir>/loadtest/<UTC time>)",
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=STALL_S_DEFAULT,
        metavar="S",
        help=f"give up waiting when nothing moves for S seconds (default {STALL_S_DEFAULT:g})",
    )
    add_pacing_arguments(parser, default="max")
    add_shape_arguments(parser)
    parser.epilog = (
        "Exit 0 only when the ledger matches the stream's expected end state and verify holds "
        "(a recorded stream: when its checks hold). `compare` exits 1 when B is worse than A, 2 "
        "when a report is unreadable. The publisher runs in a process of its own; as fast as "
        "possible (the default), send -> applied is mostly the wait behind the backlog: pace it "
        "with --rate N at a rate the pipeline sustains to see the service time. "
        "Uses DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS, or starts the embedded ones."
    )


EVENTS_DEFAULT = 100_000
COMPARE_WORD = Path("compare")  # `loadtest compare A B`; a stream file so named: `$PWD/compare`


def loadtest_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`giftledger loadtest [--events N] [FILE] [--rate N | --speed X | --max] [--out DIR]`, or
    `giftledger loadtest compare A.json B.json [--threshold-pct P]`."""
    out = out or sys.stdout  # at call time: the test harness may have replaced it
    if args.file == COMPARE_WORD:
        if len(args.reports) != 2:
            sys.stderr.write("giftledger: error: loadtest compare takes A.json B.json\n")
            return 2
        return compare_files(args.reports[0], args.reports[1], args.threshold_pct, out)
    if args.reports:
        sys.stderr.write(f"giftledger: error: unexpected arguments {args.reports}\n")
        return 2
    settings = get_settings()
    if args.file is not None and args.events is not None:
        sys.stderr.write("giftledger: error: give --events or FILE, not both\n")
        return 2
    if args.events is not None and args.events < 1:
        sys.stderr.write("giftledger: error: --events must be positive\n")
        return 2
    if args.stall_s <= 0:
        sys.stderr.write("giftledger: error: --stall-s must be positive\n")
        return 2
    events = args.events if args.file is None and args.events is not None else None
    if args.file is None and events is None:
        events = EVENTS_DEFAULT
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out or settings.data_dir / "loadtest" / stamp
    mode, speed, rate = pacing_from_arguments(args)
    try:
        shape = shape_from_arguments(args)
        report = asyncio.run(
            loadtest(
                settings,
                events=events,
                file=args.file,
                out_dir=out_dir,
                seed=args.seed,
                mode=mode,
                speed=speed,
                rate_per_s=rate,
                shape=shape,
                stall_s=args.stall_s,
                out=out,
            )
        )
    except (LoadtestError, PublisherError, StreamFormatError, ValueError) as error:
        sys.stderr.write(f"giftledger: error: {error}\n")
        return 2
    except (OSError, EOFError) as error:  # not a gzip file, cut short, a directory, missing
        sys.stderr.write(f"giftledger: error: {file_problem(error)}\n")
        return 2
    return 0 if report.matched else 1
