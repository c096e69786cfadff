"""The double-entry core: assets, accounts, transfers (partitioned), keys, pending resolutions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0001_ledger.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
