"""Tamper evidence: a hash chain over posted batches of transfers.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0006_hash_chain.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
