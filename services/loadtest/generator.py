"""`giftledger generate`: a realistic, deterministic load-test stream and its expected end state.

The stream is a gzip-compressed JSON Lines file, one Kafka record per line:

    {"topic": "gifts.sent", "key": "<creator_id>", "offset_ms": 1234, "value": "<event JSON>"}

`topic` is the contract's name (the replayer puts the prefix in front), `key` the creator id,
`offset_ms` the record's time since the start of the stream (never decreasing from one line to
the next), `value` the record's exact bytes as a UTF-8 string, or as base64 with
`"encoding": "base64"` for the records whose bytes are deliberately not UTF-8.

What is in it, from one seeded `random.Random` (the same seed and namespace give the same bytes):

- Gifts: LIVE sessions (a few at once, with bursts of gifts a few milliseconds apart and combo
  gifts, `count` > 1) and gifts on videos. Creators are Zipf-distributed, and a few stars get
  most LIVE sessions.
- Tips, Creator Fund rewards and Marketplace payments in several currencies.
- Reversals of recent gifts (picked from a bounded ring of recent gifts), some sent before their
  gift (the gift is delayed: the ledger parks the reversal until the gift arrives).
- Creator profiles: one when a creator first appears (most eligible to cash out; some not, for
  each rule; a few creators never get one), later updates, some of which arrive out of order.
- Duplicates (a recent record again, byte for byte), out-of-order records (held back a few
  hundred records; they keep their `occurred_at`), and bad records: malformed JSON, duplicate
  JSON keys, invalid UTF-8, schema violations, an `event_id` reused with another payload, a
  reversal naming another creator's gift, a payout report for an unknown cash-out.
- Then, in a final phase after everything else, cash-out requests: most fit, some are over the
  balance, under the minimum, over the daily limit, from ineligible creators or creators with no
  profile, in a currency that does not match.

The expected end state (`<path>.expected.json`) is computed here, from the contract alone (this
module imports nothing of the ledger, the ingestion or the cash-out code):

- Diamonds per creator: sum(coins * count) * 500 milli-diamonds per gift applied, minus each
  reversed gift's diamonds, minus each paid cash-out (whole diamonds * 1,000).
- Currency wallets per creator: tips (100 % of `amount`), fund rewards (`amount`), Marketplace
  payments (`amount - platform_fee`), minus each paid currency cash-out.
- Records per topic, and what each becomes: applied, duplicate, or dead-lettered (by reason).

Cash-outs are exact because they come last (strategy (a) of the load test's brief): the load
test replays the stream up to `cashout_phase_from`, waits until every record is applied and no
reversal is parked, then replays the cash-outs. Their outcome is then a pure function of the
rules, evaluated here in stream order per creator: eligibility (the Creator Next defaults), a
payout account, the payout currency, the minimum (10 USD), the daily limit (1,000 USD per creator
per UTC day) and the available balance. The load test runs the simulated bank with
`failure_rate=0` and `return_rate=0`, so every held cash-out ends paid. The rules and rates this
assumes are written under `assumptions`; the load test refuses to compare against a deployment
configured otherwise. Replaying the file without that barrier (`giftledger replay` against running
consumers) gives the same gifts, tips and profiles, but cash-outs decided against whatever the
consumers had applied by then.

Memory is bounded whatever the length: records are written as they are made; what is kept is per
creator (balances, the latest profile; creators are capped by `creator_count`), plus bounded rings
of recent records (for duplicates, conflicts and reversals) and of held-back records.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import dataclasses
import gzip
import heapq
import itertools
import json
import os
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any, TextIO

from schemas import topics

FORMAT_VERSION = 1
STREAM_START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
EXPECTED_SUFFIX = ".expected.json"

# The contract's defaults this module re-derives the end state from.
MILLI_DIAMONDS_PER_COIN = 500
MILLI_PER_DIAMOND = 1_000
DIAMONDS_PER_USD = 200
USD_MICROS = 1_000_000
CASHOUT_MINIMUM_USD_CENTS = 1_000
CASHOUT_DAILY_LIMIT_USD_CENTS = 100_000
FX_CURRENCIES = ("USD",)  # the only FX rate the migrations seed: 1 USD per USD
AGE_MIN_YEARS = 18
ENABLED_COUNTRIES = ("US", "GB", "DE", "FR", "IT", "ES")
COMING_SOON_COUNTRIES = ("CA", "AU")
FOLLOWER_MINIMUM_BY_COUNTRY = {"US": 10_000}
FOLLOWER_MINIMUM_DEFAULT = 10_000
VIDEO_VIEWS_30D_MIN = 1_000
POSTS_30D_MIN = 3

# Bounds: what a generator keeps in memory does not grow with the stream's length.
EVENTS_MAX = 1_000_000_000
CREATOR_COUNT_MAX = 1_000_000
CREATOR_COUNT_MIN = 20
EVENTS_PER_CREATOR = 40
RECENT_RECORDS_MAX = 512
RECENT_GIFTS_MAX = 4_096
HELD_BACK_RECORDS_MAX = 400
LIVE_SESSIONS_MAX = 6
SPECIAL_CREATORS_MAX = 1_000
WRITE_CHUNK_LINES = 2_000
GZIP_LEVEL = 6

STAR_COUNT = 3
STAR_LIVE_SHARE = 0.5
ZIPF_EXPONENT = 1.1
LIVE_SHARE = 0.6
BURST_START_SHARE = 0.05
BURST_SPEEDUP = 8.0
LIVE_COMBO_SHARE = 0.25
VIDEO_COMBO_SHARE = 0.05
COMBO_COUNTS = (2, 3, 5, 10, 10, 99)
GIFT_CATALOGUE: tuple[tuple[str, int, int], ...] = (
    ("rose", 1, 30),
    ("finger-heart", 5, 20),
    ("doughnut", 30, 15),
    ("hand-hearts", 100, 15),
    ("sunglasses", 199, 8),
    ("galaxy", 1_000, 8),
    ("lion", 5_000, 3),
    ("universe", 34_999, 1),
)
TIP_CURRENCIES = (("USD", 60), ("EUR", 20), ("GBP", 15), ("JPY", 5))
MONEY_CURRENCIES = (("USD", 70), ("EUR", 20), ("GBP", 10))
TIP_CURRENCY_NAMES = [name for name, _ in TIP_CURRENCIES]
TIP_CURRENCY_CUMULATIVE = list(itertools.accumulate(weight for _, weight in TIP_CURRENCIES))
MONEY_CURRENCY_NAMES = [name for name, _ in MONEY_CURRENCIES]
MONEY_CURRENCY_CUMULATIVE = list(itertools.accumulate(weight for _, weight in MONEY_CURRENCIES))
REVERSAL_REASONS = ("refund", "chargeback", "fraud", "policy")
PROFILE_MISSING_SHARE = 0.05
PROFILE_STALE_FLIP_SHARE = 0.2
INELIGIBLE_KINDS = (
    "age",
    "country",
    "followers",
    "video_views_30d",
    "posts_30d",
    "in_good_standing",
    "identity_verified",
    "payout_account",
)

CASHOUT_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("fits", 45),
    ("wallet", 10),
    ("minimum", 10),
    ("over_balance", 12),
    ("ineligible", 10),
    ("daily_limit", 5),
    ("no_profile", 4),
    ("wrong_currency", 2),
    ("bad", 2),
)
# The first cash-outs walk every category once, so that even a short stream shows each path.
CASHOUT_CATEGORY_CYCLE = (
    "fits",
    "minimum",
    "over_balance",
    "ineligible",
    "fits",
    "wallet",
    "no_profile",
    "daily_limit",
    "daily_limit",
    "wrong_currency",
)

BAD_KINDS = (
    "truncated_json",
    "duplicate_keys",
    "invalid_utf8",
    "negative_amount",
    "coins_as_text",
    "live_without_live_id",
    "unknown_currency",
    "fee_above_amount",
    "raw_account_number",
    "unknown_field",
    "reversal_of_other_creator",
    "payout_for_unknown_cashout",
)

MALFORMED_JSON = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
SCHEMA_VIOLATION = "schema_violation"
EVENT_ID_CONFLICT = "event_id_conflict"
CREATOR_MISMATCH = "creator_mismatch"
UNKNOWN_CASHOUT = "unknown_cashout"


class StreamFormatError(ValueError):
    """A stream file or its expected state is not what this module writes."""


@dataclass(frozen=True, slots=True)
class StreamShape:
    """What the stream looks like. Rates are shares of the main phase's records."""

    events_per_s: float = 1_000.0  # mean recorded rate; bursts go faster
    creator_count: int | None = None  # None: events / 40, between 20 and 1,000,000
    duplicate_rate: float = 0.01
    out_of_order_rate: float = 0.01
    bad_rate: float = 0.005
    conflict_rate: float = 0.002
    reversal_rate: float = 0.01
    early_reversal_share: float = 0.25  # of reversals: sent before their gift
    tip_rate: float = 0.05
    fund_rate: float = 0.01
    marketplace_rate: float = 0.015
    profile_update_rate: float = 0.01
    ineligible_share: float = 0.15  # of creators' profiles
    cashout_share: float = 0.02  # of all records: the final phase

    def __post_init__(self) -> None:
        if not 0.01 <= self.events_per_s <= 10_000_000:
            raise ValueError(f"events_per_s must be in [0.01, 1e7], got {self.events_per_s}")
        if self.creator_count is not None and not (
            CREATOR_COUNT_MIN <= self.creator_count <= CREATOR_COUNT_MAX
        ):
            raise ValueError(f"creator_count must be in [{CREATOR_COUNT_MIN}, {CREATOR_COUNT_MAX}]")
        shares = {
            name: getattr(self, name)
            for name in (
                "duplicate_rate",
                "out_of_order_rate",
                "bad_rate",
                "conflict_rate",
                "reversal_rate",
                "early_reversal_share",
                "tip_rate",
                "fund_rate",
                "marketplace_rate",
                "profile_update_rate",
                "ineligible_share",
                "cashout_share",
            )
        }
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        actions = (
            self.duplicate_rate
            + self.bad_rate
            + self.conflict_rate
            + self.reversal_rate
            + self.tip_rate
            + self.fund_rate
            + self.marketplace_rate
            + self.profile_update_rate
        )
        if actions > 0.9:
            raise ValueError(f"the non-gift rates add up to {actions:.3f}: keep them under 0.9")
        if self.cashout_share > 0.5:
            raise ValueError("cashout_share must be at most 0.5")


def expected_path(path: Path) -> Path:
    """Where the expected end state of the stream at `path` is written."""
    return path.with_name(path.name + EXPECTED_SUFFIX)


def default_namespace(seed: int) -> str:
    return f"s{seed}"


def _check_namespace(namespace: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
    if not 1 <= len(namespace) <= 40 or not set(namespace) <= allowed:
        raise ValueError(
            f"namespace {namespace!r}: 1-40 characters among letters, digits, '.' and '-'"
        )


@dataclass
class ExpectedState:
    """The end state a ledger fed the stream must reach; written as `<path>.expected.json`.

    Amounts are integers in minor units: milli-diamonds for `DIAMOND`, cents for `USD`. Balances
    are creators' available balances (posted less pending debits), zero balances left out.
    `applied_by_topic` includes `payouts.updated`: the simulated bank's `paid` reports, one per
    cash-out held (they are not in the stream; the bank sends them).
    """

    format_version: int
    namespace: str
    seed: int
    records: int
    cashout_phase_from: int
    stream_start: str
    duration_ms: int
    assumptions: dict[str, Any]
    records_by_topic: dict[str, int]
    applied_by_topic: dict[str, int]
    duplicates_by_topic: dict[str, int]
    dead_letters: dict[str, dict[str, int]]
    cashouts: dict[str, int]
    payout_reports: int
    balances: dict[str, dict[str, int]]
    totals: dict[str, int]
    shape: dict[str, Any] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return sum(self.duplicates_by_topic.values())

    @property
    def dead_lettered(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.dead_letters.values())

    def to_document(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> ExpectedState:
        if document.get("format_version") != FORMAT_VERSION:
            raise StreamFormatError(
                f"expected state format {document.get('format_version')!r}, not {FORMAT_VERSION}"
            )
        names = {item.name for item in dataclasses.fields(cls)}
        missing = sorted(names - set(document) - {"shape"})
        if missing:
            raise StreamFormatError(f"expected state lacks {missing}")
        return cls(**{key: value for key, value in document.items() if key in names})

    def write(self, path: Path) -> None:
        text = json.dumps(self.to_document(), indent=1, sort_keys=True) + "\n"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)


def load_expected(stream: Path) -> ExpectedState:
    """The expected state written next to `stream` by `generate`."""
    path = expected_path(stream)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise StreamFormatError(f"{path} is missing: generate the stream with it") from error
    except json.JSONDecodeError as error:
        raise StreamFormatError(f"{path} is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise StreamFormatError(f"{path} is not a JSON object")
    return ExpectedState.from_document(document)


def assumptions() -> dict[str, Any]:
    """The rules and rates the expected state is derived from (the contract's defaults)."""
    return {
        "milli_diamonds_per_coin": MILLI_DIAMONDS_PER_COIN,
        "diamonds_per_usd": DIAMONDS_PER_USD,
        "fx_units_per_usd": {currency: "1" for currency in FX_CURRENCIES},
        "cashout_minimum_usd_cents": CASHOUT_MINIMUM_USD_CENTS,
        "cashout_daily_limit_usd_cents": CASHOUT_DAILY_LIMIT_USD_CENTS,
        "payout_rail_failure_rate": 0.0,
        "payout_rail_return_rate": 0.0,
        "eligibility": {
            "age_min_years": AGE_MIN_YEARS,
            "enabled_countries": list(ENABLED_COUNTRIES),
            "follower_minimum_by_country": dict(FOLLOWER_MINIMUM_BY_COUNTRY),
            "follower_minimum_default": FOLLOWER_MINIMUM_DEFAULT,
            "video_views_30d_min": VIDEO_VIEWS_30D_MIN,
            "posts_30d_min": POSTS_30D_MIN,
        },
    }


# Writing -------------------------------------------------------------------------------------


class _StreamWriter:
    """Appends records to a gzip file with a fixed header (no name, no time): same bytes in,
    same bytes out."""

    def __init__(self, path: Path) -> None:
        self._raw = path.open("wb")
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._raw, compresslevel=GZIP_LEVEL, mtime=0
        )
        self._lines: list[str] = []
        self.count = 0
        self.last_offset_ms = 0

    def write(self, topic: str, key: str, offset_ms: int, value: str | bytes) -> None:
        assert offset_ms >= self.last_offset_ms, "offset_ms must never decrease"
        head = f'{{"topic":{_quote(topic)},"key":{_quote(key)},"offset_ms":{offset_ms},"value":'
        if isinstance(value, bytes):
            encoded = base64.b64encode(value).decode("ascii")
            self._lines.append(f'{head}"{encoded}","encoding":"base64"}}')
        else:
            self._lines.append(f"{head}{_quote(value)}}}")
        self.count += 1
        self.last_offset_ms = offset_ms
        if len(self._lines) >= WRITE_CHUNK_LINES:
            self._drain()

    def _drain(self) -> None:
        if self._lines:
            self._gzip.write(("\n".join(self._lines) + "\n").encode("utf-8"))
            self._lines.clear()

    def close(self) -> None:
        self._drain()
        self._gzip.close()
        self._raw.close()


def _compact(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def _gift_json(event: dict[str, Any]) -> str:
    """`_compact(event)` for a gift this module made, without the general encoder (the hot path:
    every id and name here is visible ASCII without quotes or backslashes)."""
    place = "live_id" if event["surface"] == "live" else "video_id"
    count = f',"count":{event["count"]}' if "count" in event else ""
    return (
        f'{{"event_id":"{event["event_id"]}","occurred_at":"{event["occurred_at"]}",'
        f'"sender_id":"{event["sender_id"]}","creator_id":"{event["creator_id"]}",'
        f'"surface":"{event["surface"]}","{place}":"{event[place]}",'
        f'"gift_id":"{event["gift_id"]}","coins":{event["coins"]}{count}}}'
    )


# The contract's rules, re-derived -------------------------------------------------------------


def age_in_years(birth_date: date, today: date) -> int:
    """Whole years; a birthday counts from its month and day (29 February: from 1 March)."""
    return (
        today.year
        - birth_date.year
        - int((today.month, today.day) < (birth_date.month, birth_date.day))
    )


def first_failed_rule(profile: dict[str, Any] | None, today: date) -> str | None:
    """The first Creator Next rule `profile` breaks on `today`, or None: the contract's order."""
    if profile is None:
        return "profile_known"
    if age_in_years(date.fromisoformat(profile["birth_date"]), today) < AGE_MIN_YEARS:
        return "age"
    country = profile["country"]
    if country not in ENABLED_COUNTRIES:
        return "country"
    minimum = FOLLOWER_MINIMUM_BY_COUNTRY.get(country, FOLLOWER_MINIMUM_DEFAULT)
    if profile["followers"] < minimum:
        return "followers"
    if profile["video_views_30d"] < VIDEO_VIEWS_30D_MIN:
        return "video_views_30d"
    if profile["posts_30d"] < POSTS_30D_MIN:
        return "posts_30d"
    if not profile["in_good_standing"]:
        return "in_good_standing"
    if not profile["identity_verified"]:
        return "identity_verified"
    return None


def cashout_value(asset: str, amount: int) -> tuple[int, int, int]:
    """(source minor units held, USD micros, payout cents) of a request paid in USD.

    `amount` is whole diamonds for DIAMOND, cents for USD. 200 diamonds = 1 USD, rounded down to
    the cent; USD micros are exact for both (5,000 per diamond, 10,000 per cent)."""
    if asset == "DIAMOND":
        return amount * MILLI_PER_DIAMOND, amount * USD_MICROS // DIAMONDS_PER_USD, amount // 2
    assert asset == "USD", asset
    return amount, amount * (USD_MICROS // 100), amount


# Generating ----------------------------------------------------------------------------------


def _cashout_count(events: int, shape: StreamShape) -> int:
    if events < 50 or shape.cashout_share == 0:
        return 0
    return min(max(round(events * shape.cashout_share), len(CASHOUT_CATEGORY_CYCLE)), events // 2)


@dataclass(slots=True)
class _Outgoing:
    """A record made but maybe held back; `on_sent` runs when it is written."""

    topic: str
    key: str
    value: str | bytes
    replayable: bool = False  # a duplicate may copy it
    conflictable: dict[str, Any] | None = None  # an event_id conflict may reuse its event
    gift: tuple[str, int, int] | None = None  # (event_id, creator rank, milli-diamonds)


@dataclass(frozen=True, slots=True)
class _BadContext:
    key: str  # the creator id, also the Kafka key
    rank: int
    event_id: str
    occurred_at: str

    def common(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "occurred_at": self.occurred_at, "creator_id": self.key}


# (topic, key, value, the reason the consumer gives when it dead-letters it)
_BadRecord = tuple[str, str, str | bytes, str]


@dataclass(slots=True)
class _Live:
    creator: int
    live_id: str
    remaining: int


@dataclass(slots=True)
class _Profile:
    sort_key: tuple[int, str]  # (occurred_at ms, event_id): the latest wins
    facts: dict[str, Any]


class _Generator:
    def __init__(
        self, writer: _StreamWriter, *, events: int, seed: int, namespace: str, shape: StreamShape
    ) -> None:
        self.writer = writer
        self.events = events
        self.seed = seed
        self.ns = namespace
        self.shape = shape
        self.rng = random.Random(seed)
        self.creator_count = shape.creator_count or min(
            max(events // EVENTS_PER_CREATOR, CREATOR_COUNT_MIN), CREATOR_COUNT_MAX
        )
        weights = (1 / rank**ZIPF_EXPONENT for rank in range(1, self.creator_count + 1))
        self.zipf_cumulative = list(itertools.accumulate(weights))
        self.gift_cumulative = list(itertools.accumulate(weight for _, _, weight in GIFT_CATALOGUE))
        self.serial = 0
        self.clock_ms = 0.0
        self.day_texts: dict[int, str] = {}
        self.cashout_count = _cashout_count(events, shape)
        self.main_target = events - self.cashout_count
        # Held back records: (release at record count, sequence, record).
        self.held_back: list[tuple[int, int, _Outgoing]] = []
        self.held_sequence = 0
        self.recent_records: deque[tuple[str, str, str]] = deque(maxlen=RECENT_RECORDS_MAX)
        self.recent_events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=RECENT_RECORDS_MAX)
        self.recent_gifts: list[tuple[str, int, int]] = []
        self.lives: list[_Live] = []
        self.burst_left = 0
        self.burst_live: _Live | None = None
        # Per creator (rank), bounded by creator_count.
        self.seen: set[int] = set()
        self.profiles: dict[int, _Profile] = {}
        self.profile_kind: dict[int, str] = {}
        self.ineligible: list[int] = []
        self.without_profile: list[int] = []
        self.diamonds: dict[int, int] = {}
        self.wallets: dict[tuple[int, str], int] = {}
        # What each record becomes.
        self.records_by_topic: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.dead_letters: Counter[tuple[str, str]] = Counter()
        self.cashouts: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        self.cashout_phase_from = 0
        self.candidates: list[int] = []  # eligible creators with 2,000 diamonds or more

    # Ids, names, time.

    def next_id(self, kind: str) -> str:
        self.serial += 1
        return f"{self.ns}-{kind}{self.serial}"

    def creator_id(self, rank: int) -> str:
        return f"{self.ns}-c{rank}"

    def iso(self, ms: int) -> str:
        """RFC 3339 in UTC, to the millisecond, `ms` after the stream's start (a midnight)."""
        day, rest = divmod(ms, 86_400_000)
        day_text = self.day_texts.get(day)
        if day_text is None:
            day_text = (STREAM_START.date() + timedelta(days=day)).isoformat()
            if len(self.day_texts) < 4_096:
                self.day_texts[day] = day_text
        seconds, milli = divmod(rest, 1_000)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        return f"{day_text}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"

    def now_ms(self) -> int:
        return int(self.clock_ms)

    def advance(self, speedup: float = 1.0) -> None:
        self.clock_ms += self.rng.expovariate(self.shape.events_per_s * speedup / 1000.0)

    def zipf_rank(self) -> int:
        point = self.rng.random() * self.zipf_cumulative[-1]
        return min(bisect.bisect_left(self.zipf_cumulative, point) + 1, self.creator_count)

    def room(self, records: int) -> bool:
        return self.main_target - self.writer.count - len(self.held_back) >= records

    # Emitting.

    def send(self, record: _Outgoing) -> None:
        self.writer.write(record.topic, record.key, self.now_ms(), record.value)
        self.records_by_topic[record.topic] += 1
        if record.replayable:
            assert isinstance(record.value, str)
            self.recent_records.append((record.topic, record.key, record.value))
        if record.conflictable is not None:
            self.recent_events.append((record.topic, record.conflictable))
        if record.gift is not None:
            self._remember_gift(record.gift)

    def _remember_gift(self, gift: tuple[str, int, int]) -> None:
        if len(self.recent_gifts) < RECENT_GIFTS_MAX:
            self.recent_gifts.append(gift)
        else:
            self.recent_gifts[self.rng.randrange(RECENT_GIFTS_MAX)] = gift

    def hold_back(self, record: _Outgoing, records: int) -> None:
        release = self.writer.count + records
        self.held_sequence += 1
        heapq.heappush(self.held_back, (release, self.held_sequence, record))

    def dispatch(self, record: _Outgoing) -> None:
        """Send now, or (out of order) hold back for a while."""
        if (
            self.rng.random() < self.shape.out_of_order_rate
            and len(self.held_back) < HELD_BACK_RECORDS_MAX
        ):
            self.hold_back(record, self.rng.randint(5, HELD_BACK_RECORDS_MAX))
            self.totals["out_of_order"] += 1
        else:
            self.send(record)

    def release_due(self) -> None:
        while self.held_back and self.held_back[0][0] <= self.writer.count:
            self.send(heapq.heappop(self.held_back)[2])

    def release_all(self) -> None:
        while self.held_back:
            self.send(heapq.heappop(self.held_back)[2])

    def applied_event(self, topic: str, event: dict[str, Any], **options: Any) -> _Outgoing:
        self.applied[topic] += 1
        return _Outgoing(topic, str(event["creator_id"]), _compact(event), **options)

    def bad(self, topic: str, key: str, value: str | bytes, reason: str) -> None:
        self.dead_letters[(topic, reason)] += 1
        self.send(_Outgoing(topic, key, value))

    # The main phase.

    def run(self) -> None:
        while self.room(1):
            self.release_due()
            if self.burst_left > 0 and self.burst_live is not None:
                self.burst_left -= 1
                self.advance(BURST_SPEEDUP)
                self.live_gift(self.burst_live)
                continue
            self.advance()
            self.step()
        self.release_all()
        self.cashout_phase_from = self.writer.count
        self.cashout_phase(self.events - self.writer.count)

    def step(self) -> None:
        shape = self.shape
        point = self.rng.random()
        for rate, action in (
            (shape.bad_rate, self.bad_record),
            (shape.duplicate_rate, self.duplicate),
            (shape.conflict_rate, self.conflict),
            (shape.reversal_rate, self.reversal),
            (shape.tip_rate, self.tip),
            (shape.fund_rate, self.fund_reward),
            (shape.marketplace_rate, self.marketplace),
            (shape.profile_update_rate, self.profile_update),
        ):
            if point < rate:
                if action():
                    return
                break
            point -= rate
        self.gift()

    def meet(self, rank: int) -> None:
        """A creator's first appearance: most have a profile on file by then."""
        if rank in self.seen:
            return
        self.seen.add(rank)
        if not self.room(2) or self.rng.random() < PROFILE_MISSING_SHARE:
            if len(self.without_profile) < SPECIAL_CREATORS_MAX:
                self.without_profile.append(rank)
            return
        kind = "eligible"
        if self.rng.random() < self.shape.ineligible_share:
            kind = self.rng.choice(INELIGIBLE_KINDS)
            if len(self.ineligible) < SPECIAL_CREATORS_MAX:
                self.ineligible.append(rank)
        self.profile_kind[rank] = kind
        registered_ms = self.now_ms() - self.rng.randint(0, 30 * 86_400_000)
        self.send(self.profile_record(rank, self.profile_facts(rank, kind), registered_ms))

    def profile_facts(self, rank: int, kind: str) -> dict[str, Any]:
        rng = self.rng
        facts: dict[str, Any] = {
            "birth_date": date(rng.randint(1970, 2003), rng.randint(1, 12), rng.randint(1, 28)),
            "country": rng.choice(ENABLED_COUNTRIES),
            "followers": rng.randint(10_000, 5_000_000),
            "video_views_30d": rng.randint(1_000, 50_000_000),
            "posts_30d": rng.randint(3, 90),
            "in_good_standing": True,
            "identity_verified": True,
            "payout_account_ref": f"pa_{self.ns}_{rank}",
        }
        if kind == "age":
            facts["birth_date"] = date(2010, rng.randint(1, 12), rng.randint(1, 28))
        elif kind == "country":
            facts["country"] = rng.choice((*COMING_SOON_COUNTRIES, "BR", "IN"))
        elif kind == "followers":
            facts["followers"] = rng.randint(0, 9_999)
        elif kind == "video_views_30d":
            facts["video_views_30d"] = rng.randint(0, 999)
        elif kind == "posts_30d":
            facts["posts_30d"] = rng.randint(0, 2)
        elif kind in ("in_good_standing", "identity_verified"):
            facts[kind] = False
        elif kind == "payout_account":
            facts["payout_account_ref"] = None
        facts["birth_date"] = facts["birth_date"].isoformat()
        return facts

    def profile_record(self, rank: int, facts: dict[str, Any], occurred_ms: int) -> _Outgoing:
        event_id = self.next_id("p")
        event: dict[str, Any] = {
            "event_id": event_id,
            "occurred_at": self.iso(occurred_ms),
            "creator_id": self.creator_id(rank),
            **{key: value for key, value in facts.items() if value is not None},
        }
        latest = self.profiles.get(rank)
        sort_key = (occurred_ms, event_id)
        if latest is None or latest.sort_key < sort_key:
            self.profiles[rank] = _Profile(sort_key, facts)
        self.totals["profiles"] += 1
        return self.applied_event(topics.CREATORS_UPDATED, event, replayable=True)

    def profile_update(self) -> bool:
        """New figures for a known creator; some arrive late, carrying an older occurred_at,
        and a few of those say the creator is not in good standing (the latest still wins)."""
        if not self.profiles:
            return False
        rank = self.zipf_rank()
        latest = self.profiles.get(rank)
        if latest is None:
            return False
        facts = dict(latest.facts)
        facts["followers"] = max(facts["followers"] + self.rng.randint(-500, 5_000), 0)
        facts["video_views_30d"] = max(facts["video_views_30d"] + self.rng.randint(-100, 9_000), 0)
        occurred_ms = self.now_ms()
        if self.rng.random() < self.shape.out_of_order_rate * 10 and self.room(2):
            occurred_ms -= self.rng.randint(1, 3_600_000)
            if self.rng.random() < PROFILE_STALE_FLIP_SHARE:
                facts["in_good_standing"] = not facts["in_good_standing"]
            self.totals["profiles_stale"] += 1
            self.hold_back(self.profile_record(rank, facts, occurred_ms), self.rng.randint(5, 200))
            return True
        self.dispatch(self.profile_record(rank, facts, occurred_ms))
        return True

    def gift(self) -> None:
        rng = self.rng
        if rng.random() < LIVE_SHARE:
            live = self.pick_live()
            if rng.random() < BURST_START_SHARE:
                self.burst_left = rng.randint(5, 40)
                self.burst_live = live
            self.live_gift(live)
            return
        rank = self.zipf_rank()
        place = {"surface": "video", "video_id": f"{self.ns}-v{rank}-{rng.randrange(30)}"}
        self.emit_gift(rank, place, VIDEO_COMBO_SHARE)

    def pick_live(self) -> _Live:
        rng = self.rng
        if not self.lives or (len(self.lives) < LIVE_SESSIONS_MAX and rng.random() < 0.02):
            star = rng.random() < STAR_LIVE_SHARE
            rank = rng.randint(1, STAR_COUNT) if star else self.zipf_rank()
            self.lives.append(_Live(rank, self.next_id("live"), rng.randint(20, 2_000)))
        return rng.choice(self.lives)

    def live_gift(self, live: _Live) -> None:
        place = {"surface": "live", "live_id": live.live_id}
        self.emit_gift(live.creator, place, LIVE_COMBO_SHARE)
        live.remaining -= 1
        if live.remaining <= 0:
            self.lives.remove(live)
            if self.burst_live is live:
                self.burst_left, self.burst_live = 0, None

    def gift_event(
        self, rank: int, place: dict[str, str], combo_share: float, occurred_ms: int | None = None
    ) -> dict[str, Any]:
        rng = self.rng
        index = bisect.bisect_left(self.gift_cumulative, rng.random() * self.gift_cumulative[-1])
        name, coins, _ = GIFT_CATALOGUE[index]
        event: dict[str, Any] = {
            "event_id": self.next_id("g"),
            "occurred_at": self.iso(self.now_ms() if occurred_ms is None else occurred_ms),
            "sender_id": f"fan-{rng.randrange(2_000_000)}",
            "creator_id": self.creator_id(rank),
            **place,
            "gift_id": name,
            "coins": coins,
        }
        if rng.random() < combo_share:
            event["count"] = rng.choice(COMBO_COUNTS)
        elif rng.random() < 0.5:
            event["count"] = 1  # the contract's default, sometimes written out
        return event

    def credit_gift(self, rank: int, event: dict[str, Any]) -> int:
        coins = int(event["coins"]) * int(event.get("count", 1))
        milli = coins * MILLI_DIAMONDS_PER_COIN
        self.diamonds[rank] = self.diamonds.get(rank, 0) + milli
        self.totals["gifts"] += 1
        self.totals["gift_coins"] += coins
        self.totals["diamonds_credited_milli"] += milli
        return milli

    def emit_gift(self, rank: int, place: dict[str, str], combo_share: float) -> None:
        self.meet(rank)
        event = self.gift_event(rank, place, combo_share)
        milli = self.credit_gift(rank, event)
        self.applied[topics.GIFTS_SENT] += 1
        record = _Outgoing(
            topics.GIFTS_SENT,
            event["creator_id"],
            _gift_json(event),
            replayable=True,
            conflictable=event,
            gift=(event["event_id"], rank, milli),
        )
        self.dispatch(record)

    def reversal(self) -> bool:
        if self.rng.random() < self.shape.early_reversal_share and self.room(3):
            return self.early_reversal()
        if not self.recent_gifts:
            return False
        index = self.rng.randrange(len(self.recent_gifts))
        gift_event_id, rank, milli = self.recent_gifts[index]
        self.recent_gifts[index] = self.recent_gifts[-1]
        self.recent_gifts.pop()
        self.send(self.reversal_record(gift_event_id, rank, milli))
        return True

    def early_reversal(self) -> bool:
        """A gift delayed upstream: its reversal is sent first, the gift a little later."""
        rank = self.zipf_rank()
        self.meet(rank)
        place = {"surface": "video", "video_id": f"{self.ns}-v{rank}-late"}
        sent_ms = self.now_ms() - self.rng.randint(50, 2_000)
        event = self.gift_event(rank, place, VIDEO_COMBO_SHARE, sent_ms)
        milli = self.credit_gift(rank, event)
        self.send(self.reversal_record(event["event_id"], rank, milli))
        gift = self.applied_event(topics.GIFTS_SENT, event, replayable=True)
        self.hold_back(gift, self.rng.randint(1, 200))
        self.totals["reversals_before_gift"] += 1
        return True

    def reversal_record(self, gift_event_id: str, rank: int, milli: int) -> _Outgoing:
        event = {
            "event_id": self.next_id("r"),
            "occurred_at": self.iso(self.now_ms()),
            "creator_id": self.creator_id(rank),
            "gift_event_id": gift_event_id,
            "reason": self.rng.choice(REVERSAL_REASONS),
        }
        self.diamonds[rank] -= milli
        self.totals["reversals"] += 1
        self.totals["diamonds_reversed_milli"] += milli
        return self.applied_event(topics.GIFTS_REVERSED, event)

    def credit_wallet(self, rank: int, currency: str, amount: int) -> None:
        self.wallets[(rank, currency)] = self.wallets.get((rank, currency), 0) + amount

    def tip(self) -> bool:
        rng = self.rng
        rank = self.zipf_rank()
        self.meet(rank)
        currency = rng.choices(TIP_CURRENCY_NAMES, cum_weights=TIP_CURRENCY_CUMULATIVE)[0]
        amount = rng.randint(100, 5_000) if currency == "JPY" else rng.randint(100, 20_000)
        event = {
            "event_id": self.next_id("t"),
            "occurred_at": self.iso(self.now_ms()),
            "sender_id": f"fan-{rng.randrange(2_000_000)}",
            "creator_id": self.creator_id(rank),
            "amount": amount,
            "currency": currency,
            "fan_fee": amount // 20,
            "processor_fee": amount * 3 // 100 + (30 if currency != "JPY" else 0),
            "charge_id": f"ch_{self.ns}_{self.serial}",
        }
        self.credit_wallet(rank, currency, amount)
        self.totals["tips"] += 1
        self.dispatch(
            self.applied_event(topics.TIPS_RECEIVED, event, replayable=True, conflictable=event)
        )
        return True

    def money_currency(self) -> str:
        return self.rng.choices(MONEY_CURRENCY_NAMES, cum_weights=MONEY_CURRENCY_CUMULATIVE)[0]

    def fund_reward(self) -> bool:
        rank = self.zipf_rank()
        self.meet(rank)
        currency = self.money_currency()
        amount = self.rng.randint(500, 200_000)
        event = {
            "event_id": self.next_id("f"),
            "occurred_at": self.iso(self.now_ms()),
            "creator_id": self.creator_id(rank),
            "period": "2026-10",
            "amount": amount,
            "currency": currency,
        }
        self.credit_wallet(rank, currency, amount)
        self.totals["fund_rewards"] += 1
        self.dispatch(
            self.applied_event(topics.FUND_REWARDED, event, replayable=True, conflictable=event)
        )
        return True

    def marketplace(self) -> bool:
        rank = self.zipf_rank()
        self.meet(rank)
        currency = self.money_currency()
        amount = self.rng.randint(10_000, 5_000_000)
        fee = amount * self.rng.randint(5, 20) // 100
        event = {
            "event_id": self.next_id("m"),
            "occurred_at": self.iso(self.now_ms()),
            "creator_id": self.creator_id(rank),
            "brand_id": f"brand-{self.rng.randrange(500)}",
            "deal_id": f"deal-{self.ns}-{self.serial}",
            "amount": amount,
            "currency": currency,
            "platform_fee": fee,
        }
        self.credit_wallet(rank, currency, amount - fee)
        self.totals["marketplace_payments"] += 1
        self.dispatch(
            self.applied_event(topics.MARKETPLACE_PAID, event, replayable=True, conflictable=event)
        )
        return True

    def duplicate(self) -> bool:
        if not self.recent_records:
            return False
        topic, key, value = self.recent_records[self.rng.randrange(len(self.recent_records))]
        self.duplicates[topic] += 1
        self.send(_Outgoing(topic, key, value))
        return True

    def conflict(self) -> bool:
        """An event_id reused with another payload, on the same key: the first one wins."""
        if not self.recent_events:
            return False
        topic, event = self.recent_events[self.rng.randrange(len(self.recent_events))]
        changed = dict(event)
        if topic == topics.GIFTS_SENT:
            changed["coins"] = event["coins"] + 1
        else:
            changed["amount"] = event["amount"] + 1
        self.bad(topic, str(event["creator_id"]), _compact(changed), EVENT_ID_CONFLICT)
        return True

    def bad_record(self) -> bool:
        """One record that must end in the dead-letter topic, for the reason it names."""
        rank = self.zipf_rank()
        context = _BadContext(
            key=self.creator_id(rank),
            rank=rank,
            event_id=self.next_id("x"),
            occurred_at=self.iso(self.now_ms()),
        )
        made = BAD_RECORD_MAKERS[self.rng.choice(BAD_KINDS)](self, context)
        if made is None:
            return False
        topic, key, value, reason = made
        self.bad(topic, key, value, reason)
        return True

    def bad_gift(self, context: _BadContext) -> dict[str, Any]:
        return {
            "event_id": context.event_id,
            "occurred_at": context.occurred_at,
            "sender_id": "fan-1",
            "creator_id": context.key,
            "surface": "live",
            "live_id": f"{self.ns}-live-bad",
            "gift_id": "rose",
            "coins": 1,
        }

    def truncated_json(self, context: _BadContext) -> _BadRecord:
        cut = self.rng.randint(5, 60)
        return (
            topics.GIFTS_SENT,
            context.key,
            _compact(self.bad_gift(context))[:cut],
            MALFORMED_JSON,
        )

    def duplicate_keys(self, context: _BadContext) -> _BadRecord:
        event_id, when = context.event_id, context.occurred_at
        value = f'{{"event_id":"{event_id}","event_id":"{event_id}-2","occurred_at":"{when}"}}'
        return topics.TIPS_RECEIVED, context.key, value, MALFORMED_JSON

    def invalid_utf8(self, context: _BadContext) -> _BadRecord:
        value = f'{{"event_id":"{context.event_id}","gift_id":"'.encode() + b'\xff\xfe"}'
        return topics.GIFTS_SENT, context.key, value, INVALID_UTF8

    def negative_amount(self, context: _BadContext) -> _BadRecord:
        tip = {
            **context.common(),
            "sender_id": "fan-1",
            "amount": -500,
            "currency": "USD",
            "fan_fee": 0,
            "processor_fee": 0,
            "charge_id": "ch-bad",
        }
        return topics.TIPS_RECEIVED, context.key, _compact(tip), SCHEMA_VIOLATION

    def coins_as_text(self, context: _BadContext) -> _BadRecord:
        gift = {**self.bad_gift(context), "coins": "5"}
        return topics.GIFTS_SENT, context.key, _compact(gift), SCHEMA_VIOLATION

    def live_without_live_id(self, context: _BadContext) -> _BadRecord:
        gift = self.bad_gift(context)
        del gift["live_id"]
        return topics.GIFTS_SENT, context.key, _compact(gift), SCHEMA_VIOLATION

    def unknown_currency(self, context: _BadContext) -> _BadRecord:
        reward = {**context.common(), "period": "2026-10", "amount": 100, "currency": "XXX"}
        return topics.FUND_REWARDED, context.key, _compact(reward), SCHEMA_VIOLATION

    def fee_above_amount(self, context: _BadContext) -> _BadRecord:
        deal = {
            **context.common(),
            "brand_id": "brand-1",
            "deal_id": "deal-bad",
            "amount": 1_000,
            "currency": "USD",
            "platform_fee": 1_000,
        }
        return topics.MARKETPLACE_PAID, context.key, _compact(deal), SCHEMA_VIOLATION

    def raw_account_number(self, context: _BadContext) -> _BadRecord:
        facts = self.profile_facts(context.rank, "eligible") | {"payout_account_ref": "4111111111"}
        profile = {**context.common(), **facts}
        return topics.CREATORS_UPDATED, context.key, _compact(profile), SCHEMA_VIOLATION

    def unknown_field(self, context: _BadContext) -> _BadRecord:
        gift = {**self.bad_gift(context), "tip": 1}
        return topics.GIFTS_SENT, context.key, _compact(gift), SCHEMA_VIOLATION

    def reversal_of_other_creator(self, context: _BadContext) -> _BadRecord | None:
        if not self.recent_gifts:
            return None
        gift_event_id, owner, _ = self.recent_gifts[self.rng.randrange(len(self.recent_gifts))]
        other = self.creator_id(owner % self.creator_count + 1)
        reversal = {
            "event_id": context.event_id,
            "occurred_at": context.occurred_at,
            "creator_id": other,
            "gift_event_id": gift_event_id,
            "reason": "fraud",
        }
        return topics.GIFTS_REVERSED, other, _compact(reversal), CREATOR_MISMATCH

    def payout_for_unknown_cashout(self, context: _BadContext) -> _BadRecord:
        report = {
            "event_id": context.event_id,
            "occurred_at": context.occurred_at,
            "cashout_id": f"{self.ns}-no-such-cashout-{self.serial}",
            "status": "paid",
        }
        return topics.PAYOUTS_UPDATED, context.key, _compact(report), UNKNOWN_CASHOUT

    # The cash-out phase.

    def cashout_phase(self, count: int) -> None:
        """`count` cash-out requests on the two days after the main phase, decided in stream
        order by the contract's rules against the balances the main phase left."""
        last_day = (STREAM_START + timedelta(milliseconds=self.now_ms())).date()
        days = [
            datetime(last_day.year, last_day.month, last_day.day, 9, tzinfo=UTC)
            + timedelta(days=offset)
            for offset in (1, 2)
        ]
        spent: dict[tuple[int, date], int] = {}
        self.candidates = [
            rank
            for rank, milli in self.diamonds.items()
            if milli >= 2_000 * MILLI_PER_DIAMOND and self.profile_kind.get(rank) == "eligible"
        ]
        names = [name for name, _ in CASHOUT_CATEGORIES]
        weights = [weight for _, weight in CASHOUT_CATEGORIES]
        rich: int | None = None
        for index in range(count):
            self.advance()
            category = (
                CASHOUT_CATEGORY_CYCLE[index]
                if index < len(CASHOUT_CATEGORY_CYCLE)
                else self.rng.choices(names, weights)[0]
            )
            day_start = days[0] if index < count * 0.6 else days[1]
            moment = day_start + timedelta(seconds=index)
            occurred_at = moment.isoformat().replace("+00:00", "Z")
            if category == "daily_limit":
                rich = rich if rich is not None else self.richest_eligible()
            request = self.cashout_request(category, rich)
            event: dict[str, Any] = {
                "event_id": self.next_id("c"),
                "occurred_at": occurred_at,
                "creator_id": self.creator_id(request[0]),
                "asset": request[1],
                "amount": request[2],
                "payout_currency": request[3],
            }
            if category == "bad":
                event["amount"] = 0
                self.bad(
                    topics.CASHOUTS_REQUESTED,
                    str(event["creator_id"]),
                    _compact(event),
                    SCHEMA_VIOLATION,
                )
                continue
            self.decide(request, moment.date(), spent)
            self.send(self.applied_event(topics.CASHOUTS_REQUESTED, event))

    def richest_eligible(self) -> int:
        best, best_milli = 1, -1
        for rank in range(1, min(self.creator_count, 50) + 1):
            milli = self.diamonds.get(rank, 0)
            if self.profile_kind.get(rank) == "eligible" and milli > best_milli:
                best, best_milli = rank, milli
        return best

    def rich_creator(self) -> int:
        """Mostly any eligible creator with at least 2,000 diamonds, sometimes a star."""
        if self.candidates and self.rng.random() < 0.8:
            return self.rng.choice(self.candidates)
        rank = self.zipf_rank()
        for _ in range(20):
            if self.diamonds.get(rank, 0) >= 2_000 * MILLI_PER_DIAMOND:
                return rank
            rank = self.zipf_rank()
        return rank

    def cashout_request(self, category: str, rich: int | None) -> tuple[int, str, int, str]:
        """(creator rank, asset, amount, payout currency) of one request of `category`."""
        rng = self.rng
        if category == "wallet":
            rank = self.zipf_rank()
            for _ in range(20):
                if self.wallets.get((rank, "USD"), 0) >= 1_000:
                    break
                rank = self.zipf_rank()
            balance = self.wallets.get((rank, "USD"), 0)
            if rng.random() < 0.2:  # more than the wallet holds
                return rank, "USD", balance + rng.randint(1, 5_000), "USD"
            return rank, "USD", rng.randint(1_000, max(1_000, min(balance, 60_000))), "USD"
        if category == "ineligible" and self.ineligible:
            return rng.choice(self.ineligible), "DIAMOND", rng.randint(2_000, 20_000), "USD"
        if category == "no_profile":
            rank = rng.choice(self.without_profile) if self.without_profile else self.zipf_rank()
            return rank, "DIAMOND", rng.randint(2_000, 20_000), "USD"
        if category == "wrong_currency":
            return self.rich_creator(), "EUR", rng.randint(1_000, 10_000), "USD"
        if category == "daily_limit" and rich is not None:
            return rich, "DIAMOND", rng.randint(110_000, 190_000), "USD"
        rank = self.rich_creator()
        diamonds = max(self.diamonds.get(rank, 0), 0) // MILLI_PER_DIAMOND
        if category == "minimum":
            return rank, "DIAMOND", rng.randint(1, 1_999), "USD"
        if category == "over_balance":
            return rank, "DIAMOND", max(2_000, diamonds + rng.randint(1, 10_000)), "USD"
        upper = max(2_000, min(diamonds // 2, 50_000))
        return rank, "DIAMOND", rng.randint(2_000, upper), "USD"

    def decide(
        self, request: tuple[int, str, int, str], day: date, spent: dict[tuple[int, date], int]
    ) -> None:
        """Apply the cash-out rules in the service's order; a held cash-out ends paid."""
        rank, asset, amount, payout_currency = request
        self.totals["cashouts"] += 1
        profile = self.profiles.get(rank)
        facts = None if profile is None else profile.facts
        rule = first_failed_rule(facts, day)
        if rule is None and (facts is None or facts.get("payout_account_ref") is None):
            rule = "payout_account"
        if rule is None and asset != "DIAMOND" and asset != payout_currency:
            rule = "payout_currency"
        if rule is None and payout_currency not in FX_CURRENCIES:
            rule = "fx_rate"
        if rule is None:
            held, micros, payout = cashout_value(asset, amount)
            if micros * 100 < CASHOUT_MINIMUM_USD_CENTS * USD_MICROS or payout == 0:
                rule = "minimum"
            elif spent.get((rank, day), 0) + micros > CASHOUT_DAILY_LIMIT_USD_CENTS * (
                USD_MICROS // 100
            ):
                rule = "daily_limit"
            else:
                balances = self.diamonds if asset == "DIAMOND" else None
                available = (
                    self.diamonds.get(rank, 0)
                    if balances is not None
                    else self.wallets.get((rank, asset), 0)
                )
                if available < held:
                    rule = "available_balance"
                else:
                    if asset == "DIAMOND":
                        self.diamonds[rank] = available - held
                        self.totals["cashouts_paid_milli_diamonds"] += held
                    else:
                        self.wallets[(rank, asset)] = available - held
                        self.totals[f"cashouts_paid_{asset.lower()}_minor"] += held
                    spent[(rank, day)] = spent.get((rank, day), 0) + micros
                    self.totals["cashouts_payout_usd_cents"] += payout
        if rule is None:
            self.cashouts["paid"] += 1
            self.applied[topics.PAYOUTS_UPDATED] += 1
        else:
            self.cashouts[f"rejected:{rule}"] += 1

    # The result.

    def expected_state(self) -> ExpectedState:
        balances: dict[str, dict[str, int]] = {}
        for rank, milli in self.diamonds.items():
            if milli:
                balances.setdefault(self.creator_id(rank), {})["DIAMOND"] = milli
        for (rank, currency), amount in self.wallets.items():
            if amount:
                balances.setdefault(self.creator_id(rank), {})[currency] = amount
        dead_letters: dict[str, dict[str, int]] = {}
        for (topic, reason), count in sorted(self.dead_letters.items()):
            dead_letters.setdefault(topic, {})[reason] = count
        return ExpectedState(
            format_version=FORMAT_VERSION,
            namespace=self.ns,
            seed=self.seed,
            records=self.writer.count,
            cashout_phase_from=self.cashout_phase_from,
            stream_start=STREAM_START.isoformat(),
            duration_ms=self.writer.last_offset_ms,
            assumptions=assumptions(),
            records_by_topic=dict(sorted(self.records_by_topic.items())),
            applied_by_topic=dict(sorted(self.applied.items())),
            duplicates_by_topic=dict(sorted(self.duplicates.items())),
            dead_letters=dead_letters,
            cashouts=dict(sorted(self.cashouts.items())),
            payout_reports=self.cashouts["paid"],
            balances=dict(sorted(balances.items())),
            totals=dict(sorted(self.totals.items())),
            shape={"creator_count": self.creator_count, **dataclasses.asdict(self.shape)},
        )


BAD_RECORD_MAKERS: dict[str, Callable[[_Generator, _BadContext], _BadRecord | None]] = {
    kind: getattr(_Generator, kind) for kind in BAD_KINDS
}


def generate(
    path: Path,
    *,
    events: int,
    seed: int,
    namespace: str | None = None,
    shape: StreamShape | None = None,
) -> ExpectedState:
    """Write `events` records to `path` (gzip JSON Lines) and the expected end state next to it.

    Deterministic: the same `events`, `seed`, `namespace` (default `s<seed>`, the prefix of every
    event and creator id) and `shape` give the same bytes. Ids carry the namespace so that a load
    test can find its own rows in a database that holds other data.
    """
    if not 1 <= events <= EVENTS_MAX:
        raise ValueError(f"events must be between 1 and {EVENTS_MAX}, got {events}")
    namespace = default_namespace(seed) if namespace is None else namespace
    _check_namespace(namespace)
    shape = shape or StreamShape()
    partial = path.with_name(path.name + ".partial")
    writer = _StreamWriter(partial)
    try:
        generator = _Generator(writer, events=events, seed=seed, namespace=namespace, shape=shape)
        generator.run()
    finally:
        writer.close()
    assert writer.count == events, (writer.count, events)
    os.replace(partial, path)
    expected = generator.expected_state()
    expected.write(expected_path(path))
    return expected


# Command line --------------------------------------------------------------------------------

DEFAULT_STREAM_PATH = Path("giftledger-stream.jsonl.gz")


def _share(value: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from error
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return number


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from error
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from error
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return number


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the stream's shape, shared by `generate` and `loadtest`."""
    defaults = StreamShape()
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--namespace",
        default=None,
        help="prefix of every event and creator id (default: s<seed>)",
    )
    parser.add_argument(
        "--events-per-s",
        type=_positive_float,
        default=defaults.events_per_s,
        metavar="RATE",
        help=f"mean recorded rate, for replay --speed (default {defaults.events_per_s:g})",
    )
    parser.add_argument(
        "--creators", type=_positive_int, default=None, metavar="N", help="creators (default N/40)"
    )
    for name in ("duplicate_rate", "out_of_order_rate", "bad_rate", "conflict_rate"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag,
            type=_share,
            default=getattr(defaults, name),
            metavar="SHARE",
            help=f"share of records (default {getattr(defaults, name):g})",
        )


def shape_from_arguments(args: argparse.Namespace) -> StreamShape:
    return StreamShape(
        events_per_s=args.events_per_s,
        creator_count=args.creators,
        duplicate_rate=args.duplicate_rate,
        out_of_order_rate=args.out_of_order_rate,
        bad_rate=args.bad_rate,
        conflict_rate=args.conflict_rate,
    )


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        nargs="?",
        default=DEFAULT_STREAM_PATH,
        metavar="FILE",
        help=f"where to write the stream (default {DEFAULT_STREAM_PATH}); "
        f"the expected end state goes to FILE{EXPECTED_SUFFIX}",
    )
    parser.add_argument(
        "--events",
        type=_positive_int,
        default=100_000,
        metavar="N",
        help="records (default 100000)",
    )
    add_shape_arguments(parser)


def describe(expected: ExpectedState, out: TextIO) -> None:
    out.write(
        f"{expected.records} records over {expected.duration_ms / 1000:.1f} s recorded, "
        f"namespace {expected.namespace}, cash-outs from record {expected.cashout_phase_from}\n"
    )
    for topic, count in expected.records_by_topic.items():
        applied = expected.applied_by_topic.get(topic, 0)
        duplicates = expected.duplicates_by_topic.get(topic, 0)
        letters = sum(expected.dead_letters.get(topic, {}).values())
        bank = ""
        if topic == topics.PAYOUTS_UPDATED:
            applied -= expected.payout_reports
            bank = f" (and {expected.payout_reports} reports from the bank, applied)"
        out.write(
            f"  {topic:<20} {count:>10} records: {applied} applied, {duplicates} duplicates, "
            f"{letters} dead letters{bank}\n"
        )
    outcomes = ", ".join(f"{name} {count}" for name, count in expected.cashouts.items())
    out.write(f"  cash-outs: {outcomes or 'none'}\n")


def generate_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`giftledger generate [FILE] --events N --seed S ...`; returns the exit code."""
    try:
        shape = shape_from_arguments(args)
    except ValueError as error:
        sys.stderr.write(f"giftledger: error: {error}\n")
        return 2
    started = time.monotonic()
    try:
        expected = generate(
            args.path, events=args.events, seed=args.seed, namespace=args.namespace, shape=shape
        )
    except ValueError as error:
        sys.stderr.write(f"giftledger: error: {error}\n")
        return 2
    elapsed_s = time.monotonic() - started
    rate = expected.records / max(elapsed_s, 1e-9)
    out.write(f"{args.path} ({elapsed_s:.1f} s, {rate:,.0f} records/s)\n")
    describe(expected, out)
    out.write(f"expected end state: {expected_path(args.path)}\n")
    return 0
