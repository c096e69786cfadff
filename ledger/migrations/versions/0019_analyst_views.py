"""SQL a finance analyst can read: the giftledger_analyst role (NOLOGIN until given a password),
a comment on every table and column, read-only views that decode transfers, gifts, balances
and cash-outs, and the index the cash-out report by booking time reads.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0019_analyst_views.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
