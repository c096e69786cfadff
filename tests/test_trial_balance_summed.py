"""The trial balance with creators' accounts summed in the database (the console's Books page)
gives the same rows as the one read an account at a time (`giftledger trial-balance`), on a
ledger of several creators with Diamonds available, held in cash-outs, and paid out (and a creator
id with a colon in it, which the summed line's name must not take from)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.queries import trial_balance, trial_balance_creators_summed
from schemas import topics
from services.trial_balance_text import asset_rows, creators_outstanding
from tests import event_factory as make
from tests.console_http import Feed, new_creator_id
from tests.fresh_database import fresh_database

pytestmark = pytest.mark.server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(postgres_admin_url: str) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=4)
        try:
            feed = await Feed.on(engine)
            creators = [new_creator_id("summed") for _ in range(3)] + ["colon:in:id"]
            for number, creator in enumerate(creators):
                await feed.eligible_creator(creator, 5_000 + 1_000 * number)
            await feed.held_cashout(creators[0], 2_000)
            paid = await feed.held_cashout(creators[1], 2_000)
            await feed.send(topics.PAYOUTS_UPDATED, make.payout_update(paid, "paid"), creators[1])
            await feed.failed_cashout(creators[2], 2_000)
            yield engine
        finally:
            await engine.dispose()


async def test_summed_in_the_database_equals_summed_an_account_at_a_time(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        per_account = await trial_balance(conn)
        summed = await trial_balance_creators_summed(conn)
    assert len(summed) < len(per_account)
    assets = {line.asset for line in per_account}
    assert assets == {line.asset for line in summed}
    assert "DIAMOND" in assets
    for asset in sorted(assets):
        assert asset_rows(summed, asset) == asset_rows(per_account, asset), asset
    assert creators_outstanding(summed) == creators_outstanding(per_account) > 0
    labels = [row.label for row in asset_rows(summed, "DIAMOND")]
    assert "creator:*:DIAMOND:available (4 accounts)" in labels
