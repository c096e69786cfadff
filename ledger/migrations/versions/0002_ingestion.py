"""Ingestion bookkeeping: applied events, rate cards, parked events, dead letters.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0002_ingestion.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
