"""The gift growth benchmark (`bench.gift_growth`): its gifts carry the kind of event id asked
for, and a short run on the real database applies every gift, prints a line a step and the
ratios, and counts the applied events."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from bench.gift_growth import GiftRecords, Settings, run


def event_ids(records: GiftRecords, count: int) -> list[str]:
    return [json.loads(record.value or b"")["event_id"] for record in records.take(count)]


def test_random_event_ids_are_version_4_uuids_in_no_order() -> None:
    ids = event_ids(GiftRecords("random"), 1_000)
    assert {uuid.UUID(event_id).version for event_id in ids} == {4}
    assert len(set(ids)) == len(ids)
    assert ids != sorted(ids)


def test_time_ordered_event_ids_follow_the_gifts_in_time() -> None:
    ids = event_ids(GiftRecords("time-ordered"), 1_000)
    assert {uuid.UUID(event_id).version for event_id in ids} == {7}
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_an_unknown_kind_of_event_id_is_refused() -> None:
    with pytest.raises(ValueError, match="event ids are one of"):
        GiftRecords("serial")


async def test_a_short_run_applies_every_gift_and_prints_each_step(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_admin_url)
    settings = Settings(total=3_000, step=1_500, event_ids="random", batch_size=500, warmup=200)

    steps = await run(settings)

    printed = capsys.readouterr().out
    assert [step.gifts_after for step in steps] == [1_500, 3_000]
    assert all(step.gifts == 1_500 and step.wall_s > 0 for step in steps)
    assert steps[-1].key_bytes >= steps[0].key_bytes > 0
    assert re.search(r"^after 1,500 gifts: [\d,]+ gifts/s; CPU a gift: consumer", printed, re.M)
    assert re.search(r"^after 3,000 gifts: ", printed, re.M)
    assert re.search(r"^gift growth ratio: \d+\.\d\d$", printed, re.M)
    assert "applied_events holds 3,200 events" in printed
