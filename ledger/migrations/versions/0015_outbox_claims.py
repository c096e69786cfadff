"""Outbox rows claimed by one relay at a time, with a lease; parked reversals taken by one sweep
at a time.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0015_outbox_claims.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
