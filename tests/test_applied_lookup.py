"""The applied-events lookup stays a primary-key probe per id as the table grows, whatever its
statistics: a plan that reads every applied event of the topic made each batch slower than the
last until the next ANALYZE.

The plan is read as JSON and held to the property (every read of `applied_events` is an index
scan whose condition names both key columns, with no row-by-row filter), not to one server
version's wording: PostgreSQL 15 and 18 print the same plan differently.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ingestion.event_store import SELECT_APPLIED
from tests.query_plans import nodes_of, plan_root

pytestmark = pytest.mark.server

ROW_COUNT = 20_000
PROBE_COUNT = 2_000
INDEX_SCAN_TYPES = {"Index Scan", "Index Only Scan"}


async def plan_of(conn: AsyncConnection, sql: str) -> dict[str, Any]:
    ids = [f"probe-{index}" for index in range(PROBE_COUNT)]
    rows = await conn.execute(
        text(f"EXPLAIN (FORMAT JSON) {sql}"), {"topic": "gifts.sent", "ids": ids}
    )
    return plan_root(rows.scalar_one())


def reads_of(plan: dict[str, Any], table: str) -> list[dict[str, Any]]:
    return [node for node in nodes_of(plan) if node.get("Relation Name") == table]


def is_key_probe(node: dict[str, Any]) -> bool:
    """An index scan that finds rows by topic and event id, and filters nothing row by row."""
    condition = str(node.get("Index Cond", ""))
    return (
        node["Node Type"] in INDEX_SCAN_TYPES
        and "topic" in condition
        and "event_id" in condition
        and "Filter" not in node
    )


async def test_without_statistics_the_lookup_probes_the_key_of_each_id(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        role = text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not (await conn.execute(role)).scalar_one():
            pytest.skip("forgetting a table's statistics needs a superuser")
        try:  # all in one transaction, rolled back
            await conn.execute(
                text(
                    "INSERT INTO applied_events (topic, event_id, payload_sha256, occurred_at,"
                    " kafka_partition, kafka_offset)"
                    " SELECT 'gifts.sent', 'lookup-test-' || i, sha256(i::text::bytea), now(), 0, i"
                    " FROM generate_series(1, :count) AS i"
                ),
                {"count": ROW_COUNT},
            )
            # As a table that has just grown, before autovacuum's ANALYZE reaches it.
            await conn.execute(
                text("DELETE FROM pg_statistic WHERE starelid = 'applied_events'::regclass")
            )
            await conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
            plan = await plan_of(conn, SELECT_APPLIED.text)
        finally:
            await conn.rollback()

    reads = reads_of(plan, "applied_events")
    assert reads, json.dumps(plan, indent=2)
    assert all(is_key_probe(node) for node in reads), json.dumps(plan, indent=2)
    assert not [node for node in nodes_of(plan) if node["Node Type"] == "Seq Scan"]


async def test_a_lookup_that_reads_the_table_row_by_row_is_told_apart(
    engine: AsyncEngine,
) -> None:
    """The property check is not vacuous: with index scans forbidden, the server must read the
    table another way, and `is_key_probe` refuses that plan."""
    async with engine.connect() as conn:
        try:
            await conn.execute(text("SET LOCAL enable_indexscan = off"))
            await conn.execute(text("SET LOCAL enable_indexonlyscan = off"))
            await conn.execute(text("SET LOCAL enable_bitmapscan = off"))
            plan = await plan_of(conn, SELECT_APPLIED.text)
        finally:
            await conn.rollback()

    reads = reads_of(plan, "applied_events")
    assert reads, json.dumps(plan, indent=2)
    assert not any(is_key_probe(node) for node in reads), json.dumps(plan, indent=2)
