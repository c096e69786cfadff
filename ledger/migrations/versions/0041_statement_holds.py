"""Indexes of the pending transfers by account, for a statement's running pending amount.

Revision ID: 0041
Revises: 0040
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0041"
down_revision = "0040"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0041_statement_holds.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
