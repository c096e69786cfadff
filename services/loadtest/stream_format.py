"""The load-test stream's file format and its expected end state, as `giftledger generate` writes
them (`services.loadtest.generator`) and `giftledger replay` and `giftledger loadtest` read them.

The stream is a gzip-compressed JSON Lines file, one Kafka record per line:

    {"topic": "gifts.sent", "key": "<creator_id>", "offset_ms": 1234, "value": "<event JSON>"}

`topic` is the contract's name (the replayer puts the prefix in front), `key` the creator id,
`offset_ms` the record's time since the start of the stream (never decreasing from one line to
the next), `value` the record's exact bytes as a UTF-8 string, or as base64 with
`"encoding": "base64"` for the records whose bytes are deliberately not UTF-8.

`giftledger record` (`services.loadtest.record`) writes the same lines with optional fields a
generated stream leaves out (a reader takes their absence as "none"):

    "key_encoding": "base64"       the key's bytes, when they are not UTF-8
    "headers": [["name", "<base64 of the value>"], ...]   (null for a null value)
    "partition": 3, "source_offset": 1207, "timestamp_ms": 1793577600123
                                   where the record was read, and its original Kafka timestamp

The expected end state goes next to it, as `<path>.expected.json` (`ExpectedState`).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any

from services.ingestion.records import Header

FORMAT_VERSION = 1
STREAM_START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
EXPECTED_SUFFIX = ".expected.json"

CREATOR_COUNT_MAX = 1_000_000
CREATOR_COUNT_MIN = 20
WRITE_CHUNK_LINES = 2_000
GZIP_LEVEL = 6

# The reasons the consumers give when they dead-letter a record (`ExpectedState.dead_letters`).
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
    scenario: str = "steady"  # a named scenario on top of the mix (`services.loadtest.scenarios`)

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


def file_problem(error: OSError | EOFError) -> str:
    """What went wrong with a stream file, in one line: a gzip stream that is not one or was cut
    short, or the system's reason (with the file it names)."""
    if isinstance(error, EOFError):
        return "the gzip stream ends early: the file was cut short"
    if isinstance(error, gzip.BadGzipFile):
        return f"not a gzip stream file ({error})"
    reason = error.strerror or str(error)
    return f"{reason}: {error.filename}" if error.filename else reason


def expected_path(path: Path) -> Path:
    """Where the expected end state of the stream at `path` is written."""
    return path.with_name(path.name + EXPECTED_SUFFIX)


def default_namespace(seed: int) -> str:
    return f"s{seed}"


def check_namespace(namespace: str) -> None:
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
    cash-out held (they are not in the stream; the bank sends them). `scenario` names the
    stream's scenario and where its shape lies in the stream (`services.loadtest.scenarios`).
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
    scenario: dict[str, Any] = field(default_factory=dict)

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
        missing = sorted(names - set(document) - {"shape", "scenario"})
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


# Writing -------------------------------------------------------------------------------------


class StreamWriter:
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


@dataclass(frozen=True, slots=True)
class RecordedLine:
    """One record read from Kafka, as `giftledger record` writes it."""

    topic: str  # the contract's name, without prefix
    key: bytes | None
    offset_ms: int
    value: bytes
    headers: tuple[Header, ...]
    partition: int
    source_offset: int
    timestamp_ms: int


def _text_or_base64(data: bytes) -> tuple[str, bool]:
    """(the text, False) when `data` is UTF-8, else (its base64, True)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def recorded_line(record: RecordedLine) -> str:
    """The JSON line of a recorded record (no newline); keys in a fixed order."""
    document: dict[str, Any] = {"topic": record.topic, "key": None}
    if record.key is not None:
        document["key"], key_in_base64 = _text_or_base64(record.key)
        if key_in_base64:
            document["key_encoding"] = "base64"
    document["offset_ms"] = record.offset_ms
    document["value"], value_in_base64 = _text_or_base64(record.value)
    if value_in_base64:
        document["encoding"] = "base64"
    if record.headers:
        document["headers"] = [
            [name, None if value is None else base64.b64encode(value).decode("ascii")]
            for name, value in record.headers
        ]
    document["partition"] = record.partition
    document["source_offset"] = record.source_offset
    document["timestamp_ms"] = record.timestamp_ms
    return json.dumps(document, separators=(",", ":"))


def compact(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def gift_json(event: dict[str, Any]) -> str:
    """`compact(event)` for a gift the generator made, without the general encoder (the hot
    path: every id and name here is visible ASCII without quotes or backslashes)."""
    place = "live_id" if event["surface"] == "live" else "video_id"
    count = f',"count":{event["count"]}' if "count" in event else ""
    return (
        f'{{"event_id":"{event["event_id"]}","occurred_at":"{event["occurred_at"]}",'
        f'"sender_id":"{event["sender_id"]}","creator_id":"{event["creator_id"]}",'
        f'"surface":"{event["surface"]}","{place}":"{event[place]}",'
        f'"gift_id":"{event["gift_id"]}","coins":{event["coins"]}{count}}}'
    )
