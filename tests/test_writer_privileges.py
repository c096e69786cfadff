"""What giftledger_writer may write, table by table, held to a list kept here.

The writer is the role the services write as, and `close`, `reconcile`, `rates add`,
`rates fx-add` and `giftledger operator` act as it. Each table of the schema is in
`WRITER_WRITES` with the writes the writer may make on it, none for most: a table added later
fails `test_the_writer_writes_the_tables_listed_and_no_other` until it is placed here, and
gives the writer nothing to write until its migration grants it (the default privileges give it
SELECT only, from migration 0043 on).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.database import create_engine
from tests.fresh_database import fresh_database

pytestmark = pytest.mark.server

WRITER: Final = "giftledger_writer"
READER: Final = "giftledger_reader"
# Each privilege that lets a role write, or act on a table beyond reading it; the first three may
# also be granted on columns alone.
WRITE_PRIVILEGES: Final = ("INSERT", "UPDATE", "REFERENCES", "DELETE", "TRUNCATE", "TRIGGER")
COLUMN_PRIVILEGES: Final = ("INSERT", "UPDATE", "REFERENCES")

ACCOUNT_TOTALS: Final = "UPDATE (credits_pending, credits_posted, debits_pending, debits_posted)"
PARKED_EVENT_CLAIM: Final = "UPDATE (claimed_by, claimed_until)"

# What the writer may write on each table and view of the schema `public` (partitions aside),
# and who writes it as the writer.
WRITER_WRITES: Final[dict[str, tuple[str, ...]]] = {
    # The ledger (ledger/store.py, ledger/accounts.py, ledger/chain.py).
    "accounts": ("INSERT", ACCOUNT_TOTALS),
    "transfers": ("INSERT",),
    "transfer_keys": ("INSERT",),
    "pending_resolutions": ("INSERT",),
    "ledger_links": ("INSERT",),
    "ledger_chain_head": ("UPDATE",),  # its one row, made by migration 0006
    # Ingestion (services/ingestion/): applied, parked and dead-lettered events, re-drives.
    "applied_events": ("INSERT",),
    "parked_events": ("INSERT", PARKED_EVENT_CLAIM, "DELETE"),
    "dead_letters": ("INSERT",),
    "dead_letter_redrives": ("INSERT",),
    # Cash-outs and creators (services/cashout/).
    "creators": ("INSERT", "UPDATE"),
    "cashouts": ("INSERT", "UPDATE"),
    "cashout_transitions": ("INSERT",),
    "cashout_cancel_confirmations": ("INSERT",),
    "cashout_resubmissions": ("INSERT",),
    "outbox": ("INSERT", "UPDATE", "DELETE"),
    # The day totals `giftledger run` rolls up (ledger/rollups.py).
    "rolled_days": ("INSERT",),
    "day_account_totals": ("INSERT",),
    "day_gift_totals": ("INSERT",),
    # `rates add`, `rates fx-add` (services/rates/).
    "rate_cards": ("INSERT",),
    "fx_rates": ("INSERT",),
    # `close` (ledger/closes.py) and `reconcile` (services/reconcile/).
    "period_closes": ("INSERT",),
    "closing_balances": ("INSERT",),
    "reconciliations": ("INSERT",),
    "reconciliation_files": ("INSERT",),
    "reconciliation_items": ("INSERT",),
    # `giftledger operator`, the API's and the console's operator actions (services/operator/).
    "operator_actions": ("INSERT",),
    "operator_actions_head": ("UPDATE",),  # its one row, made by migration 0014
    "balance_adjustments": ("INSERT",),
    "balance_adjustment_approvals": ("INSERT",),
    "balance_adjustment_withdrawals": ("INSERT",),
    "creator_freezes": ("INSERT",),
    # Written by migrations only: reference tables, the migrations' own, the catch-up list
    # (`giftledger migrate` marks it as the owner).
    "assets": (),
    "transfer_codes": (),
    "account_kinds": (),
    "transfer_code_topics": (),
    "alembic_version": (),
    "cashout_catch_ups": (),
    # Written by `giftledger verify` as the owner.
    "verify_checkpoints": (),
    "verify_checkpoint_accounts": (),
    "verify_runs": (),
    # The analysts' views (migration 0019).
    "transfer_details": (),
    "gift_details": (),
    "account_balances": (),
    "cashout_details": (),
}

# Every table and view of `public` but the partitions, each privilege of a role on it in the
# order of WRITE_PRIVILEGES: table-wide, or the columns it is granted on, by name.
_WRITES_ON_EACH_TABLE: Final = text(
    """
    SELECT c.relname AS table_name, p.privilege,
           has_table_privilege(:role, c.oid, p.privilege) AS table_wide,
           ARRAY(SELECT a.attname::text FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND p.privilege = ANY(:column_privileges)
                   AND has_column_privilege(:role, c.oid, a.attnum, p.privilege)
                 ORDER BY a.attname) AS columns
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN unnest(CAST(:privileges AS text[])) WITH ORDINALITY AS p (privilege, position)
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND NOT c.relispartition AND c.relname <> ALL(:left_out)
    ORDER BY c.relname, p.position
    """
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(postgres_admin_url: str) -> AsyncIterator[AsyncEngine]:
    """A database of this module's own, where it makes tables and partitions of its own."""
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=2)
        yield engine
        await engine.dispose()


async def writes_on_each_table(
    conn: AsyncConnection, role: str, left_out: tuple[str, ...] = ()
) -> dict[str, tuple[str, ...]]:
    """What `role` may write on each table and view, as `WRITER_WRITES` says it."""
    rows = await conn.execute(
        _WRITES_ON_EACH_TABLE,
        {
            "role": role,
            "privileges": list(WRITE_PRIVILEGES),
            "column_privileges": list(COLUMN_PRIVILEGES),
            "left_out": list(left_out),
        },
    )
    writes: dict[str, tuple[str, ...]] = {}
    for row in rows:
        held = writes.setdefault(row.table_name, ())
        if row.table_wide:
            writes[row.table_name] = (*held, row.privilege)
        elif row.columns:
            writes[row.table_name] = (*held, f"{row.privilege} ({', '.join(row.columns)})")
    return writes


async def _partitions(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(
        text(
            "SELECT relid::text FROM pg_partition_tree('transfers')"
            " WHERE relid <> 'transfers'::regclass ORDER BY 1"
        )
    )
    return list(rows.scalars())


async def test_the_writer_writes_the_tables_listed_and_no_other(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await writes_on_each_table(conn, WRITER) == WRITER_WRITES


async def test_the_reader_writes_no_table(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        writes = await writes_on_each_table(conn, READER)
    assert writes == dict.fromkeys(WRITER_WRITES, ())


async def test_a_table_made_after_the_migrations_gives_the_writer_nothing_to_write(
    engine: AsyncEngine,
) -> None:
    """The owner's default privileges: a table a later migration makes is read by the writer
    and the reader, and written by neither until the migration grants it."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE made_later (id bigint PRIMARY KEY)"))
        writes = await writes_on_each_table(conn, WRITER, left_out=tuple(WRITER_WRITES))
        readers = await conn.execute(
            text(
                "SELECT has_table_privilege(:writer, 'made_later', 'SELECT'),"
                " has_table_privilege(:reader, 'made_later', 'SELECT')"
            ),
            {"writer": WRITER, "reader": READER},
        )
        assert tuple(readers.one()) == (True, True)
        await conn.execute(text("DROP TABLE made_later"))
    assert writes == {"made_later": ()}


async def test_the_writer_inserts_transfers_through_the_table_not_its_partitions(
    engine: AsyncEngine,
) -> None:
    """Every partition of `transfers`, the months the migrations made and those made after by
    `keep_transfer_partitions`, gives the writer SELECT only: it inserts through `transfers`."""
    async with engine.begin() as conn:
        before = await _partitions(conn)
        await conn.execute(text("SELECT keep_transfer_partitions(24)"))
        partitions = await _partitions(conn)
        rows = await conn.execute(
            text(
                "SELECT relid::text AS name,"
                " has_table_privilege(:role, relid, 'SELECT') AS reads,"
                " has_table_privilege(:role, relid,"
                "   'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS writes"
                " FROM pg_partition_tree('transfers') WHERE relid <> 'transfers'::regclass"
            ),
            {"role": WRITER},
        )
        held = {row.name: (row.reads, row.writes) for row in rows}
    assert "transfers_default" in before
    assert len(partitions) > len(before)  # months made after the migrations
    assert held == dict.fromkeys(partitions, (True, False))
