"""Each row recording an operator action's effect (an adjustment, its approval or withdrawal, a
freeze, a resubmission, a re-drive) must cite the action that did it, and an approval a transfer
the ledger holds.

Revision ID: 0037
Revises: 0036
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0037_rows_match_their_actions.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
