"""The writer role inserts only into the tables the services and the commands acting as it write:
not into the reference tables, the migrations' own, the chain heads or the transfers' partitions,
and a table made later gives it nothing to write until its migration grants it.

Revision ID: 0043
Revises: 0042
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0043"
down_revision = "0042"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0043_writer_inserts_what_it_writes.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
