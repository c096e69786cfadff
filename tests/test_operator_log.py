"""The operator actions log: appended in the caller's transaction as the writer role, idempotent
by key, one hash chain however many append at once, and tampering shows in `verify`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.database import create_engine
from schemas import topics
from schemas.events import OperatorActionRecorded
from services.operator.actions_log import (
    GENESIS_HASH,
    ActionKeyConflictError,
    InvalidActionError,
    OperatorAction,
    canonical_content,
    check_action,
    record_action,
    verify_action_chain,
)
from tests.operator_helpers import new_creator, new_key

WRITER = "giftledger_writer"
CONCURRENT_APPEND_COUNT = 16


@pytest_asyncio.fixture(loop_scope="session")
async def writer(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Connections that act as the services' writer role, as the operator desk does."""
    engine = create_engine(
        database_url, pool_size=4, pool_overflow_max=CONCURRENT_APPEND_COUNT, role=WRITER
    )
    yield engine
    await engine.dispose()


async def _record(
    engine: AsyncEngine, key: str, target: str, **changes: Any
) -> tuple[OperatorAction, bool]:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "actor": "alice",
        "action": "creator_frozen",
        "target": target,
        "reason": "chargeback fraud under investigation",
        "ticket": "OPS-1",
        "details": {"note": "café", "amount_minor": -5000},
        "topic_prefix": "",
    }
    fields.update(changes)
    async with engine.begin() as conn:
        return await record_action(conn, **fields)


async def _count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


async def _chain_problems(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return await verify_action_chain(conn)


async def test_an_action_is_appended_with_its_hash_and_queued_for_operator_actions(
    writer: AsyncEngine,
) -> None:
    creator = new_creator()
    action, recorded = await _record(writer, new_key(), creator)
    assert recorded
    async with writer.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT role, previous_hash, hash FROM operator_actions WHERE id = :id"),
                {"id": action.id},
            )
        ).one()
        [queued] = (
            await conn.execute(
                text("SELECT topic, message_key, payload FROM outbox WHERE message_key = :key"),
                {"key": creator},
            )
        ).all()
    assert row.role == "operator"
    expected = hashlib.sha256(bytes(row.previous_hash) + canonical_content(action, "operator"))
    assert bytes(row.hash) == expected.digest()
    assert queued.topic == topics.OPERATOR_ACTIONS
    event = OperatorActionRecorded.model_validate_json(bytes(queued.payload))
    assert (event.event_id, event.action_id, event.actor, event.target) == (
        f"operator-action:{action.id}",
        action.id,
        "alice",
        creator,
    )
    assert event.details == {"note": "café", "amount_minor": -5000}
    assert event.hash == bytes(row.hash).hex()
    assert await _chain_problems(writer) == []


async def test_the_same_key_and_content_returns_the_recorded_action_and_appends_nothing(
    writer: AsyncEngine,
) -> None:
    key, creator = new_key(), new_creator()
    first, first_recorded = await _record(writer, key, creator)
    count = await _count(writer, "SELECT count(*) FROM operator_actions")
    again, again_recorded = await _record(
        writer, key, creator, details={"amount_minor": -5000, "note": "café"}
    )
    assert (first_recorded, again_recorded) == (True, False)
    assert again == first
    assert await _count(writer, "SELECT count(*) FROM operator_actions") == count
    assert (
        await _count(writer, "SELECT count(*) FROM outbox WHERE message_key = :k", k=creator) == 1
    )


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "another reason"},
        {"actor": "bob"},
        {"action": "creator_unfrozen"},
        {"ticket": None},
        {"details": {"note": "café", "amount_minor": -5001}},
    ],
)
async def test_the_same_key_with_other_content_is_a_conflict(
    writer: AsyncEngine, change: dict[str, Any]
) -> None:
    key, creator = new_key(), new_creator()
    first, _ = await _record(writer, key, creator)
    count = await _count(writer, "SELECT count(*) FROM operator_actions")
    with pytest.raises(ActionKeyConflictError) as refused:
        await _record(writer, key, creator, **change)
    assert refused.value.recorded == first
    assert await _count(writer, "SELECT count(*) FROM operator_actions") == count


async def test_a_message_key_in_the_details_keys_the_message(writer: AsyncEngine) -> None:
    source_key = new_creator()
    await _record(writer, new_key(), "dead-letter-17", details={"message_key": source_key})
    assert (
        await _count(
            writer,
            "SELECT count(*) FROM outbox WHERE topic = :t AND message_key = :k",
            t=topics.OPERATOR_ACTIONS,
            k=source_key,
        )
        == 1
    )


@pytest.mark.parametrize(
    "change",
    [
        {"details": {"amount": 1.5}},
        {"details": {"text": "nul\x00"}},
        {"reason": "two\nlines"},
        {"reason": "two\u2028lines"},
        {"reason": "shown \u202ereversed"},
        {"reason": "a C1 control \x85"},
        {"reason": ""},
        {"actor": "alice smith"},
        {"action": "Freeze!"},
        {"idempotency_key": "with space"},
        {"ticket": ""},
    ],
)
async def test_a_field_the_log_cannot_take_is_refused_before_anything_is_written(
    writer: AsyncEngine, change: dict[str, Any]
) -> None:
    count = await _count(writer, "SELECT count(*) FROM operator_actions")
    with pytest.raises(InvalidActionError):
        await _record(writer, new_key(), new_creator(), **change)
    assert await _count(writer, "SELECT count(*) FROM operator_actions") == count


def test_a_refused_text_field_says_the_rule_it_breaks() -> None:
    """The message names the field, shows (the start of) the value and states the rule."""
    with pytest.raises(InvalidActionError) as refused:
        check_action(
            idempotency_key=new_key(),
            actor="alice",
            action="creator_frozen",
            target="creator-1",
            reason="r" * 1_001,
            ticket=None,
        )
    assert str(refused.value) == (
        f"reason {'r' * 60!r} (cut, 1,001 characters) is not valid: 1 to 1,000 characters,"
        " one line, no control characters (tab, newline, ...), line separators or bidirectional"
        " overrides"
    )
    with pytest.raises(InvalidActionError, match="visible ASCII, no space"):
        check_action(
            idempotency_key="with space",
            actor="alice",
            action="creator_frozen",
            target="creator-1",
            reason="checked",
            ticket=None,
        )


async def test_concurrent_appends_keep_one_chain_in_id_order(writer: AsyncEngine) -> None:
    creator = new_creator()
    results = await asyncio.gather(
        *(_record(writer, new_key(), creator) for _ in range(CONCURRENT_APPEND_COUNT))
    )
    assert all(recorded for _, recorded in results)
    assert await _chain_problems(writer) == []
    async with writer.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id, previous_hash, hash, lag(hash) OVER (ORDER BY id) AS before"
                    " FROM operator_actions ORDER BY id"
                )
            )
        ).all()
    mine = {action.id for action, _ in results}
    linked = [row for row in rows if row.id in mine]
    assert len(linked) == CONCURRENT_APPEND_COUNT
    # The log's first action (when this test runs first on its database) follows the genesis.
    assert all(
        bytes(row.previous_hash) == (GENESIS_HASH if row.before is None else bytes(row.before))
        for row in linked
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE operator_actions SET reason = 'rewritten'",
        "DELETE FROM operator_actions",
        "TRUNCATE operator_actions CASCADE",
        "TRUNCATE creator_freezes CASCADE",
        "TRUNCATE balance_adjustments CASCADE",
        "TRUNCATE balance_adjustment_approvals CASCADE",
    ],
)
async def test_neither_the_writer_nor_the_owner_can_change_the_log(
    engine: AsyncEngine, writer: AsyncEngine, statement: str
) -> None:
    await _record(writer, new_key(), new_creator())
    with pytest.raises(DBAPIError, match="permission denied"):
        async with writer.begin() as conn:
            await conn.execute(text(statement))
    with pytest.raises(DBAPIError, match="immutable"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))


async def _with_trigger_disabled(conn: AsyncConnection) -> None:
    """In the caller's transaction, which must roll back: the owner may disable a trigger."""
    await conn.execute(
        text("ALTER TABLE operator_actions DISABLE TRIGGER operator_actions_immutable")
    )


async def test_an_edited_action_breaks_the_chain(engine: AsyncEngine, writer: AsyncEngine) -> None:
    action, _ = await _record(writer, new_key(), new_creator())
    assert await _chain_problems(engine) == []
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await _with_trigger_disabled(conn)
            await conn.execute(
                text("UPDATE operator_actions SET actor = 'mallory' WHERE id = :id"),
                {"id": action.id},
            )
            problems = await verify_action_chain(conn)
        finally:
            await transaction.rollback()
    assert problems == [
        f"operator action {action.id}: its content was changed after it was recorded"
    ]
    assert await _chain_problems(engine) == []


async def test_a_removed_action_breaks_the_chain(engine: AsyncEngine, writer: AsyncEngine) -> None:
    first, _ = await _record(writer, new_key(), new_creator())
    second, _ = await _record(writer, new_key(), new_creator())
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await _with_trigger_disabled(conn)
            await conn.execute(
                text("DELETE FROM operator_actions WHERE id = :id"), {"id": first.id}
            )
            middle_removed = await verify_action_chain(conn)
            await conn.execute(
                text("DELETE FROM operator_actions WHERE id = :id"), {"id": second.id}
            )
            last_removed = await verify_action_chain(conn)
        finally:
            await transaction.rollback()
    assert middle_removed == [f"operator action {second.id} does not follow the action before it"]
    assert last_removed == ["the operator actions head does not match the last action"]
    assert await _chain_problems(engine) == []
