"""Creator profiles: the latest eligibility facts per creator, a projection of creators.updated.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0003_creators.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
