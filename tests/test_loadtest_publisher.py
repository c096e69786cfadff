"""The load test's publisher in a process of its own, and what the load test reports about its
phases: a range of a generated stream published from a publisher process lands on the broker
record for record, with its progress, sampled send times and timing back in the load test's
process; a paced load test names its phases, times the publisher and each topic's batches, and
reaches its expected end state."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from schemas import topics
from schemas.topics import all_topics
from services.loadtest.generator import generate
from services.loadtest.measurements import EVENT_ID_PATTERN, Latency, Sample, SendTimes
from services.loadtest.publisher import PublisherError, PublishRequest, publish_from_process
from services.loadtest.replay import read_stream
from services.loadtest.report import (
    KEPT_UP_DRAIN_S,
    LoadtestReport,
    Phase,
    add_measurements,
    write_outputs,
)
from services.loadtest.run import loadtest
from services.loadtest.stream_format import StreamShape, load_expected
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import Settings

STREAM_RECORDS = 2_000
PUBLISHED_RANGE = (500, 1_700)
PARTITIONS = 2
READ_BACK_S = 30.0


async def read_back(bootstrap: str, prefix: str, expected_total: int) -> Counter[str]:
    """Records per topic (without the prefix) on the consumed topics under `prefix`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    counts: Counter[str] = Counter()
    try:
        partitions = [
            TopicPartition(prefix + topic, partition)
            for topic in topics.CONSUMED_TOPICS
            for partition in range(PARTITIONS)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + READ_BACK_S
        while sum(counts.values()) < expected_total and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for partition, records in batches.items():
                counts[partition.topic.removeprefix(prefix)] += len(records)
    finally:
        await consumer.stop()
    return counts


async def test_a_publisher_process_publishes_its_range_and_reports_back(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stream = tmp_path / "stream.jsonl.gz"
    generate(stream, events=STREAM_RECORDS, seed=5, shape=StreamShape(creator_count=30))
    prefix = f"pub{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITIONS)
    start, stop = PUBLISHED_RANGE
    send_times = SendTimes()
    send_times.published = 7  # an earlier phase's records: the count goes on from there
    request = PublishRequest(
        stream=stream,
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=prefix,
        mode="max",
        speed=1.0,
        rate_per_s=None,
        start=start,
        stop=stop,
        checkpoint_file=tmp_path / "checkpoint",
        send_times_file=tmp_path / "send-times.json",
    )
    wall_before, before = time.time(), time.monotonic()
    timing = await publish_from_process(request, send_times)
    wall_after, after = time.time(), time.monotonic()

    assert timing.records == stop - start
    assert send_times.published == 7 + stop - start
    assert before < timing.first_send_t <= timing.done_t <= after
    assert timing.elapsed_s > 0
    assert timing.cpu_s > 0
    assert send_times.publishes == [timing]
    checkpoint = json.loads((tmp_path / "checkpoint").read_text())
    assert checkpoint["records_acknowledged"] == stop

    in_range = list(read_stream(stream, start, stop))
    sampled_ids = {key[1] for key in send_times.times}
    assert sampled_ids, "about one event in 100 is sampled"
    found = (EVENT_ID_PATTERN.search(record.value, 0, 512) for record in in_range)
    assert sampled_ids <= {match.group(1).decode() for match in found if match is not None}
    assert all(wall_before <= sent_at <= wall_after for sent_at in send_times.times.values())

    expected = Counter(record.topic for record in in_range)
    assert await read_back(kafka_bootstrap, prefix, stop - start) == expected


async def test_a_publisher_that_fails_fails_the_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    request = PublishRequest(
        stream=tmp_path / "missing.jsonl.gz",
        bootstrap_servers=kafka_bootstrap,
        topic_prefix="missing.",
        mode="max",
        speed=1.0,
        rate_per_s=None,
        start=0,
        stop=None,
        checkpoint_file=tmp_path / "checkpoint",
        send_times_file=tmp_path / "send-times.json",
    )
    send_times = SendTimes()
    with pytest.raises(PublisherError, match="exited with 1"):
        await asyncio.wait_for(publish_from_process(request, send_times), 60)
    assert send_times.publishes == []


def report_with(mode: str, phases: list[Phase]) -> LoadtestReport:
    return LoadtestReport(
        matched=True,
        mismatches=[],
        stream="s",
        namespace="n",
        records=100,
        mode=mode,
        speed=1.0,
        rate_per_s=50 if mode == "rate" else None,
        main_records=90,
        main_seconds=2.0,
        phases=phases,
    )


def test_send_to_applied_is_the_service_time_only_when_paced_and_kept_up(tmp_path: Path) -> None:
    kept_up = [Phase("main phase", 0.5, 2.0), Phase("drain", 2.0, 2.0 + KEPT_UP_DRAIN_S)]
    behind = [Phase("main phase", 0.5, 2.0), Phase("drain", 2.0, 3.0 + KEPT_UP_DRAIN_S)]
    samples = [Sample(0.5 * step, 10 * step, 9 * step, 0) for step in range(10)]
    latencies = [Latency(1.0 + step / 10, float(step)) for step in range(20)]
    ms_sorted = sorted(point.ms for point in latencies)

    paced = report_with("rate", kept_up)
    add_measurements(paced, samples, ms_sorted)
    assert paced.drain_seconds == pytest.approx(KEPT_UP_DRAIN_S)
    assert paced.latency_is_service_time
    assert "service time (paced, and the consumers kept up)" in paced.summary()

    late = report_with("rate", behind)
    add_measurements(late, samples, ms_sorted)
    assert not late.latency_is_service_time
    unpaced = report_with("max", kept_up)
    add_measurements(unpaced, samples, ms_sorted)
    assert not unpaced.latency_is_service_time
    assert "wait behind the backlog" in unpaced.summary()

    write_outputs(paced, latencies, tmp_path)
    assert {"throughput", "latency", "summary", "json"} <= set(paced.files)
    document = json.loads((tmp_path / "loadtest.json").read_text())
    assert document["phases"] == [["main phase", 0.5, 2.0], ["drain", 2.0, 2.0 + KEPT_UP_DRAIN_S]]


def test_the_peak_is_never_below_the_main_phases_own_rate() -> None:
    """The peak over 2 s windows of the samples, on a run whose main phase took less: it read
    1,458/s beside 1,740 events/s (these samples are from such a run of 3,000 records: 2,940 in
    the main phase, settled 1.69 s after the first send), and 0 on a run with fewer samples
    than a window."""
    samples = [
        Sample(0.002, 0, 0, 0),
        Sample(0.502, 0, 0, 0),
        Sample(1.017, 2940, 423, 0),
        Sample(1.518, 2940, 2940, 0),
        Sample(2.019, 2940, 2940, 0),
        Sample(2.52, 2940, 2940, 0),
        Sample(3.021, 2940, 2940, 0),
        Sample(3.521, 3000, 3021, 21),
        Sample(3.529, 3000, 3021, 21),
    ]
    report = report_with("max", [])
    report.main_records, report.main_seconds = 2_940, 1.6896
    add_measurements(report, samples, [])
    assert report.events_per_s == pytest.approx(1_740, abs=1)
    assert report.peak_events_per_s == pytest.approx(report.events_per_s)
    assert "peak 1,740/s (the highest rate over a 2 s window, or events/s" in report.summary()

    short = report_with("max", [])
    short.main_records, short.main_seconds = 2_940, 1.6896
    add_measurements(short, samples[:4], [])
    assert short.peak_events_per_s == pytest.approx(short.events_per_s)

    # A main phase longer than a window: the busiest window, above the phase's own rate.
    steady = report_with("max", [])
    steady.main_records, steady.main_seconds = 900, 4.5
    add_measurements(steady, [Sample(0.5 * step, 0, 100 * step**2, 0) for step in range(10)], [])
    assert steady.events_per_s == pytest.approx(200)
    assert steady.peak_events_per_s == pytest.approx((8_100 - 2_500) / 2.0)


async def test_a_paced_loadtest_names_its_phases_and_times_its_parts(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_partition_count=PARTITIONS,
        kafka_session_timeout_ms=3_000,
        consumer_batch_wait_ms=20,
        payout_rail_paid_delay_ms=20,
    )
    report = await loadtest(
        settings,
        events=1_500,
        file=None,
        out_dir=tmp_path,
        seed=23,
        mode="rate",
        rate_per_s=600,
        stall_s=60.0,
    )
    assert report.matched, report.summary()
    names = [phase.name for phase in report.phases]
    assert names == ["main phase", "drain", "cash-out phase"]
    ends = [0.0]
    for phase in report.phases:
        assert ends[-1] <= phase.start_s <= phase.end_s
        ends.append(phase.end_s)
    main, drain, _ = report.phases
    # Paced at 600/s, the main phase's records take about main_records / 600 s to send.
    assert main.end_s - main.start_s >= report.main_records / 600 * 0.8
    assert report.main_seconds == pytest.approx(drain.end_s - main.start_s, abs=0.01)
    assert report.publisher_cpu_s > 0
    assert report.consumer_cpu_s > 0
    expected_gifts = load_expected(Path(report.stream)).records_by_topic[topics.GIFTS_SENT]
    assert report.topics[topics.GIFTS_SENT]["records"] >= expected_gifts
    assert topics.CASHOUTS_REQUESTED in report.topics
    summary = report.summary()
    assert "publisher process" in summary
    assert "batches applied" in summary
    assert report.latency_samples > 0
