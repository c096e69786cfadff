"""Bank reconciliation against the real ledger, on a database of its own (tests/fresh_database.py):
every cash-out booked on the days reconciled is this module's.

The break scenario. Cash-outs go through `Ingestor.process` (what the consumers call): requested,
held, then answered by the bank's reports, built by the rail's own `build_report` from the
payout requests the outbox holds. The bank's books are written by `SettlementBooks.record`, the
function the running rail calls, with value dates on two days, D and T (T is the day the ledger
booked the last answer): three payouts on D, one on T. With every break switched on and a seed
that makes T the bank's missing day, the file of D holds one payout one cent off, one failed
payout written as paid and one payout the ledger never sent, and T has no file. Each break must
be found exactly once, and nothing else.

The running rail. A second database, the real consumers and the real payout rail on the test
broker: the rail's books give the day's file, which reconciles with no break.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.service import Ledger
from schemas import topics
from schemas.events import PayoutRequested
from schemas.topics import all_topics
from services.api.server import create_app
from services.app.consumer import ConsumerService
from services.cashout.recovery import ActionRequest, CashoutRecovery
from services.cli import main
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.payout_rail.rail import (
    PayoutOutcome,
    RailSettings,
    SimulatedBank,
    build_report,
    simulated_rail,
)
from services.payout_rail.settlement import (
    UNKNOWN_PAYOUT_PREFIX,
    SettlementBooks,
    SettlementBreak,
    day_file_lines,
    is_missing_day,
)
from services.payout_rail.settlement_file import (
    SettlementFileError,
    SettlementLine,
    file_name,
    parse,
    render,
)
from services.rates.rate_cards import load_rate_cards
from services.reconcile.files import ReconciliationInputError, read_settlement_set
from services.reconcile.service import reconcile
from services.reconcile.store import reconciliation_items, reconciliation_summary
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import get_settings
from tests import event_factory as make
from tests.api_server import FINANCE_TOKEN, OPERATOR_TOKEN, api_settings
from tests.fresh_database import fresh_database
from tests.ingestion_fixtures import make_ingestor, start_consumers, wait_until

CASHOUT_DIAMONDS = 2_000
CASHOUT_CENTS = 1_000  # 2,000 diamonds at 200 a dollar
RECONCILIATION_TABLES = ("reconciliations", "reconciliation_files", "reconciliation_items")
PARTITION_COUNT = 2
RAIL_CASHOUTS = 6
EVERY_BREAK = frozenset(SettlementBreak)
WRITER_ROLE = "giftledger_writer"
# Any hold is stale against this window by the time an operator acts on it.
ANSWER_WINDOW_PASSED_S = 0.001


# Feeding the ledger as the consumers do -------------------------------------------------------


class Feed:
    """Records handed to `Ingestor.process`, with offsets of their own."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.offset = uuid.uuid4().int % 2**40

    async def send(self, topic: str, event: dict[str, Any], key: str) -> None:
        self.offset += 1
        record = InputRecord(topic, 0, self.offset, key.encode(), json.dumps(event).encode())
        report = await self.ingestor.process(topic, [record])
        assert report.applied == 1, report


async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def _payout_requests(engine: AsyncEngine, creator: str) -> dict[str, PayoutRequested]:
    """The payout requests giftledger sent (or will send) the bank: its outbox rows."""
    rows = await _rows(
        engine,
        "SELECT payload FROM outbox WHERE topic = :topic AND message_key = :creator ORDER BY id",
        topic=topics.PAYOUTS_REQUESTED,
        creator=creator,
    )
    requests = [PayoutRequested.model_validate_json(bytes(row.payload)) for row in rows]
    return {request.cashout_id: request for request in requests}


async def _booked_day(engine: AsyncEngine, cashout_id: str, status: str) -> date:
    rows = await _rows(
        engine,
        "SELECT at FROM cashout_transitions WHERE cashout_id = :id AND status = :status",
        id=cashout_id,
        status=status,
    )
    assert len(rows) == 1, rows
    moment: datetime = rows[0].at
    return moment.astimezone(UTC).date()


def _at_noon(request: PayoutRequested, day: date) -> PayoutRequested:
    return request.model_copy(update={"occurred_at": datetime.combine(day, time(12), tzinfo=UTC)})


# The break scenario -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakScenario:
    url: str
    directory: Path
    first_day: date  # D: three payouts, a file
    last_day: date  # T: one payout, no file (the missing day)
    paid: tuple[str, str]  # paid on D, matched or one cent off
    failed: str  # failed on D, written as paid
    paid_on_missing_day: str

    @property
    def file(self) -> Path:
        return self.directory / file_name(self.first_day)


async def _build_break_scenario(url: str, directory: Path) -> BreakScenario:
    engine = create_engine(url, pool_size=2)
    try:
        async with engine.connect() as conn:
            rate_cards = await load_rate_cards(conn)
        feed = Feed(make_ingestor(engine, rate_cards))
        creator = f"reconciled-{uuid.uuid4().hex[:10]}"
        await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator), creator)
        await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=100, count=200), creator)
        for _ in range(4):
            asked = make.cashout_request(creator, CASHOUT_DIAMONDS)
            await feed.send(topics.CASHOUTS_REQUESTED, asked, creator)
        requests = await _payout_requests(engine, creator)
        assert len(requests) == 4, requests
        paid_a, paid_b, failed, paid_e = sorted(requests)
        outcomes = {
            paid_a: PayoutOutcome("paid", None, 0),
            paid_b: PayoutOutcome("paid", None, 0),
            failed: PayoutOutcome("failed", "AC04", 0),
            paid_e: PayoutOutcome("paid", None, 0),
        }
        for cashout_id, outcome in outcomes.items():
            report = build_report(requests[cashout_id], outcome)
            await feed.send(topics.PAYOUTS_UPDATED, report.model_dump(mode="json"), creator)
        last_day = await _booked_day(engine, paid_e, "paid")
    finally:
        await engine.dispose()
    first_day = last_day - timedelta(days=1)
    seed = -last_day.toordinal() % 7
    assert is_missing_day(last_day, seed)
    assert not is_missing_day(first_day, seed)
    books = SettlementBooks(directory, seed=seed, breaks=EVERY_BREAK)
    for cashout_id, outcome in outcomes.items():
        day = last_day if cashout_id == paid_e else first_day
        request = _at_noon(requests[cashout_id], day)
        books.record(request, build_report(request, outcome))
    assert books.write_day(first_day, directory / file_name(first_day))
    assert not books.write_day(last_day, directory / file_name(last_day))
    return BreakScenario(url, directory, first_day, last_day, (paid_a, paid_b), failed, paid_e)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scenario(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BreakScenario]:
    async with fresh_database(postgres_admin_url) as url:
        yield await _build_break_scenario(url, tmp_path_factory.mktemp("bank"))


@pytest_asyncio.fixture(loop_scope="session")
async def books_engine(scenario: BreakScenario) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(scenario.url, pool_size=2)
    yield engine
    await engine.dispose()


async def _row_counts(engine: AsyncEngine) -> dict[str, int]:
    counts = {}
    for table in RECONCILIATION_TABLES:
        rows = await _rows(engine, f"SELECT count(*) AS n FROM {table}")  # noqa: S608
        counts[table] = rows[0].n
    return counts


async def _items(engine: AsyncEngine, reconciliation_id: int) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        items, next_cursor = await reconciliation_items(conn, reconciliation_id, limit=1_000)
    assert next_cursor is None
    return items


async def test_a_reconciliation_finds_every_injected_break_exactly_once(
    scenario: BreakScenario, books_engine: AsyncEngine
) -> None:
    settlement = read_settlement_set([scenario.file], scenario.first_day, scenario.last_day)
    outcome = await reconcile(books_engine, settlement)
    async with books_engine.connect() as conn:
        summary = await reconciliation_summary(conn, outcome.reconciliation_id)
    assert summary is not None
    assert summary["missing_days"] == [scenario.last_day.isoformat()]
    assert summary["kinds"] == {
        "missing_in_ledger": 1,
        "missing_in_bank": 1,
        "amount_or_currency_differs": 1,
        "status_differs": 1,
        "matched": 1,
    }
    assert (summary["item_count"], summary["break_count"], summary["line_count"]) == (5, 4, 4)
    by_kind = {item["kind"]: item for item in await _items(books_engine, outcome.reconciliation_id)}
    unknown = by_kind["missing_in_ledger"]
    assert unknown["cashout_id"] == f"{UNKNOWN_PAYOUT_PREFIX}{scenario.first_day}"
    assert (unknown["ledger_status"], unknown["bank_statuses"]) == (None, ["paid"])
    missing = by_kind["missing_in_bank"]
    assert missing["cashout_id"] == scenario.paid_on_missing_day
    assert (missing["bank_statuses"], missing["ledger_statuses"]) == ([], ["paid"])
    status = by_kind["status_differs"]
    assert status["cashout_id"] == scenario.failed
    assert (status["bank_statuses"], status["ledger_statuses"]) == (["paid"], ["failed"])
    off = by_kind["amount_or_currency_differs"]
    matched = by_kind["matched"]
    assert {off["cashout_id"], matched["cashout_id"]} == set(scenario.paid)
    assert (off["ledger_amount"], off["bank_amount"]) == (CASHOUT_CENTS, CASHOUT_CENTS + 1)
    assert (matched["ledger_amount"], matched["bank_amount"]) == (CASHOUT_CENTS, CASHOUT_CENTS)
    assert [item["kind"] for item in await _items(books_engine, outcome.reconciliation_id)] == [
        "missing_in_ledger",
        "missing_in_bank",
        "amount_or_currency_differs",
        "status_differs",
        "matched",
    ]


async def test_reconciling_the_same_file_again_changes_nothing(
    scenario: BreakScenario, books_engine: AsyncEngine
) -> None:
    settlement = read_settlement_set([scenario.file], scenario.first_day, scenario.last_day)
    first = await reconcile(books_engine, settlement)
    before = await _row_counts(books_engine)
    items_before = await _items(books_engine, first.reconciliation_id)
    again = await reconcile(books_engine, settlement)
    assert again.reconciliation_id == first.reconciliation_id
    assert not again.created
    assert await _row_counts(books_engine) == before
    assert await _items(books_engine, first.reconciliation_id) == items_before


async def test_the_command_exits_1_on_breaks_and_answers_a_second_run_from_what_it_stored(
    scenario: BreakScenario,
    books_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", scenario.url)
    get_settings.cache_clear()
    days = ["--from", str(scenario.first_day), "--to", str(scenario.last_day)]
    try:
        first = await asyncio.to_thread(main, ["reconcile", str(scenario.file), *days, "--json"])
        document = json.loads(capsys.readouterr().out)
        before = await _row_counts(books_engine)
        second = await asyncio.to_thread(main, ["reconcile", str(scenario.file), *days])
        printed = capsys.readouterr()
    finally:
        get_settings.cache_clear()
    assert (first, second) == (1, 1)
    assert document["break_count"] == 4
    assert sorted(item["kind"] for item in document["breaks"]) == [
        "amount_or_currency_differs",
        "missing_in_bank",
        "missing_in_ledger",
        "status_differs",
    ]
    assert f"reconciliation {document['id']} (reconciled before" in printed.out
    assert "4 breaks remain" in printed.err
    assert await _row_counts(books_engine) == before


async def test_a_file_without_a_break_reconciles_with_exit_0(
    scenario: BreakScenario,
    books_engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The bank's journal of D with no break switched on: every line matches; T holds a booking
    of the ledger, so it stays out of the days reconciled."""
    clean = SettlementBooks(scenario.directory)
    path = tmp_path / file_name(scenario.first_day)
    assert clean.write_day(scenario.first_day, path)
    monkeypatch.setenv("DATABASE_URL", scenario.url)
    get_settings.cache_clear()
    try:
        code = await asyncio.to_thread(main, ["reconcile", str(path), "--json"])
    finally:
        get_settings.cache_clear()
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["kinds"]["matched"] == 3
    assert document["break_count"] == 0


async def test_finance_and_operators_read_reconciliations_over_the_api(
    scenario: BreakScenario, books_engine: AsyncEngine
) -> None:
    settlement = read_settlement_set([scenario.file], scenario.first_day, scenario.last_day)
    reconciliation_id = (await reconcile(books_engine, settlement)).reconciliation_id
    app = create_app(books_engine, api_settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://books") as client:
        for token in (FINANCE_TOKEN, OPERATOR_TOKEN):
            headers = {"Authorization": f"Bearer {token}"}
            listed = await client.get("/v1/reconciliations", headers=headers)
            assert listed.status_code == 200, listed.text
            assert reconciliation_id in [r["id"] for r in listed.json()["reconciliations"]]
            one = await client.get(
                f"/v1/reconciliations/{reconciliation_id}",
                params={"kind": "status_differs"},
                headers=headers,
            )
            assert one.status_code == 200, one.text
            assert [item["cashout_id"] for item in one.json()["items"]] == [scenario.failed]
            paged = await client.get(
                f"/v1/reconciliations/{reconciliation_id}", params={"limit": 2}, headers=headers
            )
            assert len(paged.json()["items"]) == 2
            assert paged.json()["next_cursor"] == 2
        gone = await client.get(
            "/v1/reconciliations/999999999",
            headers={"Authorization": f"Bearer {FINANCE_TOKEN}"},
        )
        assert gone.status_code == 404
        anonymous = await client.get("/v1/reconciliations")
        assert anonymous.status_code == 401


# An operator's cancellations and the bank's repeated payouts ----------------------------------


@dataclass(frozen=True)
class BankSurprises:
    """Five paid or cancelled cash-outs of one creator on a database of their own."""

    url: str
    requests: dict[str, PayoutRequested]
    booked_days: dict[str, date]  # the UTC day the ledger booked each `paid`
    paid: str
    cancelled: str  # cancelled by an operator; the bank never paid it
    paid_after_cancel: str  # cancelled by an operator; the bank paid it anyway
    paid_twice: str  # the bank has two `paid` lines for it
    repeated: str  # the bank says it paid it again in the next day's file

    @property
    def paid_ones(self) -> list[str]:
        return [self.paid, self.paid_after_cancel, self.paid_twice, self.repeated]

    def paid_line(self, cashout_id: str, reference: str, day: date | None = None) -> SettlementLine:
        request = self.requests[cashout_id]
        return SettlementLine(
            provider_reference=reference,
            cashout_id=cashout_id,
            amount_minor=request.amount,
            currency=request.currency,
            status="paid",
            value_date=day or self.booked_days[cashout_id],
            failure_code=None,
        )

    def paid_lines(self) -> list[SettlementLine]:
        """One `paid` line for each cash-out the bank paid, none for the cancelled one."""
        return [self.paid_line(cashout_id, f"ref-{cashout_id}") for cashout_id in self.paid_ones]


async def _build_bank_surprises(url: str) -> BankSurprises:
    engine = create_engine(url, pool_size=2)
    try:
        async with engine.connect() as conn:
            rate_cards = await load_rate_cards(conn)
        feed = Feed(make_ingestor(engine, rate_cards))
        creator = f"surprised-{uuid.uuid4().hex[:10]}"
        await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator), creator)
        await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=100, count=300), creator)
        for _ in range(5):
            asked = make.cashout_request(creator, CASHOUT_DIAMONDS)
            await feed.send(topics.CASHOUTS_REQUESTED, asked, creator)
        requests = await _payout_requests(engine, creator)
        paid, cancelled, paid_after_cancel, paid_twice, repeated = sorted(requests)
        recovery = CashoutRecovery(
            Ledger(engine),
            feed.ingestor.desk,
            answer_window_s=ANSWER_WINDOW_PASSED_S,
            database_role=WRITER_ROLE,
        )
        for cashout_id in (cancelled, paid_after_cancel):
            action = ActionRequest(f"key-{uuid.uuid4().hex}", "alice", "no answer", None)
            assert (await recovery.cancel_stale_hold(cashout_id, action)).recorded
        for cashout_id in (paid, paid_after_cancel, paid_twice, repeated):
            report = build_report(requests[cashout_id], PayoutOutcome("paid", None, 0))
            await feed.send(topics.PAYOUTS_UPDATED, report.model_dump(mode="json"), creator)
        booked_days = {
            cashout_id: await _booked_day(engine, cashout_id, "paid")
            for cashout_id in (paid, paid_after_cancel, paid_twice, repeated)
        }
    finally:
        await engine.dispose()
    return BankSurprises(
        url, requests, booked_days, paid, cancelled, paid_after_cancel, paid_twice, repeated
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def surprises(postgres_admin_url: str) -> AsyncIterator[BankSurprises]:
    async with fresh_database(postgres_admin_url) as url:
        yield await _build_bank_surprises(url)


def _day_files(directory: Path, lines: list[SettlementLine]) -> list[Path]:
    """The lines in one settlement file a value date, in day order."""
    by_day: dict[date, list[SettlementLine]] = {}
    for line in lines:
        by_day.setdefault(line.value_date, []).append(line)
    paths = []
    for day in sorted(by_day):
        path = directory / file_name(day)
        path.write_text(render(by_day[day]))
        paths.append(path)
    return paths


async def _reconciled_by_the_command(
    url: str,
    paths: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["reconcile", *map(str, paths), "--json"])
    finally:
        get_settings.cache_clear()
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, document


async def test_an_operators_cancellation_is_no_bank_result(
    surprises: BankSurprises,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The cancelled payout the bank never made has no line and is no break; the one it paid
    anyway matches its `paid` line."""
    paths = _day_files(tmp_path, surprises.paid_lines())
    code, document = await _reconciled_by_the_command(surprises.url, paths, monkeypatch, capsys)
    assert (code, document["break_count"], document["breaks"]) == (0, 0, [])
    assert (document["item_count"], document["kinds"]["matched"]) == (4, 4)  # the paid ones


async def test_the_banks_failed_line_for_a_payout_an_operator_cancelled_matches(
    surprises: BankSurprises,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Too late to stop it, the bank failed the payout the operator had cancelled (its own
    report, in its file): the cancellation answers that line, nothing was paid either side."""
    request = surprises.requests[surprises.cancelled]
    failed = SettlementLine(
        provider_reference="ref-failed-after-cancel",
        cashout_id=surprises.cancelled,
        amount_minor=request.amount,
        currency=request.currency,
        status="failed",
        value_date=surprises.booked_days[surprises.paid],
        failure_code="AC04",
    )
    paths = _day_files(tmp_path, [*surprises.paid_lines(), failed])
    code, document = await _reconciled_by_the_command(surprises.url, paths, monkeypatch, capsys)
    assert (code, document["break_count"], document["breaks"]) == (0, 0, [])
    assert (document["item_count"], document["kinds"]["matched"]) == (5, 5)


async def test_a_payout_the_bank_paid_twice_is_a_break(
    surprises: BankSurprises,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    twice = surprises.paid_line(surprises.paid_twice, "ref-paid-twice-again")
    paths = _day_files(tmp_path, [*surprises.paid_lines(), twice])
    code, document = await _reconciled_by_the_command(surprises.url, paths, monkeypatch, capsys)
    assert (code, document["break_count"]) == (1, 1)
    (item,) = document["breaks"]
    assert (item["cashout_id"], item["kind"]) == (surprises.paid_twice, "status_differs")
    assert item["detail"] == "the bank says paid 2 times"
    assert (item["bank_statuses"], item["ledger_statuses"]) == (["paid", "paid"], ["paid"])


async def test_a_payout_paid_again_in_the_next_days_file_is_a_break(
    surprises: BankSurprises,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    next_day = max(surprises.booked_days.values()) + timedelta(days=1)
    again = surprises.paid_line(surprises.repeated, "ref-repeated-again", next_day)
    paths = _day_files(tmp_path, [*surprises.paid_lines(), again])
    assert len(paths) >= 2
    code, document = await _reconciled_by_the_command(surprises.url, paths, monkeypatch, capsys)
    assert (code, document["break_count"]) == (1, 1)
    (item,) = document["breaks"]
    assert (item["cashout_id"], item["kind"]) == (surprises.repeated, "status_differs")
    assert item["detail"] == "the bank says paid 2 times"


async def test_a_file_repeating_a_line_is_refused_naming_both_lines(
    surprises: BankSurprises,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = surprises.paid_lines()
    path = tmp_path / file_name(lines[0].value_date)
    path.write_text(render([lines[0], lines[0]]))
    monkeypatch.setenv("DATABASE_URL", surprises.url)
    get_settings.cache_clear()
    try:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["reconcile", str(path)])
    finally:
        get_settings.cache_clear()
    reference = lines[0].provider_reference
    assert code == 2
    assert (
        f"line 3: provider_reference {reference!r} is on line 2 already" in capsys.readouterr().err
    )


# The files ------------------------------------------------------------------------------------


def _line(cashout_id: str, status: str = "paid", day: date = date(2026, 11, 3)) -> SettlementLine:
    return SettlementLine(
        provider_reference=f"ref-{cashout_id}-{status}",
        cashout_id=cashout_id,
        amount_minor=1_000,
        currency="USD",
        status=status,  # type: ignore[arg-type]
        value_date=day,
        failure_code=None if status == "paid" else "R01",
    )


def test_a_settlement_file_reads_back_what_was_written() -> None:
    lines = [_line("c-1"), _line("c-2", "failed"), _line("c-1", "returned")]
    assert parse(render(lines).encode()) == lines


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"cashout_id,amount\n", "header"),
        (render([_line("c-1")]).replace("1000", "10.00").encode(), "whole number"),
        (render([_line("c-1")]).replace("USD", "usd").encode(), "currency"),
        (render([_line("c-1")]).replace("paid", "lost").encode(), "status"),
        (render([_line("c-1")]).replace("2026-11-03", "2026-02-30").encode(), "value_date"),
        (render([_line("c-1")]).replace("03,\n", "03,R01\n").encode(), "no failure_code"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_a_file_that_breaks_the_format_is_refused_with_the_reason(
    content: bytes, problem: str
) -> None:
    with pytest.raises(SettlementFileError, match=problem):
        parse(content)


def test_a_file_repeating_a_provider_reference_is_refused_with_both_lines() -> None:
    repeated = render([_line("c-1"), _line("c-2"), _line("c-1")]).encode()
    with pytest.raises(SettlementFileError, match="line 4: provider_reference 'ref-c-1-paid' is"):
        parse(repeated)
    shared = dataclasses.replace(_line("c-3"), provider_reference="ref-c-1-paid")
    with pytest.raises(SettlementFileError, match=r"line 3: .* is on line 2 already"):
        parse(render([_line("c-1"), shared]).encode())
    # The simulated bank's journal may hold a report it sent twice.
    assert parse(repeated, allow_repeated_references=True) == [
        _line("c-1"),
        _line("c-2"),
        _line("c-1"),
    ]


def test_two_files_of_one_day_are_refused(tmp_path: Path) -> None:
    day = date(2026, 11, 3)
    for name in ("a-2026-11-03.csv", "b-2026-11-03.csv"):
        (tmp_path / name).write_text(render([_line(name)]))
    with pytest.raises(ReconciliationInputError, match="both for 2026-11-03"):
        read_settlement_set([tmp_path / "a-2026-11-03.csv", tmp_path / "b-2026-11-03.csv"])
    (tmp_path / "c-2026-11-04.csv").write_text(render([_line("c-3", day=day)]))
    with pytest.raises(ReconciliationInputError, match="is not the file's day"):
        read_settlement_set([tmp_path / "c-2026-11-04.csv"])


def test_each_break_lands_once_in_a_days_file() -> None:
    day = date(2026, 11, 3)
    journal = [_line("c-1"), _line("c-2"), _line("c-3", "failed"), _line("c-1")]  # c-1 twice
    clean = day_file_lines(day, journal, 0, frozenset())
    assert clean == [_line("c-1"), _line("c-2"), _line("c-3", "failed")]
    broken = day_file_lines(day, journal, 0, EVERY_BREAK - {SettlementBreak.MISSING_DAY})
    assert broken is not None
    assert [(line.cashout_id, line.status, line.amount_minor) for line in broken] == [
        ("c-1", "paid", 1_001),
        ("c-2", "paid", 1_000),
        ("c-3", "paid", 1_000),
        (f"{UNKNOWN_PAYOUT_PREFIX}2026-11-03", "paid", 1_234),
    ]
    missing = [d for d in (day + timedelta(days=n) for n in range(14)) if is_missing_day(d, 5)]
    assert len(missing) == 2
    assert missing[1] - missing[0] == timedelta(days=7)
    assert day_file_lines(missing[0], journal, 5, frozenset({SettlementBreak.MISSING_DAY})) is None


# The running rail -----------------------------------------------------------------------------


async def _final_status(engine: AsyncEngine, cashout_id: str) -> str:
    rows = await _rows(engine, "SELECT status FROM cashouts WHERE cashout_id = :id", id=cashout_id)
    return str(rows[0].status) if rows else ""


@contextlib.asynccontextmanager
async def _producer(bootstrap_servers: str) -> AsyncIterator[Any]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def test_the_running_rails_books_give_a_file_that_reconciles_without_a_break(
    postgres_admin_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITION_COUNT)
    settings = RailSettings(seed=3, paid_delay_ms=20, failure_rate=0.3, return_rate=0.3)
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=4)
        service, _ = await start_consumers(engine, kafka_bootstrap, prefix, f"g-{prefix}")
        expected_partitions = len(service.topics) * PARTITION_COUNT
        await wait_until(functools.partial(_assigned, service, expected_partitions))
        rail = simulated_rail(
            settings,
            kafka_bootstrap,
            topic_prefix=prefix,
            consumer_group=f"rail-{prefix}",
            session_timeout_ms=6_000,
            settlement_dir=tmp_path,
        )
        await rail.start()
        try:
            creator = f"railed-{uuid.uuid4().hex[:10]}"
            async with _producer(kafka_bootstrap) as producer:

                async def publish(topic: str, event: dict[str, Any]) -> None:
                    value = json.dumps(event).encode()
                    await producer.send_and_wait(prefix + topic, value, key=creator.encode())

                await publish(topics.CREATORS_UPDATED, make.creator_update(creator))
                await publish(topics.GIFTS_SENT, make.gift(creator, coins=100, count=300))
                await wait_until(lambda: _has_diamonds(engine, creator))
                requests = [make.cashout_request(creator, CASHOUT_DIAMONDS) for _ in range(6)]
                for request in requests:
                    await publish(topics.CASHOUTS_REQUESTED, request)
            bank = SimulatedBank(settings)
            for request in requests:
                final = bank.outcomes_for(request["event_id"])[-1].status
                await wait_until(functools.partial(_is, engine, request["event_id"], final))
            booked = await _rows(
                engine,
                "SELECT DISTINCT (at AT TIME ZONE 'UTC')::date AS day FROM cashout_transitions",
            )
        finally:
            await rail.stop()
            await service.stop()
            await engine.dispose()
        books = SettlementBooks(tmp_path)
        days = sorted({row.day for row in booked} | set(books.journal_days()))
        monkeypatch.setenv("DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            out = tmp_path / "delivered"
            out.mkdir()
            for day in days:
                arguments = [
                    "settlement-file",
                    "--date",
                    str(day),
                    str(out),
                    "--dir",
                    str(tmp_path),
                ]
                assert await asyncio.to_thread(main, arguments) == 0
            files = [str(out / file_name(day)) for day in days]
            capsys.readouterr()
            code = await asyncio.to_thread(main, ["reconcile", *files, "--json"])
        finally:
            get_settings.cache_clear()
    document = json.loads(capsys.readouterr().out)
    assert code == 0, document
    assert document["kinds"]["matched"] == RAIL_CASHOUTS
    assert document["line_count"] >= RAIL_CASHOUTS


async def _has_diamonds(engine: AsyncEngine, creator: str) -> bool:
    rows = await _rows(
        engine,
        "SELECT credits_posted - debits_posted AS balance FROM accounts WHERE name = :name",
        name=f"creator:{creator}:DIAMOND:available",
    )
    return bool(rows) and rows[0].balance >= RAIL_CASHOUTS * CASHOUT_DIAMONDS * 1_000


async def _assigned(service: ConsumerService, partition_count: int) -> bool:
    return service.assigned_partition_count() == partition_count


async def _is(engine: AsyncEngine, cashout_id: str, status: str) -> bool:
    return await _final_status(engine, cashout_id) == status


def test_the_running_rail_writes_each_days_file_once_it_is_due(tmp_path: Path) -> None:
    """A file per UTC day from the day the bank started, two hours after the day ends, the
    journal's lines once each; the missing day never has one."""
    day = date(2026, 11, 3)
    skipped = date(2026, 11, 5)
    seed = -skipped.toordinal() % 7
    request = PayoutRequested(
        event_id="c-9:payout",
        occurred_at=datetime(2026, 11, 3, 23, 59, tzinfo=UTC),
        cashout_id="c-9",
        creator_id="creator-9",
        amount=1_000,
        currency="USD",
        payout_account_ref="pa_9",
    )
    books = SettlementBooks(
        tmp_path, seed=seed, breaks={SettlementBreak.MISSING_DAY}, started_on=day
    )
    report = build_report(request, PayoutOutcome("paid", None, 0))
    books.record(request, report)
    books.record(request, report)  # a report sent twice
    day_end = datetime(2026, 11, 4, tzinfo=UTC)
    assert books.deliver_due(day_end + timedelta(hours=1)) == []
    assert books.deliver_due(day_end + timedelta(hours=2)) == [tmp_path / file_name(day)]
    (line,) = parse((tmp_path / file_name(day)).read_bytes())
    assert (line.cashout_id, line.amount_minor, line.status, line.value_date) == (
        "c-9",
        1_000,
        "paid",
        day,
    )
    eight_days_on = datetime(2026, 11, 11, 3, tzinfo=UTC)
    written = books.deliver_due(eight_days_on)
    expected = [day + timedelta(days=n) for n in range(1, 8) if day + timedelta(days=n) != skipped]
    assert written == [tmp_path / file_name(d) for d in expected]
    assert parse((tmp_path / file_name(expected[0])).read_bytes()) == []
    assert books.deliver_due(eight_days_on) == []
