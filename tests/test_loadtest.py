"""The load test end to end on the session's database and broker: a generated stream, replayed
through the consumers and the simulated bank, lands exactly on its expected end state. This is
also the test that the generator's expected state matches a ledger fed the same stream."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from services.loadtest.checks import Observed, check_assumptions, compare, table_warnings
from services.loadtest.generator import generate
from services.loadtest.measurements import SendTimes, percentile
from services.loadtest.oracle import cashout_platform_movements
from services.loadtest.replay import StreamRecord
from services.loadtest.run import LoadtestError, loadtest
from services.loadtest.stream_format import (
    STREAM_START,
    ExpectedState,
    StreamShape,
    load_expected,
)
from services.runtime.settings import Settings
from tests.fresh_database import fresh_database
from tests.ledger_helpers import newest_verify_run

EVENTS = 3_000


def settings_for(database_url: str, kafka_bootstrap: str, **overrides: object) -> Settings:
    """Small and quick: the consumers join their groups in about half a session timeout; the bank
    answers at once."""
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_partition_count=2,
        kafka_session_timeout_ms=3_000,
        consumer_batch_wait_ms=20,
        payout_rail_paid_delay_ms=20,
        **overrides,  # type: ignore[arg-type]
    )


def assert_outputs(files: dict[str, str]) -> None:
    for name in ("summary", "json", "throughput", "latency"):
        assert Path(files[name]).stat().st_size > 0, name
    document = json.loads(Path(files["json"]).read_text())
    assert document["matched"] is True
    assert Path(files["summary"]).read_text().startswith("giftledger loadtest: MATCHED")


async def test_a_small_loadtest_lands_on_its_expected_end_state(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, kafka_bootstrap)
    run_before = await newest_verify_run(database_url)
    report = await loadtest(
        settings, events=EVENTS, file=None, out_dir=tmp_path, seed=17, stall_s=60.0
    )
    assert report.matched, report.summary()
    assert report.verify_problems == []
    # Its verify is recorded as `giftledger verify --full` records one (the console shows it).
    run = await newest_verify_run(database_url)
    assert run is not None
    assert run_before is None or run.id > run_before.id
    assert (run.full_check, run.problem_count) == (True, 0)
    assert report.mismatches == []
    assert report.consumed >= EVENTS
    assert report.cashouts["paid"] > 0
    # The books were compared too (no mismatch above): every paid cash-out's payable settled
    # against cash at the bank, nothing left payable.
    books = cashout_platform_movements(load_expected(Path(report.stream)).totals)
    assert books["platform:USD:cash_at_bank"] > 0  # credited: the money left the bank
    assert "platform:USD:payouts_payable" not in books
    assert report.events_per_s > 0
    assert report.peak_events_per_s >= report.events_per_s
    assert report.latency_samples > 0
    assert report.latency_ms["p50"] <= report.latency_ms["p99"] <= report.latency_ms["max"]
    assert len(report.samples) >= 2
    assert_outputs(report.files)

    # The same stream again, into the same database: refused, it would only find duplicates.
    with pytest.raises(LoadtestError, match="already in this database"):
        await loadtest(settings, events=None, file=Path(report.stream), out_dir=tmp_path / "again")


async def test_a_deployment_with_other_rules_is_refused(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    stream = tmp_path / "small.jsonl.gz"
    generate(stream, events=200, seed=3, namespace="other-rules")
    settings = settings_for(database_url, kafka_bootstrap, cashout_minimum_usd_cents=500)
    with pytest.raises(LoadtestError, match="CASHOUT_MINIMUM_USD_CENTS is 500"):
        await loadtest(settings, events=None, file=stream, out_dir=tmp_path / "out")


async def add_card(engine: AsyncEngine, effective_from: datetime, diamonds_per_usd: int) -> None:
    """A rate card version of 500 milli-diamonds per coin (the stream's) from `effective_from`,
    written as `giftledger rates add` wrote it back then (it refuses a start in the past now)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO rate_cards (version, effective_from, milli_diamonds_per_coin,"
                " diamonds_per_usd, note, created_by)"
                " SELECT max(version) + 1, :at, 500, :per_usd, 'test', 'test' FROM rate_cards"
            ),
            {"at": effective_from, "per_usd": diamonds_per_usd},
        )


async def test_the_rate_card_is_judged_when_the_cash_outs_are_approved(
    postgres_admin_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The desk prices a cash-out at the card in force when it approves it, during the run, not
    at the stream's recorded days: a card added since the stream's days with another diamonds
    per USD refuses the run (it ran, and ended NOT MATCHED on the payouts); a card of the
    stream's days that no cash-out is priced at does not."""
    stream = tmp_path / "small.jsonl.gz"
    expected = generate(stream, events=300, seed=5, namespace="approval-card")
    async with fresh_database(postgres_admin_url, "fix_loadfix") as url:
        settings = settings_for(url, kafka_bootstrap)
        engine = create_engine(url, pool_size=2)
        try:
            async with engine.connect() as conn:
                now = (await conn.execute(text("SELECT now()"))).scalar_one()
            # Added since the stream's days: in force at every approval of the run.
            await add_card(engine, now - timedelta(seconds=2), diamonds_per_usd=250)
            with pytest.raises(LoadtestError, match="250 diamonds per USD") as refused:
                await loadtest(settings, events=None, file=stream, out_dir=tmp_path / "out")
            assert "prices the cash-outs approved during the run" in str(refused.value)
            # Back to the stream's 200 now; a card in force on the stream's days only prices
            # its gifts (at 500 per coin, as the stream assumes), none of the run's cash-outs.
            await add_card(engine, now - timedelta(seconds=1), diamonds_per_usd=200)
            await add_card(engine, STREAM_START + timedelta(hours=1), diamonds_per_usd=250)
            async with engine.connect() as conn:
                assert await check_assumptions(conn, settings, expected) == []
            # One taking effect while the run's cash-outs may be approved refuses the run.
            await add_card(engine, now + timedelta(minutes=10), diamonds_per_usd=200)
            await add_card(engine, now + timedelta(minutes=20), diamonds_per_usd=300)
            async with engine.connect() as conn:
                problems = await check_assumptions(conn, settings, expected)
            assert [problem.split(" (")[0] for problem in problems] == ["rate card 6"], problems
            assert "300 diamonds per USD" in problems[0]
        finally:
            await engine.dispose()


async def test_either_events_or_a_file(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url)
    with pytest.raises(LoadtestError, match="not both"):
        await loadtest(settings, events=10, file=tmp_path / "x", out_dir=tmp_path)


def expected_state(tmp_path: Path) -> ExpectedState:
    return generate(
        tmp_path / "s.jsonl.gz", events=400, seed=2, shape=StreamShape(creator_count=20)
    )


def observed_as_expected(expected: ExpectedState) -> Observed:
    return Observed(
        balances={creator: dict(assets) for creator, assets in expected.balances.items()},
        applied_by_topic=dict(expected.applied_by_topic),
        dead_letters={topic: dict(reasons) for topic, reasons in expected.dead_letters.items()},
        cashouts=dict(expected.cashouts),
        platform=cashout_platform_movements(expected.totals),
        consumed=expected.records + expected.payout_reports,
        duplicates=expected.duplicates,
        reports_sent=expected.payout_reports,
    )


def test_compare_finds_nothing_when_everything_matches(tmp_path: Path) -> None:
    expected = expected_state(tmp_path)
    assert compare(expected, observed_as_expected(expected)) == []


def test_compare_names_each_difference(tmp_path: Path) -> None:
    expected = expected_state(tmp_path)
    observed = observed_as_expected(expected)
    creator = next(iter(observed.balances))
    observed.balances[creator]["DIAMOND"] = observed.balances[creator].get("DIAMOND", 0) + 500
    observed.applied_by_topic["gifts.sent"] -= 1
    observed.dead_letters.setdefault("gifts.sent", {})["ledger_refused"] = 1
    observed.left_pending.append("c held")
    observed.still_parked = 2
    observed.duplicates += 1
    observed.platform["platform:USD:payouts_payable"] = 1_000  # a payable left unsettled
    mismatches = compare(expected, observed)
    joined = "\n".join(mismatches)
    assert "platform account platform:USD:payouts_payable: expected None, got 1000" in joined
    assert f"balance {creator}" in joined
    assert "applied gifts.sent" in joined
    assert "dead letters gifts.sent" in joined
    assert "left pending" in joined
    assert "2 events still parked" in joined
    assert "duplicates: expected" in joined


def test_redelivered_records_may_add_duplicates_and_nothing_else(tmp_path: Path) -> None:
    expected = expected_state(tmp_path)
    observed = observed_as_expected(expected)
    observed.consumed += 3  # a rebalance redelivered three records
    observed.duplicates += 3
    assert compare(expected, observed) == []
    observed.duplicates += 1
    assert compare(expected, observed) != []


def test_a_dead_letters_table_that_disagrees_with_the_topics_is_a_warning(
    tmp_path: Path,
) -> None:
    expected = expected_state(tmp_path)
    observed = observed_as_expected(expected)
    observed.dead_letter_rows = {topic: dict(r) for topic, r in expected.dead_letters.items()}
    assert table_warnings(observed) == []
    topic = next(iter(observed.dead_letter_rows))
    observed.dead_letter_rows[topic].clear()
    assert table_warnings(observed)[0].startswith(f"dead_letters table {topic}: the DLQ topics")
    assert compare(expected, observed) == []


def test_send_times_sample_one_event_in_a_hundred_on_first_send() -> None:
    times = SendTimes(one_in=100, samples_max=1_000)
    for index in range(20_000):
        value = f'{{"event_id":"e-{index}","x":1}}'.encode()
        times(StreamRecord(index, "gifts.sent", None, index, value))
    assert 120 <= len(times.times) <= 280
    first = dict(times.times)
    for index in range(20_000):  # the same events again: the first send time stays
        value = f'{{"event_id":"e-{index}","x":2}}'.encode()
        times(StreamRecord(index, "gifts.sent", None, index, value))
    assert times.times == first
    assert times.published == 40_000


def test_percentiles_are_nearest_rank() -> None:
    values = [float(value) for value in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
