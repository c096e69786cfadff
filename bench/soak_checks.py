"""The soak's end state check: every segment's expected end state, as `giftledger loadtest`
compares it, then `giftledger verify`, then the counts.

1. Expected: the segments' expected states added up (`combined_expected`: their namespaces are
   disjoint, so balances simply sit side by side and counts add up). Observed: `observe` of each
   namespace added up the same way (`merge_observed`), the dead letters read back from the DLQ
   topics, and the events still parked. Compared by
   `services.loadtest.checks.compare`, the load test's own comparison, with one rule left out:
   that the consumers counted the stream's duplicates. The load test reads that count in its own
   process; here the counts are the consumers' metrics, and a process killed with SIGKILL takes
   what it counted since its last reading with it. Instead, `unconsumed_records` reads every
   consumer group's committed offsets: when they are at the end of every partition, and the
   applied events and dead letters are exactly as expected, every other record was taken as a
   duplicate.
2. `giftledger verify` (the command, as an operator runs it), exit 0.
3. Counts: applied and dead letters as found; `lost` is what was expected and is missing (events,
   dead letters, records no group consumed); `doubled` is what was found beyond the expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.soak_consumers import giftledger_command, group_ids
from bench.soak_stream import Segment
from services.loadtest.checks import (
    Observed,
    compare,
    observe,
    read_dead_letter_topics,
    table_warnings,
)
from services.loadtest.stream_format import ExpectedState
from services.runtime.kafka_offsets import end_offsets

DUPLICATES_RULE = "duplicates:"
VERIFY_TIMEOUT_S = 300.0
END_OFFSETS_WAIT_S = 30.0


@dataclass
class EndState:
    mismatches: list[str]
    warnings: list[str]
    verify_exit_code: int
    verify_output: str
    applied: int
    expected_applied: int
    dead_letters: int
    stream_duplicates: int
    unconsumed: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    doubled: int = 0

    @property
    def matched(self) -> bool:
        return not self.mismatches and self.verify_exit_code == 0 and not self.lost


def _added(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for item in dicts:
        total.update(item)
    return dict(sorted(total.items()))


def combined_expected(segments: list[Segment]) -> ExpectedState:
    """The segments' expected end states as one (their namespaces do not overlap)."""
    states = [segment.expected for segment in segments]
    dead_letters: dict[str, dict[str, int]] = {}
    for state in states:
        for topic, reasons in state.dead_letters.items():
            dead_letters[topic] = _added([dead_letters.get(topic, {}), reasons])
    balances: dict[str, dict[str, int]] = {}
    for state in states:
        balances.update(state.balances)
    first = states[0]
    return ExpectedState(
        format_version=first.format_version,
        namespace=",".join(state.namespace for state in states),
        seed=first.seed,
        records=sum(state.records for state in states),
        cashout_phase_from=sum(state.cashout_phase_from for state in states),
        stream_start=first.stream_start,
        duration_ms=sum(state.duration_ms for state in states),
        assumptions=first.assumptions,
        records_by_topic=_added([state.records_by_topic for state in states]),
        applied_by_topic=_added([state.applied_by_topic for state in states]),
        duplicates_by_topic=_added([state.duplicates_by_topic for state in states]),
        dead_letters=dict(sorted(dead_letters.items())),
        cashouts=_added([state.cashouts for state in states]),
        payout_reports=sum(state.payout_reports for state in states),
        balances=dict(sorted(balances.items())),
        totals=_added([state.totals for state in states]),
    )


def merge_observed(total: Observed, part: Observed) -> None:
    """Add one namespace's observation to `total`: counts per key add up, per-creator
    documents sit side by side (the namespaces share no creator), lists are joined, and what
    is read for the whole topic prefix (the `dead_letters` rows) is the same in every part."""
    for item in dataclasses.fields(Observed):
        mine, theirs = getattr(total, item.name), getattr(part, item.name)
        if isinstance(mine, list):
            mine.extend(theirs)
        elif isinstance(mine, dict):
            for key, value in theirs.items():
                if isinstance(value, int):
                    mine[key] = mine.get(key, 0) + value
                else:
                    mine[key] = value


async def observe_segments(
    engine: AsyncEngine, segments: list[Segment], topic_prefix: str, since: datetime
) -> Observed:
    observed = Observed()
    async with engine.connect() as conn:
        for segment in segments:
            merge_observed(observed, await observe(conn, segment.namespace, topic_prefix, since))
    return observed


async def unconsumed_records(
    bootstrap_servers: str, topic_prefix: str, consumer_group: str
) -> dict[str, int]:
    """Records past each consumer group's committed offsets, per topic (contract names). Each
    group's offsets are read by a consumer of that group that subscribes to nothing, so it
    never joins the group."""
    behind: dict[str, int] = {}
    for topic, group in group_ids(consumer_group).items():
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await reader.start()
        try:
            name = topic_prefix + topic
            await reader.topics()  # fetches the cluster's metadata
            numbers = sorted(reader.partitions_for_topic(name) or ())
            partitions = [TopicPartition(name, number) for number in numbers]
            ends = await end_offsets(reader, partitions, END_OFFSETS_WAIT_S)
            behind[topic] = 0
            for partition in partitions:
                committed = await reader.committed(partition)
                behind[topic] += max(ends[partition] - (committed or 0), 0)
        finally:
            await reader.stop()
    return behind


async def run_verify(database_url: str) -> tuple[int, str]:
    """`giftledger verify` against the soak's database: (exit code, its output)."""
    process = await asyncio.create_subprocess_exec(
        *giftledger_command(),
        "verify",
        env={**os.environ, "DATABASE_URL": database_url},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), VERIFY_TIMEOUT_S)
    finally:
        if process.returncode is None:  # timed out or cancelled: not left running
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    return int(process.returncode or 0), output.decode("utf-8", errors="replace").strip()


def _shortfall_and_excess(expected: dict[str, int], found: dict[str, int]) -> tuple[int, int]:
    keys = set(expected) | set(found)
    short = sum(max(expected.get(key, 0) - found.get(key, 0), 0) for key in keys)
    excess = sum(max(found.get(key, 0) - expected.get(key, 0), 0) for key in keys)
    return short, excess


def _flat_dead_letters(letters: dict[str, dict[str, int]]) -> dict[str, int]:
    return {
        f"{topic} {reason}": count
        for topic, reasons in letters.items()
        for reason, count in reasons.items()
    }


async def check_end_state(
    engine: AsyncEngine,
    database_url: str,
    segments: list[Segment],
    bootstrap_servers: str,
    topic_prefix: str,
    consumer_group: str,
    since: datetime,
    still_parked: int,
) -> EndState:
    expected = combined_expected(segments)
    observed = await observe_segments(engine, segments, topic_prefix, since)
    observed.dead_letters = await read_dead_letter_topics(
        bootstrap_servers, topic_prefix, expected.dead_lettered
    )
    observed.still_parked = still_parked
    mismatches = [
        line for line in compare(expected, observed) if not line.startswith(DUPLICATES_RULE)
    ]
    unconsumed = await unconsumed_records(bootstrap_servers, topic_prefix, consumer_group)
    verify_exit_code, verify_output = await run_verify(database_url)
    short_applied, extra_applied = _shortfall_and_excess(
        expected.applied_by_topic, observed.applied_by_topic
    )
    short_letters, extra_letters = _shortfall_and_excess(
        _flat_dead_letters(expected.dead_letters), _flat_dead_letters(observed.dead_letters)
    )
    return EndState(
        mismatches=mismatches,
        warnings=table_warnings(observed),
        verify_exit_code=verify_exit_code,
        verify_output=verify_output,
        applied=sum(observed.applied_by_topic.values()),
        expected_applied=sum(expected.applied_by_topic.values()),
        dead_letters=sum(sum(reasons.values()) for reasons in observed.dead_letters.values()),
        stream_duplicates=expected.duplicates,
        unconsumed=unconsumed,
        lost=short_applied + short_letters + sum(unconsumed.values()),
        doubled=extra_applied + extra_letters,
    )
