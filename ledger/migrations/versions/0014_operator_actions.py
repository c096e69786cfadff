"""Operator actions: the hash-chained audit log, balance adjustments, creator freezes.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0014_operator_actions.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
