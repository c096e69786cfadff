"""Parked events are keyed by the deployment (topic prefix) that parked them.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0011_parked_events_by_prefix.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
