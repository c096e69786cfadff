"""The schema's functions read their own tables, whatever the caller's `search_path`; and a row
recording an operator action's effect cannot cite an action the log does not hold.

A name without a schema is looked up in the caller's `search_path`, which starts with the
session's temporary schema. Until migration 0039 the triggers of migrations 0033 and 0037 looked
up `operator_actions`, `transfer_keys` and `balance_adjustment_*` so: the writer could create a
temporary table named `operator_actions` holding a forged action and record an unfreeze citing
it, while the real log showed only the freeze. On the session's database, as the writer, past the
desk.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ledger.database import to_async_url
from ledger.service import Ledger
from services.operator.desk import OperatorDesk
from tests.operator_helpers import Feed, new_key

pytestmark = pytest.mark.server

WRITER: Final = "giftledger_writer"
REASON: Final = "fraud review"
PINNED_SEARCH_PATH: Final = "search_path=public, pg_temp"
# Functions that read no table and must stay inlinable into the analysts' views and the
# partition functions' SQL (a SET clause stops PostgreSQL inlining a SQL function).
READ_NO_TABLE: Final = frozenset({"major_units", "transfer_month_partition_name"})
# A row citing this action id cites nothing: the log's ids are far below it.
MISSING_ACTION_ID: Final = 9_000_000_000


@pytest_asyncio.fixture(loop_scope="session")
async def feed(engine: AsyncEngine) -> Feed:
    return await Feed.on(engine)


@pytest.fixture
def desk(engine: AsyncEngine) -> OperatorDesk:
    return OperatorDesk(Ledger(engine), topic_prefix="", database_role=WRITER)


Statement = tuple[str, dict[str, Any]]
SHADOW_LOG: Final[Statement] = (
    "CREATE TEMP TABLE operator_actions ON COMMIT DROP AS SELECT * FROM public.operator_actions",
    {},
)


async def _as_writer_with_shadow(
    database_url: str, shadow: list[Statement], statement: str, params: dict[str, Any]
) -> None:
    """As the writer, on a new session (whose functions have no plans cached yet, as an
    attacker's), in one transaction: the `shadow` statements (temporary tables named as the
    schema's), then `statement`."""
    attacker = create_async_engine(to_async_url(database_url), poolclass=NullPool)
    try:
        async with attacker.begin() as conn:
            await conn.execute(text(f"SET LOCAL ROLE {WRITER}"))
            for shadowing, shadowing_params in shadow:
                await conn.execute(text(shadowing), shadowing_params)
            await conn.execute(text(statement), params)
    finally:
        await attacker.dispose()


async def _freezes_of(engine: AsyncEngine, creator: str) -> list[bool]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT frozen FROM creator_freezes WHERE creator_id = :c ORDER BY id"),
            {"c": creator},
        )
        return [bool(row.frozen) for row in rows]


async def test_a_temporary_operator_actions_table_does_not_let_a_forged_unfreeze_in(
    engine: AsyncEngine, database_url: str, desk: OperatorDesk, feed: Feed
) -> None:
    frozen_creator, other_creator = await feed.eligible_creator(1), await feed.eligible_creator(1)
    freeze = await desk.set_frozen(
        frozen_creator,
        frozen=True,
        idempotency_key=new_key(),
        actor="alice",
        reason=REASON,
        ticket=None,
    )
    proposal = await desk.propose_adjustment(
        idempotency_key=new_key(),
        actor="bob",
        creator_id=other_creator,
        asset="DIAMOND",
        amount_minor=100,
        reason="unrelated",
        ticket=None,
    )
    assert freeze.action is not None
    unrelated_id = proposal.adjustment.id
    shadow: list[Statement] = [
        SHADOW_LOG,
        (
            "UPDATE pg_temp.operator_actions SET action = 'creator_unfrozen', target = :c"
            " WHERE id = :a",
            {"c": frozen_creator, "a": unrelated_id},
        ),
    ]
    unfreeze = "INSERT INTO creator_freezes (creator_id, frozen, action_id) VALUES (:c, false, :a)"
    with pytest.raises(DBAPIError, match=f"cites operator action {unrelated_id}, which is not"):
        await _as_writer_with_shadow(
            database_url, shadow, unfreeze, {"c": frozen_creator, "a": unrelated_id}
        )
    assert await _freezes_of(engine, frozen_creator) == [True]


async def test_temporary_tables_do_not_let_a_withdrawn_adjustment_be_approved(
    engine: AsyncEngine, database_url: str, desk: OperatorDesk, feed: Feed
) -> None:
    """The shadows of every table the two triggers read: the withdrawals (empty: the adjustment
    looks proposed), the log (an approval by bob of it) and the transfer keys (its transfer)."""
    creator = await feed.eligible_creator(1)
    proposal = await desk.propose_adjustment(
        idempotency_key=new_key(),
        actor="alice",
        creator_id=creator,
        asset="DIAMOND",
        amount_minor=100,
        reason=REASON,
        ticket=None,
    )
    adjustment_id = proposal.adjustment.id
    withdrawal = await desk.withdraw_adjustment(
        adjustment_id, idempotency_key=new_key(), actor="alice", reason="proposed by mistake"
    )
    freeze = await desk.set_frozen(
        creator, frozen=True, idempotency_key=new_key(), actor="carol", reason=REASON, ticket=None
    )
    assert withdrawal.action is not None
    assert freeze.action is not None
    cited_id = freeze.action.id  # an action no approval cites yet, made to look like one
    transfer_id = uuid.uuid4()
    shadow: list[Statement] = [
        (
            "CREATE TEMP TABLE balance_adjustment_withdrawals ON COMMIT DROP AS"
            " SELECT * FROM public.balance_adjustment_withdrawals WHERE false",
            {},
        ),
        SHADOW_LOG,
        (
            "UPDATE pg_temp.operator_actions SET action = 'adjustment_approved', actor = 'bob',"
            " details = jsonb_build_object('adjustment_id', CAST(:id AS text)) WHERE id = :a",
            {"id": str(adjustment_id), "a": cited_id},
        ),
        (
            "CREATE TEMP TABLE transfer_keys (id uuid, created_at timestamptz) ON COMMIT DROP",
            {},
        ),
        ("INSERT INTO pg_temp.transfer_keys VALUES (:t, now())", {"t": transfer_id}),
    ]
    approval = (
        "INSERT INTO balance_adjustment_approvals (adjustment_id, proposed_by, approved_by,"
        " approval_action_id, transfer_id) VALUES (:id, 'alice', 'bob', :a, :t)"
    )
    with pytest.raises(DBAPIError, match=f"adjustment {adjustment_id} was withdrawn"):
        await _as_writer_with_shadow(
            database_url, shadow, approval, {"id": adjustment_id, "a": cited_id, "t": transfer_id}
        )
    async with engine.connect() as conn:
        approvals = await conn.scalar(
            text("SELECT count(*) FROM balance_adjustment_approvals WHERE adjustment_id = :id"),
            {"id": adjustment_id},
        )
    assert approvals == 0


async def _dead_letter_and_cashouts(conn: AsyncConnection, unique_id: str) -> tuple[int, str, str]:
    """A dead letter and two cash-outs, as the owner: what a re-drive and a resubmission name."""
    dead_letter_id = await conn.scalar(
        text(
            "INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset, error,"
            " detail) VALUES ('', 'gifts.sent', 0, :offset, 'malformed_json', 'search path test')"
            " RETURNING id"
        ),
        {"offset": uuid.uuid4().int % 2**40},
    )
    failed, resubmitted = f"sp-cashout-{unique_id}-1", f"sp-cashout-{unique_id}-2"
    await conn.execute(
        text(
            "INSERT INTO cashouts (cashout_id, creator_id, asset, amount, payout_currency,"
            " usd_value_micros, status, requested_on, occurred_at)"
            " SELECT id, :creator, 'DIAMOND', 1000, 'USD', 5000000, 'held', current_date,"
            " clock_timestamp() FROM unnest(ARRAY[:failed, :resubmitted]) AS id"
        ),
        {"creator": f"sp-creator-{unique_id}", "failed": failed, "resubmitted": resubmitted},
    )
    assert isinstance(dead_letter_id, int)
    return dead_letter_id, failed, resubmitted


@pytest.mark.parametrize("shadowed", [False, True], ids=["plain", "shadowed"])
async def test_a_redrive_or_resubmission_citing_a_missing_action_is_refused(
    engine: AsyncEngine, database_url: str, unique_id: str, shadowed: bool
) -> None:
    """With or without a temporary `operator_actions` holding the action: the log does not."""
    async with engine.begin() as conn:
        dead_letter_id, failed, resubmitted = await _dead_letter_and_cashouts(conn, unique_id)
    rows: list[tuple[str, dict[str, Any], str, str]] = [
        (
            "INSERT INTO dead_letter_redrives (dead_letter_id, operator_action_id,"
            " idempotency_key, topic_prefix, topic, kafka_partition, kafka_offset)"
            " VALUES (:d, :a, :k, '', 'gifts.sent', 0, :offset)",
            {
                "d": dead_letter_id,
                "a": MISSING_ACTION_ID,
                "k": new_key(),
                # a position no other test's re-drive holds
                "offset": uuid.uuid4().int % 2**40,
            },
            "dead_letter_redriven",
            f"dead-letter:{dead_letter_id}",
        ),
        (
            "INSERT INTO cashout_resubmissions (cashout_id, resubmitted_cashout_id,"
            " operator_action_id) VALUES (:c, :r, :a)",
            {"c": failed, "r": resubmitted, "a": MISSING_ACTION_ID},
            "payout_resubmitted",
            failed,
        ),
    ]
    for statement, params, action, target in rows:
        forged_action: Statement = (
            "INSERT INTO pg_temp.operator_actions (id, idempotency_key, actor, role, action,"
            " target, reason, previous_hash, hash)"
            " VALUES (:a, :k, 'nobody', 'operator', :action, :target, 'r', '', '')",
            {"a": MISSING_ACTION_ID, "k": new_key(), "action": action, "target": target},
        )
        shadow = [SHADOW_LOG, forged_action] if shadowed else []
        with pytest.raises(DBAPIError, match=r"foreign key|cites operator action"):
            await _as_writer_with_shadow(database_url, shadow, statement, params)
    async with engine.connect() as conn:
        recorded = await conn.scalar(
            text(
                "SELECT (SELECT count(*) FROM dead_letter_redrives WHERE dead_letter_id = :d)"
                " + (SELECT count(*) FROM cashout_resubmissions WHERE cashout_id = :c)"
            ),
            {"d": dead_letter_id, "c": failed},
        )
    assert recorded == 0


async def test_every_function_reading_tables_pins_its_search_path(engine: AsyncEngine) -> None:
    """Each function of the schema looks in the catalog (implicitly first), then the schema, then
    the session's temporary tables, whoever calls it (a function added later must pin it too)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT p.proname, p.proconfig FROM pg_proc p"
                " JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = 'public'"
                " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid"
                "                 AND d.deptype = 'e')"
                " ORDER BY p.proname"
            )
        )
        configs = {str(row.proname): list(row.proconfig or []) for row in rows}
    assert configs.keys() >= READ_NO_TABLE
    unpinned = sorted(
        name
        for name, config in configs.items()
        if name not in READ_NO_TABLE and PINNED_SEARCH_PATH not in config
    )
    assert unpinned == []
