"""A transaction that holds cash-out row locks resolves account ids on its own connection: it
never waits for a second pooled connection, which every other connection may be spending on
waiting for its locks. Checked with a pool of one connection and a ledger whose account cache
is cold (a process just started): the lookups must still answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.service import Ledger
from schemas.events import CashoutRequested
from services.cashout.desk import CashoutDesk, CashoutLimits, request_accounts
from services.cashout.store import load_cashout
from services.rates.rate_cards import load_rate_cards
from services.runtime.settings import EligibilitySettings
from tests import event_factory as make
from tests.ingestion_fixtures import make_ingestor
from tests.test_daily_limit_race import WRITER, _eligible_creator

POOL_TIMEOUT_S = 2.0


@pytest_asyncio.fixture(loop_scope="session")
async def one_connection_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """One pooled connection, no overflow: a second checkout waits `POOL_TIMEOUT_S`, then fails."""
    engine = create_engine(
        database_url, pool_size=1, pool_overflow_max=0, pool_timeout_s=POOL_TIMEOUT_S, role=WRITER
    )
    yield engine
    await engine.dispose()


async def _held_cashout(engine: AsyncEngine, prefix: str) -> tuple[CashoutDesk, str]:
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    creator = await _eligible_creator(ingestor, 50_000)
    desk = CashoutDesk(CashoutLimits(), EligibilitySettings(), prefix)
    event = CashoutRequested.model_validate_json(json.dumps(make.cashout_request(creator, 4_000)))
    ledger = Ledger(engine)
    account_ids = await ledger.account_ids(request_accounts(event))
    async for tx in ledger.transactions():
        async with tx:
            cashout = await desk.request(tx, event, rate_cards, account_ids)
    assert cashout.status == "held"
    return desk, cashout.cashout_id


async def test_submitting_with_a_cold_cache_needs_no_second_connection(
    engine: AsyncEngine, one_connection_engine: AsyncEngine
) -> None:
    desk, cashout_id = await _held_cashout(engine, f"lookup{uuid.uuid4().hex[:6]}.")
    cold = Ledger(one_connection_engine)  # knows no account id yet
    async for tx in cold.transactions(retry_count_max=0):
        async with tx:
            await desk.mark_submitted(tx, cold, [cashout_id])
    async with engine.connect() as conn:
        found = await load_cashout(conn, cashout_id)
        posted_hold = await conn.execute(
            text(
                "SELECT count(*) FROM pending_resolutions r JOIN transfers t"
                " ON t.id = r.pending_id WHERE t.metadata->>'cashout_id' = :id"
            ),
            {"id": cashout_id},
        )
    assert found is not None
    assert found.status == "submitted"
    assert posted_hold.scalar_one() == 1


async def test_cancelling_with_a_cold_cache_needs_no_second_connection(
    engine: AsyncEngine, one_connection_engine: AsyncEngine
) -> None:
    desk, cashout_id = await _held_cashout(engine, f"lookup{uuid.uuid4().hex[:6]}.")
    cold = Ledger(one_connection_engine)
    async for tx in cold.transactions(retry_count_max=0):
        async with tx:
            cashout = await load_cashout(tx.connection, cashout_id, lock=True)
            assert cashout is not None
            release = await desk.cancel_transfers(tx, cold, cashout, f"cancel-{cashout_id}")
    assert len(release) == 1  # the pending hold voided
