"""Verify runs: every `giftledger verify`, clean or not, and what it found (migration 0023).

A checkpoint (ledger/verify_checkpoints.py) records where a clean run ended; this log records
every run, failed ones included, so that the console can say when the ledger was last verified
and what that run found. A run is recorded after its own snapshot transaction ended, in a
transaction of its own: a failed run's snapshot is rolled back, and its record must still stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

FIRST_PROBLEMS_CHARS_MAX: Final = 4_000


class FoundProblem(Protocol):
    """What a run found: a check's name and a detail (ledger.verify.Problem)."""

    @property
    def check(self) -> str: ...

    @property
    def detail(self) -> str: ...


@dataclass(frozen=True, slots=True)
class VerifyRun:
    id: int
    started_at: datetime
    finished_at: datetime
    full_check: bool
    walked_transfer_count: int
    problem_count: int
    failed_checks: list[str]
    first_problems: str
    checkpoint_id: int | None

    @property
    def clean(self) -> bool:
        return self.problem_count == 0


def first_problems_text(problems: Sequence[FoundProblem]) -> str:
    """The problems as `check: detail` lines, whole lines only, within the column's limit."""
    kept: list[str] = []
    length = 0
    for problem in problems:
        line = f"{problem.check}: {problem.detail}"
        added = len(line) + (1 if kept else 0)
        if length + added > FIRST_PROBLEMS_CHARS_MAX:
            if not kept:  # one line longer than the limit: its beginning
                kept.append(line[:FIRST_PROBLEMS_CHARS_MAX])
            break
        kept.append(line)
        length += added
    return "\n".join(kept)


async def runs_kept(conn: AsyncConnection) -> bool:
    """Whether the database has the verify_runs table (a database not migrated to 0023 has not)."""
    found = await conn.execute(text("SELECT to_regclass('verify_runs') IS NOT NULL"))
    return bool(found.scalar_one())


async def record_run(
    conn: AsyncConnection,
    *,
    started_at: datetime,
    full_check: bool,
    walked_transfer_count: int,
    problems: Sequence[FoundProblem],
    checkpoint_id: int | None,
) -> int:
    """Append one run in the caller's transaction; its id."""
    recorded = await conn.execute(
        text(
            "INSERT INTO verify_runs (started_at, full_check, walked_transfer_count,"
            " problem_count, failed_checks, first_problems, checkpoint_id)"
            " VALUES (:started_at, :full_check, :walked, :problem_count, :failed_checks,"
            " :first_problems, :checkpoint_id) RETURNING id"
        ),
        {
            "started_at": started_at,
            "full_check": full_check,
            "walked": walked_transfer_count,
            "problem_count": len(problems),
            "failed_checks": sorted({problem.check for problem in problems}),
            "first_problems": first_problems_text(problems),
            "checkpoint_id": checkpoint_id,
        },
    )
    return int(recorded.scalar_one())


def _run(row: Any) -> VerifyRun:
    return VerifyRun(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        full_check=row.full_check,
        walked_transfer_count=row.walked_transfer_count,
        problem_count=row.problem_count,
        failed_checks=list(row.failed_checks),
        first_problems=row.first_problems,
        checkpoint_id=row.checkpoint_id,
    )


async def latest_run(conn: AsyncConnection) -> VerifyRun | None:
    """The newest recorded run (None: none yet, or the database has no verify_runs table)."""
    if not await runs_kept(conn):
        return None
    row = (
        await conn.execute(
            text(
                "SELECT id, started_at, finished_at, full_check, walked_transfer_count,"
                " problem_count, failed_checks, first_problems, checkpoint_id"
                " FROM verify_runs ORDER BY id DESC LIMIT 1"
            )
        )
    ).one_or_none()
    return None if row is None else _run(row)
