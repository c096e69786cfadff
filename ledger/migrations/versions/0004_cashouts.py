"""Cash-outs: FX rates, cash-outs and their transitions, the outbox.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0004_cashouts.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
