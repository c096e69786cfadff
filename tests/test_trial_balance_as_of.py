"""The trial balance as of a past time (`ledger.queries.trial_balance`) reads the rolled days'
totals (`ledger.rollups`) and only the rest of the ledger's transfers, and gives exactly the lines
of the transfers before that time summed: with none, some and all days rolled, as of a day's
start and an instant inside a day, pending transfers and voids left out, posts counted.

The module's ledger lives in a database of its own (the roller sums the whole ledger). Past
transfers are stamped through the `test_clock.clock_timestamp()` the test sets, as in
test_rollups; the roller runs on an ordinary engine, with the real clock, so every past day is
final to it.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.chart import AccountKind, AccountSpec
from ledger.model import Transfer, TransferCode, TransferFlags
from ledger.queries import TrialBalanceLine, trial_balance
from ledger.rollups import day_start, roll_days, rolled_day_differences
from ledger.service import Ledger
from tests.fresh_database import fresh_database
from tests.query_plans import nodes_of, plan_root, statements_run
from tests.test_rollups import Books, _post_at, _with_test_clock

ACCOUNT_COUNT = 4
DAYS_PER_EXAMPLE = 4
MINUTES_PER_EXAMPLE = DAYS_PER_EXAMPLE * 24 * 60
# Examples take consecutive blocks of days from here; the block of 2004-02-28 crosses a month.
FIRST_DAY = date(2004, 2, 20)
CODES = (TransferCode.SYNTHETIC, TransferCode.TIP)
KINDS = ("posted", "pending", "posted_later", "voided_later")

# The trial balance as of a time as it was read before the rolled days' totals: every posted
# transfer before `as_of` summed per account.
FULL_SCAN = """
    WITH posted_transfers AS (
        SELECT * FROM transfers WHERE flags & 10 = 0 AND created_at < :as_of
    ), posted AS (
        SELECT debit_account_id AS account_id, amount AS debit, 0::bigint AS credit
        FROM posted_transfers
        UNION ALL
        SELECT credit_account_id, 0, amount FROM posted_transfers
    )
    SELECT a.asset, s.scale, a.name AS account_name, a.kind,
           sum(p.debit)::bigint AS debits, sum(p.credit)::bigint AS credits
    FROM posted p
    JOIN accounts a ON a.id = p.account_id
    JOIN assets s ON s.code = a.asset
    GROUP BY a.asset, s.scale, a.name, a.kind
    ORDER BY a.asset, a.name
"""


@dataclass(frozen=True, slots=True)
class Posted:
    """A posted transfer as the model keeps it: its stamp, its accounts and its amount."""

    at: datetime
    debit: int
    credit: int
    amount: int


@dataclass
class Ledgers:
    books: Books
    names: dict[int, str]
    examples: itertools.count[int]
    posted: list[Posted] = field(default_factory=list)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ledgers(postgres_admin_url: str) -> AsyncIterator[Ledgers]:
    async with fresh_database(postgres_admin_url) as url:
        owner, past_engine = await _with_test_clock(url)
        past = Ledger(past_engine)
        specs = [
            AccountSpec(f"test:tb:{i}", "DIAMOND", AccountKind.SYNTHETIC)
            for i in range(ACCOUNT_COUNT)
        ]
        ids = await past.account_ids(specs)
        accounts = [ids[spec.name] for spec in specs]
        ledgers = Ledgers(
            Books(owner, past, accounts, itertools.count()),
            {ids[spec.name]: spec.name for spec in specs},
            itertools.count(),
        )
        # The roller starts from the first transfer's day: the first example's first day.
        at, debit, credit = day_start(FIRST_DAY), accounts[0], accounts[1]
        await _post_at(ledgers.books, at, [Transfer(uuid.uuid4(), debit, credit, 1, CODES[0])])
        ledgers.posted.append(Posted(at, debit, credit, 1))
        try:
            yield ledgers
        finally:
            await past_engine.dispose()
            await owner.dispose()


async def _read_both(engine: AsyncEngine, as_of: datetime) -> tuple[list[Any], list[Any]]:
    """The trial balance as of `as_of`, and the full scan's lines, in one snapshot."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        lines = await trial_balance(conn, as_of)
        scanned = await conn.execute(text(FULL_SCAN), {"as_of": as_of})
        return lines, [TrialBalanceLine(**row._mapping) for row in scanned]


def _modelled(ledgers: Ledgers, as_of: datetime) -> dict[str, tuple[int, int]]:
    """Each account's posted debits and credits before `as_of`, summed from what was posted."""
    sums: dict[int, tuple[int, int]] = {}
    for move in ledgers.posted:
        if move.at >= as_of:
            continue
        debits, credits = sums.get(move.debit, (0, 0))
        sums[move.debit] = (debits + move.amount, credits)
        debits, credits = sums.get(move.credit, (0, 0))
        sums[move.credit] = (debits, credits + move.amount)
    return {ledgers.names[account]: totals for account, totals in sums.items()}


async def _check(ledgers: Ledgers, instants: list[datetime]) -> None:
    for as_of in instants:
        lines, scanned = await _read_both(ledgers.books.owner, as_of)
        assert lines == scanned, as_of
        assert {line.account_name: (line.debits, line.credits) for line in lines} == _modelled(
            ledgers, as_of
        ), as_of


transfer = st.fixed_dictionaries(
    {
        "minute": st.integers(0, MINUTES_PER_EXAMPLE - 1),
        # a post or void this many minutes after its pending transfer (past the example's days:
        # left pending)
        "later_minutes": st.integers(0, 2 * 24 * 60),
        "debit": st.integers(0, ACCOUNT_COUNT - 1),
        "step": st.integers(1, ACCOUNT_COUNT - 1),
        "amount": st.integers(1, 10_000),
        "posted_share": st.integers(0, 100),  # of a post: 0 posts the whole pending amount
        "code": st.sampled_from(CODES),
        "kind": st.sampled_from(KINDS),
    }
)


def _moves(
    ledgers: Ledgers, first: date, drawn: list[dict[str, Any]]
) -> list[tuple[datetime, Transfer, Posted | None]]:
    """The drawn transfers as (stamp, transfer, what it posts), with the posts and voids of
    pending ones at their later minute, in stamp order."""
    start = day_start(first)
    moves: list[tuple[datetime, Transfer, Posted | None]] = []
    for item in drawn:
        at = start + timedelta(minutes=item["minute"])
        debit = ledgers.books.accounts[item["debit"]]
        credit = ledgers.books.accounts[(item["debit"] + item["step"]) % ACCOUNT_COUNT]
        amount = item["amount"]
        flags = 0 if item["kind"] == "posted" else TransferFlags.PENDING
        first_move = Transfer(uuid.uuid4(), debit, credit, amount, item["code"], flags)
        moves.append((at, first_move, Posted(at, debit, credit, amount) if not flags else None))
        later = at + timedelta(minutes=item["later_minutes"])
        if item["kind"] in ("posted", "pending") or later >= start + timedelta(
            minutes=MINUTES_PER_EXAMPLE
        ):
            continue
        if item["kind"] == "posted_later":
            posted_amount = amount * item["posted_share"] // 100
            post = Transfer(
                uuid.uuid4(),
                0,
                0,
                posted_amount,
                item["code"],
                TransferFlags.POST_PENDING,
                first_move.id,
            )
            moves.append((later, post, Posted(later, debit, credit, posted_amount or amount)))
        elif item["kind"] == "voided_later":
            void = Transfer(
                uuid.uuid4(), 0, 0, 0, item["code"], TransferFlags.VOID_PENDING, first_move.id
            )
            moves.append((later, void, None))
    # A pending transfer before its post or void at the same minute.
    return sorted(moves, key=lambda move: (move[0], bool(move[1].pending_id)))


async def _last_rolled(ledgers: Ledgers) -> date:
    """The last day rolled (the day before the first example's when none is)."""
    async with ledgers.books.owner.connect() as conn:
        rolled = (await conn.execute(text("SELECT max(day) FROM rolled_days"))).scalar_one()
    assert rolled is None or isinstance(rolled, date)
    return rolled or FIRST_DAY - timedelta(days=1)


async def _roll_through(ledgers: Ledgers, last: date) -> None:
    """Every day up to `last` rolled, and none after it."""
    day_count = (last - await _last_rolled(ledgers)).days
    if day_count > 0:
        await roll_days(ledgers.books.owner, day_count_max=day_count)
    assert await _last_rolled(ledgers) == last


def _instants(first: date, drawn_minutes: list[int], stamps: list[datetime]) -> list[datetime]:
    """As of each day's start from the example's first to the day after its last, instants
    inside its days, each transfer's stamp (none stamped at it counts) and the second after, and
    before every transfer of the ledger."""
    start = day_start(first)
    instants = [day_start(first + timedelta(days=i)) for i in range(DAYS_PER_EXAMPLE + 1)]
    instants += [start + timedelta(minutes=minute, seconds=17) for minute in drawn_minutes]
    instants += stamps + [stamp + timedelta(seconds=1) for stamp in stamps]
    instants.append(day_start(FIRST_DAY) - timedelta(days=1))
    return sorted(set(instants))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    drawn=st.lists(transfer, min_size=1, max_size=10),
    partial_day_count=st.integers(1, DAYS_PER_EXAMPLE - 1),
    drawn_minutes=st.lists(st.integers(0, MINUTES_PER_EXAMPLE - 1), max_size=4),
)
async def test_the_trial_balance_as_of_a_time_is_the_transfers_before_it_summed(
    ledgers: Ledgers,
    drawn: list[dict[str, Any]],
    partial_day_count: int,
    drawn_minutes: list[int],
) -> None:
    first = FIRST_DAY + timedelta(days=DAYS_PER_EXAMPLE * next(ledgers.examples))
    days = [first + timedelta(days=i) for i in range(DAYS_PER_EXAMPLE)]
    moves = _moves(ledgers, first, drawn)
    for at, move, posted in moves:
        await _post_at(ledgers.books, at, [move])
        if posted is not None:
            ledgers.posted.append(posted)
    instants = _instants(first, drawn_minutes, [at for at, _, _ in moves])

    # The days before this example's rolled (an example that failed may have left some), and
    # none of its own; then some of its days; then all.
    await _roll_through(ledgers, first - timedelta(days=1))
    await _check(ledgers, instants)
    await _roll_through(ledgers, days[partial_day_count - 1])
    await _check(ledgers, instants)
    await _roll_through(ledgers, days[-1])
    async with ledgers.books.owner.connect() as conn:
        assert await rolled_day_differences(conn) == []
    await _check(ledgers, instants)


# The plan -----------------------------------------------------------------------------------


async def _analyzed_plan(conn: AsyncConnection, statement: str, parameters: Any) -> Any:
    document = (
        await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
    ).scalar_one()
    return plan_root(document)


def _rows_read(plan: dict[str, Any], table_prefix: str) -> int:
    """The rows the scans of `table_prefix`'s tables (a partitioned table's partitions too)
    handed up."""
    return sum(
        node["Actual Rows"] * node["Actual Loops"]
        for node in nodes_of(plan)
        if node.get("Relation Name", "").startswith(table_prefix)
    )


async def test_a_rolled_range_is_read_from_the_day_totals_and_the_rest_from_the_transfers(
    postgres_admin_url: str,
) -> None:
    async with fresh_database(postgres_admin_url) as url:
        owner, past_engine = await _with_test_clock(url)
        try:
            ledger = Ledger(past_engine)
            specs = [AccountSpec(f"test:{i}", "DIAMOND", AccountKind.SYNTHETIC) for i in "abc"]
            ids = await ledger.account_ids(specs)
            a, b, c = ids["test:a"], ids["test:b"], ids["test:c"]
            books = Books(owner, ledger, [a, b, c], itertools.count())
            first = datetime.fromisoformat("2005-03-01T00:00:00+00:00")
            # Ten days of 12 posted transfers and a pending one each; the first eight rolled.
            for day in range(10):
                for hour in range(12):
                    debit, credit = ((a, b), (b, c), (c, a))[hour % 3]
                    at = first + timedelta(days=day, hours=2 * hour)
                    transfer = Transfer(uuid.uuid4(), debit, credit, 10 + hour, TransferCode.TIP)
                    await _post_at(books, at, [transfer])
                hold = Transfer(uuid.uuid4(), a, c, 5, TransferCode.TIP, TransferFlags.PENDING)
                await _post_at(books, first + timedelta(days=day, hours=23), [hold])
            assert len(await roll_days(owner, day_count_max=8)) == 8
            async with owner.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE"))

            as_of = first + timedelta(days=9, hours=5)  # inside the tenth day
            async with owner.connect() as conn:
                with statements_run(owner) as sent:
                    lines = await trial_balance(conn, as_of)
                statement, parameters = sent[-1]
                plan = await _analyzed_plan(conn, statement, parameters)
                scanned = [
                    TrialBalanceLine(**row._mapping)
                    for row in await conn.execute(text(FULL_SCAN), {"as_of": as_of})
                ]
                rolled_rows = (
                    await conn.execute(text("SELECT count(*) FROM day_account_totals"))
                ).scalar_one()
            assert lines == scanned
            # The eight rolled days' rows (3 accounts a day, one code) from the totals ...
            assert rolled_rows == 8 * 3
            assert _rows_read(plan, "day_account_totals") == rolled_rows
            # ... and from the transfers only the posted ones of the ninth day and of the tenth
            # before 05:00 (hours 0, 2, 4), each once for its debit and once for its credit.
            assert _rows_read(plan, "transfers") == 2 * (12 + 3)
        finally:
            await past_engine.dispose()
            await owner.dispose()
