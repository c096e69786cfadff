"""Verify checkpoints record the highest rolled day a run checked, so that the next incremental
run checks only the days rolled since.

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0024_verify_rolled_days.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
