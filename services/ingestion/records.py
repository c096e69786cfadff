"""A consumed record, what became of it, and parsing: bytes in, a validated event or a dead
letter naming why out. No I/O."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

import jiter
from pydantic import TypeAdapter, ValidationError

from schemas.events import CONSUMED_EVENT_MODELS, Event

JSON_DEPTH_MAX = 16
EVENT_ID_PATTERN = re.compile(r"[!-~]{1,128}")
ERROR_DETAIL_LENGTH_MAX = 1_000


# A Kafka record header: a name and a value of any bytes, or null (which is not empty).
Header = tuple[str, bytes | None]


class InputRecord(NamedTuple):
    """One consumed Kafka record, independent of the client library. A named tuple: built for
    every record, at half a frozen dataclass's cost."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


def kafka_headers(headers: Iterable[tuple[str, Any]] | None) -> tuple[Header, ...]:
    """A client's record headers as they came: each value as bytes, a null one as None."""
    return tuple((name, None if value is None else bytes(value)) for name, value in headers or ())


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: InputRecord
    error: str
    detail: str
    event_id: str | None = None


@dataclass
class BatchReport:
    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    still_waiting: set[str] = field(default_factory=set)
    # Those of `dead_letters` whose rows in `dead_letters` this batch wrote; the others' records
    # were dead-lettered before (they came again: a rewind, a crash, a rebalance) and keep the
    # rows they have.
    dead_letters_recorded: list[DeadLetter] = field(default_factory=list)

    @property
    def dead_letters_again(self) -> int:
        """Dead letters given again to records that came again, written before."""
        return len(self.dead_letters) - len(self.dead_letters_recorded)

    def absorb(self, other: BatchReport) -> None:
        """Add what a unit of work reported (its counts and dead letters) to this report."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.parked += other.parked
        self.dead_letters += other.dead_letters
        self.dead_letters_recorded += other.dead_letters_recorded


@dataclass(slots=True)
class ParsedEvent:
    record: InputRecord
    event: Event
    payload_sha256: bytes
    from_parking: bool = False
    parked_until: datetime | None = None


def _depth(value: Any, limit: int) -> int:
    """How deep containers nest (a scalar 0, a flat object 1, an empty one 0), level by level;
    once past `limit`, the first level found past it."""
    depth, frontier = 0, [value]
    while frontier:
        depth += 1
        # This frontier is not empty, so the value nests at least `depth - 1` levels (an empty
        # container adds none): past the limit once that is.
        if depth - 1 > limit:
            return depth - 1
        children: list[Any] = []
        for item in frontier:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        frontier = children
    return depth - 1


def _short(text_value: str) -> str:
    """A detail fit for a header and a text column: bounded, valid UTF-8, no NUL."""
    cleaned = text_value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\0")
    return cleaned[:ERROR_DETAIL_LENGTH_MAX]


def _valid_event_id(value: object) -> str | None:
    """The payload's event_id, for a dead letter, only when it is a well-formed id."""
    if isinstance(value, str) and EVENT_ID_PATTERN.fullmatch(value):
        return value
    return None


def parse_record(topic: str, record: InputRecord) -> ParsedEvent | DeadLetter:
    """Decode and validate one record; anything wrong becomes a dead letter naming why."""
    model = CONSUMED_EVENT_MODELS[topic]
    if model in _FLAT_MODELS and _is_plain(record.value):
        parsed = _parse_plain(model, [record])
        if parsed is not None:
            return parsed[0]
    return _parse_checked(model, record)


def parse_records(topic: str, records: Sequence[InputRecord]) -> list[ParsedEvent | DeadLetter]:
    """What `parse_record` makes of each record, in order, for a whole batch: the plain records
    (`_is_plain`) are validated in one call, the others (and all of them, when that call fails or
    its results do not line up with the records) one by one."""
    model = CONSUMED_EVENT_MODELS[topic]
    if model not in _FLAT_MODELS:
        return [_parse_checked(model, record) for record in records]
    outcomes: list[ParsedEvent | DeadLetter | None] = [None] * len(records)
    plain_indexes: list[int] = []
    for index, record in enumerate(records):
        if _is_plain(record.value):
            plain_indexes.append(index)
        else:
            outcomes[index] = parse_record(topic, record)
    if plain_indexes:
        parsed = _parse_plain(model, [records[index] for index in plain_indexes])
        for position, index in enumerate(plain_indexes):
            outcomes[index] = (
                parse_record(topic, records[index]) if parsed is None else parsed[position]
            )
    return [outcome for outcome in outcomes if outcome is not None]


def _parse_checked(model: type[Event], record: InputRecord) -> ParsedEvent | DeadLetter:
    """Every check in its order, each failure with its own reason: the path of any record."""
    if record.value is None:
        return DeadLetter(record, "empty_value", "the record has no value")
    try:
        record.value.decode("utf-8")
    except UnicodeDecodeError as error:
        return DeadLetter(record, "invalid_utf8", _short(str(error)))
    try:
        # The parser pydantic uses, so both read the same JSON; a key given twice is refused,
        # since parsers differ on which of its values counts.
        decoded = jiter.from_json(record.value, catch_duplicate_keys=True, cache_mode="keys")
    except (ValueError, RecursionError) as error:
        return DeadLetter(record, "malformed_json", _short(str(error)))
    # One object and no array (at most one "{" and no "[" in the text) is one level deep: the
    # walk is for the records that may nest.
    may_nest = record.value.count(b"{") > 1 or b"[" in record.value
    if may_nest and _depth(decoded, JSON_DEPTH_MAX) > JSON_DEPTH_MAX:
        return DeadLetter(record, "malformed_json", f"nested deeper than {JSON_DEPTH_MAX}")
    try:
        event = model.__pydantic_validator__.validate_json(record.value)
    except ValidationError as error:
        detail = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False)
        )
        event_id = decoded.get("event_id") if isinstance(decoded, dict) else None
        return DeadLetter(record, "schema_violation", _short(detail), _valid_event_id(event_id))
    assert isinstance(event, Event)
    return ParsedEvent(record, event, payload_sha256(event))


def value_sha256(value: bytes | None) -> bytes | None:
    """The hash a dead letter keeps of its record's value (None for a record without one)."""
    return None if value is None else hashlib.sha256(value).digest()


def is_dead_lettered_record(
    topic: str, record: InputRecord, stored_sha256: bytes | None, stored_event_id: str | None
) -> bool:
    """Whether `record` is the one a dead letter was made of: by the hash of the value it kept
    (`value_sha256`); a dead letter recorded without one, by its event_id."""
    if stored_sha256 is not None:
        return bytes(stored_sha256) == value_sha256(record.value)
    if stored_event_id is None:
        return False
    outcome = parse_record(topic, record)
    found = outcome.event_id if isinstance(outcome, DeadLetter) else outcome.event.event_id
    return found == stored_event_id


def payload_sha256(event: Event) -> bytes:
    """The hash an applied event is recorded with: of its canonical form (`model_dump_json`),
    so the same event written with other spacing, key order or escapes has the same hash."""
    canonical: bytes = type(event).__pydantic_serializer__.to_json(event)
    return hashlib.sha256(canonical).digest()


# The fast path. A record is plain when it is ASCII and holds no backslash: then every `"` in it
# opens or closes a JSON string, a key or a string value. Of a model whose fields are all
# scalars (strings, integers, booleans, null) and whose defaults are not strings, a valid
# record without a repeated key holds exactly 2 quotes per key it gives and 2 per string value;
# the canonical form holds the same but for 2 per field the record leaves out. So a plain
# record that validates and has that many quotes repeats no key (a repeated key adds its own
# quotes), nests nothing (only a repeated key could hold a nested value), and the checks of
# `_parse_checked` before the validation (UTF-8, duplicate keys, depth) would all pass.
#
# Plain records are validated together, as one JSON array of them. That array's elements are
# the records, one each, when every record has the quotes of its element: the quotes before
# each joining comma are then those before the element boundary of the same rank, so between
# the two there is no quote, and no valid array has a comma there but at an element boundary
# (any other comma would be followed by a key, or, inside a string, closed by a quote).


def _is_plain(value: bytes | None) -> bool:
    return value is not None and value.isascii() and b"\\" not in value


def _scalar_schema(schema: dict[str, Any]) -> bool:
    if "anyOf" in schema:
        return all(_scalar_schema(option) for option in schema["anyOf"])
    return schema.get("type") in ("string", "integer", "boolean", "null")


def _is_flat(model: type[Event]) -> bool:
    """Every field a scalar, no default that is written as a string, nothing computed."""
    properties = model.model_json_schema()["properties"]
    return (
        not model.model_computed_fields
        and all(_scalar_schema(properties[name]) for name in model.model_fields)
        and not any(isinstance(spec.default, str | date) for spec in model.model_fields.values())
    )


_FLAT_MODELS = frozenset(model for model in CONSUMED_EVENT_MODELS.values() if _is_flat(model))
_LIST_ADAPTERS: dict[type[Event], TypeAdapter[list[Any]]] = {
    model: TypeAdapter(list[model])  # type: ignore[valid-type]
    for model in _FLAT_MODELS
}


def _parse_plain(model: type[Event], records: Sequence[InputRecord]) -> list[ParsedEvent] | None:
    """The plain records of a flat model validated in one call, each with its payload hash;
    None when the call fails or a record's quotes are not its event's (see above): then each
    record goes its own way."""
    values = [record.value or b"" for record in records]
    try:
        if len(values) == 1:
            events = [model.__pydantic_validator__.validate_json(values[0])]
        else:
            events = _LIST_ADAPTERS[model].validate_json(b"[" + b",".join(values) + b"]")
    except (ValueError, RecursionError):  # ValidationError, or a parse that gave up
        return None
    if len(events) != len(values):
        return None
    serializer = model.__pydantic_serializer__
    quotes_of_all_fields = 2 * len(model.model_fields)
    parsed: list[ParsedEvent] = []
    for record, value, event in zip(records, values, events, strict=True):
        canonical: bytes = serializer.to_json(event)
        quotes = canonical.count(b'"') - quotes_of_all_fields + 2 * len(event.model_fields_set)
        if value.count(b'"') != quotes:
            return None
        parsed.append(ParsedEvent(record, event, hashlib.sha256(canonical).digest()))
    return parsed


def headers_json(headers: tuple[Header, ...]) -> str:
    """Kafka headers as JSON text: keys and values base64, since either may hold any byte; a
    null value as null."""
    return json.dumps(
        [
            [
                base64.b64encode(key.encode("utf-8", "surrogateescape")).decode("ascii"),
                None if value is None else base64.b64encode(value).decode("ascii"),
            ]
            for key, value in headers
        ]
    )


def headers_from_json(encoded: list[list[str | None]]) -> tuple[Header, ...]:
    return tuple(
        (
            base64.b64decode(key or "").decode("utf-8", "surrogateescape"),
            None if value is None else base64.b64decode(value),
        )
        for key, value in encoded
    )
