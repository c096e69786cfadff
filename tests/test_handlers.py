"""The ingestion's handler map: one handler per consumed topic, and the consumers subscribe to
exactly those topics."""

from __future__ import annotations

from schemas import topics
from services.ingestion.handlers import HANDLERS


def test_every_consumed_topic_has_exactly_one_handler_named_after_it() -> None:
    assert set(HANDLERS) == set(topics.CONSUMED_TOPICS)
    for topic, handler in HANDLERS.items():
        assert handler.__name__ == f"on_{topic.replace('.', '_')}"
