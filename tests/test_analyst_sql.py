"""SQL a finance analyst can read: the `giftledger_analyst` role, a comment on every table, view
and column, and the views that decode transfers, gifts, balances and cash-outs. The README's
example queries run here as written, as the analyst (`SET ROLE`), on events fed through the real
ingestion path (`Ingestor.process`, what the consumers call)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
import pytest_asyncio
from sqlalchemy import Row, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.queries import creator_balances
from schemas import topics
from services.api.documents import creator_balances_document
from tests import event_factory as make
from tests.report_helpers import EventFeed

pytestmark = pytest.mark.server

ANALYST: Final = "giftledger_analyst"
READER: Final = "giftledger_reader"
VIEWS: Final = ("transfer_details", "gift_details", "account_balances", "cashout_details")
# A time zone far from UTC: the README's queries must not depend on the session's.
SESSION_TIME_ZONE: Final = "Pacific/Kiritimati"
README: Final = Path(__file__).resolve().parent.parent / "README.md"
README_CREATOR: Final = "'creator-00'"
BALANCE_QUERY: Final = "-- a creator's balance"
SURFACE_QUERY: Final = "-- Diamonds issued this month (UTC) by surface"
# Transfer codes that no consumed event posts: the batch coin transfer of gifts, a cash-out's
# submission to the bank (when its payout request leaves) and the catch-up settlement of
# `giftledger migrate`, an expired pending, adjustments by hand, the tests' synthetic transfers.
CODES_WITHOUT_TOPIC: Final = frozenset(
    {
        "gift_coins",
        "cashout_submitted",
        "cashout_settled_catch_up",
        "pending_expired",
        "adjustment",
        "operator_adjustment",
        "synthetic",
    }
)
GIFT_OCCURRED_AT: Final = "2026-01-15T08:30:00+01:00"

# Every table, view and column of the public schema without a comment (partitions excepted).
UNCOMMENTED: Final = text(
    """
    SELECT c.relname AS relation, NULL AS column_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND NOT c.relispartition AND obj_description(c.oid, 'pg_class') IS NULL
    UNION ALL
    SELECT c.relname, a.attname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND NOT c.relispartition AND col_description(c.oid, a.attnum) IS NULL
    ORDER BY 1, 2
    """
)
RELATIONS: Final = text(
    """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
    ORDER BY c.relname
    """
)


def _readme_query(first_line: str) -> str:
    """The README's ```sql block that starts with `first_line`."""
    blocks = README.read_text(encoding="utf-8").split("```sql\n")[1:]
    [block] = [block.split("```", 1)[0] for block in blocks if block.startswith(first_line)]
    return block


async def _as(conn: AsyncConnection, role: str) -> None:
    """The rest of the transaction acts as `role`, in a session time zone far from UTC."""
    await conn.execute(text(f"SET LOCAL ROLE {role}"))
    await conn.execute(text(f"SET LOCAL TIME ZONE '{SESSION_TIME_ZONE}'"))


async def _rows_as(
    engine: AsyncEngine, role: str, query: str, parameters: dict[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """`query` run by `role` in a transaction that is rolled back: exactly as written when it
    has no parameters (the README's queries), else with them bound."""
    async with engine.connect() as conn:
        await _as(conn, role)
        if parameters is None:
            return (await conn.exec_driver_sql(query)).all()
        return (await conn.execute(text(query), parameters)).all()


# The data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Creator:
    """A creator with gifts of 2,515.5 diamonds, a tip of 5.00 USD and a cash-out of 2,000
    diamonds held."""

    creator_id: str
    cashout: dict[str, Any]
    gift_event: str


async def _post_gifts(feed: EventFeed, creator: str) -> str:
    """Two video gifts (2,500 and 0.5 diamonds) and a LIVE one (15): the first gift's event id."""
    first = {**make.gift(creator, coins=100, count=50), "occurred_at": GIFT_OCCURRED_AT}
    await feed.send(topics.GIFTS_SENT, first)
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=1))
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=10, count=3, surface="live"))
    return str(first["event_id"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def creator(engine: AsyncEngine) -> Creator:
    creator_id = f"analyst-{uuid.uuid4().hex[:10]}"
    feed = await EventFeed.on(engine)
    await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator_id))
    gift_event = await _post_gifts(feed, creator_id)
    await feed.send(topics.TIPS_RECEIVED, make.tip(creator_id))
    cashout = make.cashout_request(creator_id, 2_000)
    await feed.send(topics.CASHOUTS_REQUESTED, cashout)
    return Creator(creator_id, cashout, gift_event)


@pytest_asyncio.fixture(loop_scope="session")
async def owner(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        yield conn


# Comments -----------------------------------------------------------------------------------


async def test_every_table_view_and_column_has_a_comment(owner: AsyncConnection) -> None:
    missing = [
        row.relation if row.column_name is None else f"{row.relation}.{row.column_name}"
        for row in await owner.execute(UNCOMMENTED)
    ]
    assert missing == []


# The role -----------------------------------------------------------------------------------


async def test_the_analyst_role_cannot_log_in_until_given_a_password(
    owner: AsyncConnection,
) -> None:
    role = (
        await owner.execute(
            text("SELECT rolcanlogin, rolsuper, rolconfig FROM pg_roles WHERE rolname = :r"),
            {"r": ANALYST},
        )
    ).one()
    assert (role.rolcanlogin, role.rolsuper) == (False, False)
    assert set(role.rolconfig) == {"default_transaction_read_only=on", "statement_timeout=5min"}
    member = "SELECT pg_has_role(:analyst, :reader, 'MEMBER')"
    assert (await owner.execute(text(member), {"analyst": ANALYST, "reader": READER})).scalar()
    if (
        await owner.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    ).scalar():
        password = "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = :r"
        assert (await owner.execute(text(password), {"r": ANALYST})).scalar() is True


async def test_the_analyst_reads_every_table_and_view(
    engine: AsyncEngine, owner: AsyncConnection
) -> None:
    relations = list((await owner.execute(RELATIONS)).scalars())
    assert set(VIEWS) <= set(relations)
    async with engine.connect() as conn:
        await _as(conn, ANALYST)
        for relation in relations:
            await conn.execute(text(f'SELECT * FROM "{relation}" LIMIT 1'))  # noqa: S608


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO assets (code, scale) VALUES ('XAN', 2)",
        "UPDATE accounts SET flags = flags",
        "DELETE FROM outbox",
        "INSERT INTO transfer_code_topics (code, topic) VALUES (100, 'gifts.sent')",
        "DELETE FROM account_balances",
        "CREATE TABLE analyst_scratch (x int)",
    ],
)
async def test_the_analyst_writes_nothing(engine: AsyncEngine, statement: str) -> None:
    async with engine.connect() as conn:
        await _as(conn, ANALYST)
        with pytest.raises(DBAPIError, match=r"permission denied|cannot delete from view"):
            await conn.execute(text(statement))


@pytest.mark.parametrize("role", [READER, ANALYST])
@pytest.mark.parametrize("view", VIEWS)
async def test_the_views_are_granted_to_the_reader_and_the_analyst(
    engine: AsyncEngine, creator: Creator, role: str, view: str
) -> None:
    [(count,)] = await _rows_as(engine, role, f"SELECT count(*) FROM {view}", {})  # noqa: S608
    assert count > 0


# The views ----------------------------------------------------------------------------------


async def test_every_transfer_code_has_its_topic_or_comes_from_no_consumed_event(
    owner: AsyncConnection,
) -> None:
    rows = await owner.execute(
        text(
            "SELECT c.name, t.topic FROM transfer_codes c"
            " LEFT JOIN transfer_code_topics t ON t.code = c.code"
        )
    )
    codes: dict[str, str | None] = {row.name: row.topic for row in rows}
    assert {name for name, topic in codes.items() if topic is None} <= CODES_WITHOUT_TOPIC
    assert codes["gift_diamonds"] == topics.GIFTS_SENT
    assert set(codes.values()) - {None} <= set(topics.CONSUMED_TOPICS)


async def test_transfer_details_decode_code_flags_accounts_and_both_clocks(
    engine: AsyncEngine, owner: AsyncConnection, creator: Creator
) -> None:
    rows = await _rows_as(
        engine,
        ANALYST,
        "SELECT transfer_id, code_name, source_topic, event_id, occurred_at, booked_at,"
        " debit_account, credit_account, amount_minor, amount, is_linked, is_pending,"
        " is_post_pending, is_void_pending, is_funded"
        " FROM transfer_details WHERE credit_creator_id = :creator ORDER BY seq",
        {"creator": creator.creator_id},
    )
    by_code: dict[str, list[Row[Any]]] = {}
    for row in rows:
        by_code.setdefault(row.code_name, []).append(row)
    assert {code: len(found) for code, found in by_code.items()} == {
        "gift_diamonds": 3,
        "tip": 1,
        "cashout_hold": 1,
    }
    first_gift = by_code["gift_diamonds"][0]
    assert (first_gift.source_topic, first_gift.event_id) == ("gifts.sent", creator.gift_event)
    assert first_gift.occurred_at == datetime.fromisoformat(GIFT_OCCURRED_AT)
    assert (first_gift.amount_minor, first_gift.amount) == (2_500_000, Decimal("2500.000"))
    assert first_gift.debit_account == "platform:DIAMOND:diamond_issuance"
    [tip] = by_code["tip"]
    assert (tip.source_topic, tip.amount) == ("tips.received", Decimal("5.00"))
    assert tip.credit_account == f"creator:{creator.creator_id}:USD:wallet"
    [hold] = by_code["cashout_hold"]
    assert (hold.source_topic, hold.event_id) == ("cashouts.requested", creator.cashout["event_id"])
    assert hold.occurred_at == datetime.fromisoformat(creator.cashout["occurred_at"])
    assert (hold.is_pending, hold.is_funded, hold.is_post_pending, hold.is_void_pending) == (
        True,
        True,
        False,
        False,
    )
    assert hold.debit_account == f"creator:{creator.creator_id}:DIAMOND:available"
    assert hold.credit_account == f"creator:{creator.creator_id}:DIAMOND:held"
    stored = {
        row.id: row
        for row in await owner.execute(
            text("SELECT id, created_at, flags FROM transfers WHERE id = ANY(:ids)"),
            {"ids": [row.transfer_id for row in rows]},
        )
    }
    for row in rows:
        flags = stored[row.transfer_id].flags
        assert row.booked_at == stored[row.transfer_id].created_at
        assert (row.is_linked, row.is_pending, row.is_funded) == (
            bool(flags & 1),
            bool(flags & 2),
            bool(flags & 16),
        )


async def test_cashout_details_give_the_request_time_and_the_booking_time(
    engine: AsyncEngine, owner: AsyncConnection, creator: Creator
) -> None:
    cashout_id = creator.cashout["event_id"]
    [row] = await _rows_as(
        engine,
        ANALYST,
        "SELECT status, requested_at, booked_at, amount_minor, amount, payout_currency,"
        " payout_amount_minor, payout_amount"
        " FROM cashout_details WHERE cashout_id = :id",
        {"id": cashout_id},
    )
    first_transition = (
        await owner.execute(
            text("SELECT at FROM cashout_transitions WHERE cashout_id = :id ORDER BY seq LIMIT 1"),
            {"id": cashout_id},
        )
    ).scalar_one()
    assert row.status == "held"
    assert row.requested_at == datetime.fromisoformat(creator.cashout["occurred_at"])
    assert row.booked_at == first_transition
    assert (row.amount_minor, row.amount) == (2_000_000, Decimal("2000.000"))
    assert (row.payout_currency, row.payout_amount_minor, row.payout_amount) == (
        "USD",
        1_000,
        Decimal("10.00"),
    )


# The README's queries -----------------------------------------------------------------------


async def test_the_readme_balance_query_gives_what_the_api_answers(
    engine: AsyncEngine, owner: AsyncConnection, creator: Creator
) -> None:
    query = _readme_query(BALANCE_QUERY)
    assert query.count(README_CREATOR) == 1
    rows = await _rows_as(engine, ANALYST, query.replace(README_CREATOR, f"'{creator.creator_id}'"))
    assert [tuple(row) for row in rows] == [
        ("DIAMOND", Decimal("515.500"), Decimal("2000.000")),
        ("USD", Decimal("5.00"), Decimal("0.00")),
    ]
    document = creator_balances_document(
        creator.creator_id, await creator_balances(owner, creator.creator_id)
    )
    assert [
        (
            line["asset"],
            Decimal(line["available"]).scaleb(-line["scale"]),
            Decimal(line["pending"]).scaleb(-line["scale"]),
        )
        for line in document["balances"]
    ] == [tuple(row) for row in rows]


async def _this_month(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        month: datetime = (
            await conn.execute(text("SELECT date_trunc('month', now(), 'UTC')"))
        ).scalar_one()
    return month


async def test_the_readme_surface_query_counts_the_gifts_booked_this_month(
    engine: AsyncEngine,
) -> None:
    """The query's answer before and after three known gifts: the gifts of other tests this
    month are in both. Should the month turn in between, the gifts are sent again (once)."""
    query = _readme_query(SURFACE_QUERY)
    feed = await EventFeed.on(engine)
    for _ in range(2):
        month = await _this_month(engine)
        before = {row.surface: row for row in await _rows_as(engine, ANALYST, query)}
        await _post_gifts(feed, f"surface-{uuid.uuid4().hex[:10]}")
        after = {row.surface: row for row in await _rows_as(engine, ANALYST, query)}
        if await _this_month(engine) == month:
            break
    else:
        raise AssertionError("the month turned twice while three gifts were sent")

    def added(surface: str) -> tuple[int, Decimal]:
        was = before.get(surface)
        now = after[surface]
        return (
            now.gifts - (was.gifts if was else 0),
            now.diamonds - (was.diamonds if was else Decimal(0)),
        )

    # Other tests' gift transfers may have no surface (posted straight to the ledger).
    assert {"live", "video"} <= set(after)
    assert added("video") == (2, Decimal("2500.500"))
    assert added("live") == (1, Decimal("15.000"))
