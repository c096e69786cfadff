"""Rows for the `outbox` table: a message a transaction wants published, written in that
transaction, and sent by the relay (`services.cashout.outbox`) once it commits. Cash-out
transitions and operator actions queue their messages here."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def queue(
    conn: AsyncConnection, topic_prefix: str, topic: str, key: str, payload: str
) -> None:
    """An outbox row for the deployment publishing to `<topic_prefix><topic>`."""
    await conn.execute(
        text(
            "INSERT INTO outbox (topic_prefix, topic, message_key, payload)"
            " VALUES (:prefix, :t, :k, :p)"
        ),
        {"prefix": topic_prefix, "t": topic, "k": key, "p": payload.encode()},
    )
