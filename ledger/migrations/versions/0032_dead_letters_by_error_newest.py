"""An index for the dead letters list filtered by reason alone, newest first: a rare reason is
found without reading the whole table.

Revision ID: 0032
Revises: 0031
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0032_dead_letters_by_error_newest.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
