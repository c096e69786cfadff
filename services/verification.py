"""A recorded verify: what `giftledger verify` runs, and the demo at its end.

The ledger is checked in one REPEATABLE READ snapshot (`verify_ledger`, whole or since the latest
checkpoint) together with the operator actions' chain; a clean run records a checkpoint in that
transaction, a failed one rolls it back. Either way the run is then appended to the verify runs'
log (`verify_runs`, migration 0023) in a transaction of its own, which the console's overview
reads to say when the ledger was last verified and what that run found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.verify import Problem, Verification, record_checkpoint, verify_ledger
from ledger.verify_checkpoints import Checkpoint
from ledger.verify_runs import record_run, runs_kept
from services.operator.actions_log import OPERATOR_ACTIONS_CHECK, verify_action_chain


@dataclass(frozen=True, slots=True)
class RecordedVerification:
    """A run and what it found: the ledger's problems and the operator actions' chain's;
    `checkpoint` is the one a clean run recorded (None after a failed run, on a database that
    keeps none, or when another run recorded one meanwhile)."""

    verification: Verification
    problems: list[Problem]
    checkpoint: Checkpoint | None

    @property
    def clean(self) -> bool:
        return not self.problems


async def verify_and_record(engine: AsyncEngine, *, full: bool) -> RecordedVerification:
    """Check the ledger (`full`: the whole of it, else what was added since the latest
    checkpoint) and the operator actions' chain in one snapshot, record a checkpoint when clean,
    then append the run to the verify runs' log. `engine` is the schema owner's: the writer role
    may write neither checkpoints nor runs."""
    checkpoint: Checkpoint | None = None
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        verification = await verify_ledger(conn, full=full)
        problems = verification.problems + [
            Problem(OPERATOR_ACTIONS_CHECK, detail) for detail in await verify_action_chain(conn)
        ]
        if problems:
            await conn.rollback()
        else:
            checkpoint = await record_checkpoint(conn, verification)
            await conn.commit()
    await _record_run(
        engine,
        verification,
        problems,
        checkpoint_id=None if checkpoint is None else checkpoint.id,
    )
    return RecordedVerification(verification, problems, checkpoint)


async def _record_run(
    engine: AsyncEngine,
    verification: Verification,
    problems: Sequence[Problem],
    *,
    checkpoint_id: int | None,
) -> None:
    """Append the run to the verify runs' log, in a transaction of its own (a failed run's
    snapshot was rolled back); a database not migrated that far keeps no log."""
    async with engine.begin() as conn:
        if not await runs_kept(conn):
            return
        await record_run(
            conn,
            started_at=verification.reached.checked_at,
            full_check=verification.full_check,
            walked_transfer_count=verification.reached.walked_transfer_count,
            problems=problems,
            checkpoint_id=checkpoint_id,
        )
