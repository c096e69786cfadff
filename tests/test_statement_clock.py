"""The benchmarks' statement clock (`bench.statement_clock`): each statement the engine runs is
tallied under the step in force in the task that ran it and under its first words, a statement
that waited is charged for the wait, and nothing is tallied once the clock is detached."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.statement_clock import STEP, StatementClock, statement_head

SLEEP_S = 0.2


async def run_as(engine: AsyncEngine, step: str, statement: str, times: int) -> None:
    token = STEP.set(step)
    try:
        async with engine.connect() as conn:
            for _ in range(times):
                await conn.execute(text(statement))
    finally:
        STEP.reset(token)


async def test_statements_are_tallied_by_the_step_of_the_task_that_ran_them(
    engine: AsyncEngine,
) -> None:
    clock = StatementClock()
    clock.attach(engine)
    try:
        await asyncio.gather(
            run_as(engine, "gifts.sent", "SELECT 1", 3),
            run_as(engine, "payouts.updated", f"SELECT pg_sleep({SLEEP_S})", 1),
        )
        async with engine.connect() as conn:  # no step set: "other"
            await conn.execute(text("SELECT   2\n  AS two"))
    finally:
        clock.detach(engine)
    tallies = {(tally.step, tally.statement): tally for tally in clock.tallies()}
    assert set(tallies) == {
        ("gifts.sent", "SELECT 1"),
        ("payouts.updated", f"SELECT pg_sleep({SLEEP_S})"),
        ("other", "SELECT 2 AS two"),
    }
    assert tallies[("gifts.sent", "SELECT 1")].calls == 3
    slept = tallies[("payouts.updated", f"SELECT pg_sleep({SLEEP_S})")]
    assert slept.calls == 1
    assert slept.seconds >= SLEEP_S  # the statement's wait is its time
    assert clock.tallies(1) == [slept]  # the most time first

    async with engine.connect() as conn:
        await conn.execute(text("SELECT 3"))
    assert ("other", "SELECT 3") not in {(t.step, t.statement) for t in clock.tallies()}
    clock.reset()
    assert clock.tallies() == []


def test_a_statement_is_named_by_its_first_words_on_one_line() -> None:
    statement = "WITH locked AS (\n    SELECT a.id\n    FROM accounts a\n) " + "x" * 200
    head = statement_head(statement)
    assert head.startswith("WITH locked AS ( SELECT a.id FROM accounts a ) x")
    assert len(head) == 70
    assert statement_head("SELECT 1", 3) == "SEL"
