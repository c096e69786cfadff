"""Every dead-lettered record gets a row of its own: dead letters are unique by source position
and value hash, so a new record at an offset an old dead letter holds (offsets that started
again) is recorded too.

Revision ID: 0040
Revises: 0039
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0040"
down_revision = "0039"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0040_dead_letter_per_record.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
