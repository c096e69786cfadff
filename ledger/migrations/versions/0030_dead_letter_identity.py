"""Dead letters keep the hash of their record's value (a verdict given again only to that record,
a re-drive sending only it); parked events keep their record's key.

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0030_dead_letter_identity.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
