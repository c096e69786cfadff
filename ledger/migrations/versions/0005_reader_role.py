"""The finance API's read-only role: giftledger_reader, SELECT on every table.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0005_reader_role.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
