"""The Creator Next rules: who may cash out, with every threshold in configuration.

`evaluate` is a pure function of a creator's profile, the settings, the day and the moment of
the request: it checks every rule, always in the same order, and reports each with the value it
saw and what it required, so a refused request can say which rule failed and why. The order is
`RULES`.

The video views and posts of the last 30 days are those the profile carries as of its
`occurred_at`. A profile dated more than `profile_max_age_days` (default 30) before the request
says nothing of the request's last 30 days: both rules then fail, their seen value saying how old
the figure is ("1500 as of 2026-09-01T09:00:00Z, 92 days before the request"). A profile dated
exactly that many days before still counts, and so does one dated after the request.

Age is counted in whole years with birthday logic: a creator turns a year older on the month and
day of their birth. Someone born on 29 February turns a year older on 1 March in a non-leap year
(the day after 28 February), the common legal reading: they are not yet 18 on 28 February of the
year they turn 18 unless that year is a leap year. `today` is the caller's choice; the service
passes `age_day` of the moment it judges: the date at UTC-12, where a calendar day begins last,
so that no creator is counted a year older before that birthday has begun where they live (the
profile says nothing of their time zone). A birthday is so counted late east of UTC-12
(up to 26 hours at UTC+14), never early.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.cashout.profiles import CreatorProfile, creator_profile
from services.runtime.settings import EligibilitySettings

UNKNOWN = "unknown"
# Where a calendar day begins last: at any moment, the date here is the earliest date on Earth.
LATEST_DAY_ZONE = timezone(timedelta(hours=-12))

PROFILE_KNOWN = "profile_known"
AGE = "age"
COUNTRY = "country"
FOLLOWERS = "followers"
VIDEO_VIEWS_30D = "video_views_30d"
POSTS_30D = "posts_30d"
IN_GOOD_STANDING = "in_good_standing"
IDENTITY_VERIFIED = "identity_verified"
RULES: tuple[str, ...] = (
    PROFILE_KNOWN,
    AGE,
    COUNTRY,
    FOLLOWERS,
    VIDEO_VIEWS_30D,
    POSTS_30D,
    IN_GOOD_STANDING,
    IDENTITY_VERIFIED,
)


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str
    passed: bool
    seen: str
    required: str


@dataclass(frozen=True, slots=True)
class EligibilityReport:
    """Every rule's result, in the order of `RULES`."""

    creator_id: str | None
    rules: tuple[RuleResult, ...]

    @property
    def eligible(self) -> bool:
        return all(result.passed for result in self.rules)

    @property
    def first_failed_rule(self) -> str | None:
        """The name of the first rule that failed, for a refusal; None when eligible."""
        return next((result.rule for result in self.rules if not result.passed), None)

    def to_document(self) -> dict[str, Any]:
        """The JSON of `GET /v1/creators/{creator_id}/eligibility`."""
        return {
            "creator_id": self.creator_id,
            "eligible": self.eligible,
            "rules": [
                {
                    "rule": result.rule,
                    "passed": result.passed,
                    "seen": result.seen,
                    "required": result.required,
                }
                for result in self.rules
            ],
        }


def age_day(moment: datetime) -> date:
    """The day the age rule judges a creator on at `moment`: the date at UTC-12, the earliest
    date anywhere on Earth then, so that a creator is 18 on it wherever they live."""
    return moment.astimezone(LATEST_DAY_ZONE).date()


def age_in_years(birth_date: date, today: date) -> int:
    """Whole years from `birth_date` to `today`; a 29 February birthday counts on 1 March in
    non-leap years. Negative when `birth_date` is after `today`."""
    birthday_not_reached = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - int(birthday_not_reached)


def _at_least(rule: str, seen: int, minimum: int, note: str = "") -> RuleResult:
    return RuleResult(rule, seen >= minimum, str(seen), f">= {minimum}{note}")


def _recent_required(minimum: int, settings: EligibilitySettings) -> str:
    return f">= {minimum}, as of at most {settings.profile_max_age_days} days before the request"


def _profile_age_text(profile_age: timedelta) -> str:
    """`profile_age` in whole days, "more than" when it is not a whole number of days."""
    whole_days = profile_age.days
    unit = "day" if whole_days == 1 else "days"
    more = "" if profile_age == timedelta(days=whole_days) else "more than "
    return f"{more}{whole_days} {unit}"


def _recent_at_least(
    rule: str,
    seen: int,
    minimum: int,
    profile: CreatorProfile,
    settings: EligibilitySettings,
    requested_at: datetime,
) -> RuleResult:
    """A figure of the 30 days before the profile's `occurred_at`: it counts for a request at
    `requested_at` only when the profile is at most `profile_max_age_days` older."""
    required = _recent_required(minimum, settings)
    profile_age = requested_at - profile.occurred_at
    if profile_age <= timedelta(days=settings.profile_max_age_days):
        return RuleResult(rule, seen >= minimum, str(seen), required)
    as_of = profile.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    seen_text = f"{seen} as of {as_of}, {_profile_age_text(profile_age)} before the request"
    return RuleResult(rule, False, seen_text, required)


def _is_true(rule: str, seen: bool) -> RuleResult:
    return RuleResult(rule, seen, "true" if seen else "false", "true")


def _age(profile: CreatorProfile, settings: EligibilitySettings, today: date) -> RuleResult:
    required = f">= {settings.age_min_years} years"
    if profile.birth_date > today:
        return RuleResult(AGE, False, f"born after {today.isoformat()}", required)
    age = age_in_years(profile.birth_date, today)
    return RuleResult(AGE, age >= settings.age_min_years, f"{age} years", required)


def _enabled_list(settings: EligibilitySettings) -> str:
    if not settings.enabled_countries:
        return "an enabled country (none is enabled)"
    return "one of " + ", ".join(settings.enabled_countries)


def _country(profile: CreatorProfile, settings: EligibilitySettings) -> RuleResult:
    country = profile.country
    seen = f"{country} (coming soon)" if country in settings.coming_soon_countries else country
    return RuleResult(COUNTRY, country in settings.enabled_countries, seen, _enabled_list(settings))


def _followers(profile: CreatorProfile, settings: EligibilitySettings) -> RuleResult:
    country = profile.country
    regional = country in settings.follower_minimum_by_country
    note = f" (minimum for {country})" if regional else " (default minimum)"
    return _at_least(FOLLOWERS, profile.followers, settings.follower_minimum(country), note)


def _known_profile_results(
    profile: CreatorProfile, settings: EligibilitySettings, today: date, requested_at: datetime
) -> tuple[RuleResult, ...]:
    return (
        RuleResult(PROFILE_KNOWN, True, "known", "known"),
        _age(profile, settings, today),
        _country(profile, settings),
        _followers(profile, settings),
        _recent_at_least(
            VIDEO_VIEWS_30D,
            profile.video_views_30d,
            settings.video_views_30d_min,
            profile,
            settings,
            requested_at,
        ),
        _recent_at_least(
            POSTS_30D, profile.posts_30d, settings.posts_30d_min, profile, settings, requested_at
        ),
        _is_true(IN_GOOD_STANDING, profile.in_good_standing),
        _is_true(IDENTITY_VERIFIED, profile.identity_verified),
    )


def _unknown_profile_results(settings: EligibilitySettings) -> tuple[RuleResult, ...]:
    required = {
        PROFILE_KNOWN: "known",
        AGE: f">= {settings.age_min_years} years",
        COUNTRY: _enabled_list(settings),
        FOLLOWERS: f">= the regional minimum (default {settings.follower_minimum_default})",
        VIDEO_VIEWS_30D: _recent_required(settings.video_views_30d_min, settings),
        POSTS_30D: _recent_required(settings.posts_30d_min, settings),
        IN_GOOD_STANDING: "true",
        IDENTITY_VERIFIED: "true",
    }
    return tuple(RuleResult(rule, False, UNKNOWN, required[rule]) for rule in RULES)


def evaluate(
    profile: CreatorProfile | None,
    settings: EligibilitySettings,
    today: date,
    *,
    requested_at: datetime,
    creator_id: str | None = None,
) -> EligibilityReport:
    """Check every rule for `profile`: the age on `today`, the video views and posts of the last
    30 days as of a request at `requested_at` (aware).

    With no profile (no `creators.updated` event applied yet) every rule fails with seen
    "unknown"; pass `creator_id` so the report still names the creator."""
    if profile is None:
        return EligibilityReport(creator_id, _unknown_profile_results(settings))
    assert creator_id in (None, profile.creator_id), "creator_id and profile disagree"
    results = _known_profile_results(profile, settings, today, requested_at)
    assert tuple(result.rule for result in results) == RULES
    return EligibilityReport(profile.creator_id, results)


async def creator_eligibility(
    conn: AsyncConnection,
    creator_id: str,
    settings: EligibilitySettings,
    at: datetime | None = None,
) -> EligibilityReport:
    """Load the creator's profile and evaluate it as the cash-out desk judges a request made at
    `at` (aware; default now): the age on `age_day(at)`, the profile's age against `at`."""
    profile = await creator_profile(conn, creator_id)
    moment = datetime.now(UTC) if at is None else at
    return evaluate(profile, settings, age_day(moment), requested_at=moment, creator_id=creator_id)


_SELECT_PROFILES = text(
    """
    SELECT creator_id, birth_date, country, followers, video_views_30d, posts_30d,
           in_good_standing, identity_verified, payout_account_ref, occurred_at, event_id,
           updated_at
    FROM creators WHERE creator_id = ANY(CAST(:creator_ids AS text[]))
    """
)


async def creator_profiles(
    conn: AsyncConnection, creator_ids: Iterable[str]
) -> dict[str, CreatorProfile]:
    """The stored profiles of these creators, by id, in one statement (a batch of cash-out
    requests evaluates its creators with `evaluate`); a creator with no profile is left out."""
    wanted = sorted(set(creator_ids))
    if not wanted:
        return {}
    rows = await conn.execute(_SELECT_PROFILES, {"creator_ids": wanted})
    return {row.creator_id: CreatorProfile(**row._mapping) for row in rows}
