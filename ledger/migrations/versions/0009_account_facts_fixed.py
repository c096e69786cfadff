"""The writer role may update only the four totals of an account: asset and rules are fixed.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0009_account_facts_fixed.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
