"""Named load-test scenarios (`services.loadtest.scenarios`): each one, at a small size, runs
through the real pipeline (consumers, ledger, cash-out desk, simulated bank) and lands exactly on
its expected end state; and each stream has the shape its name promises, read from the stream's
records (and, for payday, from what the ledger and the service's eligibility rules say)."""

from __future__ import annotations

import argparse
import io
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from schemas.events import GiftReversed, GiftSent
from services.cashout.eligibility import evaluate
from services.cashout.profiles import creator_profile
from services.ingestion.records import DeadLetter, InputRecord, parse_record
from services.loadtest.generator import add_generate_arguments, generate, generate_command
from services.loadtest.replay import StreamRecord, read_stream
from services.loadtest.report import LoadtestReport
from services.loadtest.run import add_loadtest_arguments, loadtest
from services.loadtest.scenarios import (
    CHARGEBACK_WAVE,
    LIVE_BURST,
    PAYDAY,
    SCENARIO_NAMES,
    STEADY,
)
from services.loadtest.stream_format import ExpectedState, StreamShape, load_expected
from services.runtime.settings import EligibilitySettings, Settings

EVENTS = 3_000
PAYDAY_EVENTS = 6_000  # some 30 creators with Diamonds enough to cash out
SEED = 7
EVENTS_PER_S = 20.0  # a slow recorded rate spreads the stream over minutes: times are telling
MINIMUM_MILLI_DIAMONDS = 2_000 * 1_000


def events_of(scenario: str) -> int:
    return PAYDAY_EVENTS if scenario == PAYDAY else EVENTS


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ExpectedState]]:
    """One small stream per scenario, each in a namespace of its own."""
    folder = tmp_path_factory.mktemp("scenarios")
    tag = uuid.uuid4().hex[:8]
    made = {}
    for name in SCENARIO_NAMES:
        path = folder / f"{name}.jsonl.gz"
        expected = generate(
            path,
            events=events_of(name),
            seed=SEED,
            namespace=f"sc{tag}-{name}",
            shape=StreamShape(events_per_s=EVENTS_PER_S, scenario=name),
        )
        made[name] = (path, expected)
    return made


def settings_for(database_url: str, kafka_bootstrap: str) -> Settings:
    """Small and quick: the consumers join their groups in about half a session timeout; the bank
    answers at once."""
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_partition_count=2,
        kafka_session_timeout_ms=3_000,
        consumer_batch_wait_ms=20,
        payout_rail_paid_delay_ms=20,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pipeline_runs(
    streams: dict[str, tuple[Path, ExpectedState]],
    database_url: str,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, LoadtestReport]:
    """Each scenario's stream through the whole pipeline, one load test after the other."""
    reports = {}
    for name, (path, _) in streams.items():
        reports[name] = await loadtest(
            settings_for(database_url, kafka_bootstrap),
            events=None,
            file=path,
            out_dir=tmp_path_factory.mktemp(f"run-{name}"),
            stall_s=60.0,
        )
    return reports


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_scenario_lands_on_its_expected_end_state(
    name: str, pipeline_runs: dict[str, LoadtestReport]
) -> None:
    report = pipeline_runs[name]
    assert report.matched, report.summary()
    assert report.mismatches == []
    assert report.verify_problems == []
    assert report.consumed >= events_of(name)


# The shapes, read from the streams ------------------------------------------------------------


def parsed(record: StreamRecord) -> object | None:
    """The event the service's parser makes of a record, or None for a dead letter."""
    outcome = parse_record(record.topic, InputRecord(record.topic, 0, 0, None, record.value))
    return None if isinstance(outcome, DeadLetter) else outcome.event


def test_steady_is_the_default(
    streams: dict[str, tuple[Path, ExpectedState]], tmp_path: Path
) -> None:
    path, expected = streams[STEADY]
    plain = tmp_path / "plain.jsonl.gz"
    unnamed = StreamShape(events_per_s=EVENTS_PER_S)
    generate(plain, events=EVENTS, seed=SEED, namespace=expected.namespace, shape=unnamed)
    assert plain.read_bytes() == path.read_bytes()
    assert expected.scenario == {"name": STEADY}


def test_live_burst_gives_one_creator_half_the_gifts_at_ten_times_the_rate(
    streams: dict[str, tuple[Path, ExpectedState]],
) -> None:
    path, expected = streams[LIVE_BURST]
    facts = expected.scenario
    creator, live_id = facts["burst_creator"], facts["live_id"]
    window = range(facts["from_record"], facts["to_record"])
    gifts_in: Counter[str] = Counter()
    gifts_out: Counter[str] = Counter()
    on_the_burst_live = 0
    for record in read_stream(path, 0, expected.cashout_phase_from):
        event = parsed(record)
        if not isinstance(event, GiftSent):
            continue
        if record.index not in window:
            gifts_out[event.creator_id] += 1
            continue
        gifts_in[event.creator_id] += 1
        if (event.surface, event.live_id) == ("live", live_id):
            assert event.creator_id == creator
            on_the_burst_live += 1
    assert len(window) > EVENTS // 5
    assert 0.4 <= gifts_in[creator] / gifts_in.total() <= 0.65
    assert on_the_burst_live / gifts_in[creator] >= 0.9  # the rest: the mix's video gifts
    assert gifts_out[creator] / gifts_out.total() < 0.1  # the burst is what makes it hot
    duration_ms = facts["to_ms"] - facts["from_ms"]
    assert facts["duration_ms_planned"] <= duration_ms < facts["duration_ms_planned"] + 1_000
    rate_in = len(window) / duration_ms
    rate_before = facts["from_record"] / facts["from_ms"]
    assert 6 <= rate_in / rate_before <= 14, (rate_in, rate_before)


def test_chargeback_wave_reverses_five_percent_of_the_gifts_within_minutes(
    streams: dict[str, tuple[Path, ExpectedState]],
) -> None:
    path, expected = streams[CHARGEBACK_WAVE]
    facts = expected.scenario
    window = range(facts["from_record"], facts["to_record"])
    gift_owner: dict[str, str] = {}  # event_id: creator, first one wins
    seen_at: dict[str, int] = {}
    wave_reversals: list[tuple[int, GiftReversed]] = []
    window_ms: list[int] = []
    for record in read_stream(path, 0, expected.cashout_phase_from):
        event = parsed(record)
        if record.index in window:
            window_ms.append(record.offset_ms)
            assert record.topic in (topics.GIFTS_REVERSED, topics.GIFTS_SENT)
        if isinstance(event, GiftSent) and event.event_id not in gift_owner:
            gift_owner[event.event_id] = event.creator_id
            seen_at[event.event_id] = record.index
        if isinstance(event, GiftReversed) and record.index in window:
            wave_reversals.append((record.index, event))
    share = len(wave_reversals) / len(gift_owner)
    assert 0.045 <= share <= 0.055, share
    assert max(window_ms) - min(window_ms) <= 5 * 60_000
    before_gift = 0
    for index, reversal in wave_reversals:
        assert gift_owner[reversal.gift_event_id] == reversal.creator_id
        gift_index = seen_at[reversal.gift_event_id]
        if gift_index > index:
            before_gift += 1
            assert gift_index in window  # the delayed gift follows within the wave
    assert before_gift == facts["reversals_before_gift"] > 0
    reasons = Counter(reversal.reason for _, reversal in wave_reversals)
    assert reasons.most_common(1)[0][0] == "chargeback"


async def test_payday_gives_a_third_of_the_eligible_creators_a_cash_out_within_ten_minutes(
    streams: dict[str, tuple[Path, ExpectedState]],
    pipeline_runs: dict[str, LoadtestReport],
    engine: AsyncEngine,
) -> None:
    """Eligible, as the service decides it: every Creator Next rule passes on payday (the
    service's own evaluation of the profile it stored), a payout account, and at least the
    minimum of 2,000 Diamonds before payday (what the ledger holds now plus what it paid out)."""
    _, expected = streams[PAYDAY]
    assert pipeline_runs[PAYDAY].matched
    prefix = expected.namespace + "-"
    async with engine.connect() as conn:
        requests = (
            await conn.execute(
                text(
                    "SELECT creator_id, asset, amount, status, requested_on, occurred_at"
                    " FROM cashouts WHERE starts_with(creator_id, :prefix)"
                ),
                {"prefix": prefix},
            )
        ).all()
        available = {
            row.creator_id: row.available
            for row in await conn.execute(
                text(
                    "SELECT creator_id, credits_posted - debits_posted - debits_pending"
                    " AS available FROM accounts WHERE starts_with(creator_id, :prefix)"
                    " AND kind = 'creator_diamonds_available'"
                ),
                {"prefix": prefix},
            )
        }
        profiles = {creator_id: await creator_profile(conn, creator_id) for creator_id in available}
    payday = {row.requested_on for row in requests}
    assert len(payday) == 1
    day = payday.pop()
    payday_start = min(row.occurred_at for row in requests)
    paid: Counter[str] = Counter()
    for row in requests:
        if row.status == "paid" and row.asset == "DIAMOND":
            paid[row.creator_id] += row.amount
    eligible = set()
    for creator_id, profile in profiles.items():
        report = evaluate(profile, EligibilitySettings(), day, requested_at=payday_start)
        before_payday = available[creator_id] + paid[creator_id]
        if (
            profile is not None
            and report.eligible
            and profile.payout_account_ref is not None
            and before_payday >= MINIMUM_MILLI_DIAMONDS
        ):
            eligible.add(creator_id)
    asking = {row.creator_id for row in requests}
    assert len(eligible) >= 20
    assert abs(len(eligible & asking) - len(eligible) / 3) <= 0.5
    assert eligible & asking <= set(paid)  # each of them is paid
    moments = [row.occurred_at for row in requests]
    assert max(moments) - min(moments) < timedelta(minutes=10)


# The command line ----------------------------------------------------------------------------


def test_generate_and_loadtest_take_a_scenario_by_name(tmp_path: Path) -> None:
    generate_parser = argparse.ArgumentParser()
    add_generate_arguments(generate_parser)
    path = tmp_path / "wave.jsonl.gz"
    args = generate_parser.parse_args([str(path), "--events", "600", "--scenario", CHARGEBACK_WAVE])
    out = io.StringIO()
    assert generate_command(args, out) == 0
    assert load_expected(path).scenario["name"] == CHARGEBACK_WAVE
    assert load_expected(path).shape["scenario"] == CHARGEBACK_WAVE
    assert f"scenario {CHARGEBACK_WAVE}" in out.getvalue()
    loadtest_parser = argparse.ArgumentParser()
    add_loadtest_arguments(loadtest_parser)
    assert loadtest_parser.parse_args(["--scenario", PAYDAY]).scenario == PAYDAY
    assert loadtest_parser.parse_args([]).scenario == STEADY
    with pytest.raises(SystemExit):
        generate_parser.parse_args(["--scenario", "black-friday"])


def test_an_unknown_scenario_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scenario 'black-friday'"):
        generate(
            tmp_path / "x.jsonl.gz", events=100, seed=1, shape=StreamShape(scenario="black-friday")
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_a_scenario_is_deterministic(name: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    for path in (first, second):
        generate(path, events=1_000, seed=3, shape=StreamShape(scenario=name))
    assert first.read_bytes() == second.read_bytes()
