"""Verify runs: every `giftledger verify`, clean or not, and what it found, for the console's
overview (a checkpoint records only the clean ones).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0023_verify_runs.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
