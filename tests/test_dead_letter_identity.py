"""A dead letter knows the record it was made of: the SHA-256 of its value (migration 0030), or,
recorded before that, its event_id. A re-drive sends, and the console shows, the record at the
dead letter's offset only when it is that record: a topic recreated, or an embedded broker
restarted, puts other records at the same offsets."""

from __future__ import annotations

import json

from schemas import topics
from services.ingestion.records import value_sha256
from services.ingestion.redrive import SourceRecord, is_source_of
from tests import event_factory as make


def test_the_record_at_a_dead_letters_offset_is_its_source_only_if_it_is_the_same_record() -> None:
    tip = make.tip("creator-identity")
    original = json.dumps({**tip, "currency": "XXX"}).encode()
    other = json.dumps(make.tip("creator-identity")).encode()
    event_id = str(tip["event_id"])
    found = SourceRecord(b"creator-identity", original, ())
    moved = SourceRecord(b"creator-identity", other, ())

    assert is_source_of(topics.TIPS_RECEIVED, value_sha256(original), event_id, found)
    assert not is_source_of(topics.TIPS_RECEIVED, value_sha256(original), event_id, moved)
    # The same event_id, other bytes: the hash decides.
    respelled = SourceRecord(b"creator-identity", original + b" ", ())
    assert not is_source_of(topics.TIPS_RECEIVED, value_sha256(original), event_id, respelled)
    # Recorded before the hash was kept: by the event_id it gives.
    assert is_source_of(topics.TIPS_RECEIVED, None, event_id, found)
    assert not is_source_of(topics.TIPS_RECEIVED, None, event_id, moved)
    # Recorded with neither (a value that gave no event_id, before the hash): taken as found.
    assert is_source_of(topics.TIPS_RECEIVED, None, None, moved)
