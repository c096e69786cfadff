"""Every append-only table refuses TRUNCATE.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0012_no_truncate_append_only.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
