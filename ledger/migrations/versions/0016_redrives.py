"""Operator recovery: dead letters get an id and a record of their re-drives; failed cash-outs a
record of their resubmissions.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0016_redrives.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
