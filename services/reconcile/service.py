"""`reconcile`: the settlement files of some days against the ledger, stored once.

The same files (by content and days) reconcile once: a second run finds the stored
reconciliation and stores nothing, whatever the ledger has booked since. Settlement files are
the bank's record of the past; new files, or another range of days, make a new reconciliation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.reconcile.files import SettlementSet
from services.reconcile.ledger_side import bookings_of, cashouts_booked_on, cashouts_of
from services.reconcile.matching import Item, classify
from services.reconcile.store import find_reconciliation, store_reconciliation


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    reconciliation_id: int
    created: bool


async def match(engine: AsyncEngine, settlement: SettlementSet) -> list[Item]:
    """Classify every cash-out the files name or should hold (nothing is stored)."""
    lines = settlement.lines
    async with engine.connect() as conn:
        booked_on_days = await cashouts_booked_on(conn, settlement.first_day, settlement.last_day)
        cashout_ids = sorted({line.cashout_id for line in lines} | set(booked_on_days))
        cashouts = await cashouts_of(conn, cashout_ids)
        bookings = await bookings_of(conn, cashout_ids)
    return classify(lines, cashouts, bookings, frozenset(settlement.days))


async def reconcile(engine: AsyncEngine, settlement: SettlementSet) -> ReconcileOutcome:
    """Reconcile and store, or find the reconciliation of the same files stored before."""
    async with engine.connect() as conn:
        found = await find_reconciliation(conn, settlement.content_sha256)
    if found is not None:
        return ReconcileOutcome(found, created=False)
    items = await match(engine, settlement)
    async with engine.begin() as conn:
        stored = await store_reconciliation(conn, settlement, items)
    if stored is not None:
        return ReconcileOutcome(stored, created=True)
    async with engine.connect() as conn:  # stored by another run meanwhile
        found = await find_reconciliation(conn, settlement.content_sha256)
    assert found is not None, "a reconciliation that lost the race to store is stored"
    return ReconcileOutcome(found, created=False)
