"""The bank's confirmation that a payout an operator cancelled will not be made
(`cashout_cancel_confirmations`): a cancelled cash-out whose payout request may have reached the
bank is resubmitted only once it is there.

Revision ID: 0036
Revises: 0035
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0036_cancel_confirmations.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
