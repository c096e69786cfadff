"""Reading `EXPLAIN (FORMAT JSON)` output in tests: the plan's root node and every node under it,
the plan of the one statement a read sends, and whether a list reads a table in its order."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

INDEX_SCAN_TYPES = {"Index Scan", "Index Only Scan"}
# The index a list's cursor is looked up by (one row by id), which `reads_in_order` leaves aside.
CURSOR_INDEXES = {"dead_letters": "dead_letters_pkey"}


def plan_root(document: Any) -> dict[str, Any]:
    """The root node of an `EXPLAIN (FORMAT JSON)` result (the driver hands it back as text or
    already decoded)."""
    plans = json.loads(document) if isinstance(document, str) else document
    root: dict[str, Any] = plans[0]["Plan"]
    return root


def nodes_of(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The node and every node under it, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes_of(child)


@contextlib.contextmanager
def statements_run(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The statements (driver text and parameters) the engine sends while the block runs."""
    found: list[tuple[str, Any]] = []

    def capture(*arguments: Any) -> None:
        _conn, _cursor, statement, parameters, _context, _many = arguments
        found.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        yield found
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)


async def plan_of(conn: AsyncConnection, statement: str, parameters: Any) -> dict[str, Any]:
    document = (
        await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
    ).scalar_one()
    return plan_root(document)


async def only_plan(engine: AsyncEngine, conn: AsyncConnection, read: Any) -> dict[str, Any]:
    """The plan of the one statement `read()` sends."""
    with statements_run(engine) as sent:
        await read()
    [(statement, parameters)] = sent
    return await plan_of(conn, statement, parameters)


def reads_in_order(plan: dict[str, Any], table: str, index: str) -> bool:
    """`table` read through `index` and nothing sorted: the first rows come in the list's order."""
    cursor_index = CURSOR_INDEXES.get(table)
    scans = [
        node
        for node in nodes_of(plan)
        if node.get("Relation Name") == table and node.get("Index Name") != cursor_index
    ]
    return (
        len(scans) == 1
        and scans[0]["Node Type"] in INDEX_SCAN_TYPES
        and scans[0].get("Index Name") == index
        and not any(node["Node Type"] in {"Sort", "Incremental Sort"} for node in nodes_of(plan))
    )
