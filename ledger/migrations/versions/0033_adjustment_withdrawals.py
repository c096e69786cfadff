"""A proposed balance adjustment can be withdrawn (`balance_adjustment_withdrawals`); the
database refuses an adjustment both approved and withdrawn.

Revision ID: 0033
Revises: 0032
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0033_adjustment_withdrawals.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
