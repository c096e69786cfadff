"""The verify runs' log: every `giftledger verify`, clean or failed, is recorded with what it
found, the log cannot be changed, and the console's overview says when the ledger was last
verified and what that run found (its problems shown as text, escaped)."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.model import AccountFlags, PostResult, Transfer, TransferCode
from ledger.service import Ledger
from ledger.verify import Problem
from ledger.verify_checkpoints import latest_checkpoint
from ledger.verify_runs import FIRST_PROBLEMS_CHARS_MAX, first_problems_text, latest_run
from services.commands.books import verify_command
from services.commands.common import EXIT_FAILURE, EXIT_OK
from tests.console_http import FINANCE_TOKEN, console_client, console_settings, sign_in, table
from tests.fresh_database import fresh_database
from tests.ledger_helpers import make_accounts

pytestmark = pytest.mark.server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(postgres_admin_url: str) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=4)
        try:
            yield engine
        finally:
            await engine.dispose()


async def post_transfer(engine: AsyncEngine) -> uuid.UUID:
    ledger = Ledger(engine)
    accounts = await make_accounts(ledger, f"runs-{uuid.uuid4().hex[:8]}", [AccountFlags.NONE] * 2)
    transfer = Transfer(uuid.uuid4(), accounts[0], accounts[1], 25, TransferCode.SYNTHETIC)
    assert await ledger.post([transfer]) == [PostResult.OK]
    return transfer.id


@asynccontextmanager
async def amount_raised(engine: AsyncEngine, transfer_id: uuid.UUID) -> AsyncIterator[None]:
    """The stored amount of one transfer one higher, behind the ledger's back (triggers off for
    the edit, superuser only), and back after."""
    edit = "UPDATE transfers SET amount = amount + :by WHERE id = :id"
    for by in (1, -1):
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text(edit), {"by": by, "id": transfer_id})
        if by == 1:
            yield


async def overview_verify_text(engine: AsyncEngine) -> tuple[str, str]:
    """The overview page and the text of what its Verify section says was found."""
    async with console_client(engine, console_settings()) as client:
        assert (await sign_in(client, FINANCE_TOKEN)).status_code == 303
        page = await client.get("/console/")
        assert page.status_code == 200
    start = page.text.index('id="verify-found"')
    found = page.text[page.text.index(">", start) + 1 : page.text.index("</", start)]
    return page.text, found


async def test_the_overview_says_when_nothing_was_verified_yet(postgres_admin_url: str) -> None:
    async with fresh_database(postgres_admin_url) as url:
        fresh = create_engine(url, pool_size=2)
        try:
            _, found = await overview_verify_text(fresh)
        finally:
            await fresh.dispose()
    assert "has not been verified yet" in found


async def test_a_clean_run_is_recorded_with_its_checkpoint_and_shown(engine: AsyncEngine) -> None:
    await post_transfer(engine)
    assert await verify_command(engine, argparse.Namespace(full=True)) == EXIT_OK
    async with engine.connect() as conn:
        run = await latest_run(conn)
        checkpoint = await latest_checkpoint(conn)
    assert run is not None
    assert checkpoint is not None
    assert run.clean
    assert run.full_check
    assert (run.problem_count, run.failed_checks, run.first_problems) == (0, [], "")
    assert run.checkpoint_id == checkpoint.id
    assert run.walked_transfer_count == checkpoint.reached.walked_transfer_count >= 1
    assert run.started_at <= run.finished_at
    page, found = await overview_verify_text(engine)
    assert found == f"no problem (checkpoint {checkpoint.id})"
    rows = table(page, "The last giftledger verify").rows
    assert ["Checked", f"the whole ledger: {run.walked_transfer_count} transfers"] in rows


async def test_a_failed_run_is_recorded_with_its_problems_and_no_checkpoint(
    engine: AsyncEngine,
) -> None:
    transfer_id = await post_transfer(engine)
    assert await verify_command(engine, argparse.Namespace(full=True)) == EXIT_OK
    async with engine.connect() as conn:
        clean = await latest_run(conn)
    assert clean is not None
    async with amount_raised(engine, transfer_id):
        assert await verify_command(engine, argparse.Namespace(full=True)) == EXIT_FAILURE
        async with engine.connect() as conn:
            failed = await latest_run(conn)
        assert failed is not None
        assert failed.id == clean.id + 1
        assert not failed.clean
        assert failed.checkpoint_id is None
        assert failed.problem_count >= 1
        assert failed.failed_checks == sorted(set(failed.failed_checks))
        for check in failed.failed_checks:
            assert f"{check}: " in failed.first_problems
        page, found = await overview_verify_text(engine)
        assert found == (f"{failed.problem_count} problems in {', '.join(failed.failed_checks)}")
        assert failed.failed_checks[0] in page
    # mended behind the ledger's back again: the next run is clean, and the failed one stays
    assert await verify_command(engine, argparse.Namespace(full=True)) == EXIT_OK
    async with engine.connect() as conn:
        after = await latest_run(conn)
        kept = (
            await conn.execute(
                text("SELECT problem_count FROM verify_runs WHERE id = :id"), {"id": failed.id}
            )
        ).scalar_one()
    assert after is not None
    assert after.clean
    assert after.id == failed.id + 1
    assert kept == failed.problem_count


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE verify_runs SET problem_count = 0",
        "DELETE FROM verify_runs",
        "TRUNCATE verify_runs",
    ],
)
async def test_the_log_cannot_be_changed(engine: AsyncEngine, statement: str) -> None:
    assert await verify_command(engine, argparse.Namespace(full=False)) == EXIT_OK
    with pytest.raises(DBAPIError, match="is not allowed: ledger rows are immutable"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))


async def test_the_writer_role_cannot_record_a_run(engine: AsyncEngine) -> None:
    insert = text(
        "INSERT INTO verify_runs (started_at, full_check, walked_transfer_count,"
        " problem_count, failed_checks, first_problems) VALUES (now(), true, 0, 0, '{}', '')"
    )
    async with engine.connect() as conn:
        await conn.execute(text("SET ROLE giftledger_writer"))
        with pytest.raises(DBAPIError, match="permission denied"):
            await conn.execute(insert)
        await conn.rollback()
        await conn.execute(text("RESET ROLE"))


@given(
    st.lists(
        st.tuples(st.sampled_from(["chain", "totals", "zero_sum"]), st.text(max_size=900)),
        max_size=30,
    )
)
def test_the_first_problems_keep_whole_lines_within_the_limit(
    found: list[tuple[str, str]],
) -> None:
    problems = [Problem(check, detail) for check, detail in found]
    kept = first_problems_text(problems)
    assert len(kept) <= FIRST_PROBLEMS_CHARS_MAX
    lines = [f"{check}: {detail}" for check, detail in found]
    joined = "\n".join(lines)
    if len(joined) <= FIRST_PROBLEMS_CHARS_MAX:
        assert kept == joined
    elif lines:
        assert kept
        assert joined.startswith(kept)
