"""Incremental verify: where the last clean `giftledger verify` ended (`verify_checkpoints`, the
account totals it verified in `verify_checkpoint_accounts`, both append-only) and a BRIN index on
`transfers.seq` for the count of transfers stored since.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0020_verify_checkpoints.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
