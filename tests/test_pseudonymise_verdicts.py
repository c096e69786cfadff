"""`record --pseudonymise` never changes what the consumers make of a record: a record they would
refuse as it stands is kept byte for byte (so a replay refuses it for the same reason), and one
they would apply is applied under pseudonyms. Before, a gift giving `coins` twice, an id ending
in a line break or an account reference of digits only became valid once rewritten, and a lone
surrogate stopped the recording for good."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import topics
from services.ingestion.records import DeadLetter, InputRecord, ParsedEvent, parse_record
from services.loadtest.pseudonymise import Pseudonymiser
from tests import event_factory as make

SALT = "a-salt-of-the-test"


def _verdict(topic: str, value: bytes) -> str:
    outcome = parse_record(topic, InputRecord(topic, 0, 0, None, value))
    return outcome.error if isinstance(outcome, DeadLetter) else "parsed"


def _raw(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


REFUSED = [
    pytest.param(
        topics.GIFTS_SENT,
        _raw(make.gift("creator-1", coins=1)).replace(b'"coins": 1', b'"coins": 1, "coins": 5000'),
        id="a key given twice",
    ),
    pytest.param(
        topics.TIPS_RECEIVED, _raw({**make.tip("creator-1"), "creator_id": "c-1\n"}), id="newline"
    ),
    pytest.param(
        topics.CREATORS_UPDATED,
        _raw({**make.creator_update("creator-1"), "payout_account_ref": "12345678901"}),
        id="an account number",
    ),
    pytest.param(
        topics.GIFTS_SENT, b'{"event_id": "h-1", "gift_id": "\\ud800"}', id="a lone surrogate"
    ),
    pytest.param(topics.GIFTS_SENT, b"[" * 100_000, id="nested too deep"),
]


@pytest.mark.parametrize(("topic", "value"), REFUSED)
def test_a_record_the_consumers_refuse_is_kept_as_it_is(topic: str, value: bytes) -> None:
    assert _verdict(topic, value) != "parsed"
    assert Pseudonymiser(SALT).value(value, topic) == value


def test_a_record_the_consumers_apply_is_applied_under_pseudonyms() -> None:
    gift = make.gift("creator-1")
    copy = Pseudonymiser(SALT).value(_raw(gift), topics.GIFTS_SENT)
    outcome = parse_record(topics.GIFTS_SENT, InputRecord(topics.GIFTS_SENT, 0, 0, None, copy))
    assert isinstance(outcome, ParsedEvent)
    assert outcome.event.event_id != gift["event_id"]
    assert outcome.event.event_id.startswith("p-")
