"""The books (docs/accounting.md) on a database of their own: the worked example goes through the
real ingestion path (`Ingestor.process`, what the consumers call), the outbox relay and the broker,
and every step posts exactly the journal entries the document shows; the trial balance prints as
the document prints it; `verify` names the invariant a corrupted book breaks; the cash-out
document is stable and equal to what was published; and a ledger booked before payables were
settled is caught up once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger import chart
from ledger.chain import append_link_entries
from ledger.chart import KIND_TYPES, AccountKind
from ledger.database import create_engine
from ledger.ids import transfer_id
from ledger.migrate import alembic_config, upgrade_to_head
from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.queries import trial_balance
from ledger.service import Ledger
from ledger.store import store_batch
from ledger.verify import verify
from schemas import topics
from schemas.topics import all_topics
from services.cashout.catch_up import catch_up_cashouts
from services.cashout.outbox import OutboxRelay
from services.cashout.postings import hold_id
from services.cli import main
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import get_settings
from services.trial_balance_text import render_trial_balance
from tests import event_factory as make
from tests.api_server import FINANCE_TOKEN, api_settings, running_api_server
from tests.ingestion_fixtures import make_ingestor
from tests.ledger_helpers import ledger_problems, one_snapshot

DOCS = Path(__file__).resolve().parents[1] / "docs" / "accounting.md"
READ_WAIT_S = 30.0


# A database of its own, so that the figures are the example's alone -------------------------


async def _admin(admin_url: str, statement: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()


async def _fresh_database(admin_url: str) -> tuple[str, str]:
    name = f"giftledger_books_{uuid.uuid4().hex[:12]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return name, url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def books_url(postgres_admin_url: str) -> AsyncIterator[str]:
    name, url = await _fresh_database(postgres_admin_url)
    engine = create_engine(url, pool_size=2)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    yield url
    await _admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def books_engine(books_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(books_url, pool_size=4, pool_overflow_max=4)
    yield engine
    await engine.dispose()


# The worked example ---------------------------------------------------------------------------

Balances = dict[str, tuple[int, int]]  # account -> (posted, pending), credits minus debits


async def _balances(engine: AsyncEngine) -> Balances:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT name, credits_posted - debits_posted AS posted,"
                " credits_pending - debits_pending AS pending FROM accounts"
            )
        )
        return {row.name: (int(row.posted), int(row.pending)) for row in rows}


def _changes(before: Balances, after: Balances) -> dict[str, tuple[int, int]]:
    """What a step changed, per account (posted, pending); accounts it left alone left out."""
    changes = {}
    for name, (posted, pending) in after.items():
        old_posted, old_pending = before.get(name, (0, 0))
        if (posted, pending) != (old_posted, old_pending):
            changes[name] = (posted - old_posted, pending - old_pending)
    return changes


@dataclass
class WorkedExample:
    creator: str
    prefix: str
    cashouts: dict[str, str] = field(default_factory=dict)  # C1.. -> cashout_id
    steps: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    statuses: dict[str, list[str]] = field(default_factory=dict)


class _Run:
    """Feeds the example's events to the ingestor and records what each step changed."""

    def __init__(
        self, engine: AsyncEngine, ingestor: Ingestor, relay: OutboxRelay, example: WorkedExample
    ) -> None:
        self.engine = engine
        self.ingestor = ingestor
        self.relay = relay
        self.example = example
        self.offset = 0

    async def send(self, step: str, topic: str, event: dict[str, Any]) -> None:
        self.offset += 1
        key = self.example.creator.encode()
        record = InputRecord(topic, 0, self.offset, key, json.dumps(event).encode())
        before = await _balances(self.engine)
        report = await self.ingestor.process(topic, [record])
        assert (report.applied, report.dead_letters) == (1, []), (step, report)
        self.example.steps[step] = _changes(before, await _balances(self.engine))

    async def relay_outbox(self, step: str) -> None:
        """The relay sends the outbox (payout requests included) and marks them submitted."""
        before = await _balances(self.engine)
        while await self.relay.publish_once():
            pass
        self.example.steps[step] = _changes(before, await _balances(self.engine))

    async def cashout(self, name: str, request: dict[str, Any]) -> str:
        self.example.cashouts[name] = str(request["event_id"])
        await self.send(f"{name} held", topics.CASHOUTS_REQUESTED, request)
        return self.example.cashouts[name]

    async def answer(
        self, step: str, cashout_id: str, status: str, code: str | None = None
    ) -> None:
        await self.send(step, topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, status, code))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def example(books_engine: AsyncEngine, kafka_bootstrap: str) -> AsyncIterator[WorkedExample]:
    """The example of docs/accounting.md, step by step."""
    prefix = f"books{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), 1)
    async with books_engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = make_ingestor(books_engine, rate_cards, topic_prefix=prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        example = WorkedExample(creator=f"creator-a-{uuid.uuid4().hex[:6]}", prefix=prefix)
        relay = OutboxRelay(ingestor.ledger, ingestor.desk, producer)
        run = _Run(books_engine, ingestor, relay, example)
        creator = example.creator
        await run.send("profile", topics.CREATORS_UPDATED, make.creator_update(creator))
        await run.send("G1", topics.GIFTS_SENT, make.gift(creator, coins=6_001, count=2))
        second = make.gift(creator, coins=100)
        await run.send("G2", topics.GIFTS_SENT, second)
        reversal = make.reversal(creator, str(second["event_id"]), "chargeback")
        await run.send("R", topics.GIFTS_REVERSED, reversal)
        tip = make.tip(creator, amount=1_000, fan_fee=50, processor_fee=60)
        await run.send("T", topics.TIPS_RECEIVED, tip)
        reward = {**make.fund_reward(creator, amount=2_500), "currency": "USD"}
        await run.send("F", topics.FUND_REWARDED, reward)
        deal = {**make.marketplace_payment(creator, 50_000, 5_000), "currency": "USD"}
        await run.send("M", topics.MARKETPLACE_PAID, deal)

        c1 = await run.cashout("C1", make.cashout_request(creator, 2_001))
        await run.relay_outbox("C1 submitted")
        await run.answer("C1 paid", c1, "paid")
        c2 = await run.cashout("C2", make.cashout_request(creator, 2_000))
        await run.relay_outbox("C2 submitted")
        await run.answer("C2 failed", c2, "failed", "AC04")
        c3 = await run.cashout("C3", make.cashout_request(creator, 2_000))
        await run.relay_outbox("C3 submitted")
        await run.answer("C3 paid", c3, "paid")
        await run.answer("C3 returned", c3, "returned", "R01")
        c4 = await run.cashout("C4", make.cashout_request(creator, 10_000, asset="USD"))
        await run.relay_outbox("C4 submitted")
        await run.answer("C4 paid", c4, "paid")
        c5 = await run.cashout("C5", make.cashout_request(creator, 2_000))
        await run.answer("C5 failed", c5, "failed", "AC04")  # the bank answered first
        await run.relay_outbox("last messages")
        async with books_engine.connect() as conn:
            for name, cashout_id in example.cashouts.items():
                rows = await conn.execute(
                    text(
                        "SELECT status FROM cashout_transitions WHERE cashout_id = :id ORDER BY seq"
                    ),
                    {"id": cashout_id},
                )
                example.statuses[name] = [row.status for row in rows]
        yield example
    finally:
        await producer.stop()


def _accounts(creator: str) -> dict[str, str]:
    """Short names for the example's accounts."""
    return {
        "spent": "platform:COIN:coins_spent",
        "revenue": "platform:COIN:coin_gift_revenue",
        "issuance": "platform:DIAMOND:diamond_issuance",
        "available": f"creator:{creator}:DIAMOND:available",
        "held": f"creator:{creator}:DIAMOND:held",
        "redeemed": "platform:DIAMOND:diamonds_redeemed",
        "rounding": "platform:DIAMOND:rounding",
        "wallet": f"creator:{creator}:USD:wallet",
        "tips": "platform:USD:tips_clearing",
        "tip_fees": "platform:USD:tip_fees",
        "processor_fees": "platform:USD:processor_fees",
        "fund": "platform:USD:creator_fund_expense",
        "marketplace": "platform:USD:marketplace_clearing",
        "marketplace_fees": "platform:USD:marketplace_fees",
        "conversion": "platform:USD:cashout_conversion",
        "payable": "platform:USD:payouts_payable",
        "bank": "platform:USD:cash_at_bank",
    }


# What each step posts (docs/accounting.md, "The worked example"): (posted, pending) changes,
# credits minus debits, in minor units (milli-diamonds, cents).
EXPECTED_STEPS: dict[str, dict[str, tuple[int, int]]] = {
    "G1": {
        "spent": (-12_002, 0),
        "revenue": (12_002, 0),
        "issuance": (-6_001_000, 0),
        "available": (6_001_000, 0),
    },
    "G2": {
        "spent": (-100, 0),
        "revenue": (100, 0),
        "issuance": (-50_000, 0),
        "available": (50_000, 0),
    },
    "R": {
        "spent": (100, 0),
        "revenue": (-100, 0),
        "issuance": (50_000, 0),
        "available": (-50_000, 0),
    },
    "T": {"tips": (-990, 0), "wallet": (1_000, 0), "tip_fees": (50, 0), "processor_fees": (-60, 0)},
    "F": {"fund": (-2_500, 0), "wallet": (2_500, 0)},
    "M": {"marketplace": (-50_000, 0), "wallet": (45_000, 0), "marketplace_fees": (5_000, 0)},
    "C1 held": {"available": (0, -2_001_000), "held": (0, 2_001_000)},
    "C1 submitted": {
        "available": (-2_001_000, 2_001_000),
        "held": (0, -2_001_000),
        "redeemed": (2_000_000, 0),
        "rounding": (1_000, 0),
        "conversion": (-1_000, 0),
        "payable": (1_000, 0),
    },
    "C1 paid": {"payable": (-1_000, 0), "bank": (1_000, 0)},
    "C2 held": {"available": (0, -2_000_000), "held": (0, 2_000_000)},
    "C2 submitted": {
        "available": (-2_000_000, 2_000_000),
        "held": (0, -2_000_000),
        "redeemed": (2_000_000, 0),
        "conversion": (-1_000, 0),
        "payable": (1_000, 0),
    },
    "C2 failed": {
        "available": (2_000_000, 0),
        "redeemed": (-2_000_000, 0),
        "conversion": (1_000, 0),
        "payable": (-1_000, 0),
    },
    "C3 held": {"available": (0, -2_000_000), "held": (0, 2_000_000)},
    "C3 submitted": {
        "available": (-2_000_000, 2_000_000),
        "held": (0, -2_000_000),
        "redeemed": (2_000_000, 0),
        "conversion": (-1_000, 0),
        "payable": (1_000, 0),
    },
    "C3 paid": {"payable": (-1_000, 0), "bank": (1_000, 0)},
    "C3 returned": {
        "bank": (-1_000, 0),
        "conversion": (1_000, 0),
        "redeemed": (-2_000_000, 0),
        "available": (2_000_000, 0),
    },
    "C4 held": {"wallet": (0, -10_000), "payable": (0, 10_000)},
    "C4 submitted": {"wallet": (-10_000, 10_000), "payable": (10_000, -10_000)},
    "C4 paid": {"payable": (-10_000, 0), "bank": (10_000, 0)},
    "C5 held": {"available": (0, -2_000_000), "held": (0, 2_000_000)},
    "C5 failed": {"available": (0, 2_000_000), "held": (0, -2_000_000)},
    "last messages": {},  # C5's payout request leaves after its answer: nothing to submit
}


@pytest.mark.parametrize("step", list(EXPECTED_STEPS))
def test_each_step_posts_the_journal_entries_of_the_worked_example(
    example: WorkedExample, step: str
) -> None:
    names = _accounts(example.creator)
    expected = {names[short]: change for short, change in EXPECTED_STEPS[step].items()}
    assert example.steps[step] == expected


def test_each_cash_out_went_through_the_states_of_the_example(example: WorkedExample) -> None:
    assert example.statuses == {
        "C1": ["requested", "held", "submitted", "paid"],
        "C2": ["requested", "held", "submitted", "failed"],
        "C3": ["requested", "held", "submitted", "paid", "returned"],
        "C4": ["requested", "held", "submitted", "paid"],
        "C5": ["requested", "held", "failed"],
    }


def _documented_trial_balance() -> list[str]:
    """The trial balance block of docs/accounting.md, as printed."""
    found = re.search(
        r"<!-- worked example trial balance -->\n```\n(.*?)```", DOCS.read_text(), re.S
    )
    assert found is not None, "docs/accounting.md lost its worked example's trial balance"
    return found.group(1).rstrip("\n").splitlines()


async def test_the_trial_balance_is_the_documented_one_and_its_columns_add_up(
    example: WorkedExample, books_engine: AsyncEngine
) -> None:
    async with books_engine.connect() as conn:
        lines = await trial_balance(conn)
        card = (await load_rate_cards(conn)).version(1)
    printed = render_trial_balance(lines, card, None)
    assert printed == _documented_trial_balance()
    totals = [line.split() for line in printed if line.strip().startswith("total ")]
    assert totals == [
        ["total", "COIN", "12,002", "12,002"],
        ["total", "DIAMOND", "6,001.000", "6,001.000"],
        ["total", "USD", "545.50", "545.50"],
    ]
    assert (
        "    outstanding 4,000.000 DIAMOND ≈ 20.00 USD at rate card 1 (200 diamonds per USD)"
        in printed
    )


async def test_after_every_cash_out_cycle_nothing_is_payable_and_verify_passes(
    example: WorkedExample, books_engine: AsyncEngine
) -> None:
    balances = await _balances(books_engine)
    assert balances["platform:USD:payouts_payable"] == (0, 0)
    assert balances["platform:USD:cash_at_bank"] == (11_000, 0)  # 10.00 + 100.00 left the bank
    assert await ledger_problems(books_engine) == []


async def test_the_trial_balance_document_gives_each_account_its_type(
    example: WorkedExample, books_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("DATABASE_URL", books_url)
    get_settings.cache_clear()
    try:
        assert await asyncio.to_thread(main, ["trial-balance", "--json"]) == 0
    finally:
        get_settings.cache_clear()
    document = json.loads(capsys.readouterr().out)
    usd = next(entry for entry in document["assets"] if entry["asset"] == "USD")
    types = {line["account"]: (line["type"], line["normal_side"]) for line in usd["accounts"]}
    assert types["platform:USD:payouts_payable"] == ("liability", "credit")
    assert types["platform:USD:cash_at_bank"] == ("asset", "debit")
    assert types["platform:USD:tips_clearing"] == ("clearing", "debit")
    assert types["platform:USD:processor_fees"] == ("expense", "debit")
    assert types["platform:USD:tip_fees"] == ("revenue", "credit")
    assert usd["total"]["debits"] == usd["total"]["credits"]
    assert usd["total"]["balance"] == 0


# The chart in code and in the database --------------------------------------------------------


async def test_every_account_kind_has_the_same_type_in_code_and_in_the_database(
    books_engine: AsyncEngine,
) -> None:
    async with books_engine.connect() as conn:
        rows = await conn.execute(text("SELECT kind, account_type, normal_side FROM account_kinds"))
        stored = {row.kind: (row.account_type, row.normal_side) for row in rows}
        rows = await conn.execute(text("SELECT code, name FROM transfer_codes"))
        codes: dict[int, str] = {row.code: row.name for row in rows}
    assert stored == {
        kind.value: (kind_type.account_type.value, kind_type.normal_side.value)
        for kind, kind_type in KIND_TYPES.items()
    }
    assert codes == {int(code): code.name.lower() for code in TransferCode}


async def test_an_account_of_a_kind_outside_the_chart_is_refused(books_engine: AsyncEngine) -> None:
    with pytest.raises(Exception, match="accounts_kind_in_chart"):
        async with books_engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO accounts (name, asset, kind) VALUES (:n, 'USD', 'mystery')"),
                {"n": f"platform:USD:mystery-{uuid.uuid4().hex[:6]}"},
            )


# verify names the invariant a corrupted book breaks -----------------------------------------


@dataclass(frozen=True)
class Corruption:
    debit: chart.AccountSpec
    credit: chart.AccountSpec
    amount: int
    code: TransferCode
    broken: str
    detail: str


def _creator_available(example: WorkedExample) -> chart.AccountSpec:
    return chart.creator_diamonds_available(example.creator)


CORRUPTIONS = {
    "an extra transfer to payouts_payable": lambda example: Corruption(
        chart.platform(AccountKind.CASH_AT_BANK, "USD"),
        chart.platform(AccountKind.PAYOUTS_PAYABLE, "USD"),
        100,
        TransferCode.ADJUSTMENT,
        "payouts_payable_matches_submitted_cashouts",
        "platform:USD:payouts_payable: posted 100, pending 0 but submitted cash-outs owe 0"
        " and held currency cash-outs reserve 0",
    ),
    "a tips clearing moved by something that is no tip": lambda example: Corruption(
        chart.platform(AccountKind.PROCESSOR_FEES, "USD"),
        chart.platform(AccountKind.TIPS_CLEARING, "USD"),
        25,
        TransferCode.ADJUSTMENT,
        "clearing_accounts_explained",
        "platform:USD:tips_clearing: balance -965 but its items in flight explain -990",
    ),
    "Diamonds given to a creator outside any gift": lambda example: Corruption(
        chart.platform(AccountKind.DIAMOND_ISSUANCE, "DIAMOND"),
        _creator_available(example),
        1_000,
        TransferCode.ADJUSTMENT,
        "diamonds_held_by_creators",
        "issued 6051000 - reversed 50000 - redeemed 2001000 + adjusted 0 = 4000000"
        " milli-diamonds, but creators hold 4001000",
    ),
    "Diamonds redeemed with no cash-out behind them": lambda example: Corruption(
        _creator_available(example),
        chart.platform(AccountKind.DIAMONDS_REDEEMED, "DIAMOND"),
        1_000,
        TransferCode.CASHOUT_CONVERSION,
        "conversion_explained_by_cashouts",
        "platform:DIAMOND:diamonds_redeemed: balance 2001000 but the converted cash-outs"
        " explain 2000000",
    ),
}


@pytest.mark.parametrize("corruption_name", list(CORRUPTIONS))
async def test_verify_names_the_invariant_a_corrupted_book_breaks(
    example: WorkedExample, books_engine: AsyncEngine, corruption_name: str
) -> None:
    corruption = CORRUPTIONS[corruption_name](example)
    ledger = Ledger(books_engine)
    ids = await ledger.account_ids([corruption.debit, corruption.credit])
    extra = Transfer(
        uuid.uuid4(),
        ids[corruption.debit.name],
        ids[corruption.credit.name],
        corruption.amount,
        corruption.code,
    )
    async with one_snapshot(books_engine) as conn:  # as the owner, in a transaction rolled back
        transaction = await conn.begin()
        try:
            outcome, entries = await store_batch(conn, [extra], None)
            assert outcome.results == [PostResult.OK]
            await append_link_entries(conn, entries)
            problems = await verify(conn)
        finally:
            await transaction.rollback()
    assert [(problem.check, problem.detail) for problem in problems] == [
        (corruption.broken, corruption.detail)
    ]
    assert await ledger_problems(books_engine) == []


# The cash-out document -----------------------------------------------------------------------


async def _published_update(
    bootstrap_servers: str, prefix: str, event_id: str
) -> dict[str, Any] | None:
    consumer = AIOKafkaConsumer(
        topics.prefixed(prefix, topics.CASHOUTS_UPDATED),
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + READ_WAIT_S
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    update: dict[str, Any] = json.loads(record.value)
                    if update["event_id"] == event_id:
                        return update
    finally:
        await consumer.stop()
    return None


async def test_the_cash_out_document_is_stable_and_what_was_published(
    example: WorkedExample,
    books_url: str,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    cashout_id = example.cashouts["C3"]
    published = await _published_update(kafka_bootstrap, example.prefix, f"{cashout_id}:returned")
    assert published is not None
    headers = {"Authorization": f"Bearer {FINANCE_TOKEN}"}
    with running_api_server(books_url, api_settings()) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            first = (await client.get(f"/v1/cashouts/{cashout_id}", headers=headers)).json()
            await asyncio.sleep(0.01)  # a later read, at a later clock
            second = (await client.get(f"/v1/cashouts/{cashout_id}", headers=headers)).json()
    assert first == second
    transitions = first.pop("transitions")
    assert [transition["status"] for transition in transitions] == example.statuses["C3"]
    assert first == published
    assert first["status"] == "returned"
    assert first["failure_code"] == "R01"
    monkeypatch.setenv("DATABASE_URL", books_url)
    get_settings.cache_clear()
    try:
        code = await asyncio.to_thread(main, ["cashouts", "--creator", example.creator, "--json"])
    finally:
        get_settings.cache_clear()
    assert code == 0
    listed = json.loads(capsys.readouterr().out)["cashouts"]
    assert next(c for c in listed if c["cashout_id"] == cashout_id) == published


# A ledger booked before payables were settled ------------------------------------------------


def _upgrade_to(revision: str) -> Any:
    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return upgrade


@pytest_asyncio.fixture(loop_scope="session")
async def old_books(postgres_admin_url: str) -> AsyncIterator[AsyncEngine]:
    """A database at revision 0016, the last before payables were settled."""
    name, url = await _fresh_database(postgres_admin_url)
    engine = create_engine(url, pool_size=4, pool_overflow_max=4)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to("0016"))
        yield engine
    finally:
        await engine.dispose()
        await _admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _post_linked_in_lines(ledger: Ledger, transfers: list[Transfer]) -> list[PostResult]:
    """Post a batch linked as every link was before migration 0027 (`LINK_FORM_LINES`, by the
    unit of work at its end): `Ledger.post`'s write links in the form 0027 added, whose column a
    schema of 0016 does not have."""
    async for tx in ledger.transactions():
        async with tx:
            outcome = await tx.post(transfers)
    return outcome.results


async def _book_as_before_0017(engine: AsyncEngine, creator: str) -> tuple[str, str]:
    """What the books held for a paid cash-out (2,001 diamonds, 10.00 USD) and a submitted one
    (3,000 diamonds, 15.00 USD) before 0017: the paid one's hold posted when the bank paid, its
    money in payouts_payable, never settled; the submitted one's hold still pending."""
    ledger = Ledger(engine)
    specs = {
        "issuance": chart.platform(AccountKind.DIAMOND_ISSUANCE, "DIAMOND"),
        "available": chart.creator_diamonds_available(creator),
        "held": chart.creator_diamonds_held(creator),
        "redeemed": chart.platform(AccountKind.DIAMONDS_REDEEMED, "DIAMOND"),
        "rounding": chart.platform(AccountKind.ROUNDING, "DIAMOND"),
        "conversion": chart.platform(AccountKind.CASHOUT_CONVERSION, "USD"),
        "payable": chart.platform(AccountKind.PAYOUTS_PAYABLE, "USD"),
        "spent": chart.platform(AccountKind.COINS_SPENT, "COIN"),
        "revenue": chart.platform(AccountKind.COIN_GIFT_REVENUE, "COIN"),
    }
    found = await ledger.account_ids(list(specs.values()))
    ids = {short: found[spec.name] for short, spec in specs.items()}
    paid, submitted = f"old-paid-{uuid.uuid4().hex[:6]}", f"old-submitted-{uuid.uuid4().hex[:6]}"

    def plain(name: str, debit: str, credit: str, amount: int, code: TransferCode) -> Transfer:
        card = 1 if code in (TransferCode.GIFT_DIAMONDS, TransferCode.GIFT_COINS) else None
        return Transfer(
            transfer_id(topics.PAYOUTS_UPDATED, paid, name),
            ids[debit],
            ids[credit],
            amount,
            code,
            rate_card_version=card,
            metadata={"cashout_id": paid},
        )

    def hold(cashout_id: str, amount: int) -> Transfer:
        return Transfer(
            hold_id(cashout_id),
            ids["available"],
            ids["held"],
            amount,
            TransferCode.CASHOUT_HOLD,
            TransferFlags.PENDING | TransferFlags.FUNDED,
            metadata={"cashout_id": cashout_id},
        )

    post = Transfer(
        transfer_id(topics.PAYOUTS_UPDATED, paid, "post"),
        0,
        0,
        0,
        TransferCode.CASHOUT_PAID,
        TransferFlags.POST_PENDING,
        pending_id=hold_id(paid),
    )
    results = await _post_linked_in_lines(
        ledger,
        [
            plain("gift", "issuance", "available", 6_001_000, TransferCode.GIFT_DIAMONDS),
            plain("coins", "spent", "revenue", 12_002, TransferCode.GIFT_COINS),
            hold(paid, 2_001_000),
            hold(submitted, 3_000_000),
        ],
    )
    assert results == [PostResult.OK] * 4
    paid_legs = [
        post,
        plain("redeem", "held", "redeemed", 2_000_000, TransferCode.CASHOUT_CONVERSION),
        plain("rounding", "held", "rounding", 1_000, TransferCode.ROUNDING),
        plain("money", "conversion", "payable", 1_000, TransferCode.CASHOUT_PAID),
    ]
    linked = [
        dataclasses.replace(leg, flags=leg.flags | TransferFlags.LINKED)
        if index < len(paid_legs) - 1
        else leg
        for index, leg in enumerate(paid_legs)
    ]
    assert await _post_linked_in_lines(ledger, linked) == [PostResult.OK] * 4
    async with engine.begin() as conn:
        for cashout_id, status, amount, payout in (
            (paid, "paid", 2_001_000, 1_000),
            (submitted, "submitted", 3_000_000, 1_500),
        ):
            await conn.execute(
                text(
                    "INSERT INTO cashouts (cashout_id, creator_id, asset, amount, payout_currency,"
                    " payout_amount, usd_value_micros, rate_card_version, fx_numerator,"
                    " fx_denominator, status, payout_account_ref, requested_on, occurred_at)"
                    " VALUES (:id, :creator, 'DIAMOND', :amount, 'USD', :payout, :micros, 1, 1, 1,"
                    " :status, 'pa_demo_1', current_date, now())"
                ),
                {
                    "id": cashout_id,
                    "creator": creator,
                    "amount": amount,
                    "payout": payout,
                    "micros": amount * 5,
                    "status": status,
                },
            )
            for state in ("requested", "held", "submitted", status)[: 4 if status == "paid" else 3]:
                await conn.execute(
                    text("INSERT INTO cashout_transitions (cashout_id, status) VALUES (:id, :s)"),
                    {"id": cashout_id, "s": state},
                )
    return paid, submitted


async def test_a_ledger_booked_before_payables_were_settled_is_caught_up_once(
    old_books: AsyncEngine,
) -> None:
    creator = f"creator-old-{uuid.uuid4().hex[:6]}"
    paid, submitted = await _book_as_before_0017(old_books, creator)
    await upgrade_to_head(old_books)
    before = {problem.check for problem in await ledger_problems(old_books)}
    assert before == {
        "payouts_payable_matches_submitted_cashouts",
        "conversion_explained_by_cashouts",
    }

    ledger = Ledger(old_books)
    assert await catch_up_cashouts(ledger) == 2
    balances = await _balances(old_books)
    assert balances["platform:USD:payouts_payable"] == (1_500, 0)  # the submitted one's 15.00
    assert balances["platform:USD:cash_at_bank"] == (1_000, 0)  # the paid one's 10.00 left
    assert balances[f"creator:{creator}:DIAMOND:available"] == (1_000_000, 0)
    async with one_snapshot(old_books) as conn:
        assert await verify(conn) == []
        transfer_count = await conn.scalar(text("SELECT count(*) FROM transfers"))
        codes: dict[str, list[int]] = dict(
            (
                await conn.execute(
                    text(
                        "SELECT metadata->>'cashout_id', array_agg(code ORDER BY seq)"
                        " FROM transfers WHERE code IN (45, 46, 47) GROUP BY 1"
                    )
                )
            ).all()
        )
    assert codes == {
        paid: [int(TransferCode.CASHOUT_SETTLED_CATCH_UP)],
        submitted: [int(TransferCode.CASHOUT_SUBMITTED)],
    }

    assert await catch_up_cashouts(ledger) == 0  # once
    async with old_books.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM transfers")) == transfer_count

    # The bank pays the one that was submitted: settled like any other.
    async with old_books.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = make_ingestor(old_books, rate_cards)
    answer = make.payout_update(submitted, "paid")
    record = InputRecord(
        topics.PAYOUTS_UPDATED, 0, 1, creator.encode(), json.dumps(answer).encode()
    )
    assert (await ingestor.process(topics.PAYOUTS_UPDATED, [record])).applied == 1
    balances = await _balances(old_books)
    assert balances["platform:USD:payouts_payable"] == (0, 0)
    assert balances["platform:USD:cash_at_bank"] == (2_500, 0)
    assert await ledger_problems(old_books) == []
