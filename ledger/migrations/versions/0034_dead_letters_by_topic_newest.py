"""An index for the dead letters list filtered by topic alone, newest first: a page of a topic
flooded with bad records is read in the list's order, not sorted from all of them.

Revision ID: 0034
Revises: 0033
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0034_dead_letters_by_topic_newest.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
