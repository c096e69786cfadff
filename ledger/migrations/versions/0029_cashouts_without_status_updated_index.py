"""The cash-outs' index by status and update time goes: the index by status and request time
serves every read by status.

Revision ID: 0029
Revises: 0028
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0029_cashouts_without_status_updated_index.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
