"""A reconciliation to read: a settlement file of one paid cash-out, reconciled through the real
`reconcile` (for the API tests, whose seeded ledger needs one)."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.payout_rail.settlement_file import SettlementLine, file_name, render
from services.reconcile.files import SettlementFile, settlement_set
from services.reconcile.service import reconcile


async def reconcile_paid_cashout(engine: AsyncEngine, cashout_id: str) -> int:
    """The id of a reconciliation of a file holding the `paid` line of `cashout_id`, dated the
    day the ledger booked it paid."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT c.payout_amount, c.payout_currency,"
                    " (t.at AT TIME ZONE 'UTC')::date AS day"
                    " FROM cashouts c JOIN cashout_transitions t USING (cashout_id)"
                    " WHERE c.cashout_id = :id AND t.status = 'paid'"
                ),
                {"id": cashout_id},
            )
        ).one()
    line = SettlementLine(
        provider_reference=f"seed-{hashlib.sha256(cashout_id.encode()).hexdigest()[:20]}",
        cashout_id=cashout_id,
        amount_minor=row.payout_amount,
        currency=row.payout_currency,
        status="paid",
        value_date=row.day,
        failure_code=None,
    )
    content = render([line]).encode()
    settlement = SettlementFile(
        file_name(row.day), row.day, hashlib.sha256(content).digest(), (line,)
    )
    return (await reconcile(engine, settlement_set([settlement]))).reconciliation_id
