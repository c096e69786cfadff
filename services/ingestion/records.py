"""A consumed record, what became of it, and parsing: bytes in, a validated event or a dead
letter naming why out. No I/O."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import jiter
from pydantic import BaseModel, ValidationError

from schemas.events import CONSUMED_EVENT_MODELS, Event

JSON_DEPTH_MAX = 16
EVENT_ID_PATTERN = re.compile(r"[!-~]{1,128}")
ERROR_DETAIL_LENGTH_MAX = 1_000


class InputRecord(NamedTuple):
    """One consumed Kafka record, independent of the client library. A named tuple: built for
    every record, at half a frozen dataclass's cost."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


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

    def absorb(self, other: BatchReport) -> None:
        """Add what a unit of work reported (its counts and dead letters) to this report."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.parked += other.parked
        self.dead_letters += other.dead_letters


@dataclass(slots=True)
class ParsedEvent:
    record: InputRecord
    event: Event
    payload_sha256: bytes
    from_parking: bool = False
    parked_until: datetime | None = None


def _depth(value: Any, limit: int) -> int:
    depth, frontier = 0, [value]
    while frontier:
        depth += 1
        if depth > limit:
            return depth
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
    model: type[BaseModel] = CONSUMED_EVENT_MODELS[topic]
    try:
        event = model.model_validate_json(record.value)
    except ValidationError as error:
        detail = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False)
        )
        event_id = decoded.get("event_id") if isinstance(decoded, dict) else None
        return DeadLetter(record, "schema_violation", _short(detail), _valid_event_id(event_id))
    assert isinstance(event, Event)
    canonical = event.model_dump_json().encode("utf-8")
    return ParsedEvent(record, event, hashlib.sha256(canonical).digest())


def headers_json(headers: tuple[tuple[str, bytes], ...]) -> str:
    """Kafka headers as JSON text: keys and values base64, since either may hold any byte."""
    return json.dumps(
        [
            [
                base64.b64encode(key.encode("utf-8", "surrogateescape")).decode("ascii"),
                base64.b64encode(value).decode("ascii"),
            ]
            for key, value in headers
        ]
    )


def headers_from_json(encoded: list[list[str]]) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (base64.b64decode(key).decode("utf-8", "surrogateescape"), base64.b64decode(value))
        for key, value in encoded
    )
