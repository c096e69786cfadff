"""Incremental verify: where the last verified run ended (issue 20).

PLACEHOLDER: filled in by the work that owns it; an empty revision until then.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    return None


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
