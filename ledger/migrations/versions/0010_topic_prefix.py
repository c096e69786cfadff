"""Outbox, parked events and dead letters belong to the deployment (topic prefix) that wrote them.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0010_topic_prefix.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
