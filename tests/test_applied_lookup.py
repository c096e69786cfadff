"""The applied-events lookup stays a primary-key probe per id as the table grows, whatever its
statistics: a plan that reads every applied event of the topic made each batch slower than the
last until the next ANALYZE."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ingest import SELECT_APPLIED

ROW_COUNT = 20_000
PROBE_COUNT = 2_000


async def plan_of(conn: AsyncConnection, sql: str) -> str:
    ids = [f"probe-{index}" for index in range(PROBE_COUNT)]
    rows = await conn.execute(text(f"EXPLAIN {sql}"), {"topic": "gifts.sent", "ids": ids})
    return "\n".join(row[0] for row in rows)


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
            naive = await plan_of(
                conn,
                "SELECT event_id, payload_sha256 FROM applied_events"
                " WHERE topic = :topic AND event_id = ANY(CAST(:ids AS text[]))",
            )
            probing = await plan_of(conn, SELECT_APPLIED.text)
        finally:
            await conn.rollback()

    # The plain form uses the key for the topic only and filters the ids row by row.
    assert "Filter: (event_id = ANY" in naive
    assert "Nested Loop" in probing
    assert re.search(r"Index Cond: \(\(topic = .+\) AND \(event_id = wanted\.event_id\)\)", probing)
    assert "Hash" not in probing
    assert "Seq Scan on applied_events" not in probing
