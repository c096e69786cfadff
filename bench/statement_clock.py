"""Where a benchmark's database time goes, statement by statement, and whose statements they are.

`StatementClock.attach(engine)` times every statement the engine runs, from SQLAlchemy's
`before_cursor_execute` to its `after_cursor_execute`: wall time in this process, so the server's
work, the round trip, any lock the statement waited for and any delay of the event loop in
handing back the answer. Each is added to a tally by step (`STEP`, a context variable that the
benchmark sets to the topic a batch belongs to; asyncio tasks take the value in force when they
were created) and by the statement's first words (`statement_head`). `BEGIN`, `COMMIT` and the
pool's pings are not statements to SQLAlchemy's cursor and are not timed.

The listeners cost a little CPU a statement, so a benchmark attaches the clock only when asked
(`bench.cashout_bench --statement-times`).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

STEP: ContextVar[str] = ContextVar("statement_clock_step", default="other")
STATEMENT_HEAD_CHARS = 70
_STARTED_KEY = "statement_clock_started_at"


def statement_head(statement: str, length: int = STATEMENT_HEAD_CHARS) -> str:
    """The statement's first `length` characters, its runs of white space made one space."""
    return " ".join(statement.split())[:length]


@dataclass(slots=True)
class StatementTally:
    step: str
    statement: str
    calls: int = 0
    seconds: float = 0.0

    @property
    def ms_a_call(self) -> float:
        return 1000 * self.seconds / self.calls if self.calls else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "statement": self.statement,
            "calls": self.calls,
            "ms": round(1000 * self.seconds, 1),
            "ms_a_call": round(self.ms_a_call, 2),
        }


class StatementClock:
    """Tallies of the statements an engine runs, by step and statement (see the module)."""

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str], StatementTally] = {}

    def attach(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)

    def detach(self, engine: AsyncEngine) -> None:
        event.remove(engine.sync_engine, "before_cursor_execute", self._before)
        event.remove(engine.sync_engine, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self._tallies.clear()

    def tallies(self, limit: int | None = None) -> list[StatementTally]:
        """The tallies, the most time first."""
        ordered = sorted(self._tallies.values(), key=lambda tally: -tally.seconds)
        return ordered if limit is None else ordered[:limit]

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info[_STARTED_KEY] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info.pop(_STARTED_KEY, None)
        if started is None:  # attached while the statement ran
            return
        step, head = STEP.get(), statement_head(statement)
        tally = self._tallies.get((step, head))
        if tally is None:
            tally = self._tallies[(step, head)] = StatementTally(step, head)
        tally.calls += 1
        tally.seconds += time.perf_counter() - started
