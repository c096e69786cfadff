"""The outbox's index of unpublished rows by key goes: the relay's claim reads them by id.

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0028_outbox_without_key_index.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
