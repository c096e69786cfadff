"""Transfer partitions kept by the running service; the default partition's rows moved to their
month; TRUNCATE refused on every partition.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0013_partition_upkeep.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
