"""A new connection learns the array types the statements bind when it opens
(`ledger.database.ARRAY_ELEMENT_TYPES`), so that no statement of a transaction waits for
asyncpg to ask the server about one. The asking is watched on the real driver (its method runs
as it would, and is counted); the list is held to the casts in the project's SQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from ledger.database import ARRAY_ELEMENT_TYPES, create_engine

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
SQL_SOURCES = [ROOT / "ledger", ROOT / "services"]
# `AS bigint[]`, `::uuid[]`: the element type of an array a statement casts to.
ARRAY_CAST = re.compile(r"(?:\bAS\s+|::)([a-z][a-z0-9_ ]*?)\[\]", re.IGNORECASE)

ALL_ARRAYS = text(
    "SELECT CAST(:bigints AS bigint[]), CAST(:integers AS integer[]),"
    " CAST(:smallints AS smallint[]), CAST(:uuids AS uuid[]),"
    " CAST(:moments AS timestamptz[]), CAST(:days AS date[]), CAST(:blobs AS bytea[]),"
    " CAST(:flags AS boolean[]), CAST(:names AS text[]), CAST(:documents AS jsonb[])"
)


def array_element_types_cast_in(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for root in paths:
        for source in sorted([*root.rglob("*.py"), *root.rglob("*.sql")]):
            found |= {match.lower() for match in ARRAY_CAST.findall(source.read_text())}
    return found


def test_every_array_type_cast_in_the_statements_is_learned_when_a_connection_opens() -> None:
    cast = array_element_types_cast_in(SQL_SOURCES)
    assert {"bigint", "uuid", "text"} <= cast  # the scan finds the casts at all
    assert cast <= set(ARRAY_ELEMENT_TYPES)


async def test_a_statement_binding_arrays_asks_the_server_about_no_type(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[int]] = []
    introspect: Callable[..., Awaitable[Any]] = asyncpg.Connection._introspect_types

    async def counted(self: asyncpg.Connection, *arguments: Any) -> Any:
        type_oids = arguments[0]
        asked.append(sorted(type_oids))
        return await introspect(self, *arguments)

    monkeypatch.setattr(asyncpg.Connection, "_introspect_types", counted)
    engine = create_engine(database_url, pool_size=1, pool_overflow_max=0)
    try:
        async with engine.connect() as conn:
            assert len(asked) == 1  # the connection's one question, as it opened
            row = (
                await conn.execute(
                    ALL_ARRAYS,
                    {
                        "bigints": [2**40],
                        "integers": [7],
                        "smallints": [3],
                        "uuids": [uuid.UUID(int=5)],
                        "moments": [datetime(2026, 12, 6, tzinfo=UTC)],
                        "days": [date(2026, 12, 6)],
                        "blobs": [b"\x00\x01"],
                        "flags": [True],
                        "names": ["a"],
                        "documents": ['{"a": 1}'],  # JSON text, as SQLAlchemy's codec takes it
                    },
                )
            ).one()
            assert len(asked) == 1, f"asked again about {asked[1:]}"
            assert row[0] == [2**40]
            assert row[3] == [uuid.UUID(int=5)]
            assert row[9] == [{"a": 1}]
    finally:
        await engine.dispose()
