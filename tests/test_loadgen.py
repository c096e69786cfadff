"""The load-test stream generator: deterministic, in the documented format, and its expected end
state agrees with what the service's own parsing and rules make of the same records.

Whether a ledger fed the stream reaches that end state is `tests/test_loadtest.py`."""

from __future__ import annotations

import argparse
import gzip
import io
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import topics
from services.cashout.conversion import convert
from services.cashout.eligibility import evaluate
from services.cashout.profiles import CreatorProfile
from services.ingestion.records import DeadLetter, InputRecord, parse_record
from services.loadtest.generator import add_generate_arguments, generate, generate_command
from services.loadtest.oracle import age_in_years, cashout_value, first_failed_rule
from services.loadtest.replay import read_stream
from services.loadtest.stream_format import (
    CREATOR_MISMATCH,
    EVENT_ID_CONFLICT,
    UNKNOWN_CASHOUT,
    ExpectedState,
    StreamShape,
    expected_path,
    load_expected,
)
from services.rates.fx import FxRate
from services.runtime.settings import EligibilitySettings

EVENTS = 3_000


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExpectedState]:
    path = tmp_path_factory.mktemp("loadgen") / "stream.jsonl.gz"
    return path, generate(path, events=EVENTS, seed=11)


def test_the_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    generate(first, events=2_000, seed=5)
    generate(second, events=2_000, seed=5)
    assert first.read_bytes() == second.read_bytes()
    assert expected_path(first).read_bytes() == expected_path(second).read_bytes()


def test_another_seed_writes_another_stream(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    generate(first, events=2_000, seed=5)
    generate(second, events=2_000, seed=6)
    assert first.read_bytes() != second.read_bytes()
    lines_a = gzip.decompress(first.read_bytes()).splitlines()
    lines_b = gzip.decompress(second.read_bytes()).splitlines()
    assert len(lines_a) == len(lines_b) == 2_000
    assert sum(a != b for a, b in zip(lines_a, lines_b, strict=True)) > 1_900


def test_lines_follow_the_format_and_time_never_goes_back(
    stream: tuple[Path, ExpectedState],
) -> None:
    path, expected = stream
    previous_ms = 0
    encodings: Counter[str] = Counter()
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            assert set(record) <= {"topic", "key", "offset_ms", "value", "encoding"}
            assert record["topic"] in topics.CONSUMED_TOPICS
            assert str(record["key"]).startswith("s11-c")
            assert record["offset_ms"] >= previous_ms
            previous_ms = record["offset_ms"]
            encodings[record.get("encoding", "text")] += 1
    assert previous_ms == expected.duration_ms > 0
    assert encodings["base64"] == expected.dead_letters[topics.GIFTS_SENT]["invalid_utf8"]


def test_the_cash_outs_come_last(stream: tuple[Path, ExpectedState]) -> None:
    path, expected = stream
    assert 0 < expected.cashout_phase_from < expected.records
    for record in read_stream(path):
        in_final_phase = record.index >= expected.cashout_phase_from
        assert (record.topic == topics.CASHOUTS_REQUESTED) == in_final_phase


def test_every_record_ends_where_the_expected_state_says(
    stream: tuple[Path, ExpectedState],
) -> None:
    """What the service's parser says of each record, with first-wins idempotency by event_id,
    against the generator's own accounting. Reversals naming another creator's gift and payout
    reports for unknown cash-outs parse fine: only the ledger can refuse those."""
    path, expected = stream
    records: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    letters: Counter[tuple[str, str]] = Counter()
    first_payload: dict[tuple[str, str], bytes] = {}
    coins = 0
    for record in read_stream(path):
        records[record.topic] += 1
        outcome = parse_record(record.topic, InputRecord(record.topic, 0, 0, None, record.value))
        if isinstance(outcome, DeadLetter):
            letters[(record.topic, outcome.error)] += 1
            continue
        key = (record.topic, outcome.event.event_id)
        if key not in first_payload:
            first_payload[key] = outcome.payload_sha256
            if record.topic == topics.GIFTS_SENT:
                coins += outcome.event.coins * outcome.event.count  # type: ignore[attr-defined]
        elif first_payload[key] == outcome.payload_sha256:
            duplicates[record.topic] += 1
        else:
            letters[(record.topic, EVENT_ID_CONFLICT)] += 1
    applied = Counter({topic: 0 for topic in records})
    for topic, _ in first_payload:
        applied[topic] += 1
    refused_by_the_ledger = {
        (topics.GIFTS_REVERSED, CREATOR_MISMATCH),
        (topics.PAYOUTS_UPDATED, UNKNOWN_CASHOUT),
    }
    expected_letters = Counter(
        {
            (topic, reason): count
            for topic, reasons in expected.dead_letters.items()
            for reason, count in reasons.items()
            if (topic, reason) not in refused_by_the_ledger
        }
    )
    for topic, reason in refused_by_the_ledger:
        applied[topic] -= expected.dead_letters.get(topic, {}).get(reason, 0)
    applied[topics.PAYOUTS_UPDATED] += expected.payout_reports
    assert dict(records) == expected.records_by_topic
    assert +duplicates == Counter(expected.duplicates_by_topic)
    assert +letters == +expected_letters
    assert +applied == Counter(expected.applied_by_topic)
    assert coins == expected.totals["gift_coins"]
    assert sum(records.values()) == expected.records == EVENTS


def test_the_profiles_of_creators_eligible_to_cash_out_are_recent_enough_at_their_cash_outs(
    stream: tuple[Path, ExpectedState],
) -> None:
    """A request counts a profile's video views and posts only when the profile is dated at most
    30 days before it: every creator eligible at first appearance keeps a profile that recent
    until the cash-out phase, so the stream's eligible creators can cash out."""
    path, expected = stream
    latest: dict[str, datetime] = {}
    eligible_at_first: set[str] = set()
    requests: list[tuple[str, datetime]] = []
    for record in read_stream(path):
        if record.topic not in (topics.CREATORS_UPDATED, topics.CASHOUTS_REQUESTED):
            continue
        try:
            event = json.loads(record.value)
            occurred_at = datetime.fromisoformat(event["occurred_at"])
        except (ValueError, KeyError, TypeError):
            continue  # a bad record, dead-lettered
        creator = str(event["creator_id"])
        if record.topic == topics.CASHOUTS_REQUESTED:
            requests.append((creator, occurred_at))
            continue
        if creator not in latest and event.get("video_views_30d", 0) >= 1_000:
            eligible_at_first.add(creator)
        latest[creator] = max(latest.get(creator, occurred_at), occurred_at)
    asking = [(creator, at) for creator, at in requests if creator in eligible_at_first]
    assert len(asking) > 10
    for creator, requested_at in asking:
        assert requested_at - latest[creator] <= timedelta(days=30), creator
    assert expected.cashouts.get("rejected:video_views_30d", 0) < expected.cashouts["paid"]


def test_the_stream_holds_every_kind_of_trouble(stream: tuple[Path, ExpectedState]) -> None:
    _, expected = stream
    reasons = {reason for by_reason in expected.dead_letters.values() for reason in by_reason}
    assert {"malformed_json", "invalid_utf8", "schema_violation"} <= reasons
    assert expected.duplicates > 0
    assert expected.totals["reversals_before_gift"] > 0
    assert expected.totals["out_of_order"] > 0
    assert expected.cashouts["paid"] > 0
    rejected = {name for name in expected.cashouts if name.startswith("rejected:")}
    assert {"rejected:minimum", "rejected:available_balance"} <= rejected
    assert len(rejected) >= 4


def test_expected_diamonds_add_up(stream: tuple[Path, ExpectedState]) -> None:
    _, expected = stream
    totals = expected.totals
    diamonds = sum(balances.get("DIAMOND", 0) for balances in expected.balances.values())
    assert totals["diamonds_credited_milli"] == totals["gift_coins"] * 500
    assert diamonds == (
        totals["diamonds_credited_milli"]
        - totals["diamonds_reversed_milli"]
        - totals["cashouts_paid_milli_diamonds"]
    )
    assert expected.payout_reports == expected.cashouts["paid"]


def test_the_expected_state_reads_back(stream: tuple[Path, ExpectedState]) -> None:
    path, expected = stream
    assert load_expected(path) == expected


def test_memory_does_not_grow_with_the_stream(tmp_path: Path) -> None:
    """Everything the generator keeps is per creator or in bounded rings: with the creators
    fixed, a stream four times longer needs about the same memory (a generator that kept its
    records would need some 4 MB more)."""
    import tracemalloc

    peaks = []
    for events in (2_000, 8_000):
        tracemalloc.start()
        generate(
            tmp_path / f"{events}.jsonl.gz",
            events=events,
            seed=1,
            shape=StreamShape(creator_count=200),
        )
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] + 1_500_000, peaks


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate_rate"):
        StreamShape(duplicate_rate=1.5)
    with pytest.raises(ValueError, match="creator_count"):
        StreamShape(creator_count=1)
    with pytest.raises(ValueError, match="namespace"):
        generate(Path("unused.jsonl.gz"), events=10, seed=1, namespace="bad_name%")


def test_generate_command_writes_the_stream_and_its_expected_state(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    path = tmp_path / "cli.jsonl.gz"
    args = parser.parse_args([str(path), "--events", "500", "--seed", "3", "--bad-rate", "0.02"])
    out = io.StringIO()
    assert generate_command(args, out) == 0
    expected = load_expected(path)
    assert expected.records == 500
    assert expected.shape["bad_rate"] == 0.02
    assert "500 records" in out.getvalue()


# The contract's rules, as the generator re-derives them, agree with the service's.

SERVICE_ELIGIBILITY = EligibilitySettings()
profiles = st.fixed_dictionaries(
    {
        "birth_date": st.dates(date(1950, 1, 1), date(2015, 12, 31)),
        "country": st.sampled_from(("US", "GB", "DE", "FR", "IT", "ES", "CA", "AU", "BR")),
        "followers": st.integers(0, 30_000),
        "video_views_30d": st.integers(0, 3_000),
        "posts_30d": st.integers(0, 6),
        "in_good_standing": st.booleans(),
        "identity_verified": st.booleans(),
    }
)


PROFILE_DATED_AT = datetime(2026, 1, 1, tzinfo=UTC)


@given(
    profile=profiles,
    today=st.dates(date(2026, 1, 1), date(2028, 12, 31)),
    # Around the 30 days a profile's figures count, to the second; a request before the profile.
    profile_age_s=st.sampled_from((-86_400, 0, 30 * 86_400 - 1, 30 * 86_400, 30 * 86_400 + 1))
    | st.integers(-86_400, 60 * 86_400),
)
@settings(max_examples=300, deadline=None)
def test_eligibility_rules_agree_with_the_service(
    profile: dict[str, object], today: date, profile_age_s: int
) -> None:
    birth_date = profile["birth_date"]
    assert isinstance(birth_date, date)
    service_profile = CreatorProfile(
        creator_id="c",
        birth_date=birth_date,
        country=str(profile["country"]),
        followers=int(str(profile["followers"])),
        video_views_30d=int(str(profile["video_views_30d"])),
        posts_30d=int(str(profile["posts_30d"])),
        in_good_standing=bool(profile["in_good_standing"]),
        identity_verified=bool(profile["identity_verified"]),
        payout_account_ref="pa_x",
        occurred_at=PROFILE_DATED_AT,
        event_id="e",
        updated_at=PROFILE_DATED_AT,
    )
    profile_age = timedelta(seconds=profile_age_s)
    ours = first_failed_rule({**profile, "birth_date": birth_date.isoformat()}, today, profile_age)
    requested_at = PROFILE_DATED_AT + profile_age
    theirs = evaluate(
        service_profile, SERVICE_ELIGIBILITY, today, requested_at=requested_at
    ).first_failed_rule
    assert ours == theirs
    assert first_failed_rule(None, today, profile_age) == "profile_known"


def test_age_counts_birthdays_like_the_service() -> None:
    assert age_in_years(date(2008, 2, 29), date(2026, 2, 28)) == 17
    assert age_in_years(date(2008, 2, 29), date(2026, 3, 1)) == 18


@given(diamonds=st.integers(1, 10**9), cents=st.integers(1, 10**11))
@settings(max_examples=300, deadline=None)
def test_cash_out_values_agree_with_the_service(diamonds: int, cents: int) -> None:
    usd = FxRate("USD", Fraction(1))
    held, micros, payout = cashout_value("DIAMOND", diamonds)
    conversion = convert("DIAMOND", diamonds * 1_000, 200, None, usd)
    assert (held, payout) == (diamonds * 1_000, conversion.payout_amount)
    assert micros == int(conversion.usd_value * 1_000_000)
    held, micros, payout = cashout_value("USD", cents)
    conversion = convert("USD", cents, 200, usd, usd)
    assert (held, payout) == (cents, conversion.payout_amount)
    assert micros == int(conversion.usd_value * 1_000_000)
