"""Indexes the console's pages read on a big ledger (issue 19).

PLACEHOLDER: filled in by the work that owns it; an empty revision until then.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    return None


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
