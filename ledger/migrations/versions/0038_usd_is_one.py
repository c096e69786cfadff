"""USD's FX rate is 1 per USD in every version (`fx_rates_usd_is_one`).

Revision ID: 0038
Revises: 0037
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0038_usd_is_one.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
