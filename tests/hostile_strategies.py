"""Hostile input for the ingestor: valid events of every consumed topic, mutations that break
them field by field, raw bytes that are not events at all, and the known bugs that the property
tests steer around until they are fixed.

A bug found by this suite gets a name in `KNOWN_BUGS` and a strict xfail test in
`tests/test_hostile_input.py` pinning the exact input. While a bug is listed, `triggers_known_bug`
tells the property tests to skip the inputs that hit it; once it is fixed, remove the name here
and the xfail marker there. The nine bugs found so far are fixed; the names stay as labels of
the tests that pin them.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from schemas import topics
from schemas.assets import CURRENCIES, DIAMOND
from schemas.events import (
    AMOUNT_MAX,
    COINS_PER_GIFT_MAX,
    CONSUMED_EVENT_MODELS,
    GIFT_COUNT_MAX,
    ID_LENGTH_MAX,
    TALLY_MAX,
    CashoutRequested,
)
from services.ingestion.records import DeadLetter, InputRecord, parse_record

Headers = tuple[tuple[str, bytes], ...]

# The bugs found by this suite, still open (see the module docstring).
DEAD_LETTER_EVENT_ID_UNCHECKED = "dead_letter_event_id_unchecked"
DEAD_LETTER_DETAIL_NUL = "dead_letter_detail_nul"
OCCURRED_AT_OUT_OF_RANGE = "occurred_at_out_of_range"
PARKED_HEADER_KEY_NUL = "parked_header_key_nul"
DIAMOND_CASHOUT_OVER_10_9 = "diamond_cashout_over_10_9"
DUPLICATE_KEY_CHECK_QUADRATIC = "duplicate_key_check_quadratic"
PARKED_EVENT_ID_REUSE = "parked_event_id_reuse"
IN_BATCH_REPEAT_BY_FIRST_COPY = "in_batch_repeat_by_first_copy"
CURRENCY_NOT_IN_ASSETS_TABLE = "currency_not_in_assets_table"
KNOWN_BUGS: frozenset[str] = frozenset()
# Currencies of schemas.assets that migration 0001 did not put in the `assets` table.
UNSEEDED_CURRENCIES = frozenset({"CNY", "ISK", "PEN", "PKR"})

# An index entry of PostgreSQL's btree holds at most ~2,700 bytes; stay well below it.
INDEXABLE_TEXT_BYTES_MAX = 2_000
MILLI_PER_DIAMOND = 1_000
# The largest DIAMOND cash-out the schema accepts (whole diamonds).
DIAMOND_CASHOUT_MAX = AMOUNT_MAX // MILLI_PER_DIAMOND


def _storable(value: str) -> bool:
    """Whether PostgreSQL can store `value` in a text column: UTF-8, no NUL."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def triggers_known_bug(topic: str, value: bytes | None, headers: Headers = ()) -> str | None:
    """The open bug this record would hit, if any: decided by the ingestor's own parser."""
    outcome = parse_record(topic, InputRecord(topic, 0, 0, None, value, headers))
    if isinstance(outcome, DeadLetter):
        event_id = outcome.event_id
        if DEAD_LETTER_EVENT_ID_UNCHECKED in KNOWN_BUGS and event_id is not None:
            too_long = len(event_id.encode("utf-8", "surrogatepass")) > INDEXABLE_TEXT_BYTES_MAX
            if too_long or not _storable(event_id):
                return DEAD_LETTER_EVENT_ID_UNCHECKED
        if DEAD_LETTER_DETAIL_NUL in KNOWN_BUGS and not _storable(outcome.detail):
            return DEAD_LETTER_DETAIL_NUL
        return None
    event = outcome.event
    if OCCURRED_AT_OUT_OF_RANGE in KNOWN_BUGS:
        try:
            event.occurred_at.astimezone(UTC)
        except OverflowError:
            return OCCURRED_AT_OUT_OF_RANGE
    if (
        DIAMOND_CASHOUT_OVER_10_9 in KNOWN_BUGS
        and isinstance(event, CashoutRequested)
        and event.asset == DIAMOND
        and event.amount * MILLI_PER_DIAMOND > AMOUNT_MAX
    ):
        return DIAMOND_CASHOUT_OVER_10_9
    if CURRENCY_NOT_IN_ASSETS_TABLE in KNOWN_BUGS:
        named = {getattr(event, name, None) for name in ("currency", "asset", "payout_currency")}
        if named & UNSEEDED_CURRENCIES:
            return CURRENCY_NOT_IN_ASSETS_TABLE
    if (
        PARKED_HEADER_KEY_NUL in KNOWN_BUGS
        and topic == topics.GIFTS_REVERSED
        and any("\x00" in key for key, _ in headers)
    ):
        return PARKED_HEADER_KEY_NUL
    return None


# --- valid events ------------------------------------------------------------------------------

VISIBLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))
visible_tail = st.text(alphabet=VISIBLE_ASCII, max_size=24)


@functools.cache
def fresh_id(prefix: str) -> st.SearchStrategy[str]:
    """A valid id no other example uses: a uuid, then odd visible characters (quotes, `\\`,
    `%`, `_`, `:`) that must survive JSON, SQL and account names unchanged."""
    return st.builds(
        lambda tail: f"{prefix}-{uuid.uuid4().hex}-{tail}"[:ID_LENGTH_MAX], visible_tail
    )


def creator_ids() -> st.SearchStrategy[str]:
    return fresh_id("c")


OFFSETS = ("Z", "+00:00", "-00:00", "+05:30", "-08:00", "+14:00", "-12:00", "+23:59", "-23:59")
FRACTIONS = ("", ".5", ".511", ".123456")


def _stamp(moment: datetime, offset: str, fraction: str) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + offset


EARLIEST = datetime(2001, 1, 1)
LATEST = datetime(2099, 12, 31)


@functools.cache
def timestamps(start: datetime = EARLIEST, end: datetime = LATEST) -> st.SearchStrategy[str]:
    """RFC 3339 timestamps with a timezone, in the many spellings the contract allows."""
    return st.builds(
        _stamp,
        st.datetimes(min_value=start, max_value=end),
        st.sampled_from(OFFSETS),
        st.sampled_from(FRACTIONS),
    )


def now_stamp() -> str:
    return datetime.now(UTC).isoformat()


amounts = st.integers(1, AMOUNT_MAX)
fees = st.integers(0, AMOUNT_MAX)
tallies = st.integers(0, TALLY_MAX)
# While CURRENCY_NOT_IN_ASSETS_TABLE is open, a valid event in these currencies crashes.
USABLE_CURRENCIES = sorted(
    CURRENCIES - UNSEEDED_CURRENCIES if CURRENCY_NOT_IN_ASSETS_TABLE in KNOWN_BUGS else CURRENCIES
)
currencies = st.sampled_from(USABLE_CURRENCIES)
failure_codes = st.text(alphabet=VISIBLE_ASCII, min_size=1, max_size=64)


@st.composite
def valid_event(
    draw: st.DrawFn,
    topic: str,
    creator_id: str,
    *,
    event_id: str | None = None,
    gift_event_id: str | None = None,
    cashout_id: str | None = None,
) -> dict[str, Any]:
    """A valid event of `topic` about `creator_id`, every field drawn within the contract."""
    event: dict[str, Any] = {
        "event_id": event_id or draw(fresh_id("e")),
        "occurred_at": draw(timestamps()),
    }
    if topic == topics.GIFTS_SENT:
        surface = draw(st.sampled_from(["video", "live"]))
        event |= {
            "sender_id": draw(fresh_id("fan")),
            "creator_id": creator_id,
            "surface": surface,
            f"{surface}_id": draw(fresh_id(surface)),
            "gift_id": draw(fresh_id("gift")),
            "coins": draw(st.integers(1, COINS_PER_GIFT_MAX)),
        }
        if draw(st.booleans()):
            event["count"] = draw(st.integers(1, GIFT_COUNT_MAX))
    elif topic == topics.GIFTS_REVERSED:
        event |= {
            "creator_id": creator_id,
            "gift_event_id": gift_event_id or draw(fresh_id("gift-evt")),
            "reason": draw(st.sampled_from(["refund", "chargeback", "fraud", "policy"])),
        }
    elif topic == topics.TIPS_RECEIVED:
        event |= {
            "sender_id": draw(fresh_id("fan")),
            "creator_id": creator_id,
            "amount": draw(amounts),
            "currency": draw(currencies),
            "fan_fee": draw(fees),
            "processor_fee": draw(fees),
            "charge_id": draw(fresh_id("ch")),
        }
    elif topic == topics.FUND_REWARDED:
        year, month = draw(st.integers(0, 9999)), draw(st.integers(1, 12))
        event |= {
            "creator_id": creator_id,
            "period": f"{year:04d}-{month:02d}",
            "amount": draw(amounts),
            "currency": draw(currencies),
        }
    elif topic == topics.MARKETPLACE_PAID:
        amount = draw(st.integers(1, AMOUNT_MAX))
        event |= {
            "creator_id": creator_id,
            "brand_id": draw(fresh_id("brand")),
            "deal_id": draw(fresh_id("deal")),
            "amount": amount,
            "currency": draw(currencies),
            "platform_fee": draw(st.integers(0, amount - 1)),
        }
    elif topic == topics.CREATORS_UPDATED:
        occurred = draw(
            st.datetimes(min_value=datetime(2001, 1, 2), max_value=datetime(2099, 1, 1))
        )
        event |= {
            "occurred_at": _stamp(occurred, "Z", ""),
            "creator_id": creator_id,
            "birth_date": draw(st.dates(date(1900, 1, 1), occurred.date())).isoformat(),
            "country": draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)),
            "followers": draw(tallies),
            "video_views_30d": draw(tallies),
            "posts_30d": draw(tallies),
            "in_good_standing": draw(st.booleans()),
            "identity_verified": draw(st.booleans()),
        }
        if draw(st.booleans()):
            event["payout_account_ref"] = draw(fresh_id("pa"))
    elif topic == topics.CASHOUTS_REQUESTED:
        asset = draw(st.sampled_from([DIAMOND, DIAMOND, *USABLE_CURRENCIES]))
        top = DIAMOND_CASHOUT_MAX if asset == DIAMOND else AMOUNT_MAX
        event |= {
            "creator_id": creator_id,
            "asset": asset,
            "amount": draw(st.integers(1, top)),
            "payout_currency": draw(currencies),
        }
    elif topic == topics.PAYOUTS_UPDATED:
        status = draw(st.sampled_from(["paid", "failed", "returned"]))
        event |= {"cashout_id": cashout_id or draw(fresh_id("cashout")), "status": status}
        if status != "paid":
            event["failure_code"] = draw(failure_codes)
    else:
        raise AssertionError(f"no valid events for {topic}")
    return event


def field_names(topic: str) -> list[str]:
    return sorted(CONSUMED_EVENT_MODELS[topic].model_fields)


# --- mutations ---------------------------------------------------------------------------------

HOSTILE_SCALARS: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    AMOUNT_MAX,
    AMOUNT_MAX + 1,
    10**30,
    -(10**30),
    0.0,
    -0.0,
    0.5,
    5.0,
    1e308,
    float("nan"),  # json.dumps writes the bare tokens NaN, Infinity and -Infinity
    float("inf"),
    float("-inf"),
    "",
    " ",
    "0",
    "5",
    "-1",
    "true",
    "null",
    "NaN",
    "x" * 128,
    "x" * 129,
    "x" * 10_000,
    "\U0001f600" * 40,
    "\u202eDSU\u202c",
    "\u05e9\u05dc\u05d5\u05dd",
    "a\u0000b",
    "\u0000",
    "\ud800",
    "a\udfffb",
    "e\u0301",
    "\uff35\uff33\uff24",
    "usd",
    "USD ",
    "USD",
    "DIAMOND",
    "COIN",
    "video",
    "live",
    "paid",
    "refund",
    "2026-13",
    "1999-02-29",
    "1899-12-31",
    "123456",
    "'; DROP TABLE transfers; --",
    "%_\\",
    [],
    {},
    [1],
    ["USD"],
    {"event_id": "x"},
    [[[[[]]]]],
)

HOSTILE_TIMESTAMPS: tuple[Any, ...] = (
    "2026-11-03",
    "2026-11-03T18:25:43",
    "2026-11-03T18:25:43Z",
    "2026-11-03t18:25:43z",
    "2026-11-03 18:25:43Z",
    "2026-02-30T00:00:00Z",
    "2026-11-03T24:00:00Z",
    "2026-12-31T23:59:60Z",
    "2026-11-03T18:25:43+24:00",
    "2026-11-03T18:25:43+23:59",
    "2026-11-03T18:25:43-23:59",
    "2026-11-03T18:25:43+0100",
    "2026-11-03T18:25:43,5Z",
    "2026-11-03T18:25:43.1234567890123Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "0000-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z",
    "-2026-11-03T00:00:00Z",
    "1700000000",
    1700000000,
    1700000000.5,
    "now",
    "2026-W45-2T00:00:00Z",
    "2026-307T00:00:00Z",
    "P1D",
)

odd_characters = st.characters(categories=["Cs", "Cc", "Cf", "Zs", "So", "Mn"])
hostile_values: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(HOSTILE_SCALARS),
    st.sampled_from(HOSTILE_TIMESTAMPS),
    st.integers(),
    st.floats(),
    st.text(max_size=200),
    st.text(alphabet=odd_characters, min_size=1, max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
hostile_keys = st.one_of(
    st.sampled_from(["", "Event_Id", "EVENT_ID", "event_id ", "amount\u0000", "x" * 10_000]),
    st.text(max_size=30),
    st.text(alphabet=odd_characters, min_size=1, max_size=5),
)


@dataclass(frozen=True, slots=True)
class Mutation:
    """`set` a field to a value, `drop` it, add an `extra` field, or `rename` it."""

    kind: str
    field: str
    value: Any = None


@functools.cache
def mutations(topic: str) -> st.SearchStrategy[Mutation]:
    names = st.sampled_from(field_names(topic))
    return st.one_of(
        st.builds(Mutation, st.just("set"), names, hostile_values),
        st.builds(Mutation, st.just("drop"), names),
        st.builds(Mutation, st.just("extra"), hostile_keys, hostile_values),
        st.builds(Mutation, st.just("rename"), names, hostile_keys),
    )


def mutate(event: dict[str, Any], changes: list[Mutation]) -> dict[str, Any]:
    mutated = dict(event)
    for change in changes:
        if change.kind == "set":
            mutated[change.field] = change.value
        elif change.kind == "drop":
            mutated.pop(change.field, None)
        elif change.kind == "extra":
            mutated.setdefault(change.field, change.value)
        elif change.field in mutated and change.value not in mutated:
            mutated[str(change.value)] = mutated.pop(change.field)
    return mutated


ENCODINGS = ("ascii", "utf8", "pretty")


def encode(payload: Any, style: str = "ascii") -> bytes:
    """JSON bytes; `utf8` writes lone surrogates as their (invalid) UTF-8 bytes."""
    if style == "utf8":
        return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if style == "pretty":
        return json.dumps(payload, indent=2, sort_keys=True).encode()
    return json.dumps(payload).encode()


hostile_headers: st.SearchStrategy[Headers] = st.lists(
    st.tuples(st.text(max_size=20), st.binary(max_size=40)), max_size=3
).map(tuple)


@dataclass(frozen=True, slots=True)
class RawRecord:
    value: bytes | None
    headers: Headers = ()
    key: bytes | None = None


@st.composite
def mutated_record(draw: st.DrawFn, topic: str, creator_id: str) -> RawRecord:
    """A valid event of its own (its own event_id) with one to three mutations, encoded."""
    event = draw(valid_event(topic, creator_id))
    changed = mutate(event, draw(st.lists(mutations(topic), min_size=1, max_size=3)))
    value = encode(changed, draw(st.sampled_from(ENCODINGS)))
    headers = draw(hostile_headers)
    key = draw(st.one_of(st.none(), st.just(creator_id.encode()), st.binary(max_size=20)))
    return RawRecord(value, headers, key)


def hostile_record(topic: str, creator_id: str) -> st.SearchStrategy[RawRecord]:
    return mutated_record(topic, creator_id).filter(
        lambda raw: triggers_known_bug(topic, raw.value, raw.headers) is None
    )


# --- raw bytes that are not events -------------------------------------------------------------

INVALID_UTF8 = (b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80")


def _nest(depth: int, kind: str, closed: bool) -> bytes:
    opening, closing = (b"[", b"]") if kind == "array" else (b'{"a":', b"}")
    middle = b"1" if kind == "object" else b""
    return opening * depth + middle + (closing * depth if closed else b"")


@st.composite
def garbage(draw: st.DrawFn, valid: bytes) -> bytes | None:
    """Bytes that are not a valid event, built around the valid event `valid`: every one of
    them must be dead-lettered as empty, invalid UTF-8, malformed JSON or a schema violation."""
    kind = draw(
        st.sampled_from(
            [
                "tombstone",
                "constant",
                "truncated",
                "invalid_utf8",
                "deep",
                "deep_in_field",
                "duplicate_key",
                "wrapped",
                "trailing",
                "huge_integer",
                "bare_tokens",
                "random",
            ]
        )
    )
    if kind == "tombstone":
        return None
    if kind == "constant":
        return draw(
            st.sampled_from(
                [
                    b"",
                    b" \n\t",
                    b"null",
                    b"true",
                    b"0",
                    b"-1",
                    b"1e999",
                    b'"event"',
                    b"[]",
                    b"{}",
                    b"\x00",
                    b"NaN",
                    b"{'event_id': 'x'}",
                    b'{"event_id": "x",}',
                    b"/* c */ {}",
                ]
            )
        )
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "invalid_utf8":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + draw(st.sampled_from(INVALID_UTF8)) + valid[at:]
    if kind == "deep":
        depth = draw(st.sampled_from([17, 18, 100, 1_000, 100_000]))
        return _nest(depth, draw(st.sampled_from(["array", "object"])), draw(st.booleans()))
    if kind == "deep_in_field":
        depth = draw(st.sampled_from([16, 17, 100, 5_000]))
        nested = _nest(depth, draw(st.sampled_from(["array", "object"])), closed=True)
        return valid[:-1] + b', "nested": ' + nested + b"}"
    if kind == "duplicate_key":
        event = json.loads(valid)
        name = draw(st.sampled_from(sorted(event)))
        again = draw(st.one_of(st.just(event[name]), hostile_values))
        return valid[:-1] + b", " + json.dumps(name).encode() + b": " + encode(again) + b"}"
    if kind == "wrapped":
        text_value = valid.decode()
        return draw(
            st.sampled_from(
                [b"[" + valid + b"]", json.dumps(text_value).encode(), b'{"event": ' + valid + b"}"]
            )
        )
    if kind == "trailing":
        prefix = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
        suffix = draw(st.sampled_from([b" x", b"}", b"\x00", b"{}", b"\n{}", b",", b""]))
        if not prefix and not suffix:
            suffix = b"]"
        return prefix + valid + suffix
    if kind == "huge_integer":
        digits = draw(st.sampled_from([4_301, 10_000, 100_000]))
        return valid[:-1] + b', "big": ' + b"7" * digits + b"}"
    if kind == "bare_tokens":
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"undefined", b"01"]))
        return b'{"event_id": "e", "amount": ' + token + b"}"
    return draw(st.binary(min_size=1, max_size=300).filter(lambda raw: raw.strip() != b""))


# --- helpers for the tests ---------------------------------------------------------------------


def utc_stamp(days_ago: int = 0) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()


def with_offset(moment: datetime, hours: int, minutes: int = 0) -> str:
    return moment.replace(tzinfo=timezone(timedelta(hours=hours, minutes=minutes))).isoformat()
