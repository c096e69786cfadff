"""Room on the pages of `outbox` and `accounts` for the versions their updates write, so that
those updates stay on their page and add no index entry (HOT): the relay's claims of outbox
rows and the postings' account totals.

Revision ID: 0035
Revises: 0034
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0035_room_for_updates.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
