"""The replayer against the session's broker: every record with its key and bytes, the three
pacings, and resuming from the checkpoint. Records on the topics are counted with a plain
aiokafka consumer, from the start of each topic."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

from schemas import topics
from schemas.topics import all_topics
from services.loadtest.generator import generate
from services.loadtest.replay import (
    ReplayReport,
    add_replay_arguments,
    checkpoint_path,
    pacing_from_arguments,
    read_checkpoint,
    read_stream,
    replay,
)
from services.loadtest.stream_format import (
    RecordedLine,
    StreamFormatError,
    StreamShape,
    recorded_line,
)
from services.runtime.embedded_broker import create_topics

PARTITION_COUNT = 2
READ_WAIT_S = 30.0
QUIET_S = 1.5


async def fresh_prefix(bootstrap_servers: str) -> str:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    await create_topics(bootstrap_servers, all_topics(prefix), PARTITION_COUNT)
    return prefix


async def read_records(bootstrap_servers: str, prefix: str, expected_count: int) -> list[Any]:
    """Every record on the prefix's consumed topics: until `expected_count` are there and
    nothing more arrives for a moment (to see extra records too), or a deadline."""
    consumer = AIOKafkaConsumer(
        *(prefix + topic for topic in topics.CONSUMED_TOPICS),
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + READ_WAIT_S
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            fetched = [record for batch in batches.values() for record in batch]
            records += fetched
            if fetched:
                quiet_since = time.monotonic()
            elif len(records) >= expected_count and time.monotonic() - quiet_since > QUIET_S:
                break
    finally:
        await consumer.stop()
    return records


def file_records(path: Path) -> Counter[tuple[str, bytes | None, bytes]]:
    return Counter((record.topic, record.key, record.value) for record in read_stream(path))


def topic_records(records: list[Any], prefix: str) -> Counter[tuple[str, bytes | None, bytes]]:
    return Counter(
        (record.topic.removeprefix(prefix), record.key, record.value) for record in records
    )


@pytest.fixture(scope="module")
def small_stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 records over about 10 recorded seconds (100 a second on average, in bursts)."""
    path = tmp_path_factory.mktemp("replay") / "stream.jsonl.gz"
    generate(path, events=1_500, seed=21, shape=StreamShape(events_per_s=100.0))
    return path


@pytest.fixture
def stream_copy(small_stream: Path, tmp_path: Path) -> Path:
    """The small stream in a directory of its own, for a checkpoint of its own."""
    path = tmp_path / "stream.jsonl.gz"
    path.write_bytes(small_stream.read_bytes())
    return path


def recorded_duration_s(path: Path) -> float:
    offsets = [record.offset_ms for record in read_stream(path)]
    return (offsets[-1] - offsets[0]) / 1000


async def test_max_mode_publishes_every_record_with_its_key_and_bytes(
    kafka_bootstrap: str, small_stream: Path, tmp_path: Path
) -> None:
    prefix = await fresh_prefix(kafka_bootstrap)
    report = await replay(
        small_stream,
        kafka_bootstrap,
        topic_prefix=prefix,
        mode="max",
        checkpoint_file=tmp_path / "checkpoint",
    )
    assert report.records_published == report.records_acknowledged == report.records_total
    on_topics = await read_records(kafka_bootstrap, prefix, report.records_total)
    assert topic_records(on_topics, prefix) == file_records(small_stream)
    checkpoint = read_checkpoint(tmp_path / "checkpoint")
    assert checkpoint is not None
    assert checkpoint.complete
    assert checkpoint.records_acknowledged == 1_500


async def test_recorded_timing_at_speed_10_takes_a_tenth_of_the_recording(
    kafka_bootstrap: str, small_stream: Path, tmp_path: Path
) -> None:
    prefix = await fresh_prefix(kafka_bootstrap)
    report = await replay(
        small_stream,
        kafka_bootstrap,
        topic_prefix=prefix,
        mode="recorded",
        speed=10.0,
        checkpoint_file=tmp_path / "checkpoint",
    )
    wanted_s = recorded_duration_s(small_stream) / 10
    assert wanted_s > 0.6
    # Not ahead of the schedule; behind it only by what a busy machine's broker takes (the
    # schedule at speed 1 would take ten times `wanted_s`).
    assert wanted_s * 0.9 <= report.elapsed_s <= wanted_s * 5, (wanted_s, report)


async def test_rate_mode_publishes_at_about_the_rate(
    kafka_bootstrap: str, small_stream: Path, tmp_path: Path
) -> None:
    prefix = await fresh_prefix(kafka_bootstrap)
    report = await replay(
        small_stream,
        kafka_bootstrap,
        topic_prefix=prefix,
        mode="rate",
        rate_per_s=1_000,
        checkpoint_file=tmp_path / "checkpoint",
    )
    assert report.records_published == 1_500
    # Never faster than the rate; slower only by what a busy machine's broker takes (a tenth of
    # the rate would take 15 s).
    assert 1.35 <= report.elapsed_s <= 7.5, report
    assert report.records_per_s <= 1_100


async def test_max_mode_outruns_the_recorded_timing(
    kafka_bootstrap: str, small_stream: Path, tmp_path: Path
) -> None:
    prefix = await fresh_prefix(kafka_bootstrap)
    report = await replay(
        small_stream,
        kafka_bootstrap,
        topic_prefix=prefix,
        mode="max",
        checkpoint_file=tmp_path / "checkpoint",
    )
    # The recording spans about 10 s: max mode does not wait for it. (How fast the broker takes
    # the records is the benchmarks' business, not a test's.)
    assert report.elapsed_s < recorded_duration_s(small_stream) / 2, report


async def test_resuming_from_the_checkpoint_publishes_only_the_rest(
    kafka_bootstrap: str, stream_copy: Path
) -> None:
    stream = stream_copy
    prefix = await fresh_prefix(kafka_bootstrap)
    first = await replay(
        stream,
        kafka_bootstrap,
        topic_prefix=prefix,
        mode="max",
        stop_at=600,
        checkpoint_every=100,
    )
    checkpoint = read_checkpoint(checkpoint_path(stream))
    assert checkpoint is not None
    assert (checkpoint.records_acknowledged, checkpoint.complete) == (600, False)
    assert first.records_published == 600
    second = await replay(
        stream,
        kafka_bootstrap,
        topic_prefix=prefix,
        mode="max",
        resume_from=checkpoint.records_acknowledged,
    )
    assert (second.first_index, second.records_published) == (600, 900)
    on_topics = await read_records(kafka_bootstrap, prefix, 1_500)
    assert topic_records(on_topics, prefix) == file_records(stream)
    done = read_checkpoint(checkpoint_path(stream))
    assert done is not None
    assert done.complete


async def test_an_interrupted_replay_checkpoints_what_the_cluster_acknowledged(
    kafka_bootstrap: str, small_stream: Path, tmp_path: Path
) -> None:
    """Cancelled mid-way: the checkpoint never claims a record the cluster does not hold, and a
    resumed replay completes the stream (at least once: records sent after the checkpoint may
    come twice)."""
    prefix = await fresh_prefix(kafka_bootstrap)
    checkpoint_file = tmp_path / "checkpoint"
    task = asyncio.create_task(
        replay(
            small_stream,
            kafka_bootstrap,
            topic_prefix=prefix,
            mode="rate",
            rate_per_s=500,
            checkpoint_every=50,
            checkpoint_file=checkpoint_file,
        )
    )
    await asyncio.sleep(1.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    checkpoint = read_checkpoint(checkpoint_file)
    assert checkpoint is not None
    assert 0 < checkpoint.records_acknowledged < 1_500
    held = await read_records(kafka_bootstrap, prefix, checkpoint.records_acknowledged)
    assert len(held) >= checkpoint.records_acknowledged
    assert not checkpoint.complete
    resumed: ReplayReport = await replay(
        small_stream,
        kafka_bootstrap,
        topic_prefix=prefix,
        mode="max",
        resume_from=checkpoint.records_acknowledged,
        checkpoint_file=checkpoint_file,
    )
    assert resumed.records_acknowledged == 1_500
    on_topics = topic_records(await read_records(kafka_bootstrap, prefix, 1_500), prefix)
    wanted = file_records(small_stream)
    assert +(wanted - on_topics) == Counter()
    assert sum((on_topics - wanted).values()) <= len(held) - checkpoint.records_acknowledged


def test_a_line_that_is_not_a_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"topic":"gifts.sent","key":"c","offset_ms":0}\n'))
    with pytest.raises(StreamFormatError, match="line 1"):
        list(read_stream(path))


def test_a_recorded_lines_headers_read_back_as_they_came(tmp_path: Path) -> None:
    """A header's value may be null, empty or any bytes: a recording keeps each as it is."""
    headers = (("trace", None), ("span", b"\xff\x00binary"), ("empty", b""), ("text", b"t-1"))
    line = recorded_line(RecordedLine(topics.GIFTS_SENT, b"c1", 0, b"{}", headers, 3, 7, 0))
    path = tmp_path / "recorded.jsonl.gz"
    path.write_bytes(gzip.compress(line.encode() + b"\n"))
    [record] = list(read_stream(path))
    assert record.headers == headers


def test_pacing_options_are_exclusive() -> None:
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    assert pacing_from_arguments(parser.parse_args(["f"])) == ("recorded", 1.0, None)
    assert pacing_from_arguments(parser.parse_args(["f", "--speed", "4"])) == (
        "recorded",
        4.0,
        None,
    )
    assert pacing_from_arguments(parser.parse_args(["f", "--rate", "300"])) == ("rate", 1.0, 300)
    assert pacing_from_arguments(parser.parse_args(["f", "--max"])) == ("max", 1.0, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["f", "--rate", "3", "--speed", "2"])
