"""A unit of work's last write links its own transfers into the hash chain (`last=True`): the
link's digest (of the form `LINK_FORM_HEADS_AND_BALANCES`) is made in SQL there, so it must be
the very digest the Python chain makes from the stored rows (`ledger.chain.link_digest`),
whatever the texts and balances hold. A batch the unit of work links at its end gets a link of
the form `LINK_FORM_LINES`, made in Python."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chain import (
    LINK_FORM_HEADS_AND_BALANCES,
    LINK_FORM_LINES,
    link_digest,
    metadata_json,
)
from ledger.model import AccountFlags, NewTransfers, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger
from ledger.store import read_stored
from tests.ledger_helpers import ledger_problems, make_accounts, new_id
from tests.query_plans import nodes_of, plan_root

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database: `verify` reads only its data."""
    return module_engine


# Texts that the statement's joined parameters cannot carry (the unit and record separators),
# that a line's own separators or a newline could confuse, and characters beyond ASCII.
AWKWARD_EVENT_IDS = ["plain", "with|bar", "line\nbreak", "é☃ 🎁", "unit\x1fseparator", None]
AWKWARD_METADATA = [
    None,
    metadata_json({"note": 'quote " and backslash \\'}),
    metadata_json({"emoji": "🎁", "nested": {"b": 1, "a": [1, 2]}}),
    metadata_json({"record": "\x1e"}),
]


async def newest_link(engine: AsyncEngine) -> tuple[list[uuid.UUID], bytes, int]:
    """The newest link's transfer ids, digest and form."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT transfer_ids, transfers_sha256, form FROM ledger_links ORDER BY id DESC"
                )
            )
        ).first()
    assert row is not None
    return list(row.transfer_ids), bytes(row.transfers_sha256), row.form


async def digest_of_stored(engine: AsyncEngine, ids: list[uuid.UUID], form: int) -> bytes | None:
    async with engine.connect() as conn:
        stored, _ = await read_stored(conn, ids)
    assert set(stored) == set(ids)
    return link_digest(form, stored.values())


async def assert_verified(engine: AsyncEngine) -> None:
    assert await ledger_problems(engine) == []


async def assert_newest_link_holds(engine: AsyncEngine, ids: list[uuid.UUID], form: int) -> None:
    """The newest link names the transfers `ids`, is of `form`, its digest is the one the chain
    makes of their stored rows, and the ledger verifies."""
    link_ids, digest, link_form = await newest_link(engine)
    assert sorted(link_ids) == sorted(ids)
    assert link_form == form
    assert digest == await digest_of_stored(engine, ids, form)
    await assert_verified(engine)


@pytest.mark.parametrize(
    "event_ids", [AWKWARD_EVENT_IDS[:1], AWKWARD_EVENT_IDS[:4], AWKWARD_EVENT_IDS]
)
async def test_the_last_new_batch_links_the_digest_the_chain_makes_of_its_stored_rows(
    engine: AsyncEngine, unique_id: str, event_ids: list[str | None]
) -> None:
    ledger = Ledger(engine)
    a, b, c = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 3)
    batch = NewTransfers()
    for index, event_id in enumerate(event_ids):
        batch.add(
            transfer_id=new_id(),
            debit_account_id=(a, b, c)[index % 3],
            credit_account_id=(b, c, a)[index % 3],
            amount=10**15 + index,  # balances run negative and past 32 bits
            code=int(TransferCode.SYNTHETIC),
            rate_card_version=None if index % 2 else index,
            event_id=event_id,
            metadata_text=AWKWARD_METADATA[index % len(AWKWARD_METADATA)],
        )

    async for tx in ledger.transactions(retry_count_max=0):
        async with tx:
            await tx.post_new(batch, last=True)

    link_ids, digest, form = await newest_link(engine)
    assert link_ids == batch.ids
    assert form == LINK_FORM_HEADS_AND_BALANCES
    assert digest == await digest_of_stored(engine, batch.ids, form)
    await assert_verified(engine)


@pytest.mark.parametrize("timeout_s", [None, 3_600])
async def test_the_last_general_batch_links_what_it_stored(
    engine: AsyncEngine, unique_id: str, timeout_s: int | None
) -> None:
    """A pending transfer with a timeout has its expiry only once written: that batch is linked
    by the unit of work at its end, as a batch that is not the last."""
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    transfers = [
        Transfer(
            new_id(),
            a,
            b,
            700,
            TransferCode.SYNTHETIC,
            event_id="|é\x1f",
            metadata={"k": "v"},
        ),
        Transfer(
            new_id(),
            b,
            a,
            5,
            TransferCode.SYNTHETIC,
            flags=TransferFlags.PENDING,
            timeout_s=timeout_s,
        ),
    ]

    async for tx in ledger.transactions(retry_count_max=0):
        async with tx:
            await tx.post(transfers, last=True)

    # With an expiry, the unit of work links the batch at its end, in Python.
    form = LINK_FORM_HEADS_AND_BALANCES if timeout_s is None else LINK_FORM_LINES
    await assert_newest_link_holds(engine, [transfer.id for transfer in transfers], form)


async def test_a_last_batch_that_posts_and_voids_pending_transfers_links_what_it_stored(
    engine: AsyncEngine, unique_id: str
) -> None:
    """The lines' pending ids, flags and the accounts taken from the pending transfers."""
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    pendings = [
        Transfer(new_id(), a, b, 90 + index, TransferCode.SYNTHETIC, flags=TransferFlags.PENDING)
        for index in range(2)
    ]
    resolutions = [
        Transfer(
            new_id(),
            0,
            0,
            40,
            TransferCode.SYNTHETIC,
            flags=TransferFlags.POST_PENDING,
            pending_id=pendings[0].id,
            rate_card_version=7,
        ),
        Transfer(
            new_id(),
            0,
            0,
            0,
            TransferCode.SYNTHETIC,
            flags=TransferFlags.VOID_PENDING,
            pending_id=pendings[1].id,
        ),
    ]
    for batch in (pendings, resolutions):
        async for tx in ledger.transactions(retry_count_max=0):
            async with tx:
                await tx.post(batch, last=True)

    await assert_newest_link_holds(
        engine, [transfer.id for transfer in resolutions], LINK_FORM_HEADS_AND_BALANCES
    )


async def test_no_ledger_write_may_follow_the_last(engine: AsyncEngine, unique_id: str) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    first = Transfer(new_id(), a, b, 1, TransferCode.SYNTHETIC)
    second = Transfer(new_id(), a, b, 2, TransferCode.SYNTHETIC)

    async def post_after_the_last() -> None:
        async for tx in ledger.transactions(retry_count_max=0):
            async with tx:
                await tx.post([first], last=True)
                await tx.post([second])

    with pytest.raises(RuntimeError, match="last=True"):
        await post_after_the_last()

    async with engine.connect() as conn:
        stored, _ = await read_stored(conn, [first.id, second.id])
    assert stored == {}  # the unit of work rolled back


async def test_a_links_ids_are_stored_uncompressed_even_when_they_would_compress(
    engine: AsyncEngine,
) -> None:
    """Ids as alike as can be (they differ in their last two bytes), which PostgreSQL would
    compress: the link's array is still stored as it is (migration 0026), since the attempt is
    made while the batch holds its accounts' locks and real ids never compress."""
    ledger = Ledger(engine)
    debit, credit = await make_accounts(ledger, "uncompressed", [AccountFlags.NONE] * 2)
    base = new_id().int & ~0xFFFF
    transfers = [
        Transfer(
            id=uuid.UUID(int=base + index),
            debit_account_id=debit,
            credit_account_id=credit,
            amount=1,
            code=TransferCode.SYNTHETIC,
        )
        for index in range(500)
    ]
    await ledger.post(transfers)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT cardinality(transfer_ids) AS ids,"
                    " pg_column_compression(transfer_ids) AS compression,"
                    " pg_column_size(transfer_ids) AS stored_bytes"
                    " FROM ledger_links ORDER BY id DESC LIMIT 1"
                )
            )
        ).one()
    assert row.ids == 500
    assert row.compression is None
    assert row.stored_bytes >= 500 * 16


@pytest.mark.parametrize("path", ["post", "post_new"])
async def test_the_heads_are_hashed_before_the_first_account_is_locked(
    engine: AsyncEngine, path: str
) -> None:
    """The heads' digest (`chain_heads`) is read by the accounts' update as a condition of its
    own, evaluated once before its first row, so it is made before any account is locked, not
    under the locks where the link needs it."""
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, f"heads-first-{path}", [AccountFlags.NONE] * 2)
    captured: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if "chain_heads" in statement:
            captured.append((statement, parameters))

    transfer = Transfer(new_id(), a, b, 3, TransferCode.SYNTHETIC)
    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async for tx in ledger.transactions(retry_count_max=0):
            async with tx:
                if path == "post":
                    await tx.post([transfer], last=True)
                else:
                    batch = NewTransfers()
                    batch.add(
                        transfer_id=transfer.id,
                        debit_account_id=a,
                        credit_account_id=b,
                        amount=3,
                        code=int(TransferCode.SYNTHETIC),
                        rate_card_version=None,
                        event_id=None,
                        metadata_text=None,
                    )
                    await tx.post_new(batch, last=True)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = captured

    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        plan = plan_root(result.scalar_one())
    [update] = [
        node
        for node in nodes_of(plan)
        if node["Node Type"] == "ModifyTable" and node.get("Relation Name") == "accounts"
    ]
    init_plans = [node for node in update["Plans"] if node["Parent Relationship"] == "InitPlan"]
    heads_read = [
        node
        for init_plan in init_plans
        for node in nodes_of(init_plan)
        if node.get("CTE Name") == "chain_heads"
    ]
    assert heads_read, json.dumps(update, indent=2)
