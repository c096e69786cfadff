"""A dead letter's id is its table's primary key; a copy's place in its source topic may hold
copies of several re-drives (offsets that started again).

Revision ID: 0044
Revises: 0043
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0044"
down_revision = "0043"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0044_dead_letter_keys.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
