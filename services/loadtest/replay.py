"""`giftledger replay FILE`: publish a generated stream to any Kafka cluster, resumably.

Records go out with their key, their headers (a recorded stream keeps them) and their exact bytes
(see `services.loadtest.stream_format` for the file format), each to `<prefix><topic>` (`--map
FROM=TO` sends a topic of the file to another name, `--topic-prefix P` puts another prefix in
front: aiming at another deployment), through one aiokafka producer (linger 10 ms, batches
up to 256 KB, `acks=all`). Three pacings:

- `recorded`: the stream's own timing (`offset_ms`), scaled by `speed` (2.0: twice as fast);
- `rate`: a fixed number of records a second, through a token bucket (bursts of at most 100 ms
  worth of records);
- `max`: as fast as the producer and the broker take them.

In-flight sends are bounded (`in_flight_max`): past that, the replayer waits for the oldest
acknowledgement before sending more. Acknowledgements are counted as a prefix of the stream (the
first N records all acknowledged), and every `checkpoint_every` records that count is written to
`<FILE>.replay-checkpoint` (atomically: a temporary file, then a rename). The count is written
again when the replay ends, stops on an error or is cancelled, after the records in flight have
been flushed. `resume_from=N` (or `giftledger replay --resume`, which reads the checkpoint) skips
the first N records. Delivery is at least once: records sent after the last checkpoint but before
a crash are sent again on resume, and giftledger's consumers take them as duplicates.

Timing in `recorded` mode starts at the first record replayed: resuming does not wait through the
part of the stream already sent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import gzip
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from schemas.topics import all_topics
from services.cli_text import positive_int
from services.ingestion.records import Header
from services.loadtest.stream_format import StreamFormatError, expected_path, file_problem
from services.runtime.embedded_broker import create_topics, wait_for_broker
from services.runtime.settings import Settings, get_settings

ReplayMode = Literal["recorded", "rate", "max"]
REPLAY_MODES: tuple[ReplayMode, ...] = ("recorded", "rate", "max")

CHECKPOINT_SUFFIX = ".replay-checkpoint"
CHECKPOINT_EVERY_DEFAULT = 10_000
IN_FLIGHT_MAX_DEFAULT = 20_000
PROGRESS_EVERY = 1_000
YIELD_EVERY = 64
PRODUCER_LINGER_MS = 10
PRODUCER_BATCH_BYTES = 256 * 1024
PRODUCER_REQUEST_TIMEOUT_MS = 30_000
BURST_S = 0.1
SLEEP_THRESHOLD_S = 0.001
SPEED_MAX = 1_000_000.0
RATE_PER_S_MAX = 10_000_000
BROKER_WAIT_S = 30.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One line of a stream file, ready to send."""

    index: int  # position in the file, from 0
    topic: str  # the contract's name, without prefix
    key: bytes | None
    offset_ms: int
    value: bytes
    headers: tuple[Header, ...] = ()  # recorded streams only


def _decode(index: int, text: str, encoding: object) -> bytes:
    if encoding == "base64":
        return base64.b64decode(text, validate=True)
    if encoding is None:
        return text.encode("utf-8")
    raise StreamFormatError(f"line {index + 1}: unknown encoding {encoding!r}")


def _parse_headers(index: int, headers: object) -> tuple[Header, ...]:
    if headers is None:
        return ()
    if not isinstance(headers, list) or not all(
        isinstance(pair, list)
        and len(pair) == 2
        and isinstance(pair[0], str)
        and (pair[1] is None or isinstance(pair[1], str))
        for pair in headers
    ):
        raise StreamFormatError(f"line {index + 1}: headers must be [name, base64 or null] pairs")
    return tuple(
        (name, None if value is None else base64.b64decode(value, validate=True))
        for name, value in headers
    )


def _parse_line(index: int, line: str) -> StreamRecord:
    try:
        document = json.loads(line)
        topic = document["topic"]
        key = document["key"]
        offset_ms = document["offset_ms"]
        value = document["value"]
        encoding = document.get("encoding")
        key_encoding = document.get("key_encoding")
        headers = document.get("headers")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise StreamFormatError(f"line {index + 1}: not a stream record ({error!r})") from error
    if not isinstance(topic, str) or not isinstance(value, str) or not isinstance(offset_ms, int):
        raise StreamFormatError(f"line {index + 1}: topic, value or offset_ms of the wrong type")
    if key is not None and not isinstance(key, str):
        raise StreamFormatError(f"line {index + 1}: key must be a string or null")
    try:
        payload = _decode(index, value, encoding)
        key_bytes = None if key is None else _decode(index, key, key_encoding)
        header_pairs = _parse_headers(index, headers)
    except binascii.Error as error:
        raise StreamFormatError(f"line {index + 1}: bad base64 ({error})") from error
    return StreamRecord(index, topic, key_bytes, offset_ms, payload, header_pairs)


def read_stream(path: Path, start: int = 0, stop: int | None = None) -> Iterator[StreamRecord]:
    """The records of a stream file from index `start` up to (not including) `stop`, read as
    they are needed: memory does not grow with the file."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            if stop is not None and index >= stop:
                return
            if index < start:
                continue
            yield _parse_line(index, line)


def count_records(path: Path) -> int:
    """How many records the stream holds: from its expected state when there is one, else by
    reading it through."""
    expected = expected_path(path)
    if expected.exists():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            records = json.loads(expected.read_text(encoding="utf-8"))["records"]
            if isinstance(records, int):
                return records
    with gzip.open(path, "rb") as stream:
        return sum(1 for _ in stream)


# Checkpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a replay of one file got: the first `records_acknowledged` records are on the
    cluster (acknowledged by it)."""

    stream: str
    records_acknowledged: int
    records_total: int
    complete: bool
    bootstrap_servers: str
    topic_prefix: str
    updated_at: str


def checkpoint_path(path: Path) -> Path:
    """The default checkpoint file of the stream at `path`."""
    return path.with_name(path.name + CHECKPOINT_SUFFIX)


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint file at `path` (pass `checkpoint_path(stream)`), or None if there is none."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return Checkpoint(**document)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError) as error:
        raise StreamFormatError(f"{path} is not a replay checkpoint: {error}") from error


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(asdict(checkpoint), indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)


# Pacing --------------------------------------------------------------------------------------


class _Pacer:
    """When the next record may go: recorded timing, a token bucket, or never wait."""

    def __init__(self, mode: ReplayMode, speed: float, rate_per_s: int | None) -> None:
        self.mode = mode
        self.speed = speed
        self.rate_per_s = float(rate_per_s or 0)
        self.capacity = max(1.0, self.rate_per_s * BURST_S)
        self.tokens = 0.0
        self.started: float | None = None
        self.base_offset_ms = 0
        self.last_refill = 0.0
        self.behind_s_max = 0.0

    async def wait(self, record: StreamRecord) -> None:
        if self.mode == "max":
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.started is None:
            self.started, self.base_offset_ms, self.last_refill = now, record.offset_ms, now
            self.tokens = 1.0
        if self.mode == "recorded":
            due = self.started + (record.offset_ms - self.base_offset_ms) / 1000.0 / self.speed
            ahead_s = due - now
            if ahead_s > SLEEP_THRESHOLD_S:
                await asyncio.sleep(ahead_s)
            else:
                self.behind_s_max = max(self.behind_s_max, -ahead_s)
            return
        self.tokens = min(self.capacity, self.tokens + (now - self.last_refill) * self.rate_per_s)
        self.last_refill = now
        if self.tokens < 1.0:
            await asyncio.sleep((1.0 - self.tokens) / self.rate_per_s)
            now = loop.time()
            self.tokens = min(
                self.capacity, self.tokens + (now - self.last_refill) * self.rate_per_s
            )
            self.last_refill = now
        self.tokens -= 1.0


# Replaying -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayReport:
    path: str
    mode: ReplayMode
    first_index: int  # the first record replayed
    records_published: int  # records sent and acknowledged by this call
    records_acknowledged: int  # the prefix of the stream now on the cluster (the checkpoint)
    records_total: int
    elapsed_s: float  # from the first send to the last acknowledgement
    behind_schedule_ms_max: float  # recorded mode: how late the worst record went out
    checkpoint: str

    @property
    def records_per_s(self) -> float:
        return self.records_published / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _check_pacing(mode: ReplayMode, speed: float, rate_per_s: int | None) -> None:
    if mode not in REPLAY_MODES:
        raise ValueError(f"mode must be one of {REPLAY_MODES}, got {mode!r}")
    if not 0 < speed <= SPEED_MAX:
        raise ValueError(f"speed must be in (0, {SPEED_MAX:g}], got {speed}")
    if mode == "rate" and (rate_per_s is None or not 1 <= rate_per_s <= RATE_PER_S_MAX):
        raise ValueError(f"rate mode needs rate_per_s between 1 and {RATE_PER_S_MAX}")


def new_producer(bootstrap_servers: str) -> Any:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id="giftledger-replay",
        acks="all",
        linger_ms=PRODUCER_LINGER_MS,
        max_batch_size=PRODUCER_BATCH_BYTES,
        request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS,
    )


class _Acknowledgements:
    """Sends in flight, oldest first; counts the prefix of the stream acknowledged."""

    def __init__(self, first_index: int) -> None:
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.acknowledged = first_index

    def collect_done(self, *, strict: bool = True) -> None:
        """Count the acknowledged prefix. A failed send raises its error (`strict`), or ends the
        prefix there (not `strict`: after a failure, to save what is known to be on the
        cluster)."""
        pending = self.pending
        while pending and pending[0].done():
            future = pending[0]
            if not strict and (future.cancelled() or future.exception() is not None):
                return
            pending.popleft().result()
            self.acknowledged += 1

    async def wait_oldest(self) -> None:
        await self.pending[0]
        self.collect_done()

    async def wait_all(self) -> None:
        while self.pending:
            await self.wait_oldest()


async def replay(
    path: Path,
    bootstrap_servers: str,
    *,
    topic_prefix: str,
    mode: ReplayMode,
    speed: float = 1.0,
    rate_per_s: int | None = None,
    resume_from: int = 0,
    stop_at: int | None = None,
    progress: Progress | None = None,
    on_send: Callable[[StreamRecord], None] | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY_DEFAULT,
    checkpoint_file: Path | None = None,
    in_flight_max: int = IN_FLIGHT_MAX_DEFAULT,
    topic_map: dict[str, str] | None = None,
) -> ReplayReport:
    """Publish the records of `path` from index `resume_from` up to `stop_at` (default: the end).

    `progress(done, total)` is called every 1,000 records and at the end, with `done` the index
    reached in the file. `on_send(record)` is called right after each record is handed to the
    producer (the load test samples send times there). Raises the producer's error if a send
    fails; the checkpoint then holds the acknowledged prefix, to resume from. `topic_map` sends
    a topic of the file to another name (before the prefix goes in front); keys and headers go
    out as recorded.
    """
    _check_pacing(mode, speed, rate_per_s)
    assert 1 <= checkpoint_every <= 100_000_000, checkpoint_every
    assert 1 <= in_flight_max <= 10_000_000, in_flight_max
    total = count_records(path)
    end = total if stop_at is None else min(stop_at, total)
    if not 0 <= resume_from <= end:
        raise ValueError(f"resume_from {resume_from} is outside the stream's 0..{end}")
    checkpoint_file = checkpoint_file or checkpoint_path(path)
    pacer = _Pacer(mode, speed, rate_per_s)
    acknowledgements = _Acknowledgements(resume_from)
    last_checkpoint = resume_from
    first_send: float | None = None

    def save() -> None:
        acknowledged = acknowledgements.acknowledged
        write_checkpoint(
            checkpoint_file,
            Checkpoint(
                stream=path.name,
                records_acknowledged=acknowledged,
                records_total=total,
                complete=acknowledged >= total,
                bootstrap_servers=bootstrap_servers,
                topic_prefix=topic_prefix,
                updated_at=datetime.now(UTC).isoformat(),
            ),
        )

    producer = new_producer(bootstrap_servers)
    await producer.start()
    try:
        for record in read_stream(path, resume_from, end):
            await pacer.wait(record)
            if first_send is None:
                first_send = time.perf_counter()
            topic = topic_map.get(record.topic, record.topic) if topic_map else record.topic
            future = await producer.send(
                topic_prefix + topic,
                value=record.value,
                key=record.key,
                headers=list(record.headers) or None,
            )
            acknowledgements.pending.append(future)
            if on_send is not None:
                on_send(record)
            acknowledgements.collect_done()
            if len(acknowledgements.pending) >= in_flight_max:
                await acknowledgements.wait_oldest()
            elif (record.index + 1) % YIELD_EVERY == 0:
                # aiokafka's send() returns without yielding while its batch has room: let the
                # rest of the event loop (consumers in the same process) run now and then.
                await asyncio.sleep(0)
            if acknowledgements.acknowledged - last_checkpoint >= checkpoint_every:
                save()
                last_checkpoint = acknowledgements.acknowledged
            if progress is not None and (record.index + 1) % PROGRESS_EVERY == 0:
                progress(record.index + 1, total)
        await producer.flush()
        await acknowledgements.wait_all()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(producer.stop())  # sends what is queued, then closes
        acknowledgements.collect_done(strict=False)
        save()
    elapsed_s = 0.0 if first_send is None else time.perf_counter() - first_send
    if progress is not None:
        progress(end, total)
    return ReplayReport(
        path=str(path),
        mode=mode,
        first_index=resume_from,
        records_published=acknowledgements.acknowledged - resume_from,
        records_acknowledged=acknowledgements.acknowledged,
        records_total=total,
        elapsed_s=elapsed_s,
        behind_schedule_ms_max=pacer.behind_s_max * 1000.0,
        checkpoint=str(checkpoint_file),
    )


# Command line --------------------------------------------------------------------------------


def _speed(value: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from error
    if not 0 < number <= SPEED_MAX:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, {SPEED_MAX:g}]")
    return number


def add_pacing_arguments(parser: argparse.ArgumentParser, *, default: ReplayMode) -> None:
    """`--rate N | --speed X | --max`, shared by `replay` and `loadtest`."""
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--rate", type=positive_int, default=None, metavar="N", help="N records a second"
    )
    pacing.add_argument(
        "--speed",
        type=_speed,
        default=None,
        metavar="X",
        help="the recorded timing, X times faster (2: twice as fast)",
    )
    pacing.add_argument("--max", action="store_true", help="as fast as the broker takes them")
    parser.set_defaults(default_pacing=default)


def pacing_from_arguments(args: argparse.Namespace) -> tuple[ReplayMode, float, int | None]:
    """(mode, speed, rate_per_s) chosen by `add_pacing_arguments`' options."""
    if args.rate is not None:
        return "rate", 1.0, int(args.rate)
    if args.speed is not None:
        return "recorded", float(args.speed), None
    if args.max:
        return "max", 1.0, None
    mode: ReplayMode = args.default_pacing
    return mode, 1.0, None


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="FILE", help="a stream from giftledger generate")
    add_pacing_arguments(parser, default="recorded")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue after the records FILE{CHECKPOINT_SUFFIX} says were acknowledged",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=CHECKPOINT_EVERY_DEFAULT,
        metavar="N",
        help=f"write the checkpoint every N records (default {CHECKPOINT_EVERY_DEFAULT})",
    )
    parser.add_argument(
        "--topic-prefix",
        default=None,
        metavar="P",
        help="put P in front of every topic (default: KAFKA_TOPIC_PREFIX)",
    )
    parser.add_argument(
        "--map",
        type=_topic_mapping,
        action="append",
        default=[],
        metavar="FROM=TO",
        help="send the file's topic FROM to TO instead (repeatable; the prefix still goes first)",
    )
    parser.epilog = (
        "Publishes to KAFKA_BOOTSTRAP_SERVERS (required) with KAFKA_TOPIC_PREFIX (or "
        "--topic-prefix) in front of each topic, with the keys and headers the file holds; "
        "creates missing topics with KAFKA_PARTITION_COUNT partitions. Default pacing: the "
        "recorded timing (--speed 1)."
    )


TOPIC_NAME_LENGTH_MAX = 249


def _topic_mapping(value: str) -> tuple[str, str]:
    source, separator, target = value.partition("=")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    for name in (source, target):
        if not separator or not 1 <= len(name) <= TOPIC_NAME_LENGTH_MAX or not set(name) <= allowed:
            raise argparse.ArgumentTypeError(f"{value!r} is not FROM=TO with two topic names")
    return source, target


def _progress_printer(out: TextIO) -> Progress:
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= 1.0:
            last[0] = now
            out.write(f"\rreplay {done}/{total}")
            if done >= total:
                out.write("\n")
            out.flush()

    return show


async def replay_with_settings(
    settings: Settings, path: Path, args: argparse.Namespace, out: TextIO
) -> int:
    servers = settings.kafka_bootstrap_servers
    if not servers:
        sys.stderr.write(
            "giftledger: error: KAFKA_BOOTSTRAP_SERVERS is not set: replay publishes to a running "
            "cluster (giftledger loadtest starts an embedded one)\n"
        )
        return 2
    prefix = settings.kafka_topic_prefix if args.topic_prefix is None else args.topic_prefix
    topic_map = dict(args.map)
    resume_from = 0
    if args.resume:
        checkpoint = read_checkpoint(checkpoint_path(path))
        if checkpoint is not None:
            resume_from = checkpoint.records_acknowledged
            if (checkpoint.bootstrap_servers, checkpoint.topic_prefix) != (
                servers,
                prefix,
            ):
                out.write(
                    f"note: the checkpoint was written for {checkpoint.bootstrap_servers} "
                    f"prefix {checkpoint.topic_prefix!r}\n"
                )
    await wait_for_broker(servers, BROKER_WAIT_S)
    names = set(all_topics(prefix)) | {prefix + target for target in topic_map.values()}
    await create_topics(servers, sorted(names), settings.kafka_partition_count)
    mode, speed, rate = pacing_from_arguments(args)
    report = await replay(
        path,
        servers,
        topic_prefix=prefix,
        mode=mode,
        speed=speed,
        rate_per_s=rate,
        resume_from=resume_from,
        progress=_progress_printer(out),
        checkpoint_every=args.checkpoint_every,
        topic_map=topic_map,
    )
    out.write(
        f"published {report.records_published} records from index {report.first_index} in "
        f"{report.elapsed_s:.1f} s ({report.records_per_s:,.0f}/s); "
        f"{report.records_acknowledged}/{report.records_total} acknowledged "
        f"(checkpoint {report.checkpoint})\n"
    )
    return 0


def replay_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`giftledger replay FILE [--rate N | --speed X | --max] [--resume] [--topic-prefix P]
    [--map FROM=TO ...]`; the exit code."""
    try:
        return asyncio.run(replay_with_settings(get_settings(), args.path, args, out))
    except (StreamFormatError, ValueError) as error:
        sys.stderr.write(f"giftledger: error: {error}\n")
        return 2
    except (OSError, EOFError) as error:  # not a gzip file, cut short, a directory, missing
        sys.stderr.write(f"giftledger: error: {args.path}: {file_problem(error)}\n")
        return 2
