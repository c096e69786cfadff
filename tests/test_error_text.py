"""An error as logs and dead letters show it: one line, the driver's message and the server's
SQLSTATE, never the statement that failed or its parameters (creators' data, payout account
references among them)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger.database import create_engine
from services.runtime.database import error_text

PAYOUT_ACCOUNT_REF = "pa_never_in_a_log_1234"


async def test_a_failed_statement_is_one_line_without_its_statement_or_parameters(
    database_url: str,
) -> None:
    engine = create_engine(database_url, statement_timeout_ms=50)
    try:
        with pytest.raises(DBAPIError) as failed:
            async with engine.connect() as conn:
                await conn.execute(
                    text("SELECT pg_sleep(1), CAST(:refs AS text[])\nFROM generate_series(1, 2)"),
                    {"refs": [PAYOUT_ACCOUNT_REF]},
                )
    finally:
        await engine.dispose()
    error = failed.value
    assert error_text(error) == (
        "DBAPIError: canceling statement due to statement timeout (SQLSTATE 57014)"
    )
    assert PAYOUT_ACCOUNT_REF not in str(error), "the engine hides a statement's parameters"
    assert "pg_sleep" in str(error), "SQLAlchemy's own message still names the statement"


def test_an_error_without_a_server_is_its_type_and_message_on_one_line() -> None:
    assert error_text(ValueError("first line\n  second line")) == (
        "ValueError: first line second line"
    )
    assert error_text(FileNotFoundError(2, "No such file or directory")) == (
        "FileNotFoundError: [Errno 2] No such file or directory"
    )
    assert error_text(TimeoutError()) == "TimeoutError"
