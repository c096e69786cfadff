"""The day totals count gifts as well as gift events: a gift event's `count`, recorded in its
transfer's metadata from now on.

Revision ID: 0042
Revises: 0041
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0042"
down_revision = "0041"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0042_gift_counts.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
