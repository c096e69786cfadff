"""A chain link's transfer ids are stored uncompressed: they do not compress, and trying costs time.

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0026_chain_link_ids_uncompressed.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
