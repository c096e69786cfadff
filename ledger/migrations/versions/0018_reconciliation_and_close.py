"""Bank reconciliations and month-end closes: the stored results of `giftledger reconcile`, the
closing balances of `giftledger close` hashed with the chain's head, all append-only; and
`wait_for_ledger_writers`, with which a close waits for the batches in flight.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0018_reconciliation_and_close.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
