"""Pre-summed transfers per UTC day (rolled_days, day_account_totals, day_gift_totals): the
journal and the console's overview read them for the days that are final and scan the
transfers only for the rest of their range; plus a BRIN index on the transfers' commit time.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0022_day_totals.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
