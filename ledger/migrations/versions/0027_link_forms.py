"""A chain link says the form of its digest: whole lines, or heads and balances hashed apart.

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0027_link_forms.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
