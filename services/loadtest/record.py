"""`giftledger record OUT.jsonl.gz`: record live topics into a stream file `replay` reads.

A consumer of its own (no consumer group, nothing committed upstream) is assigned every
partition of the chosen topics (default: every topic giftledger consumes, with the prefix in
front), seeks each to its start (`--from-offset N` or the earliest offset by default; or
`--from-time T`: the first offset at or after T, found with `offsets_for_times`) and reads up to
its stop (`--to-offset N`: stop before offset N, or at the partition's end offset when the
recording starts where that comes first, named in the report, `ended_before_stop`;
`--to-offset end`: the end offsets when the recording starts; `--to-time T`: the first offset at
or after T, else the end offsets at the start; neither: until Ctrl-C). The end offsets are read
once, at the start, waiting at most `HIGH_WATERMARK_WAIT_S`: a stop never waits for records that
were not there then.

Lines are written in the order of the records' Kafka timestamps, merged across partitions (ties
broken by topic, partition and offset); a partition's own order is always kept. With a stop the
merge waits for every unfinished partition to have a record in hand, so the file is the same
however the fetches fall; without one a partition with nothing new is not waited for. Each line
keeps the value's bytes, the key, the headers, the partition and offset read from, and the
original timestamp (`services.loadtest.stream_format`); `offset_ms` is the timestamp's distance
from the first record's, never decreasing.

Memory is bounded: at most `BUFFERED_PER_PARTITION_MAX` records are held per partition (a full
partition is paused) and lines are written every `flush_records` records or every
`FLUSH_INTERVAL_S`, each flush a complete gzip member appended to OUT. After each flush a
checkpoint, `OUT.record-checkpoint`, holds the file's size, the next offset of every partition
and the stops; `--resume` cuts OUT back to that size and continues from there, so an interrupted
recording resumed gives the same file as one that ran through. `--pseudonymise SALT` replaces
every id and every header value by a keyed hash (`services.loadtest.pseudonymise`).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import hmac
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from schemas.topics import CONSUMED_TOPICS
from services.cli_text import aware_timestamp
from services.ingestion.records import kafka_headers
from services.loadtest.pseudonymise import Pseudonymiser
from services.loadtest.stream_format import (
    GZIP_LEVEL,
    RecordedLine,
    StreamFormatError,
    file_problem,
    recorded_line,
)
from services.runtime.embedded_broker import wait_for_broker
from services.runtime.kafka_offsets import end_offsets
from services.runtime.settings import get_settings

CHECKPOINT_SUFFIX = ".record-checkpoint"
CHECKPOINT_VERSION = 1
FLUSH_RECORDS_DEFAULT = 2_000
FLUSH_RECORDS_MAX = 100_000
FLUSH_INTERVAL_S = 1.0
BUFFERED_PER_PARTITION_MAX = 2_000
FETCH_RECORDS_MAX = 5_000
FETCH_WAIT_MS = 200
PROGRESS_INTERVAL_S = 1.0
BROKER_WAIT_S = 30.0
HIGH_WATERMARK_WAIT_S = 30.0
SALT_CHECK_MESSAGE = b"giftledger record salt check"

OnFlush = Callable[[int], None]


class RecordError(ValueError):
    """The recording cannot start: bad options, a topic missing, a checkpoint that does not fit."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """Where to start and stop: at most one of each pair is set. No stop at all: until Ctrl-C."""

    from_offset: int | None = None  # None and no from_time: the earliest offset
    from_time: datetime | None = None
    to_offset: int | None = None
    to_end: bool = False  # the end offsets when the recording starts
    to_time: datetime | None = None

    @property
    def bounded(self) -> bool:
        return self.to_offset is not None or self.to_end or self.to_time is not None


@dataclass
class RecordCheckpoint:
    """What `OUT.record-checkpoint` holds: enough to continue exactly where the last flush was.
    Partitions are named `topic:partition` (the topic with its prefix)."""

    version: int
    out: str
    size_bytes: int
    records: int
    topic_prefix: str
    topics: list[str]
    next_offsets: dict[str, int]
    stop_offsets: dict[str, int | None]
    first_timestamp_ms: int | None
    last_offset_ms: int
    salt_check: str | None  # a keyed hash showing which salt pseudonymised the file, or None
    complete: bool = False
    updated_at: str = field(default="")
    # `--to-offset N` on partitions whose end at the start came first: their end offsets.
    ended_before_stop: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordReport:
    path: str
    records: int  # in the file, all runs together
    records_this_run: int
    complete: bool  # every partition reached its stop
    checkpoint: str
    # `--to-offset N` on partitions that held fewer records: their end offsets at the start,
    # where they stopped instead.
    ended_before_stop: dict[str, int]


def checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKPOINT_SUFFIX)


def read_record_checkpoint(path: Path) -> RecordCheckpoint | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        checkpoint = RecordCheckpoint(**document)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError) as error:
        raise StreamFormatError(f"{path} is not a record checkpoint: {error}") from error
    if checkpoint.version != CHECKPOINT_VERSION:
        raise StreamFormatError(f"{path}: checkpoint version {checkpoint.version!r}")
    return checkpoint


def _write_checkpoint(path: Path, checkpoint: RecordCheckpoint) -> None:
    checkpoint.updated_at = datetime.now().astimezone().isoformat()
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(asdict(checkpoint), indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)


def salt_check(salt: str | None) -> str | None:
    if salt is None:
        return None
    return hmac.new(salt.encode("utf-8"), SALT_CHECK_MESSAGE, hashlib.sha256).hexdigest()[:16]


def _name(partition: Any) -> str:
    return f"{partition.topic}:{partition.partition}"


def _partition(name: str) -> Any:
    topic, _, number = name.rpartition(":")
    return TopicPartition(topic, int(number))


# Finding where to start and stop ------------------------------------------------------------


async def _partitions(consumer: Any, names: list[str]) -> list[Any]:
    available = await consumer.topics()
    missing = [name for name in names if name not in available]
    if missing:
        raise RecordError(f"no such topics on the cluster: {', '.join(missing)}")
    found = []
    for name in names:
        numbers = consumer.partitions_for_topic(name) or set()
        found += [TopicPartition(name, number) for number in sorted(numbers)]
    return found


async def _offsets_at(
    consumer: Any, partitions: list[Any], moment: datetime, fallback: dict[Any, int]
) -> dict[Any, int]:
    """The first offset at or after `moment` per partition; `fallback` where there is none."""
    moment_ms = int(moment.timestamp() * 1000)
    found = await consumer.offsets_for_times(dict.fromkeys(partitions, moment_ms))
    return {
        partition: fallback[partition] if found.get(partition) is None else found[partition].offset
        for partition in partitions
    }


async def _start_and_stop(
    consumer: Any, partitions: list[Any], bounds: Bounds
) -> tuple[dict[Any, int], dict[Any, int | None], dict[Any, int]]:
    """Where each partition starts and stops, and the partitions whose end came before
    `--to-offset` (with their end offsets)."""
    beginning = await consumer.beginning_offsets(partitions)
    try:
        end = await end_offsets(consumer, partitions, HIGH_WATERMARK_WAIT_S)
    except TimeoutError as error:
        raise RecordError(
            f"no high watermark from the broker in {HIGH_WATERMARK_WAIT_S:g} s"
        ) from error
    if bounds.from_time is not None:
        start = await _offsets_at(consumer, partitions, bounds.from_time, end)
    elif bounds.from_offset is not None:
        start = {p: max(bounds.from_offset, beginning[p]) for p in partitions}
    else:
        start = dict(beginning)
    stop: dict[Any, int | None] = dict.fromkeys(partitions)
    ended: dict[Any, int] = {}
    if bounds.to_time is not None:
        stop.update(await _offsets_at(consumer, partitions, bounds.to_time, end))
    elif bounds.to_offset is not None:
        # Never past the end as it is now: records written later may never come.
        ended = {p: end[p] for p in partitions if end[p] < bounds.to_offset}
        stop = {p: min(bounds.to_offset, end[p]) for p in partitions}
    elif bounds.to_end:
        stop.update(end)
    return start, stop, ended


# Writing ------------------------------------------------------------------------------------


class _MemberWriter:
    """Appends lines to OUT, each flush one complete gzip member (fixed header: no name, no
    time), and says how long the file is after it."""

    def __init__(self, path: Path, size_bytes: int) -> None:
        self.path = path
        mode = "r+b" if size_bytes else "wb"
        self._file = path.open(mode)
        self._file.truncate(size_bytes)
        self._file.seek(size_bytes)
        self.size_bytes = size_bytes
        self.lines: list[str] = []

    def flush(self) -> None:
        if not self.lines:
            return
        data = ("\n".join(self.lines) + "\n").encode("utf-8")
        self._file.write(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.size_bytes = self._file.tell()
        self.lines.clear()

    def close(self) -> None:
        self._file.close()


# Recording ----------------------------------------------------------------------------------


class _Merge:
    """Records in hand per partition, oldest timestamp first across partitions."""

    def __init__(self, partitions: list[Any], stop: dict[Any, int | None]) -> None:
        self.buffers: dict[Any, deque[Any]] = {p: deque() for p in partitions}
        self.stop = stop
        self.open: set[Any] = set(partitions)  # not yet at their stop

    def take(self, fetched: dict[Any, list[Any]]) -> None:
        for partition, records in fetched.items():
            stop = self.stop[partition]
            for record in records:
                if stop is None or record.offset < stop:
                    self.buffers[partition].append(record)

    def full(self) -> list[Any]:
        return [p for p, items in self.buffers.items() if len(items) >= BUFFERED_PER_PARTITION_MAX]

    def next_record(self, quiet: set[Any]) -> Any | None:
        """The oldest record in hand, if no open partition (but a `quiet` one) could still
        bring an older one."""
        heads = []
        for partition in self.open:
            buffer = self.buffers[partition]
            if buffer:
                heads.append(buffer[0])
            elif partition not in quiet:
                return None
        if not heads:
            return None
        oldest = min(heads, key=lambda r: (r.timestamp, r.topic, r.partition, r.offset))
        return self.buffers[TopicPartition(oldest.topic, oldest.partition)].popleft()


async def record(
    out: Path,
    bootstrap_servers: str,
    *,
    topic_prefix: str = "",
    topics: list[str] | None = None,
    bounds: Bounds | None = None,
    salt: str | None = None,
    resume: bool = False,
    flush_records: int = FLUSH_RECORDS_DEFAULT,
    on_flush: OnFlush | None = None,
    progress: TextIO | None = None,
) -> RecordReport:
    """Record the topics into `out` (see the module's docstring) until every partition reaches
    its stop, or until cancelled (Ctrl-C): the lines in hand are written and the checkpoint saved
    either way. `on_flush(records)` is called after each checkpoint."""
    assert 1 <= flush_records <= FLUSH_RECORDS_MAX, flush_records
    bounds = bounds or Bounds()
    checkpoint_file = checkpoint_path(out)
    pseudonymiser = None if salt is None else Pseudonymiser(salt)
    previous = read_record_checkpoint(checkpoint_file) if resume else None
    if resume and previous is None:
        raise RecordError(f"--resume: {checkpoint_file} does not exist")
    if previous is not None and previous.salt_check != salt_check(salt):
        raise RecordError("--resume: give the same --pseudonymise SALT as the first run (or none)")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="giftledger-record",
    )
    await consumer.start()
    try:
        if previous is not None:
            checkpoint = previous
            partitions = [_partition(name) for name in checkpoint.next_offsets]
            start = {_partition(n): o for n, o in checkpoint.next_offsets.items()}
            stop = {_partition(n): o for n, o in checkpoint.stop_offsets.items()}
        else:
            names = [topic_prefix + topic for topic in (topics or list(CONSUMED_TOPICS))]
            partitions = await _partitions(consumer, names)
            start, stop, ended = await _start_and_stop(consumer, partitions, bounds)
            checkpoint = RecordCheckpoint(
                version=CHECKPOINT_VERSION,
                out=out.name,
                size_bytes=0,
                records=0,
                topic_prefix=topic_prefix,
                topics=names,
                next_offsets={_name(p): start[p] for p in partitions},
                stop_offsets={_name(p): stop[p] for p in partitions},
                first_timestamp_ms=None,
                last_offset_ms=0,
                salt_check=salt_check(salt),
                ended_before_stop={_name(p): ended[p] for p in partitions if p in ended},
            )
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, start[partition])
        writer = _MemberWriter(out, checkpoint.size_bytes)
        first_records = checkpoint.records
        try:
            loop = _Loop(
                consumer, writer, checkpoint, checkpoint_file, pseudonymiser, flush_records
            )
            await loop.run(_Merge(partitions, stop), on_flush, progress)
        finally:
            _flush(writer, checkpoint, checkpoint_file)
            writer.close()
    finally:
        await asyncio.shield(consumer.stop())
    return RecordReport(
        path=str(out),
        records=checkpoint.records,
        records_this_run=checkpoint.records - first_records,
        complete=checkpoint.complete,
        checkpoint=str(checkpoint_file),
        ended_before_stop=dict(checkpoint.ended_before_stop),
    )


ENDS_SHOWN_MAX = 10


def ended_before_stop_text(ends: dict[str, int]) -> str:
    """The partitions `--to-offset` stopped at their end, in one line."""
    shown = ", ".join(f"{name} at {end}" for name, end in list(ends.items())[:ENDS_SHOWN_MAX])
    more = f" and {len(ends) - ENDS_SHOWN_MAX} more" if len(ends) > ENDS_SHOWN_MAX else ""
    return (
        f"{len(ends)} partitions held fewer records than --to-offset asked for: each stopped at "
        f"its end offset as the recording started ({shown}{more})"
    )


def _flush(writer: _MemberWriter, checkpoint: RecordCheckpoint, checkpoint_file: Path) -> None:
    """Write the lines in hand, then the checkpoint that counts them."""
    writer.flush()
    checkpoint.size_bytes = writer.size_bytes
    _write_checkpoint(checkpoint_file, checkpoint)


@dataclass
class _Loop:
    """Fetch, merge, write and checkpoint until every partition is at its stop."""

    consumer: Any
    writer: _MemberWriter
    checkpoint: RecordCheckpoint
    checkpoint_file: Path
    pseudonymiser: Pseudonymiser | None
    flush_records: int
    last_flush: float = field(default_factory=time.monotonic)

    async def run(self, merge: _Merge, on_flush: OnFlush | None, progress: TextIO | None) -> None:
        consumer = self.consumer
        partitions = set(merge.buffers)
        bounded = all(value is not None for value in merge.stop.values())
        last_progress = time.monotonic()
        while True:
            await _close_finished(consumer, merge)
            if not merge.open:
                self.checkpoint.complete = True
                return
            fetched = await consumer.getmany(
                timeout_ms=FETCH_WAIT_MS, max_records=FETCH_RECORDS_MAX
            )
            merge.take(fetched)
            full = set(merge.full())
            consumer.pause(*full)
            consumer.resume(*(partitions - full))
            # Without stops, a partition that brought nothing this time is not waited for.
            quiet = set() if bounded else {p for p in merge.open if not fetched.get(p)}
            while (kafka_record := merge.next_record(quiet)) is not None:
                _emit(kafka_record, self.writer, self.checkpoint, self.pseudonymiser)
                if len(self.writer.lines) >= self.flush_records:
                    self.flush(on_flush)
            now = time.monotonic()
            if self.writer.lines and now - self.last_flush >= FLUSH_INTERVAL_S:
                self.flush(on_flush)
            if progress is not None and now - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = now
                done = len(partitions) - len(merge.open)
                progress.write(
                    f"\rrecord {self.checkpoint.records} records, "
                    f"{done}/{len(partitions)} partitions done"
                )
                progress.flush()

    def flush(self, on_flush: OnFlush | None) -> None:
        _flush(self.writer, self.checkpoint, self.checkpoint_file)
        self.last_flush = time.monotonic()
        if on_flush is not None:
            on_flush(self.checkpoint.records)


async def _close_finished(consumer: Any, merge: _Merge) -> None:
    """Partitions with nothing in hand whose position reached their stop are done."""
    for partition in list(merge.open):
        stop = merge.stop[partition]
        if stop is None or merge.buffers[partition]:
            continue
        if await consumer.position(partition) >= stop:
            merge.open.discard(partition)


def _emit(
    kafka_record: Any,
    writer: _MemberWriter,
    checkpoint: RecordCheckpoint,
    pseudonymiser: Pseudonymiser | None,
) -> None:
    timestamp_ms = int(kafka_record.timestamp)
    if checkpoint.first_timestamp_ms is None:
        checkpoint.first_timestamp_ms = timestamp_ms
    offset_ms = max(checkpoint.last_offset_ms, timestamp_ms - checkpoint.first_timestamp_ms)
    key: bytes | None = kafka_record.key
    value: bytes = kafka_record.value or b""
    topic = kafka_record.topic.removeprefix(checkpoint.topic_prefix)
    headers = kafka_headers(kafka_record.headers)
    if pseudonymiser is not None:
        key, value = pseudonymiser.key(key), pseudonymiser.value(value, topic)
        headers = pseudonymiser.headers(headers)
    line = RecordedLine(
        topic=topic,
        key=key,
        offset_ms=offset_ms,
        value=value,
        headers=headers,
        partition=kafka_record.partition,
        source_offset=kafka_record.offset,
        timestamp_ms=timestamp_ms,
    )
    writer.lines.append(recorded_line(line))
    checkpoint.records += 1
    checkpoint.last_offset_ms = offset_ms
    name = f"{kafka_record.topic}:{kafka_record.partition}"
    checkpoint.next_offsets[name] = kafka_record.offset + 1


# Command line --------------------------------------------------------------------------------


def _offset(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an offset: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"an offset is not negative: {value}")
    return number


def _stop_offset(value: str) -> int | str:
    return "end" if value == "end" else _offset(value)


def _flush_records(value: str) -> int:
    number = _offset(value)
    if not 1 <= number <= FLUSH_RECORDS_MAX:
        raise argparse.ArgumentTypeError(f"must be between 1 and {FLUSH_RECORDS_MAX}")
    return number


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT.jsonl.gz", help="the stream file to write")
    parser.add_argument(
        "--topics",
        default=None,
        metavar="T,...",
        help="the topics to record, without the prefix (default: every topic giftledger consumes)",
    )
    parser.add_argument(
        "--topic-prefix",
        default=None,
        metavar="P",
        help="the topics' prefix (default: KAFKA_TOPIC_PREFIX)",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-offset", type=_offset, default=None, metavar="N", help="start at offset N"
    )
    start.add_argument(
        "--from-time",
        type=aware_timestamp,
        default=None,
        metavar="ISO",
        help="start at the first record at or after this time",
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument(
        "--to-offset",
        type=_stop_offset,
        default=None,
        metavar="N|end",
        help="stop before offset N on each partition, or at its end offset as the recording "
        "starts where that comes first; 'end': at the end offsets of the start",
    )
    stop.add_argument(
        "--to-time",
        type=aware_timestamp,
        default=None,
        metavar="ISO",
        help="stop at the first record at or after this time",
    )
    parser.add_argument(
        "--pseudonymise",
        default=None,
        metavar="SALT",
        help="replace every id, key and header value by a keyed hash (HMAC-SHA256 with SALT)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue where OUT{CHECKPOINT_SUFFIX} says the last run stopped",
    )
    parser.add_argument(
        "--flush-records",
        type=_flush_records,
        default=FLUSH_RECORDS_DEFAULT,
        metavar="N",
        help=f"write and checkpoint every N records (default {FLUSH_RECORDS_DEFAULT})",
    )
    parser.epilog = (
        "Reads KAFKA_BOOTSTRAP_SERVERS (required) with a consumer of its own: no consumer group, "
        "nothing committed. Without --to-offset or --to-time it records until Ctrl-C."
    )


def bounds_from_arguments(args: argparse.Namespace) -> Bounds:
    to_offset = args.to_offset
    return Bounds(
        from_offset=args.from_offset,
        from_time=args.from_time,
        to_offset=to_offset if isinstance(to_offset, int) else None,
        to_end=to_offset == "end",
        to_time=args.to_time,
    )


def record_command(args: argparse.Namespace, err: TextIO = sys.stderr) -> int:
    """`giftledger record OUT.jsonl.gz [...]`; the exit code (0 also after Ctrl-C, with the
    checkpoint saved)."""
    settings = get_settings()
    servers = settings.kafka_bootstrap_servers
    if not servers:
        err.write("giftledger: error: KAFKA_BOOTSTRAP_SERVERS is not set: record reads from it\n")
        return 2
    prefix = settings.kafka_topic_prefix if args.topic_prefix is None else args.topic_prefix
    topics = None if args.topics is None else [t for t in args.topics.split(",") if t]

    async def run() -> RecordReport:
        await wait_for_broker(servers, BROKER_WAIT_S)
        return await record(
            args.out,
            servers,
            topic_prefix=prefix,
            topics=topics,
            bounds=bounds_from_arguments(args),
            salt=args.pseudonymise,
            resume=args.resume,
            flush_records=args.flush_records,
            progress=err,
        )

    try:
        report = asyncio.run(run())
    except KeyboardInterrupt:
        checkpoint = read_record_checkpoint(checkpoint_path(args.out))
        count = 0 if checkpoint is None else checkpoint.records
        err.write(f"\nstopped: {count} records in {args.out}; --resume continues\n")
        return 0
    except (RecordError, StreamFormatError, ValueError) as error:
        err.write(f"giftledger: error: {error}\n")
        return 2
    except (OSError, EOFError) as error:  # OUT cannot be written, or was removed under --resume
        err.write(f"giftledger: error: {args.out}: {file_problem(error)}\n")
        return 2
    state = "complete" if report.complete else "stopped"
    err.write(
        f"\n{state}: {report.records} records in {report.path} ({report.records_this_run} "
        f"this run; checkpoint {report.checkpoint})\n"
    )
    if report.ended_before_stop:
        err.write(ended_before_stop_text(report.ended_before_stop) + "\n")
    return 0
