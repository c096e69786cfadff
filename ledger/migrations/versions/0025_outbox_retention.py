"""Published outbox rows may be deleted once old: by the writer role, never an unpublished one.

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0025_outbox_retention.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
