"""Recording live topics and replaying the recording, on the session's broker and database: a
generated stream goes through a first load test; the same stream, published to upstream topics,
is recorded back (as it is, and pseudonymised), and each recording replayed through a load test
of its own reaches the first run's end state. An interrupted recording, resumed, writes the
same file as one that ran through.

The stream has no cash-outs: a recorded stream is replayed in one phase, and cash-outs racing the
gifts that fund them would make the end state depend on timing."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger.database import create_engine
from schemas.topics import all_topics
from services.loadtest.generator import generate
from services.loadtest.pseudonymise import Pseudonymiser
from services.loadtest.record import Bounds, read_record_checkpoint, record
from services.loadtest.record import checkpoint_path as record_checkpoint_path
from services.loadtest.replay import read_stream, replay
from services.loadtest.run import loadtest
from services.loadtest.stream_format import ExpectedState, StreamShape
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import Settings
from tests import event_factory as make

EVENTS = 300
SALT = "a salt for the tests"
PARTITIONS = 2
NO_CASHOUTS = StreamShape(cashout_share=0.0)


def settings_for(database_url: str, kafka_bootstrap: str) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_partition_count=PARTITIONS,
        kafka_session_timeout_ms=3_000,
        consumer_batch_wait_ms=20,
        payout_rail_paid_delay_ms=20,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A second, empty database: the plain recording holds the first run's very event ids."""
    name = f"giftledger_record_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def available_balances(engine: AsyncEngine, creators: set[str]) -> dict[str, dict[str, int]]:
    """Available DIAMOND and currency balances of `creators`, zero balances left out."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT creator_id, asset, credits_posted - debits_posted - debits_pending AS n"
                " FROM accounts WHERE creator_id = ANY(:creators)"
                " AND kind IN ('creator_diamonds_available', 'creator_wallet')"
            ),
            {"creators": sorted(creators)},
        )
        balances: dict[str, dict[str, int]] = {}
        for row in rows:
            if row.n:
                balances.setdefault(row.creator_id, {})[row.asset] = row.n
    return balances


async def applied_by_topic(engine: AsyncEngine, creators: set[str]) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT topic, count(*) AS n FROM applied_events"
                " WHERE creator_id = ANY(:creators) GROUP BY topic"
            ),
            {"creators": sorted(creators)},
        )
        return {row.topic: row.n for row in rows}


def records_by_key(path: Path) -> dict[tuple[str, bytes | None], list[bytes]]:
    """Each (topic, key)'s values in file order: the order a partition keeps."""
    found: dict[tuple[str, bytes | None], list[bytes]] = defaultdict(list)
    for item in read_stream(path):
        found[(item.topic, item.key)].append(item.value)
    return dict(found)


def decompressed(path: Path) -> bytes:
    with gzip.open(path, "rb") as stream:
        return stream.read()


async def publish_upstream(stream: Path, kafka_bootstrap: str, prefix: str) -> None:
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITIONS)
    report = await replay(stream, kafka_bootstrap, topic_prefix=prefix, mode="max")
    assert report.records_acknowledged == report.records_total


async def test_recordings_replayed_reach_the_first_runs_end_state(
    database_url: str,
    engine: AsyncEngine,
    fresh_database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:8]
    stream = tmp_path / "generated.jsonl.gz"
    expected: ExpectedState = generate(
        stream, events=EVENTS, seed=29, namespace=f"rr{tag}", shape=NO_CASHOUTS
    )
    creators = set(expected.balances)
    first = await loadtest(
        settings_for(database_url, kafka_bootstrap),
        events=None,
        file=stream,
        out_dir=tmp_path / "first",
        stall_s=60.0,
    )
    assert first.matched, first.summary()
    first_balances = await available_balances(engine, creators)
    assert first_balances == expected.balances
    first_applied = await applied_by_topic(engine, creators)
    assert first_applied["gifts.reversed"] > 0

    upstream = f"up{tag}."
    await publish_upstream(stream, kafka_bootstrap, upstream)
    plain = tmp_path / "plain.jsonl.gz"
    plain_report = await record(
        plain, kafka_bootstrap, topic_prefix=upstream, bounds=Bounds(to_end=True)
    )
    assert plain_report.complete
    assert plain_report.records == expected.records
    assert records_by_key(plain) == records_by_key(stream)
    pseudonymised = tmp_path / "pseudonymised.jsonl.gz"
    await record(
        pseudonymised, kafka_bootstrap, topic_prefix=upstream, bounds=Bounds(to_end=True), salt=SALT
    )
    assert sum(1 for _ in read_stream(pseudonymised)) == expected.records
    assert f"rr{tag}".encode() not in decompressed(pseudonymised)

    # The plain recording into a fresh database: the same ids, the same end state.
    second = await loadtest(
        settings_for(fresh_database_url, kafka_bootstrap),
        events=None,
        file=plain,
        out_dir=tmp_path / "second",
        stall_s=60.0,
    )
    assert second.matched, second.summary()
    assert not second.predicted
    assert "not predicted" in second.summary()
    fresh_engine = create_engine(fresh_database_url, pool_size=2)
    try:
        assert await available_balances(fresh_engine, creators) == first_balances
        assert await applied_by_topic(fresh_engine, creators) == first_applied
    finally:
        await fresh_engine.dispose()
    assert second.duplicates == first.duplicates == expected.duplicates
    assert second.dead_lettered == first.dead_lettered

    # The pseudonymised recording, beside the first run: each creator's pseudonym holds the
    # creator's balances; duplicates and reversals still line up.
    third = await loadtest(
        settings_for(database_url, kafka_bootstrap),
        events=None,
        file=pseudonymised,
        out_dir=tmp_path / "third",
        stall_s=60.0,
    )
    assert third.matched, third.summary()
    pseudonym = Pseudonymiser(SALT).pseudonym
    pseudonyms = {pseudonym(creator) for creator in creators}
    assert await available_balances(engine, pseudonyms) == {
        pseudonym(creator): balances for creator, balances in first_balances.items()
    }
    assert await applied_by_topic(engine, pseudonyms) == first_applied
    assert third.duplicates == first.duplicates
    assert third.dead_lettered == first.dead_lettered


async def test_a_resumed_recording_writes_the_same_file(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    stream = tmp_path / "generated.jsonl.gz"
    expected = generate(stream, events=EVENTS, seed=31, namespace=f"rs{tag}", shape=NO_CASHOUTS)
    upstream = f"rs{tag}."
    await publish_upstream(stream, kafka_bootstrap, upstream)

    whole = tmp_path / "whole.jsonl.gz"
    await record(whole, kafka_bootstrap, topic_prefix=upstream, bounds=Bounds(to_end=True))

    interrupted = tmp_path / "interrupted.jsonl.gz"

    def interrupt(records: int) -> None:
        """Ctrl-C reaches the recording as a cancellation; here, after a third of the file."""
        if records >= EVENTS // 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await record(
            interrupted,
            kafka_bootstrap,
            topic_prefix=upstream,
            bounds=Bounds(to_end=True),
            flush_records=20,
            on_flush=interrupt,
        )
    checkpoint = read_record_checkpoint(record_checkpoint_path(interrupted))
    assert checkpoint is not None
    assert not checkpoint.complete
    assert EVENTS // 3 <= checkpoint.records < expected.records
    # A crash after the checkpoint leaves bytes the resume cuts away.
    with interrupted.open("ab") as file:
        file.write(b"half a gzip member")

    resumed = await record(interrupted, kafka_bootstrap, resume=True, flush_records=20)
    assert resumed.complete
    assert resumed.records == expected.records
    assert resumed.records_this_run == expected.records - checkpoint.records
    assert decompressed(interrupted) == decompressed(whole)
    first_line = json.loads(decompressed(whole).splitlines()[0])
    assert {"partition", "source_offset", "timestamp_ms"} <= set(first_line)


async def test_a_recorded_stream_this_database_applied_before_says_so(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A recorded stream loaded into a database that already holds its events applies nothing
    again: the run says so, and measures no latency from the earlier run's `applied_at` (it
    said CONSISTENT, with latencies below zero)."""
    generated = tmp_path / "generated.jsonl.gz"
    generate(
        generated, events=1_000, seed=37, namespace=f"aa{uuid.uuid4().hex[:8]}", shape=NO_CASHOUTS
    )
    stream = tmp_path / "recorded.jsonl.gz"  # no expected state beside it: taken as recorded
    shutil.copyfile(generated, stream)
    settings = settings_for(database_url, kafka_bootstrap)
    first = await loadtest(settings, events=None, file=stream, out_dir=tmp_path / "1", stall_s=60.0)
    assert first.matched, first.summary()
    assert first.already_applied == 0
    assert first.latency_samples > 0
    assert "ALREADY APPLIED" not in first.summary()

    again = await loadtest(settings, events=None, file=stream, out_dir=tmp_path / "2", stall_s=60.0)
    summary = again.summary()
    assert all(ms >= 0 for ms in again.latency_ms.values()), summary
    assert again.applied == 0, summary
    # Every duplicate names an event of the first run; a conflict (the same id, another
    # payload) names one too, and is dead-lettered again.
    assert again.duplicates <= again.already_applied <= again.duplicates + again.dead_lettered
    assert again.already_applied > 0
    assert summary.splitlines()[0] == (
        "giftledger loadtest: CONSISTENT (recorded stream: the end state was not predicted); "
        f"ALREADY APPLIED: {again.already_applied} of its {again.records} records name events "
        "this database applied before the run"
    )
    assert (again.latency_samples, again.latency_ms) == (0, {})
    assert "latency   none: no sampled event was applied during the run" in summary
    document = json.loads((tmp_path / "2" / "loadtest.json").read_text())
    assert document["already_applied"] == again.already_applied


async def test_a_stop_offset_past_a_partitions_end_stops_at_its_end(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`--to-offset N` on partitions holding fewer than N records stops at each one's end as
    the recording starts, and says which (it waited for records that never came)."""
    tag = uuid.uuid4().hex[:8]
    stream = tmp_path / "generated.jsonl.gz"
    expected = generate(stream, events=EVENTS, seed=41, namespace=f"ro{tag}", shape=NO_CASHOUTS)
    upstream = f"ro{tag}."
    await publish_upstream(stream, kafka_bootstrap, upstream)
    out = tmp_path / "short.jsonl.gz"
    report = await asyncio.wait_for(
        record(out, kafka_bootstrap, topic_prefix=upstream, bounds=Bounds(to_offset=EVENTS)),
        timeout=60.0,
    )
    assert report.complete
    assert report.records == expected.records
    assert records_by_key(out) == records_by_key(stream)
    # Every partition holds fewer than EVENTS records: each is named with its end.
    ends: dict[str, int] = defaultdict(int)
    for line in decompressed(out).splitlines():
        item = json.loads(line)
        name = f"{upstream}{item['topic']}:{item['partition']}"
        ends[name] = max(ends[name], item["source_offset"] + 1)
    checkpoint = read_record_checkpoint(record_checkpoint_path(out))
    assert checkpoint is not None
    assert report.ended_before_stop == {name: ends[name] for name in checkpoint.next_offsets}
    assert checkpoint.ended_before_stop == report.ended_before_stop


async def test_pseudonymised_headers_keep_nothing_of_their_values(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`--pseudonymise` replaces every header value as it does an id: a header naming the
    creator holds the creator's pseudonym, the payload's; any other value a keyed hash of its
    bytes. Headers came from upstream producers as they were (a fan's name, the creator's id)."""
    upstream = f"hd{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(upstream), PARTITIONS)
    creator = f"hd-creator-{uuid.uuid4().hex[:6]}"
    gift = make.gift(creator)
    headers = [
        ("creator-id", creator.encode()),
        ("fan", b"Jane Doe <jane@example.com>"),
        ("raw", b"\xff\x00"),
        ("none", None),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{upstream}gifts.sent",
            json.dumps(gift).encode(),
            key=creator.encode(),
            headers=headers,
        )
    finally:
        await producer.stop()
    out = tmp_path / "headers.jsonl.gz"
    await record(
        out,
        kafka_bootstrap,
        topic_prefix=upstream,
        topics=["gifts.sent"],
        bounds=Bounds(to_end=True),
        salt=SALT,
    )
    (line,) = list(read_stream(out))
    pseudonymiser = Pseudonymiser(SALT)
    assert json.loads(line.value)["creator_id"] == pseudonymiser.pseudonym(creator)
    assert line.key == pseudonymiser.pseudonym(creator).encode()
    copied = dict(line.headers)
    assert list(copied) == ["creator-id", "fan", "raw", "none"]
    assert copied["creator-id"] == pseudonymiser.pseudonym(creator).encode()
    assert copied["none"] is None
    assert copied["fan"] == pseudonymiser.pseudonym("Jane Doe <jane@example.com>").encode()
    assert copied["raw"] is not None
    assert copied["raw"].startswith(b"p-")
    assert len(copied["raw"]) == len(copied["fan"])
    assert b"Jane" not in decompressed(out)
    assert creator.encode() not in decompressed(out)
    # The plain recording keeps them as they came.
    plain = tmp_path / "plain.jsonl.gz"
    await record(
        plain,
        kafka_bootstrap,
        topic_prefix=upstream,
        topics=["gifts.sent"],
        bounds=Bounds(to_end=True),
    )
    assert list(next(read_stream(plain)).headers) == headers
