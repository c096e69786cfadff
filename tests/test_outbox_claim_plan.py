"""The outbox relay's claim reads each unpublished row a bounded number of times, and the claim
and the mark take their own rows by id, however wrong the planner's statistics are.

Autovacuum's ANALYZE of `outbox` mostly runs while the relays keep it drained, so the statistics
say there are almost no unpublished rows. When a backlog builds (the bank or the broker slow, a
relay restarting), a claim planned on those statistics must still cost a few walks of the
backlog at most: an earlier form of the statement read every unpublished row once per
unpublished row there, and took tens of seconds a claim with a few thousand rows waiting."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.cashout.outbox import (
    _CLAIM,
    _MARK_SENT,
    OUTBOX_BATCH_SIZE_MAX,
    OUTBOX_CLAIM_LEASE_S,
    OUTBOX_CLAIM_WINDOW_ROWS,
)
from tests.query_plans import nodes_of, plan_root

pytestmark = pytest.mark.server  # a query plan: the server's planner decides it

BACKLOG_ROWS = 600
BACKLOG_KEYS = 200
# A backlog four times the claim's window, as after an outage: a claim counts the held rows of
# the window, not of the whole backlog (which took 98 - 220 ms a claim at 50,000 rows).
LONG_BACKLOG_ROWS = 4 * OUTBOX_CLAIM_WINDOW_ROWS
# A few walks of the backlog at most. The quadratic form read about 1,000 times the backlog
# (602,198 rows).
ROW_READS_PER_BACKLOG_ROW_MAX = 5


# A drained outbox as production has it: the published rows the retention keeps (of another
# deployment here), which the statistics count. The module's own database holds only these and
# the tests' rows, so the planner's choice does not depend on which tests ran before: on a table
# of a few pages it rightly walks the whole table instead of taking rows by id.
PUBLISHED_HISTORY_ROWS = 20_000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(module_engine: AsyncEngine) -> AsyncEngine:
    async with module_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (topic, message_key, payload, topic_prefix, published_at)"
                " SELECT :topic, 'creator-' || (n % :keys), convert_to('{}', 'UTF8'),"
                " 'published-history.', now() FROM generate_series(1, :rows) AS n"
            ),
            {
                "topic": topics.CASHOUTS_UPDATED,
                "keys": BACKLOG_KEYS,
                "rows": PUBLISHED_HISTORY_ROWS,
            },
        )
    return module_engine


def _outbox_rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of `outbox` produced or filtered out, over all their loops (the
    update's own node, which names the table too, reads nothing)."""
    return sum(
        round(
            (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0))
            * node.get("Actual Loops", 1)
        )
        for node in nodes_of(plan)
        if node.get("Relation Name") == "outbox" and node["Node Type"] != "ModifyTable"
    )


async def _backlog_unknown_to_the_statistics(engine: AsyncEngine, rows: int) -> str:
    """A new deployment's prefix with `rows` unpublished rows, written after an ANALYZE that
    saw none of them (as when autovacuum's ANALYZE ran while the relays kept the outbox
    drained)."""
    prefix = f"plan{uuid.uuid4().hex[:8]}."
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE outbox"))  # this deployment has no rows yet
        await conn.execute(
            text(
                "INSERT INTO outbox (topic, message_key, payload, topic_prefix)"
                " SELECT :topic, 'creator-' || (n % :keys), convert_to('{}', 'UTF8'), :prefix"
                " FROM generate_series(1, :rows) AS n"
            ),
            {
                "topic": topics.CASHOUTS_UPDATED,
                "keys": BACKLOG_KEYS,
                "prefix": prefix,
                "rows": rows,
            },
        )
    return prefix


def _claim_parameters(prefix: str, claim_id: str) -> dict[str, Any]:
    """The relay's claim of a full round for the deployment `prefix`, as `OutboxRelay.claim`."""
    return {
        "prefix": prefix,
        "limit": OUTBOX_BATCH_SIZE_MAX,
        "window": OUTBOX_CLAIM_WINDOW_ROWS,
        "claim": claim_id,
        "lease_s": OUTBOX_CLAIM_LEASE_S,
    }


async def _publish_all(engine: AsyncEngine, prefix: str) -> None:
    """No backlog left behind for other tests."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox SET published_at = now() WHERE topic_prefix = :prefix"),
            {"prefix": prefix},
        )


@pytest.mark.parametrize("backlog_rows", [BACKLOG_ROWS, LONG_BACKLOG_ROWS])
async def test_a_claim_reads_a_backlog_a_few_times_when_the_statistics_say_it_is_empty(
    engine: AsyncEngine, backlog_rows: int
) -> None:
    """The count of held rows per key over the oldest rows only, up to the claim's window,
    however long the backlog; then only the rows it takes, by id (a walk of the backlog with
    the ids as a filter compared every row with every id)."""
    prefix = await _backlog_unknown_to_the_statistics(engine, backlog_rows)
    async with engine.connect() as conn:
        transaction = await conn.begin()
        plan = await conn.scalar(
            text(f"EXPLAIN (ANALYZE, FORMAT JSON) {_CLAIM.text}"),
            _claim_parameters(prefix, "plan-test#1"),
        )
        await transaction.rollback()
    await _publish_all(engine, prefix)
    top = plan_root(plan)
    claimed = top.get("Actual Rows", 0)
    assert claimed == min(backlog_rows, OUTBOX_BATCH_SIZE_MAX)
    assert _outbox_rows_read(top) <= ROW_READS_PER_BACKLOG_ROW_MAX * backlog_rows
    windowed = [node["Actual Rows"] for node in nodes_of(top) if node["Node Type"] == "WindowAgg"]
    assert windowed
    assert max(windowed) <= min(backlog_rows, OUTBOX_CLAIM_WINDOW_ROWS)
    # The window once, then the heads it locks and the rows it claims, each by id.
    assert _outbox_rows_read(top) <= min(backlog_rows, OUTBOX_CLAIM_WINDOW_ROWS) + 2 * claimed


async def test_a_mark_reads_only_its_rows_when_the_statistics_say_the_backlog_is_empty(
    engine: AsyncEngine,
) -> None:
    """The mark takes the rows it marks by id, not by a walk of the backlog with their ids as
    a filter."""
    prefix = await _backlog_unknown_to_the_statistics(engine, LONG_BACKLOG_ROWS)
    async with engine.connect() as conn:
        transaction = await conn.begin()
        claim_id = "plan-test#2"
        claimed = (await conn.execute(_CLAIM, _claim_parameters(prefix, claim_id))).all()
        ids = [row.id for row in claimed]
        plan = await conn.scalar(
            text(f"EXPLAIN (ANALYZE, FORMAT JSON) {_MARK_SENT.text}"),
            {"ids": ids, "claim": claim_id},
        )
        await transaction.rollback()
    await _publish_all(engine, prefix)
    top = plan_root(plan)
    assert len(ids) == OUTBOX_BATCH_SIZE_MAX
    assert top.get("Actual Rows", 0) == len(ids)
    assert _outbox_rows_read(top) <= len(ids)
