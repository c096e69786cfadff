"""docs/events.md is the event contract upstream publishers read: it must say what the models do."""

from __future__ import annotations

from pathlib import Path

from schemas import topics
from schemas.event_docs import events_markdown

EVENTS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "events.md"


def test_the_checked_in_events_page_is_what_the_models_generate() -> None:
    assert EVENTS_PAGE.read_text(encoding="utf-8") == events_markdown(), (
        "docs/events.md is stale: run `python -m schemas.event_docs > docs/events.md`"
    )


def test_the_events_page_has_a_section_for_every_topic() -> None:
    page = events_markdown()
    for topic in (*topics.CONSUMED_TOPICS, *topics.PRODUCED_TOPICS):
        assert f"### `{topic}`" in page


def test_the_events_page_states_the_bounds_the_service_applies() -> None:
    page = events_markdown()
    assert "| `coins` | integer | yes | ≥ 1; ≤ 100000 |" in page
    assert "| `reason` | one of `refund`, `chargeback`, `fraud`, `policy` | yes |" in page
