"""Least privilege: giftledger_writer, the role the services write as.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0007_writer_role.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
