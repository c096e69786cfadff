"""Creator profiles (latest `creators.updated` wins) and the Creator Next eligibility rules."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import CreatorUpdated
from services.cashout.eligibility import (
    RULES,
    EligibilityReport,
    RuleResult,
    age_in_years,
    creator_eligibility,
    evaluate,
)
from services.cashout.profiles import CreatorProfile, apply_creator_updates, creator_profile
from services.runtime.settings import EligibilitySettings

TODAY = date(2026, 11, 3)
EARLIER = datetime(2026, 10, 20, 9, 0, tzinfo=UTC)

# Every fact exactly at its default threshold: the rules say "at or above".
ELIGIBLE_FACTS: dict[str, Any] = {
    "birth_date": date(1998, 4, 17),
    "country": "US",
    "followers": 10_000,
    "video_views_30d": 1_000,
    "posts_30d": 3,
    "in_good_standing": True,
    "identity_verified": True,
    "payout_account_ref": "pa_9fK2mQ7x",
}


def creator_updated(
    creator_id: str, event_id: str, occurred_at: datetime = EARLIER, **facts: Any
) -> CreatorUpdated:
    return CreatorUpdated(
        event_id=event_id,
        occurred_at=occurred_at,
        creator_id=creator_id,
        **{**ELIGIBLE_FACTS, **facts},
    )


async def apply(engine: AsyncEngine, events: list[CreatorUpdated]) -> int:
    async with engine.begin() as conn:
        return await apply_creator_updates(conn, events)


async def profile_of(engine: AsyncEngine, creator_id: str) -> CreatorProfile | None:
    async with engine.connect() as conn:
        return await creator_profile(conn, creator_id)


def noon_utc(day: date) -> datetime:
    """A request at noon UTC on `day`: the age rule judges it on `day` (`age_day`)."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def eligibility_of(
    engine: AsyncEngine,
    creator_id: str,
    settings: EligibilitySettings | None = None,
    today: date = TODAY,
) -> EligibilityReport:
    async with engine.connect() as conn:
        return await creator_eligibility(
            conn, creator_id, settings or EligibilitySettings(), noon_utc(today)
        )


async def eligibility_with(
    engine: AsyncEngine,
    unique_id: str,
    settings: EligibilitySettings | None = None,
    today: date = TODAY,
    **facts: Any,
) -> EligibilityReport:
    creator_id = f"creator-{unique_id}"
    await apply(engine, [creator_updated(creator_id, f"cu-{unique_id}", **facts)])
    return await eligibility_of(engine, creator_id, settings, today)


def only_failure(report: EligibilityReport) -> RuleResult:
    failed = [result for result in report.rules if not result.passed]
    assert len(failed) == 1, failed
    assert not report.eligible
    assert report.first_failed_rule == failed[0].rule
    return failed[0]


# --- profiles ---------------------------------------------------------------------------------


async def test_first_update_of_a_creator_stores_its_facts(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    event = creator_updated(creator_id, f"cu-{unique_id}", country="GB", payout_account_ref=None)
    assert await apply(engine, [event]) == 1
    profile = await profile_of(engine, creator_id)
    assert profile is not None
    assert (profile.country, profile.followers, profile.payout_account_ref) == ("GB", 10_000, None)
    assert (profile.occurred_at, profile.event_id) == (EARLIER, event.event_id)


async def test_latest_occurred_at_wins_when_updates_arrive_out_of_order(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    older = creator_updated(creator_id, f"old-{unique_id}", EARLIER, followers=1)
    newer = creator_updated(creator_id, f"new-{unique_id}", EARLIER + timedelta(hours=1))
    assert await apply(engine, [newer]) == 1
    assert await apply(engine, [older]) == 0
    profile = await profile_of(engine, creator_id)
    assert profile is not None
    assert (profile.event_id, profile.followers) == (newer.event_id, 10_000)


async def test_a_later_update_replaces_the_stored_facts(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    first = creator_updated(creator_id, f"a-{unique_id}", EARLIER, identity_verified=False)
    second = creator_updated(creator_id, f"b-{unique_id}", EARLIER + timedelta(seconds=1))
    assert await apply(engine, [first]) == 1
    assert await apply(engine, [second]) == 1
    profile = await profile_of(engine, creator_id)
    assert profile is not None
    assert (profile.event_id, profile.identity_verified) == (second.event_id, True)


async def test_reapplying_the_same_update_changes_nothing(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    event = creator_updated(creator_id, f"cu-{unique_id}")
    assert await apply(engine, [event]) == 1
    stored = await profile_of(engine, creator_id)
    assert await apply(engine, [event]) == 0
    assert await apply(engine, [event, event]) == 0
    assert await profile_of(engine, creator_id) == stored


async def test_several_updates_of_one_creator_in_one_batch_keep_the_latest(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id, other_id = f"creator-{unique_id}", f"other-{unique_id}"
    batch = [
        creator_updated(creator_id, f"2-{unique_id}", EARLIER + timedelta(minutes=2), posts_30d=2),
        creator_updated(creator_id, f"3-{unique_id}", EARLIER + timedelta(minutes=3), posts_30d=3),
        creator_updated(other_id, f"o-{unique_id}", EARLIER),
        creator_updated(creator_id, f"1-{unique_id}", EARLIER + timedelta(minutes=1), posts_30d=1),
    ]
    assert await apply(engine, batch) == 2
    profile = await profile_of(engine, creator_id)
    assert profile is not None
    assert (profile.event_id, profile.posts_30d) == (f"3-{unique_id}", 3)
    assert await profile_of(engine, other_id) is not None


async def test_updates_of_the_same_instant_end_the_same_way_in_any_order(
    engine: AsyncEngine, unique_id: str
) -> None:
    in_order, reversed_order = f"creator-a-{unique_id}", f"creator-b-{unique_id}"
    for creator_id, ids in ((in_order, ("x1", "x2")), (reversed_order, ("x2", "x1"))):
        for event_id in ids:
            await apply(engine, [creator_updated(creator_id, event_id, followers=int(event_id[1]))])
    first = await profile_of(engine, in_order)
    second = await profile_of(engine, reversed_order)
    assert first is not None
    assert second is not None
    assert (first.event_id, first.followers) == (second.event_id, second.followers) == ("x2", 2)


async def test_updates_rolled_back_with_their_transaction_leave_no_profile(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    async with engine.connect() as conn:
        transaction = await conn.begin()
        assert await apply_creator_updates(conn, [creator_updated(creator_id, unique_id)]) == 1
        await transaction.rollback()
    assert await profile_of(engine, creator_id) is None


async def test_an_empty_batch_changes_nothing(engine: AsyncEngine) -> None:
    assert await apply(engine, []) == 0


# --- eligibility, one rule at a time ----------------------------------------------------------


async def test_creator_exactly_at_every_minimum_is_eligible(
    engine: AsyncEngine, unique_id: str
) -> None:
    report = await eligibility_with(engine, unique_id)
    assert report.eligible
    assert report.first_failed_rule is None
    assert [result.rule for result in report.rules] == list(RULES)
    document = report.to_document()
    assert json.loads(json.dumps(document)) == document
    assert document["creator_id"] == f"creator-{unique_id}"
    assert document["eligible"] is True
    assert document["rules"][3] == {
        "rule": "followers",
        "passed": True,
        "seen": "10000",
        "required": ">= 10000 (minimum for US)",
    }


async def test_unknown_creator_is_ineligible_for_profile_known_and_every_rule_reads_unknown(
    engine: AsyncEngine, unique_id: str
) -> None:
    report = await eligibility_of(engine, f"nobody-{unique_id}")
    assert not report.eligible
    assert report.first_failed_rule == "profile_known"
    assert [result.rule for result in report.rules] == list(RULES)
    assert all(not result.passed and result.seen == "unknown" for result in report.rules)
    assert report.to_document()["creator_id"] == f"nobody-{unique_id}"


async def test_creator_under_18_is_ineligible_for_age(engine: AsyncEngine, unique_id: str) -> None:
    report = await eligibility_with(engine, unique_id, birth_date=date(2008, 11, 4))
    failed = only_failure(report)
    assert (failed.rule, failed.seen, failed.required) == ("age", "17 years", ">= 18 years")


async def test_creator_is_eligible_on_their_18th_birthday_exactly(
    engine: AsyncEngine, unique_id: str
) -> None:
    report = await eligibility_with(engine, unique_id, birth_date=date(2008, 11, 3))
    assert report.eligible
    assert report.rules[1] == RuleResult("age", True, "18 years", ">= 18 years")
    day_before = await eligibility_of(engine, f"creator-{unique_id}", today=date(2026, 11, 2))
    assert only_failure(day_before).seen == "17 years"


async def test_creator_born_on_29_february_turns_18_on_1_march_of_a_non_leap_year(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    await apply(engine, [creator_updated(creator_id, unique_id, birth_date=date(2008, 2, 29))])
    on_28_february = await eligibility_of(engine, creator_id, today=date(2026, 2, 28))
    on_1_march = await eligibility_of(engine, creator_id, today=date(2026, 3, 1))
    assert only_failure(on_28_february).seen == "17 years"
    assert on_1_march.eligible


def test_age_counts_whole_years_with_birthday_logic() -> None:
    assert age_in_years(date(2000, 6, 15), date(2018, 6, 14)) == 17
    assert age_in_years(date(2000, 6, 15), date(2018, 6, 15)) == 18
    assert age_in_years(date(2000, 2, 29), date(2018, 2, 28)) == 17
    assert age_in_years(date(2000, 2, 29), date(2018, 3, 1)) == 18
    assert age_in_years(date(2000, 2, 29), date(2020, 2, 29)) == 20
    assert age_in_years(date(2000, 2, 29), date(2020, 2, 28)) == 19


async def test_creator_in_a_country_not_enabled_is_ineligible_for_country(
    engine: AsyncEngine, unique_id: str
) -> None:
    report = await eligibility_with(engine, unique_id, country="BR")
    failed = only_failure(report)
    assert (failed.rule, failed.seen) == ("country", "BR")
    assert failed.required == "one of US, GB, DE, FR, IT, ES"


async def test_creator_in_a_coming_soon_country_is_refused_for_country(
    engine: AsyncEngine, unique_id: str
) -> None:
    for country in ("CA", "AU"):
        report = await eligibility_with(engine, f"{unique_id}-{country}", country=country)
        failed = only_failure(report)
        assert (failed.rule, failed.seen) == ("country", f"{country} (coming soon)")


async def test_creator_below_the_follower_minimum_is_ineligible_for_followers(
    engine: AsyncEngine, unique_id: str
) -> None:
    report = await eligibility_with(engine, unique_id, followers=9_999)
    failed = only_failure(report)
    assert (failed.rule, failed.seen, failed.required) == (
        "followers",
        "9999",
        ">= 10000 (minimum for US)",
    )


async def test_follower_minimum_is_regional_for_us_and_configurable_for_other_countries(
    engine: AsyncEngine, unique_id: str
) -> None:
    settings = EligibilitySettings(
        follower_minimum_by_country={"US": 10_000, "GB": 5_000}, follower_minimum_default=8_000
    )
    reports = {
        country: await eligibility_with(
            engine, f"{unique_id}-{country}", settings, country=country, followers=7_500
        )
        for country in ("US", "GB", "FR")
    }
    assert only_failure(reports["US"]).required == ">= 10000 (minimum for US)"
    assert reports["GB"].eligible
    assert reports["GB"].rules[3].required == ">= 5000 (minimum for GB)"
    assert only_failure(reports["FR"]).required == ">= 8000 (default minimum)"


async def test_creator_with_too_few_video_views_is_ineligible_for_video_views_30d(
    engine: AsyncEngine, unique_id: str
) -> None:
    failed = only_failure(await eligibility_with(engine, unique_id, video_views_30d=999))
    assert (failed.rule, failed.seen, failed.required) == (
        "video_views_30d",
        "999",
        ">= 1000, as of at most 30 days before the request",
    )


async def test_creator_with_too_few_posts_is_ineligible_for_posts_30d(
    engine: AsyncEngine, unique_id: str
) -> None:
    failed = only_failure(await eligibility_with(engine, unique_id, posts_30d=2))
    assert (failed.rule, failed.seen, failed.required) == (
        "posts_30d",
        "2",
        ">= 3, as of at most 30 days before the request",
    )


# --- how old the profile's figures of the last 30 days may be ----------------------------------

RECENT_VIEWS_REQUIRED = ">= 1000, as of at most 30 days before the request"
RECENT_POSTS_REQUIRED = ">= 3, as of at most 30 days before the request"


async def eligibility_at(
    engine: AsyncEngine,
    creator_id: str,
    at: datetime | None,
    settings: EligibilitySettings | None = None,
) -> EligibilityReport:
    async with engine.connect() as conn:
        return await creator_eligibility(conn, creator_id, settings or EligibilitySettings(), at)


def failures(report: EligibilityReport) -> list[RuleResult]:
    return [result for result in report.rules if not result.passed]


async def test_a_profile_dated_months_before_the_request_fails_video_views_and_posts(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    dated = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
    profile = creator_updated(creator_id, unique_id, dated, video_views_30d=1_500, posts_30d=9)
    await apply(engine, [profile])
    report = await eligibility_at(engine, creator_id, dated + timedelta(days=92))
    assert failures(report) == [
        RuleResult(
            "video_views_30d",
            False,
            "1500 as of 2026-09-01T09:00:00Z, 92 days before the request",
            RECENT_VIEWS_REQUIRED,
        ),
        RuleResult(
            "posts_30d",
            False,
            "9 as of 2026-09-01T09:00:00Z, 92 days before the request",
            RECENT_POSTS_REQUIRED,
        ),
    ]
    assert report.first_failed_rule == "video_views_30d"
    # The same figures a week after the profile count.
    assert (await eligibility_at(engine, creator_id, dated + timedelta(days=7))).eligible


async def test_a_profile_dated_exactly_30_days_before_counts_and_a_second_more_does_not(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    await apply(engine, [creator_updated(creator_id, unique_id, EARLIER)])
    exactly = await eligibility_at(engine, creator_id, EARLIER + timedelta(days=30))
    assert exactly.eligible
    assert exactly.rules[4] == RuleResult("video_views_30d", True, "1000", RECENT_VIEWS_REQUIRED)
    assert exactly.rules[5] == RuleResult("posts_30d", True, "3", RECENT_POSTS_REQUIRED)
    later = await eligibility_at(engine, creator_id, EARLIER + timedelta(days=30, seconds=1))
    assert [(result.rule, result.seen) for result in failures(later)] == [
        (
            "video_views_30d",
            "1000 as of 2026-10-20T09:00:00Z, more than 30 days before the request",
        ),
        ("posts_30d", "3 as of 2026-10-20T09:00:00Z, more than 30 days before the request"),
    ]


async def test_a_profile_dated_after_the_request_counts(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    await apply(engine, [creator_updated(creator_id, unique_id, EARLIER)])
    assert (await eligibility_at(engine, creator_id, EARLIER - timedelta(days=3))).eligible


async def test_the_maximum_age_of_a_profile_is_a_setting(
    engine: AsyncEngine, unique_id: str
) -> None:
    creator_id = f"creator-{unique_id}"
    await apply(engine, [creator_updated(creator_id, unique_id, EARLIER)])
    week = EligibilitySettings(profile_max_age_days=7)
    on_day_7 = await eligibility_at(engine, creator_id, EARLIER + timedelta(days=7), week)
    assert on_day_7.eligible
    assert on_day_7.rules[4].required == ">= 1000, as of at most 7 days before the request"
    on_day_8 = await eligibility_at(engine, creator_id, EARLIER + timedelta(days=8), week)
    assert [result.rule for result in failures(on_day_8)] == ["video_views_30d", "posts_30d"]
    assert failures(on_day_8)[1].seen == "3 as of 2026-10-20T09:00:00Z, 8 days before the request"
    one_day = EligibilitySettings(profile_max_age_days=1)
    on_day_2 = await eligibility_at(
        engine, creator_id, EARLIER + timedelta(days=1, hours=1), one_day
    )
    assert failures(on_day_2)[0].seen == (
        "1000 as of 2026-10-20T09:00:00Z, more than 1 day before the request"
    )


async def test_eligibility_now_judges_the_profile_against_the_clock(
    engine: AsyncEngine, unique_id: str
) -> None:
    """What `giftledger eligibility`, the API and the console show: a request made now."""
    now = datetime.now(UTC)
    recent, old = f"creator-recent-{unique_id}", f"creator-old-{unique_id}"
    await apply(
        engine,
        [
            creator_updated(recent, f"r-{unique_id}", now - timedelta(days=29)),
            creator_updated(old, f"o-{unique_id}", now - timedelta(days=31)),
        ],
    )
    assert (await eligibility_at(engine, recent, None)).eligible
    stale = failures(await eligibility_at(engine, old, None))
    assert [result.rule for result in stale] == ["video_views_30d", "posts_30d"]
    assert stale[0].seen.endswith(", more than 31 days before the request")


async def test_creator_not_in_good_standing_is_ineligible_for_in_good_standing(
    engine: AsyncEngine, unique_id: str
) -> None:
    failed = only_failure(await eligibility_with(engine, unique_id, in_good_standing=False))
    assert (failed.rule, failed.seen, failed.required) == ("in_good_standing", "false", "true")


async def test_creator_without_verified_identity_is_ineligible_for_identity_verified(
    engine: AsyncEngine, unique_id: str
) -> None:
    failed = only_failure(await eligibility_with(engine, unique_id, identity_verified=False))
    assert (failed.rule, failed.seen, failed.required) == ("identity_verified", "false", "true")


async def test_first_failed_rule_follows_the_fixed_rule_order(
    engine: AsyncEngine, unique_id: str
) -> None:
    report = await eligibility_with(
        engine, unique_id, identity_verified=False, posts_30d=0, country="CA"
    )
    assert [r.rule for r in report.rules if not r.passed] == [
        "country",
        "posts_30d",
        "identity_verified",
    ]
    assert report.first_failed_rule == "country"


# --- settings ---------------------------------------------------------------------------------


def test_eligibility_settings_read_their_prefixed_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ELIGIBILITY_AGE_MIN_YEARS", "21")
    monkeypatch.setenv("ELIGIBILITY_ENABLED_COUNTRIES", '["US", "CA"]')
    monkeypatch.setenv("ELIGIBILITY_COMING_SOON_COUNTRIES", '["AU"]')
    monkeypatch.setenv("ELIGIBILITY_FOLLOWER_MINIMUM_BY_COUNTRY", '{"CA": 2500}')
    monkeypatch.setenv("ELIGIBILITY_PROFILE_MAX_AGE_DAYS", "45")
    settings = EligibilitySettings()
    assert settings.profile_max_age_days == 45
    assert settings.age_min_years == 21
    assert settings.enabled_countries == ("US", "CA")
    assert settings.follower_minimum("CA") == 2_500
    assert settings.follower_minimum("US") == settings.follower_minimum_default == 10_000


@pytest.mark.parametrize(
    "override",
    [
        {"age_min_years": 5},
        {"age_min_years": 500},
        {"posts_30d_min": -1},
        {"video_views_30d_min": 10**13},
        {"follower_minimum_default": -1},
        {"follower_minimum_by_country": {"US": -5}},
        {"follower_minimum_by_country": {"usa": 10}},
        {"enabled_countries": ("us",)},
        {"enabled_countries": ("US", "US")},
        {"coming_soon_countries": ("CA", "US")},
        {"profile_max_age_days": 0},
        {"profile_max_age_days": -1},
        {"profile_max_age_days": 3_651},
    ],
)
def test_eligibility_settings_refuse_values_out_of_bounds(override: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EligibilitySettings(**override)


# --- property ---------------------------------------------------------------------------------

PROPERTY_SETTINGS = EligibilitySettings()
COUNTRIES = ["US", "GB", "DE", "FR", "IT", "ES", "CA", "AU", "BR", "JP"]

profiles = st.builds(
    CreatorProfile,
    creator_id=st.just("creator-property"),
    birth_date=st.dates(date(1900, 1, 1), date(2030, 12, 31)),
    country=st.sampled_from(COUNTRIES),
    followers=st.integers(0, 20_000),
    video_views_30d=st.integers(0, 2_000),
    posts_30d=st.integers(0, 6),
    in_good_standing=st.booleans(),
    identity_verified=st.booleans(),
    payout_account_ref=st.none() | st.just("pa_token"),
    occurred_at=st.just(EARLIER),
    event_id=st.just("cu-property"),
    updated_at=st.just(EARLIER),
)


def eighteenth_birthday(birth_date: date) -> date:
    """An independent reading of the age rule: 29 February falls back to 1 March."""
    try:
        return birth_date.replace(year=birth_date.year + 18)
    except ValueError:
        return date(birth_date.year + 18, 3, 1)


@hypothesis_settings(max_examples=400)
@given(
    profile=st.none() | profiles,
    today=st.dates(date(1990, 1, 1), date(2060, 12, 31)),
    profile_age=st.timedeltas(timedelta(days=-3), timedelta(days=60))
    | st.sampled_from((timedelta(days=30), timedelta(days=30, microseconds=1))),
)
def test_eligible_is_true_exactly_when_every_rule_passed(
    profile: CreatorProfile | None, today: date, profile_age: timedelta
) -> None:
    report = evaluate(
        profile,
        PROPERTY_SETTINGS,
        today,
        requested_at=EARLIER + profile_age,
        creator_id="creator-property",
    )
    assert [result.rule for result in report.rules] == list(RULES)
    assert report.eligible == all(result.passed for result in report.rules)
    assert (report.first_failed_rule is None) == report.eligible
    assert report.to_document()["eligible"] == report.eligible
    expected = profile is not None and (
        today >= eighteenth_birthday(profile.birth_date)
        and profile.country in ("US", "GB", "DE", "FR", "IT", "ES")
        and profile.followers >= 10_000
        and profile_age <= timedelta(days=30)
        and profile.video_views_30d >= 1_000
        and profile.posts_30d >= 3
        and profile.in_good_standing
        and profile.identity_verified
    )
    assert report.eligible == expected
