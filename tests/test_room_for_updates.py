"""`outbox` and `accounts` leave room on their pages (migration 0035), so that the updates that
change no indexed column keep their row on its page and add no index entry (HOT)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.server  # what the server does with the room on a page

ROWS = 400
PAYLOAD_BYTES = 600  # about a `cashouts.updated` document


async def test_the_update_heavy_tables_are_filled_to_less_than_a_page(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        options: dict[str, list[str]] = dict(
            (
                await conn.execute(
                    text(
                        "SELECT relname, reloptions FROM pg_class"
                        " WHERE oid IN ('outbox'::regclass, 'accounts'::regclass)"
                    )
                )
            ).all()
        )
    assert options == {"outbox": ["fillfactor=50"], "accounts": ["fillfactor=70"]}


async def test_claims_of_outbox_rows_stay_on_their_pages(
    engine: AsyncEngine, unique_id: str
) -> None:
    """Rows written as the desk writes them, then claimed as the relay claims them, in one
    transaction that is rolled back: `pg_stat_get_xact_tuples_hot_updated` counts this
    transaction's HOT updates. With the pages filled (the default), a claim found no room on its
    row's page but on the last one."""
    async with engine.connect() as conn, conn.begin() as transaction:
        await conn.execute(
            text(
                "INSERT INTO outbox (topic_prefix, topic, message_key, payload)"
                " SELECT :prefix, 'cashouts.updated', 'creator-' || n, :payload"
                " FROM generate_series(1, :rows) AS n"
            ),
            {"prefix": f"room{unique_id}.", "payload": b"x" * PAYLOAD_BYTES, "rows": ROWS},
        )
        claimed = await conn.execute(
            text(
                "UPDATE outbox SET claimed_by = 'relay-test',"
                " claimed_until = now() + interval '60 s' WHERE topic_prefix = :prefix"
            ),
            {"prefix": f"room{unique_id}."},
        )
        hot = (
            await conn.execute(
                text("SELECT pg_stat_get_xact_tuples_hot_updated('outbox'::regclass)")
            )
        ).scalar_one()
        await transaction.rollback()

    assert claimed.rowcount == ROWS
    assert hot >= ROWS * 0.9, f"{hot} of {ROWS} claims stayed on their page"
