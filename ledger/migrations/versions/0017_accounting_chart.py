"""The chart's accounting types, payouts settled against cash at the bank.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0017_accounting_chart.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
