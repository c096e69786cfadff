"""Currencies the schemas accept that 0001 did not list: CNY, ISK, PEN, PKR.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0008_more_currencies.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
