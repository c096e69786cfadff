"""A statement ties to the balances: its lines marked pending add up to the account's pending
amounts and the others to its posted balance, and each line carries both running figures.

A hold (a pending transfer) is listed on its side, marked pending. What ends it is listed
against it: a void (a cash-out released, a hold expired) on the other side, marked pending, so
that the hold and its release cancel out; a post as two lines of one transfer, the release of the
whole hold (pending, on the other side) and the amount posted (not pending, on the hold's side).
`balance_after` is the posted balance after the line and `pending_after` the pending one, both
signed credits minus debits: a creator's `balance_after + pending_after` is what the balances
call available, and `-pending_after` of their available account what they call pending.

The ledger's rows are never changed: this is how the statement presents them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chart import AccountKind, creator_diamonds_available, creator_diamonds_held, platform
from ledger.model import AccountFlags, PostResult, Transfer, TransferCode, TransferFlags
from ledger.queries import StatementLine, statement
from ledger.service import Ledger
from schemas import topics
from services.api.server import create_app
from tests import event_factory as make
from tests.api_server import FINANCE_TOKEN, api_settings, served_client
from tests.ledger_helpers import ledger_problems, make_accounts, totals
from tests.operator_helpers import Feed
from tests.query_plans import nodes_of, plan_root, statements_run

F = TransferFlags
SYN = TransferCode.SYNTHETIC
FINANCE = {"Authorization": f"Bearer {FINANCE_TOKEN}"}


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database: the full `verify` after each example reads only its data."""
    return module_engine


# The model: what each account's statement lists ---------------------------------------------


@dataclass(frozen=True)
class Expected:
    transfer_id: uuid.UUID
    debit: int
    credit: int
    pending: bool


@dataclass
class Statements:
    """Each account's expected lines, from the transfers the ledger accepted, in order."""

    lines: dict[int, list[Expected]] = field(default_factory=dict)
    # the holds still open: their debit account, credit account and amount
    holds: dict[uuid.UUID, tuple[int, int, int]] = field(default_factory=dict)

    def _add(
        self, account: int, transfer_id: uuid.UUID, side_debit: bool, amount: int, *, pending: bool
    ) -> None:
        line = Expected(
            transfer_id, amount if side_debit else 0, 0 if side_debit else amount, pending
        )
        self.lines.setdefault(account, []).append(line)

    def accepted(self, transfer: Transfer) -> None:
        if transfer.pending_id is None:
            for account, side_debit in (
                (transfer.debit_account_id, True),
                (transfer.credit_account_id, False),
            ):
                self._add(
                    account,
                    transfer.id,
                    side_debit,
                    transfer.amount,
                    pending=bool(transfer.flags & F.PENDING),
                )
            if transfer.flags & F.PENDING:
                self.holds[transfer.id] = (
                    transfer.debit_account_id,
                    transfer.credit_account_id,
                    transfer.amount,
                )
            return
        debit, credit, held = self.holds.pop(transfer.pending_id)
        # the release of the whole hold, on the other side of each account
        self._add(debit, transfer.id, False, held, pending=True)
        self._add(credit, transfer.id, True, held, pending=True)
        if transfer.flags & F.POST_PENDING:
            posted = transfer.amount or held
            self._add(debit, transfer.id, True, posted, pending=False)
            self._add(credit, transfer.id, False, posted, pending=False)


def _check_running_figures(lines: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Each line's `balance_after` and `pending_after` are the sums of the lines up to it, the
    pending ones apart (JSON values, or a CSV's texts); the last two sums."""
    balance = pending = 0
    for line in lines:
        movement = int(line["credit"]) - int(line["debit"])
        if line["pending"] in (True, "true"):
            pending += movement
        else:
            balance += movement
        assert (int(line["balance_after"]), int(line["pending_after"])) == (balance, pending), line
    return balance, pending


async def _whole_statement(
    engine: AsyncEngine, account_id: int, page_size: int
) -> list[StatementLine]:
    lines: list[StatementLine] = []
    cursor: int | None = 0
    async with engine.connect() as conn:
        while cursor is not None:
            page = await statement(conn, account_id, after_seq=cursor, page_size=page_size)
            lines += page.lines
            cursor = page.next_cursor
    return lines


# The ledger's statement, on random holds, posts and voids ------------------------------------

ACCOUNT_COUNT = 3
operation = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(
            ["plain", "plain", "hold", "hold", "post", "partial", "void", "expire"]
        ),
        "debit": st.integers(0, ACCOUNT_COUNT - 1),
        "credit_offset": st.integers(1, ACCOUNT_COUNT - 1),
        "amount": st.integers(1, 100),
        "target": st.integers(0, 1_000),
    }
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    operations=st.lists(operation, min_size=1, max_size=16),
    page_size=st.integers(1, 5),
)
async def test_a_statements_lines_add_up_to_the_accounts_posted_and_pending_totals(
    engine: AsyncEngine, operations: list[dict[str, int | str]], page_size: int
) -> None:
    """Holds on either side of an account (pending debits and pending credits), posted whole or in
    part, voided, or ended by the expiry's code; each page's running figures start where the page
    before left them."""
    ledger = Ledger(engine)
    ids = await make_accounts(ledger, uuid.uuid4().hex, [AccountFlags.NONE] * ACCOUNT_COUNT)
    model = Statements()
    for spec in operations:
        debit = int(spec["debit"])
        credit = (debit + int(spec["credit_offset"])) % ACCOUNT_COUNT
        amount, kind = int(spec["amount"]), str(spec["kind"])
        open_holds = list(model.holds)
        if kind in ("post", "partial", "void", "expire") and open_holds:
            hold = open_holds[int(spec["target"]) % len(open_holds)]
            held = model.holds[hold][2]
            if kind == "post":
                transfer = Transfer(uuid.uuid4(), 0, 0, 0, SYN, F.POST_PENDING, hold)
            elif kind == "partial":
                transfer = Transfer(
                    uuid.uuid4(), 0, 0, min(amount, held), SYN, F.POST_PENDING, hold
                )
            else:
                code = TransferCode.PENDING_EXPIRED if kind == "expire" else SYN
                transfer = Transfer(uuid.uuid4(), 0, 0, 0, code, F.VOID_PENDING, hold)
        else:
            flags = F.PENDING if kind == "hold" else F.NONE
            transfer = Transfer(uuid.uuid4(), ids[debit], ids[credit], amount, SYN, flags)
        assert await ledger.post([transfer]) == [PostResult.OK]
        model.accepted(transfer)
    stored = await totals(engine, ids)
    for account_id in ids:
        lines = await _whole_statement(engine, account_id, page_size)
        assert [
            Expected(line.transfer_id, line.debit, line.credit, line.pending) for line in lines
        ] == model.lines.get(account_id, [])
        balance, pending = _check_running_figures([dataclasses.asdict(line) for line in lines])
        account = stored[account_id]
        assert balance == account.credits_posted - account.debits_posted
        assert pending == account.credits_pending - account.debits_pending
    assert await ledger_problems(engine) == []


# Through the API, against the balances --------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(engine: AsyncEngine) -> FastAPI:
    return create_app(engine, api_settings())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with served_client(app) as client:
        yield client


async def _api_statement(
    api: httpx.AsyncClient, account: str, page_size: int
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    cursor: int | None = 0
    while cursor is not None:
        answer = await api.get(
            f"/v1/accounts/{account}/statement",
            params={"cursor": cursor, "page_size": page_size},
            headers=FINANCE,
        )
        assert answer.status_code == 200, answer.text
        lines += answer.json()["lines"]
        cursor = answer.json()["next_cursor"]
    return lines


async def _api_csv_statement(api: httpx.AsyncClient, account: str) -> list[dict[str, str]]:
    answer = await api.get(
        f"/v1/accounts/{account}/statement",
        params={"page_size": 1_000},
        headers={**FINANCE, "Accept": "text/csv"},
    )
    assert answer.status_code == 200, answer.text
    return list(csv.DictReader(io.StringIO(answer.text)))


async def _balances(api: httpx.AsyncClient, creator: str) -> dict[str, int]:
    answer = await api.get(f"/v1/creators/{creator}/balances", headers=FINANCE)
    assert answer.status_code == 200, answer.text
    [diamonds] = answer.json()["balances"]
    return {"available": diamonds["available"], "pending": diamonds["pending"]}


async def _tie_to_the_balances(api: httpx.AsyncClient, creator: str, page_size: int) -> None:
    """The creator's available and held accounts' statements, as JSON a page at a time and as
    CSV, against `GET /v1/creators/{id}/balances`: posted (available + pending) is the sum of
    their posted lines; pending (what holds reserve on the available account) is the sum of the
    available account's pending lines, debits less credits."""
    balances = await _balances(api, creator)
    posted = reserved = 0
    for suffix in ("available", "held"):
        account = f"creator:{creator}:DIAMOND:{suffix}"
        lines = await _api_statement(api, account, page_size)
        as_csv = await _api_csv_statement(api, account)
        assert _check_running_figures(as_csv) == _check_running_figures(lines)
        balance, pending = _check_running_figures(lines)
        posted += balance
        if suffix == "available":
            reserved = sum(line["debit"] - line["credit"] for line in lines if line["pending"])
            assert reserved == -pending
    assert reserved == balances["pending"]
    assert posted - reserved == balances["available"]


cashout_step = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["gift", "gift", "hold", "hold", "post", "void", "reversal"]),
        "amount": st.integers(1, 5_000),
        "target": st.integers(0, 1_000),
    }
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(cashout_step, min_size=1, max_size=12), page_size=st.integers(1, 4))
async def test_a_creators_statements_tie_to_their_balances_whatever_holds_come_and_go(
    engine: AsyncEngine, api: httpx.AsyncClient, steps: list[dict[str, int | str]], page_size: int
) -> None:
    """A creator's Diamonds as the cash-out desk moves them: gifts in, holds from available to
    held (funded), each held hold posted and then converted out of held, or voided; reversals
    take Diamonds back, even below zero."""
    creator = f"statement-{uuid.uuid4().hex[:12]}"
    ledger = Ledger(engine)
    issuance = platform(AccountKind.DIAMOND_ISSUANCE, "DIAMOND")
    redeemed = platform(AccountKind.DIAMONDS_REDEEMED, "DIAMOND")
    available, held = creator_diamonds_available(creator), creator_diamonds_held(creator)
    ids = await ledger.account_ids([issuance, redeemed, available, held])
    source, sink, mine, hold_account = (
        ids[spec.name] for spec in (issuance, redeemed, available, held)
    )
    assert await ledger.post(
        [Transfer(uuid.uuid4(), source, mine, 1_000, TransferCode.GIFT_DIAMONDS)]
    ) == [PostResult.OK]
    holds: list[tuple[uuid.UUID, int]] = []
    for step in steps:
        kind, amount = str(step["kind"]), int(step["amount"])
        if kind == "gift":
            batch = [Transfer(uuid.uuid4(), source, mine, amount, TransferCode.GIFT_DIAMONDS)]
        elif kind == "reversal":
            batch = [
                Transfer(uuid.uuid4(), mine, source, amount, TransferCode.GIFT_REVERSAL_DIAMONDS)
            ]
        elif kind == "hold" or not holds:
            hold = Transfer(
                uuid.uuid4(),
                mine,
                hold_account,
                amount,
                TransferCode.CASHOUT_HOLD,
                F.PENDING | F.FUNDED,
            )
            if await ledger.post([hold]) == [PostResult.OK]:
                holds.append((hold.id, amount))
            continue
        else:
            hold_id, held_amount = holds.pop(int(step["target"]) % len(holds))
            if kind == "void":
                batch = [
                    Transfer(
                        uuid.uuid4(),
                        0,
                        0,
                        0,
                        TransferCode.CASHOUT_RELEASED,
                        F.VOID_PENDING,
                        hold_id,
                    )
                ]
            else:
                batch = [
                    Transfer(
                        uuid.uuid4(),
                        0,
                        0,
                        0,
                        TransferCode.CASHOUT_SUBMITTED,
                        F.POST_PENDING | F.LINKED,
                        hold_id,
                    ),
                    Transfer(
                        uuid.uuid4(),
                        hold_account,
                        sink,
                        held_amount,
                        TransferCode.CASHOUT_CONVERSION,
                    ),
                ]
        assert await ledger.post(batch) == [PostResult.OK] * len(batch)
    await _tie_to_the_balances(api, creator, page_size)


# The reviewer's case, through the real ingestion path -----------------------------------------


async def test_a_cashout_held_then_failed_by_the_bank_nets_to_nothing_pending(
    engine: AsyncEngine, api: httpx.AsyncClient
) -> None:
    """Held, then failed by the bank before the relay submitted it: the hold is voided. The
    release is listed against the hold, and the statement says nothing is pending, as the
    balances do."""
    feed = await Feed.on(engine)
    creator = f"statement-void-{uuid.uuid4().hex[:10]}"
    await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator), creator)
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=10_000), creator)
    request = make.cashout_request(creator, 2_000)
    await feed.send(topics.CASHOUTS_REQUESTED, request, creator)
    failed = make.payout_update(request["event_id"], "failed", "AC04")
    await feed.send(topics.PAYOUTS_UPDATED, failed, creator)
    assert await _balances(api, creator) == {"available": 5_000_000, "pending": 0}
    lines = await _api_statement(api, f"creator:{creator}:DIAMOND:available", 100)
    assert [
        (
            line["code"],
            line["debit"],
            line["credit"],
            line["pending"],
            line["balance_after"],
            line["pending_after"],
        )
        for line in lines
    ] == [
        ("gift_diamonds", 0, 5_000_000, False, 5_000_000, 0),
        ("cashout_hold", 2_000_000, 0, True, 5_000_000, -2_000_000),
        ("cashout_released", 0, 2_000_000, True, 5_000_000, 0),
    ]
    await _tie_to_the_balances(api, creator, 2)


# A page late in a big account's history --------------------------------------------------------

BIG_ACCOUNT_TRANSFER_COUNT = 6_000


async def test_a_page_late_in_a_big_accounts_history_reads_a_page_not_the_history(
    engine: AsyncEngine,
) -> None:
    """The pending amount before a page comes from the account's holds alone (the indexes of
    pending transfers, migration 0041), each hold's end looked up by its key: a page at the end
    of an account debited thousands of times, with holds among them (one voided, one posted,
    one open), reads some rows of `transfers`, not thousands."""
    ledger = Ledger(engine)
    big, other, held = await make_accounts(ledger, uuid.uuid4().hex, [AccountFlags.NONE] * 3)
    voided, posted, hold = (Transfer(uuid.uuid4(), big, held, 7, SYN, F.PENDING) for _ in "abc")
    assert await ledger.post([voided, posted, hold]) == [PostResult.OK] * 3
    ended = [
        Transfer(uuid.uuid4(), 0, 0, 0, SYN, F.VOID_PENDING, voided.id),
        Transfer(uuid.uuid4(), 0, 0, 0, SYN, F.POST_PENDING, posted.id),
    ]
    assert await ledger.post(ended) == [PostResult.OK] * 2
    for _ in range(BIG_ACCOUNT_TRANSFER_COUNT // 1_000):
        batch = [Transfer(uuid.uuid4(), big, other, 1, SYN) for _ in range(1_000)]
        assert await ledger.post(batch) == [PostResult.OK] * len(batch)
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE transfers"))
        last_seq = (
            await conn.execute(
                text("SELECT max(seq) FROM transfers WHERE debit_account_id = :a"), {"a": big}
            )
        ).scalar_one()
        with statements_run(engine) as sent:
            page = await statement(conn, big, after_seq=last_seq - 10, page_size=5)
        assert [line.pending_after for line in page.lines] == [-7] * 5
        [(sql, parameters)] = sent
        document = (
            await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", parameters)
        ).scalar_one()
    read = sum(
        node["Actual Rows"] * node["Actual Loops"] + node.get("Rows Removed by Filter", 0)
        for node in nodes_of(plan_root(document))
        if str(node.get("Relation Name", "")).startswith("transfers")
    )
    assert read < 100, json.dumps(plan_root(document), indent=1)
