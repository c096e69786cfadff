"""`record --pseudonymise` never changes what the consumers make of a record, and leaves none of
its valid ids behind: a record they refuse is refused for the same reason under pseudonyms (a
key given twice stays given twice, an account number becomes digits, still refused, never the
number) and one they apply is applied. Before, a gift giving `coins` twice, an id ending in a
line break or an account number became valid once rewritten, and a lone surrogate stopped the
recording for good."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import topics
from services.ingestion.records import DeadLetter, InputRecord, ParsedEvent, parse_record
from services.loadtest.pseudonymise import Pseudonymiser
from tests import event_factory as make

SALT = "a-salt-of-the-test"
EVENT_ID = "ev-original-1"


def _verdict(topic: str, value: bytes) -> str:
    outcome = parse_record(topic, InputRecord(topic, 0, 0, None, value))
    return outcome.error if isinstance(outcome, DeadLetter) else "parsed"


def _raw(document: dict[str, Any]) -> bytes:
    return json.dumps({**document, "event_id": EVENT_ID}).encode()


REFUSED = [
    pytest.param(
        topics.GIFTS_SENT,
        _raw(make.gift("creator-1", coins=1)).replace(b'"coins": 1', b'"coins": 1, "coins": 5000'),
        "malformed_json",
        id="a key given twice",
    ),
    pytest.param(
        topics.TIPS_RECEIVED,
        _raw({**make.tip("creator-1"), "creator_id": "c-1\n"}),
        "schema_violation",
        id="an id with a line break",
    ),
    pytest.param(
        topics.CREATORS_UPDATED,
        _raw({**make.creator_update("creator-1"), "payout_account_ref": "12345678901"}),
        "schema_violation",
        id="an account number",
    ),
    pytest.param(
        topics.GIFTS_SENT,
        b'{"event_id": "ev-original-1", "gift_id": "\\ud800"}',
        "malformed_json",
        id="a lone surrogate",
    ),
]


@pytest.mark.parametrize(("topic", "value", "refused_as"), REFUSED)
def test_a_refused_record_is_refused_as_such_under_pseudonyms(
    topic: str, value: bytes, refused_as: str
) -> None:
    copy = Pseudonymiser(SALT).value(value, topic)
    assert _verdict(topic, value) == _verdict(topic, copy) == refused_as
    assert EVENT_ID.encode() not in copy
    assert b"12345678901" not in copy


def test_a_record_too_deep_to_read_is_kept_as_it_is() -> None:
    value = b"[" * 100_000
    assert Pseudonymiser(SALT).value(value, topics.GIFTS_SENT) == value


def test_a_record_the_consumers_apply_is_applied_under_pseudonyms() -> None:
    gift = make.gift("creator-1")
    copy = Pseudonymiser(SALT).value(json.dumps(gift).encode(), topics.GIFTS_SENT)
    outcome = parse_record(topics.GIFTS_SENT, InputRecord(topics.GIFTS_SENT, 0, 0, None, copy))
    assert isinstance(outcome, ParsedEvent)
    assert outcome.event.event_id.startswith("p-")
    assert gift["event_id"].encode() not in copy
