"""The Creator Next rules: who may cash out, with every threshold in configuration.

`evaluate` is a pure function of a creator's profile, the settings and the day: it checks every
rule, always in the same order, and reports each with the value it saw and what it required, so a
refused request can say which rule failed and why. The order is `RULES`.

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
    profile: CreatorProfile, settings: EligibilitySettings, today: date
) -> tuple[RuleResult, ...]:
    return (
        RuleResult(PROFILE_KNOWN, True, "known", "known"),
        _age(profile, settings, today),
        _country(profile, settings),
        _followers(profile, settings),
        _at_least(VIDEO_VIEWS_30D, profile.video_views_30d, settings.video_views_30d_min),
        _at_least(POSTS_30D, profile.posts_30d, settings.posts_30d_min),
        _is_true(IN_GOOD_STANDING, profile.in_good_standing),
        _is_true(IDENTITY_VERIFIED, profile.identity_verified),
    )


def _unknown_profile_results(settings: EligibilitySettings) -> tuple[RuleResult, ...]:
    required = {
        PROFILE_KNOWN: "known",
        AGE: f">= {settings.age_min_years} years",
        COUNTRY: _enabled_list(settings),
        FOLLOWERS: f">= the regional minimum (default {settings.follower_minimum_default})",
        VIDEO_VIEWS_30D: f">= {settings.video_views_30d_min}",
        POSTS_30D: f">= {settings.posts_30d_min}",
        IN_GOOD_STANDING: "true",
        IDENTITY_VERIFIED: "true",
    }
    return tuple(RuleResult(rule, False, UNKNOWN, required[rule]) for rule in RULES)


def evaluate(
    profile: CreatorProfile | None,
    settings: EligibilitySettings,
    today: date,
    *,
    creator_id: str | None = None,
) -> EligibilityReport:
    """Check every rule for `profile` on `today`.

    With no profile (no `creators.updated` event applied yet) every rule fails with seen
    "unknown"; pass `creator_id` so the report still names the creator."""
    if profile is None:
        return EligibilityReport(creator_id, _unknown_profile_results(settings))
    assert creator_id in (None, profile.creator_id), "creator_id and profile disagree"
    results = _known_profile_results(profile, settings, today)
    assert tuple(result.rule for result in results) == RULES
    return EligibilityReport(profile.creator_id, results)


async def creator_eligibility(
    conn: AsyncConnection,
    creator_id: str,
    settings: EligibilitySettings,
    today: date | None = None,
) -> EligibilityReport:
    """Load the creator's profile and evaluate it; `today` defaults to the age rule's day now
    (`age_day`), as the cash-out desk judges a request made now."""
    profile = await creator_profile(conn, creator_id)
    day = age_day(datetime.now(UTC)) if today is None else today
    return evaluate(profile, settings, day, creator_id=creator_id)


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
