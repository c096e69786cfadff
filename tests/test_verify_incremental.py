"""Incremental `verify`: a clean run records a checkpoint; the next one checks only what was added
since, and finds what was changed since; what it cannot see (a row older than the checkpoint,
edited behind the ledger's back) `verify --full` finds. Tampering needs the immutability triggers
off, as only a superuser can; every test puts the row back.

The module has a database of its own: checkpoints are about the whole ledger."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.closes import CHECKS as CLOSE_CHECKS
from ledger.database import create_engine
from ledger.model import AccountFlags, PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger
from ledger.verify import (
    CHAIN_CHECK,
    SnapshotRequiredError,
    Verification,
    check_names,
    ledger_check_names,
    record_checkpoint,
    verify,
    verify_ledger,
)
from ledger.verify_checkpoints import Checkpoint, latest_checkpoint
from ledger.verify_incremental import ROLLED_DAY_CHECKS
from services.commands.books import verify_command
from services.commands.common import EXIT_FAILURE, EXIT_OK
from services.operator.actions_log import OPERATOR_ACTIONS_CHECK
from tests.fresh_database import fresh_database
from tests.ledger_helpers import make_accounts

pytestmark = pytest.mark.server

SYN = TransferCode.SYNTHETIC


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(postgres_admin_url: str) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=4)
        try:
            yield engine
        finally:
            await engine.dispose()


@asynccontextmanager
async def snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        yield conn


async def run_verify(
    engine: AsyncEngine, *, full: bool = False
) -> tuple[Verification, Checkpoint | None]:
    """What `giftledger verify` does: check, and record a checkpoint when clean."""
    async with snapshot(engine) as conn:
        verification = await verify_ledger(conn, full=full)
        checkpoint = None
        if not verification.problems:
            checkpoint = await record_checkpoint(conn, verification)
        await conn.commit()
    return verification, checkpoint


async def latest(engine: AsyncEngine) -> Checkpoint | None:
    async with engine.connect() as conn:
        return await latest_checkpoint(conn)


async def clean_checkpoint(engine: AsyncEngine) -> Checkpoint:
    verification, checkpoint = await run_verify(engine)
    assert verification.problems == []
    assert checkpoint is not None
    return checkpoint


@asynccontextmanager
async def triggers_bypassed(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction in which ordinary triggers do not fire (superuser only)."""
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield conn


@asynccontextmanager
async def amount_changed(engine: AsyncEngine, transfer_id: uuid.UUID) -> AsyncIterator[None]:
    """The stored amount of `transfer_id` one higher, behind the ledger's back, then back."""
    edit = "UPDATE transfers SET amount = amount + :by WHERE id = :id"
    async with triggers_bypassed(engine) as conn:
        await conn.execute(text(edit), {"by": 1, "id": transfer_id})
    try:
        yield
    finally:
        async with triggers_bypassed(engine) as conn:
            await conn.execute(text(edit), {"by": -1, "id": transfer_id})


async def post_pair(engine: AsyncEngine, name: str) -> tuple[list[int], uuid.UUID]:
    """Two new accounts and two transfers between them; the first transfer's id."""
    ledger = Ledger(engine)
    accounts = await make_accounts(ledger, name, [AccountFlags.NONE] * 2)
    first = Transfer(uuid.uuid4(), accounts[0], accounts[1], 40, SYN)
    second = Transfer(uuid.uuid4(), accounts[1], accounts[0], 3, SYN)
    assert await ledger.post([first, second]) == [PostResult.OK, PostResult.OK]
    return accounts, first.id


def checks_of(verification: Verification) -> set[str]:
    return {problem.check for problem in verification.problems}


async def test_the_first_run_checks_everything_and_the_next_only_what_was_added(
    engine: AsyncEngine,
) -> None:
    await post_pair(engine, f"first-{uuid.uuid4().hex[:8]}")
    async with engine.connect() as conn:
        transfer_count = (await conn.execute(text("SELECT count(*) FROM transfers"))).scalar()
    # With no checkpoint yet the run checks everything by itself; after one, `--full` does.
    verification, checkpoint = await run_verify(engine, full=await latest(engine) is not None)
    assert verification.problems == []
    assert verification.full_check
    assert verification.reached.walked_transfer_count == transfer_count
    assert checkpoint is not None
    assert checkpoint.reached.linked_transfer_count == transfer_count

    await post_pair(engine, f"next-{uuid.uuid4().hex[:8]}")
    verification, following = await run_verify(engine)
    assert verification.problems == []
    assert not verification.full_check
    assert verification.base == checkpoint
    assert verification.reached.walked_transfer_count == 2
    assert following is not None
    assert following.id == checkpoint.id + 1
    assert following.reached.linked_transfer_count == transfer_count + 2


async def test_incremental_after_new_transfers_of_every_kind_finds_nothing(
    engine: AsyncEngine,
) -> None:
    ledger = Ledger(engine)
    name = f"kinds-{uuid.uuid4().hex[:8]}"
    a, b, c = await make_accounts(ledger, name, [AccountFlags.NONE] * 3)
    posted_later = Transfer(uuid.uuid4(), a, b, 500, SYN, TransferFlags.PENDING)
    voided_later = Transfer(uuid.uuid4(), b, c, 70, SYN, TransferFlags.PENDING)
    assert await ledger.post([posted_later, voided_later]) == [PostResult.OK] * 2
    checkpoint = await clean_checkpoint(engine)

    # Pending transfers from before the checkpoint posted (in part) and voided after it, a new
    # pending left open, plain transfers: stored totals, pending totals and balances after all
    # move, and must agree with the checkpoint's totals plus what was added.
    added = [
        Transfer(uuid.uuid4(), 0, 0, 200, SYN, TransferFlags.POST_PENDING, posted_later.id),
        Transfer(uuid.uuid4(), 0, 0, 0, SYN, TransferFlags.VOID_PENDING, voided_later.id),
        Transfer(uuid.uuid4(), c, a, 9, SYN, TransferFlags.PENDING),
        Transfer(uuid.uuid4(), a, c, 11, SYN),
        Transfer(uuid.uuid4(), c, b, 5, SYN),
    ]
    assert await ledger.post(added) == [PostResult.OK] * len(added)
    verification, following = await run_verify(engine)
    assert verification.problems == []
    assert verification.base == checkpoint
    assert verification.reached.walked_transfer_count == len(added)
    assert following is not None
    # The checkpoint stores the totals of the accounts that moved, and those only.
    async with engine.connect() as conn:
        moved = await conn.execute(
            text(
                "SELECT account_id, debits_posted_minor, credits_posted_minor,"
                " debits_pending_minor, credits_pending_minor FROM verify_checkpoint_accounts"
                " WHERE checkpoint_id = :id ORDER BY account_id"
            ),
            {"id": following.id},
        )
        assert [tuple(row) for row in moved] == [
            (a, 211, 0, 0, 9),
            (b, 0, 205, 0, 0),
            (c, 5, 11, 9, 0),
        ]
    # The whole check agrees.
    verification, _ = await run_verify(engine, full=True)
    assert verification.problems == []


async def test_a_row_changed_after_the_checkpoint_is_found_and_no_checkpoint_is_recorded(
    engine: AsyncEngine,
) -> None:
    checkpoint = await clean_checkpoint(engine)
    _, transfer_id = await post_pair(engine, f"after-{uuid.uuid4().hex[:8]}")
    async with amount_changed(engine, transfer_id):
        verification, written = await run_verify(engine)
        assert written is None
        assert await latest(engine) == checkpoint
        assert not verification.full_check
        assert {CHAIN_CHECK, "totals_match_transfers", "balances_after_match_running_totals"} <= (
            checks_of(verification)
        )
        chain = [p.detail for p in verification.problems if p.check == CHAIN_CHECK]
        assert len(chain) == 1
        assert "its transfers were changed after they were stored" in chain[0]
        with pytest.raises(ValueError, match="records no checkpoint"):
            async with snapshot(engine) as conn:
                await record_checkpoint(conn, verification)
    verification, written = await run_verify(engine)
    assert verification.problems == []
    assert written is not None
    assert written.id == checkpoint.id + 1


async def test_a_row_changed_before_the_checkpoint_is_found_by_full_only(
    engine: AsyncEngine,
) -> None:
    _, transfer_id = await post_pair(engine, f"before-{uuid.uuid4().hex[:8]}")
    await clean_checkpoint(engine)
    async with amount_changed(engine, transfer_id):
        # The incremental run does not read the rows the checkpoint covers: their links still
        # carry the hashes they had, and the checkpoint's link still has its hash, so it finds
        # nothing (and records a checkpoint: the totals it stores are the accounts', untouched).
        incremental, written = await run_verify(engine)
        assert incremental.problems == []
        assert written is not None
        # The whole check recomputes every link's digest and every total from the rows.
        full, none_written = await run_verify(engine, full=True)
        assert none_written is None
        assert await latest(engine) == written
        assert {CHAIN_CHECK, "totals_match_transfers", "balances_after_match_running_totals"} <= (
            checks_of(full)
        )
    full, _ = await run_verify(engine, full=True)
    assert full.problems == []


async def test_a_transfer_smuggled_in_after_the_checkpoint_is_in_no_link(
    engine: AsyncEngine,
) -> None:
    _, transfer_id = await post_pair(engine, f"smuggled-{uuid.uuid4().hex[:8]}")
    checkpoint = await clean_checkpoint(engine)
    forged = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, asset,"
                " code, flags, debit_balance_after, credit_balance_after, created_at)"
                " SELECT :forged, credit_account_id, debit_account_id, amount, asset, code, flags,"
                " 0, 0, created_at FROM transfers WHERE id = :id"
            ),
            {"forged": forged, "id": transfer_id},
        )
    try:
        verification, written = await run_verify(engine)
        assert written is None
        assert [(p.check, p.detail) for p in verification.problems] == [
            (CHAIN_CHECK, f"1 transfers stored since checkpoint {checkpoint.id} are in no link")
        ]
    finally:
        async with triggers_bypassed(engine) as conn:
            await conn.execute(text("DELETE FROM transfers WHERE id = :id"), {"id": forged})
    assert (await run_verify(engine))[0].problems == []


async def test_account_totals_moved_without_a_transfer_are_found_by_incremental(
    engine: AsyncEngine,
) -> None:
    """The writer role may update account totals: an account no transfer touched since the
    checkpoint must still hold the totals the checkpoint verified."""
    name = f"moved-{uuid.uuid4().hex[:8]}"
    accounts, _ = await post_pair(engine, name)
    checkpoint = await clean_checkpoint(engine)
    move = "UPDATE accounts SET credits_posted = credits_posted + :by WHERE id = :id"
    async with engine.begin() as conn:
        await conn.execute(text(move), {"by": 7, "id": accounts[1]})
    try:
        verification, written = await run_verify(engine)
        assert written is None
        totals = [p.detail for p in verification.problems if p.check == "totals_match_transfers"]
        assert totals == [
            f"test:{name}:1: stored (3, 47, 0, 0) but checkpoint {checkpoint.id} and the"
            " transfers since give (3, 40, 0, 0)"
        ]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(move), {"by": -7, "id": accounts[1]})
    assert (await run_verify(engine))[0].problems == []


async def test_a_pending_transfer_expired_since_the_checkpoint_is_found(
    engine: AsyncEngine,
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, f"expiry-{uuid.uuid4().hex[:8]}", [AccountFlags.NONE] * 2)
    older = Transfer(uuid.uuid4(), a, b, 3, SYN, TransferFlags.PENDING, timeout_s=2)
    assert await ledger.post([older]) == [PostResult.OK]
    await clean_checkpoint(engine)  # not expired yet
    newer = Transfer(uuid.uuid4(), b, a, 4, SYN, TransferFlags.PENDING, timeout_s=1)
    assert await ledger.post([newer]) == [PostResult.OK]
    await asyncio.sleep(2.1)
    verification, written = await run_verify(engine)
    assert written is None
    expired = [p.detail for p in verification.problems]
    assert checks_of(verification) == {"no_expired_pending_left_open"}
    assert sorted(detail.split()[2] for detail in expired) == sorted([str(older.id), str(newer.id)])
    assert await ledger.expire_pending() >= 2
    assert (await run_verify(engine))[0].problems == []


async def test_two_runs_from_one_checkpoint_record_one_checkpoint(engine: AsyncEngine) -> None:
    checkpoint = await clean_checkpoint(engine)
    await post_pair(engine, f"race-{uuid.uuid4().hex[:8]}")
    async with snapshot(engine) as first, snapshot(engine) as second:
        first_run = await verify_ledger(first, full=False)
        second_run = await verify_ledger(second, full=False)
        assert first_run.base == second_run.base == checkpoint
        recorded = await record_checkpoint(first, first_run)
        await first.commit()
        assert recorded is not None
        assert await record_checkpoint(second, second_run) is None
        await second.rollback()
    assert await latest(engine) == recorded


async def test_verify_needs_one_snapshot(engine: AsyncEngine) -> None:
    """At READ COMMITTED each of the checks' statements would see the commits made before it,
    so a writer committing between two of them would show as a broken ledger: refused."""
    async with engine.connect() as conn:
        with pytest.raises(SnapshotRequiredError, match="REPEATABLE READ"):
            await verify_ledger(conn, full=False)
        await conn.rollback()
        with pytest.raises(SnapshotRequiredError, match="not read committed"):
            await verify(conn)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="SERIALIZABLE")
        await verify(conn)  # one snapshot too: accepted


async def test_checkpoints_are_append_only_and_the_writer_records_none(
    engine: AsyncEngine,
) -> None:
    await clean_checkpoint(engine)
    for statement in (
        "UPDATE verify_checkpoints SET seq_max = seq_max + 1",
        "DELETE FROM verify_checkpoint_accounts",
        "TRUNCATE verify_checkpoints CASCADE",
    ):
        with pytest.raises(DBAPIError, match="immutable"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL ROLE giftledger_writer"))
        with pytest.raises(DBAPIError, match="permission denied"):
            await conn.execute(
                text(
                    "INSERT INTO verify_checkpoints (id, previous_id, full_check, chain_hash,"
                    " linked_transfer_count, seq_max, checked_at, walked_transfer_count)"
                    " SELECT id + 1, id, false, chain_hash, 0, 0, now(), 0"
                    " FROM verify_checkpoints ORDER BY id DESC LIMIT 1"
                )
            )


async def test_the_command_counts_every_check_it_runs(
    engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [*ledger_check_names(), OPERATOR_ACTIONS_CHECK]
    assert names == [*check_names(), *CLOSE_CHECKS, *ROLLED_DAY_CHECKS, OPERATOR_ACTIONS_CHECK]
    assert len(set(names)) == len(names) == 23
    before = await clean_checkpoint(engine)
    await post_pair(engine, f"command-{uuid.uuid4().hex[:8]}")
    assert await verify_command(engine, argparse.Namespace(full=False)) == EXIT_OK
    after = await latest(engine)
    assert after is not None
    assert after.id == before.id + 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "ledger verified: 23 checks passed, 2 transfers added since checkpoint"
        f" {before.id} (`verify --full` checks every transfer)",
        f"checkpoint {after.id} recorded at link {after.reached.link_id}",
    ]
    assert await verify_command(engine, argparse.Namespace(full=True)) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("ledger verified: 23 checks passed, the whole ledger (")


async def test_the_command_records_no_checkpoint_when_it_finds_a_problem(
    engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await clean_checkpoint(engine)
    _, transfer_id = await post_pair(engine, f"failed-{uuid.uuid4().hex[:8]}")
    before = await latest(engine)
    async with amount_changed(engine, transfer_id):
        assert await verify_command(engine, argparse.Namespace(full=False)) == EXIT_FAILURE
        assert await latest(engine) == before
        assert await verify_command(engine, argparse.Namespace(full=True)) == EXIT_FAILURE
        assert await latest(engine) == before
    captured = capsys.readouterr()
    assert "ledger verification failed" in captured.err
    assert f"{CHAIN_CHECK}: link " in captured.out


async def test_a_database_without_the_checkpoint_tables_gets_full_runs(
    postgres_admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that recorded revision 0020 while it was still empty has no checkpoint
    tables, and no migration will add them: `verify` checks it whole and records nothing."""
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=2)
        try:
            await post_pair(engine, "no-checkpoints")
            async with engine.begin() as conn:
                await conn.execute(
                    text("DROP TABLE verify_checkpoint_accounts, verify_checkpoints")
                )
            for _ in range(2):
                assert await verify_command(engine, argparse.Namespace(full=False)) == EXIT_OK
                assert capsys.readouterr().out.splitlines() == [
                    "ledger verified: 23 checks passed, the whole ledger (2 transfers)",
                    "no checkpoint recorded: this database has no verify_checkpoints table",
                ]
        finally:
            await engine.dispose()
