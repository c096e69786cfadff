"""Every function of the schema that reads a table runs with `search_path = public, pg_temp`
(the catalog implicitly first, the temporary schema last), so a temporary table cannot stand in
for the schema's (the triggers of 0033 and 0037 could be fed a forged `operator_actions`);
re-drives and resubmissions get a foreign key to the action they cite.

Revision ID: 0039
Revises: 0038
"""

from __future__ import annotations

from ledger.migrations.sql_files import execute_sql_file

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0039_functions_pin_their_search_path.sql")


def downgrade() -> None:
    raise NotImplementedError("the ledger is never rolled back; restore from a backup instead")
