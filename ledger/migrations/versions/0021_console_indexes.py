"""Indexes the console's lists read on a big ledger: the cash-outs list and the dead letters
list, newest first, read their first rows from an index in their order instead of sorting the
whole table on every request.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0021_console_indexes.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
