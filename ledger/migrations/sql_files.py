"""Run a SQL file from ledger/sql inside the migration's transaction.

The files hold several statements and PL/pgSQL bodies, which a prepared statement cannot take, so
they go through the driver's simple-query path on the same connection and transaction.
"""

from __future__ import annotations

from importlib import resources

from alembic import op
from sqlalchemy import text
from sqlalchemy.util import await_


def execute_sql_file(name: str) -> None:
    sql = resources.files("ledger").joinpath("sql", name).read_text(encoding="utf-8")
    bind = op.get_bind()
    bind.execute(text("SELECT 1"))  # makes the driver open the migration's transaction first
    driver_connection = bind.connection.dbapi_connection.driver_connection  # type: ignore[union-attr]
    await_(driver_connection.execute(sql))
