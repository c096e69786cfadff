"""`verify`'s check of the accounts' totals reads each transfer a few times, not once per account,
when the statistics know that one account is on one side of every transfer.

The platform's accounts are debited by every gift, as the funding account of this module's
ledger is by every transfer. Once `ANALYZE` has seen that, an account is debited by "many"
transfers on average, and an earlier form of the check, a subquery per account, scanned all of
`transfers` for each account: `verify` of 202,000 transfers took 101 s instead of 4.8."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chart import AccountKind, AccountSpec
from ledger.model import NewTransfers, TransferCode
from ledger.service import Ledger
from ledger.verify import _CHECKS
from tests.query_plans import nodes_of, plan_root

pytestmark = pytest.mark.server  # a query plan: the server's planner decides it

ACCOUNT_COUNT = 300
TRANSFER_COUNT = 3_000
BATCH_SIZE = 1_000
# Two passes for the posted sums, one for the open pending transfers, and some to spare. The
# subquery per account read about ACCOUNT_COUNT times the transfers.
ROW_READS_PER_TRANSFER_MAX = 4


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database: the check reads every transfer there is."""
    return module_engine


def _transfer_rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of `transfers` (its partitions) produced or filtered out, over all
    their loops."""
    return sum(
        round(
            (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0))
            * node.get("Actual Loops", 1)
        )
        for node in nodes_of(plan)
        if str(node.get("Relation Name", "")).startswith("transfers")
    )


async def test_the_totals_check_reads_each_transfer_a_few_times_after_analyze(
    engine: AsyncEngine,
) -> None:
    ledger = Ledger(engine)
    specs = [
        AccountSpec(f"test:skew:{index}", "DIAMOND", AccountKind.SYNTHETIC)
        for index in range(ACCOUNT_COUNT + 1)
    ]
    ids = await ledger.account_ids(specs)
    funding, *accounts = (ids[spec.name] for spec in specs)
    for start in range(0, TRANSFER_COUNT, BATCH_SIZE):
        batch = NewTransfers()
        for index in range(start, start + BATCH_SIZE):
            batch.add(
                transfer_id=uuid.uuid4(),
                debit_account_id=funding,
                credit_account_id=accounts[index % ACCOUNT_COUNT],
                amount=1 + index,
                code=int(TransferCode.SYNTHETIC),
                rate_card_version=None,
                event_id=None,
                metadata_text=None,
            )
        await ledger.post_new(batch)
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))

    async with engine.connect() as conn:
        transfer_count = await conn.scalar(text("SELECT count(*) FROM transfers"))
        plan = plan_root(
            await conn.scalar(
                text(f"EXPLAIN (ANALYZE, FORMAT JSON) {_CHECKS['totals_match_transfers']}")
            )
        )

    assert transfer_count == TRANSFER_COUNT
    assert plan.get("Actual Rows") == 0  # and the totals match
    assert _transfer_rows_read(plan) <= ROW_READS_PER_TRANSFER_MAX * TRANSFER_COUNT
