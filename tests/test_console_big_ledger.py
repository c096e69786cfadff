"""The console's reads on a big ledger (bench/console_bench.py measures them): the lists read an
index in their order, and the reads made cheaper give what the slower ones gave.

- the cash-outs and dead letters lists, newest first, read their first rows from the indexes of
  migration 0021 instead of sorting the whole table (plans read as JSON, held to the property:
  an index scan of the table in the list's order and no sort);
- the stale-holds lists, with few cash-outs open, read the open ones through an index by status;
- the overview's gifts, read once per UTC day and surface, sum to what three calls of
  `gifts_report` give;
- a statement, each side of the account read from its own index, pages through every transfer of
  the account in order;
- the trial balance as of now, read from the accounts' stored totals, is the trial balance of
  every transfer summed.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.queries import account_balance, statement, trial_balance
from services.api.dead_letters import DeadLetterFilter, list_dead_letters
from services.api.queries import gifts_report
from services.cashout.store import CashoutKey, list_cashouts
from services.console import reads
from services.ingestion.event_transfers import GIFT_DIAMOND_SOURCE
from tests.api_server import SeededLedger, seed_ledger
from tests.query_plans import INDEX_SCAN_TYPES, nodes_of, only_plan, reads_in_order

pytestmark = pytest.mark.server

LIST_TABLE_ROW_COUNT = 20_000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(engine: AsyncEngine) -> SeededLedger:
    return await seed_ledger(engine)


# Plans ---------------------------------------------------------------------------------------


async def _fill_lists(conn: AsyncConnection) -> None:
    """Many cash-outs and dead letters (in the caller's transaction, rolled back), analyzed."""
    await conn.execute(
        text(
            "INSERT INTO cashouts (cashout_id, creator_id, asset, amount, payout_currency,"
            " usd_value_micros, status, requested_on, occurred_at)"
            " SELECT 'plan-cashout-' || i, 'plan-creator-' || (i % 500), 'DIAMOND', 1000, 'USD',"
            " 5000000, (ARRAY['held', 'submitted', 'paid', 'rejected'])[1 + i % 4],"
            " current_date, clock_timestamp() - make_interval(secs => i)"
            " FROM generate_series(1, :count) AS i"
        ),
        {"count": LIST_TABLE_ROW_COUNT},
    )
    await conn.execute(
        text(
            "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, error, detail,"
            " recorded_at, topic_prefix)"
            " SELECT (ARRAY['gifts.sent', 'tips.received'])[1 + i % 2], 7, i,"
            " (ARRAY['malformed_json', 'schema_violation'])[1 + i % 2], 'plan test',"
            " clock_timestamp() - make_interval(secs => i), ''"
            " FROM generate_series(1, :count) AS i"
        ),
        {"count": LIST_TABLE_ROW_COUNT},
    )
    await conn.execute(text("ANALYZE cashouts"))
    await conn.execute(text("ANALYZE dead_letters"))


async def test_the_cashouts_and_dead_letters_lists_read_their_first_rows_from_an_index(
    module_engine: AsyncEngine,
) -> None:
    """On a database of the module's own: the planner's choice follows the tables' contents,
    and the session's database holds whatever the modules run before left in them."""
    engine = module_engine
    async with engine.connect() as conn:
        try:  # one transaction, rolled back
            await _fill_lists(conn)
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

            async def cashouts(status: str | None, from_time: datetime | None) -> object:
                return await reads.find_cashouts(
                    conn, status=status, creator_id=None, from_time=from_time, to_time=None
                )

            async def dead_letters(from_time: datetime | None) -> object:
                return await list_dead_letters(
                    conn, "", DeadLetterFilter(from_time=from_time), limit=reads.LIST_ROW_COUNT_MAX
                )

            newest = await only_plan(engine, conn, lambda: cashouts(None, None))
            assert reads_in_order(newest, "cashouts", "cashouts_newest"), newest
            since = await only_plan(engine, conn, lambda: cashouts(None, today))
            assert reads_in_order(since, "cashouts", "cashouts_newest"), since
            held = await only_plan(engine, conn, lambda: cashouts("held", None))
            assert reads_in_order(held, "cashouts", "cashouts_status_newest"), held
            # A page of `GET /v1/cashouts` and `giftledger cashouts` after a cursor half way down,
            # by status or not: on from the cursor in the same indexes.
            half_way = timedelta(seconds=LIST_TABLE_ROW_COUNT // 2)
            middle = CashoutKey(datetime.now(UTC) - half_way, "plan-cashout-")

            async def cashouts_after(status: str | None) -> object:
                return await list_cashouts(conn, status=status, after=middle, limit=100)

            paged = await only_plan(engine, conn, lambda: cashouts_after(None))
            assert reads_in_order(paged, "cashouts", "cashouts_newest"), paged
            paged_held = await only_plan(engine, conn, lambda: cashouts_after("held"))
            assert reads_in_order(paged_held, "cashouts", "cashouts_status_newest"), paged_held
            letters = await only_plan(engine, conn, lambda: dead_letters(None))
            assert reads_in_order(letters, "dead_letters", "dead_letters_newest"), letters
            recent = await only_plan(engine, conn, lambda: dead_letters(today))
            assert reads_in_order(recent, "dead_letters", "dead_letters_newest"), recent
        finally:
            await conn.rollback()


async def test_the_stale_holds_lists_read_only_the_open_cashouts_from_an_index(
    engine: AsyncEngine,
) -> None:
    """The console's and the command line's lists of holds the bank has not answered: with one
    cash-out in a hundred open, the table is read through an index by status (migration 0029
    left `cashouts_status_newest` for it), not walked in time order past every closed one."""
    async with engine.connect() as conn:
        try:  # one transaction, rolled back
            await _fill_lists(conn)
            await conn.execute(
                text(
                    "UPDATE cashouts SET status = CASE WHEN right(cashout_id, 2) = '00'"
                    " THEN 'held' ELSE 'paid' END WHERE starts_with(cashout_id, 'plan-cashout-')"
                )
            )
            await conn.execute(text("ANALYZE cashouts"))

            async def console_list() -> object:
                return await reads.find_cashouts(
                    conn,
                    status=None,
                    creator_id=None,
                    from_time=None,
                    to_time=None,
                    stale_after_s=600.0,
                )

            async def command_list() -> object:
                return await list_cashouts(conn, stale_after_s=600.0)

            for read in (console_list, command_list):
                plan = await only_plan(engine, conn, read)
                scans = [node for node in nodes_of(plan) if node.get("Relation Name") == "cashouts"]
                assert len(scans) == 1, plan
                assert scans[0]["Node Type"] in INDEX_SCAN_TYPES | {"Bitmap Heap Scan"}, plan
                conditions = [
                    str(node.get("Index Cond", ""))
                    for node in nodes_of(plan)
                    if node["Node Type"] in INDEX_SCAN_TYPES | {"Bitmap Index Scan"}
                ]
                assert any("status" in condition for condition in conditions), plan
        finally:
            await conn.rollback()


# Same answers --------------------------------------------------------------------------------


async def _one_snapshot(conn: AsyncConnection) -> None:
    await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


async def test_the_overview_gifts_read_once_are_the_gifts_report_three_times(
    engine: AsyncEngine, seeded: SeededLedger
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    today_start = datetime(today.year, today.month, today.day, tzinfo=UTC)
    tomorrow = today_start + timedelta(days=1)
    month_start = datetime(today.year, today.month, 1, tzinfo=UTC)
    async with engine.connect() as conn:
        await _one_snapshot(conn)
        found = await reads.overview_gifts(conn, month_start, today, tomorrow)
        assert found.today == await gifts_report(conn, today_start, tomorrow, "surface")
        assert found.month == await gifts_report(conn, month_start, tomorrow, "surface")
        assert found.by_day == await gifts_report(conn, month_start, tomorrow, "day")
    assert {row["surface"] for row in found.today} >= {"video", "live"}, found.today
    assert sum(row["gift_events"] for row in found.today) >= 3


async def test_the_trial_balance_now_is_every_posted_transfer_summed(
    engine: AsyncEngine, seeded: SeededLedger
) -> None:
    """The seeded ledger holds holds (pending), posted holds and paid cash-outs: only posted
    transfers count, from the accounts' totals as from the transfers."""
    async with engine.connect() as conn:
        await _one_snapshot(conn)
        now_lines = await trial_balance(conn)
        summed = await trial_balance(conn, datetime(9000, 1, 1, tzinfo=UTC))
    assert now_lines == summed
    assert any(line.account_name == seeded.available_account for line in now_lines)


# The statement of the account's whole history in one query, with none of the paged read's
# devices (each side from its own index, the holds open before a page): every transfer of the
# account sorted, a post made two lines (the whole hold released, then the amount posted), a void
# on the other side, and the running figures summed over the lines up to each.
_STATEMENT_AS_ONE_QUERY = """
    WITH touching AS (
        SELECT t.seq, t.id, t.created_at, t.code, t.event_id, t.flags, t.amount, t.pending_id,
               t.debit_account_id = :account AS on_debit,
               CASE WHEN t.debit_account_id = :account
                    THEN t.credit_account_id ELSE t.debit_account_id END AS counterparty_id
        FROM transfers t
        WHERE t.debit_account_id = :account OR t.credit_account_id = :account
    ), lines AS (
        SELECT seq, 0 AS part, id, created_at, code, event_id, counterparty_id,
               CASE WHEN flags & 12 <> 0 THEN NOT on_debit ELSE on_debit END AS on_debit,
               CASE WHEN flags & 4 <> 0
                    THEN (SELECT h.amount FROM transfers h WHERE h.id = touching.pending_id)
                    ELSE amount END AS amount,
               flags & 14 <> 0 AS pending
        FROM touching
        UNION ALL
        SELECT seq, 1, id, created_at, code, event_id, counterparty_id, on_debit, amount, false
        FROM touching WHERE flags & 4 <> 0
    )
    SELECT l.seq, l.id AS transfer_id, l.created_at, c.name AS code, l.event_id,
           o.name AS counterparty,
           CASE WHEN l.on_debit THEN l.amount ELSE 0 END AS debit,
           CASE WHEN l.on_debit THEN 0 ELSE l.amount END AS credit,
           l.pending,
           (sum(CASE WHEN l.pending THEN 0 WHEN l.on_debit THEN -l.amount ELSE l.amount END)
                OVER running)::bigint AS balance_after,
           (sum(CASE WHEN NOT l.pending THEN 0 WHEN l.on_debit THEN -l.amount ELSE l.amount END)
                OVER running)::bigint AS pending_after
    FROM lines l
    JOIN transfer_codes c ON c.code = l.code
    JOIN accounts o ON o.id = l.counterparty_id
    WINDOW running AS (ORDER BY l.seq, l.part ROWS UNBOUNDED PRECEDING)
    ORDER BY l.seq, l.part
"""


async def test_a_statement_paged_is_every_transfer_of_the_account_in_order(
    engine: AsyncEngine, seeded: SeededLedger
) -> None:
    """The creator's account (credited by gifts, debited by a cash-out) and the platform's
    account every gift debits, paged two lines at a time."""
    async with engine.connect() as conn:
        await _one_snapshot(conn)
        creator_account = await account_balance(conn, seeded.available_account)
        platform_account = await account_balance(conn, GIFT_DIAMOND_SOURCE.name)
        assert creator_account is not None
        assert platform_account is not None
        line_counts = []
        for account_id in (creator_account.account_id, platform_account.account_id):
            expected = [
                dict(row._mapping)
                for row in await conn.execute(
                    text(_STATEMENT_AS_ONE_QUERY), {"account": account_id}
                )
            ]
            paged: list[dict[str, Any]] = []
            cursor: int | None = 0
            while cursor is not None:
                page = await statement(conn, account_id, after_seq=cursor, page_size=2)
                paged += [dataclasses.asdict(line) for line in page.lines]
                cursor = page.next_cursor
            assert paged == expected
            assert any(line["debit"] for line in paged), account_id
            line_counts.append(len(paged))
    assert line_counts[0] >= 6, line_counts  # gifts, a cash-out's hold, its release and posting
    assert line_counts[1] >= 3, line_counts  # the seeded gifts, at least
