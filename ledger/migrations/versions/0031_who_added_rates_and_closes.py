"""Rate card versions and FX rates keep who added them, and closes who closed the month.

Revision ID: 0031
Revises: 0030
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0031_who_added_rates_and_closes.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
