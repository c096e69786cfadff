"""The AsyncAPI document: every topic giftledger reads and writes, with its message schema.

The running consumers take raw records (they validate and dead-letter bad input themselves), so
their handlers carry no payload type. This module declares the same topics on a broker that is
never connected, with handlers and publishers typed by the event models, for FastStream to
describe them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from schemas import topics
from schemas.events import CONSUMED_EVENT_MODELS, PRODUCED_EVENT_MODELS
from services.app.consumer import TOPIC_DESCRIPTIONS

DOCUMENT_VERSION = "1.0.0"
OTHER_DESCRIPTIONS = {
    topics.PAYOUTS_REQUESTED: "A cash-out to pay; cashout_id is the idempotency key.",
    topics.CASHOUTS_UPDATED: "Every state change of a cash-out, with its amounts and rates.",
}


def _describe(topic: str) -> str:
    return TOPIC_DESCRIPTIONS.get(topic) or OTHER_DESCRIPTIONS[topic]


def _documentation_handler(model: type[Any]) -> Callable[..., Awaitable[None]]:
    """A handler whose signature says the message is one `model`; it is never called."""

    async def handler(body: Any) -> None:
        raise AssertionError("documentation only")

    handler.__annotations__ = {"body": model, "return": None}
    return handler


def asyncapi_document(
    prefix: str = "", bootstrap_servers: str = "localhost:9092"
) -> dict[str, Any]:
    broker = KafkaBroker(bootstrap_servers)
    for topic, model in CONSUMED_EVENT_MODELS.items():
        subscriber = broker.subscriber(
            prefix + topic, title=f"on_{topic.replace('.', '_')}", description=_describe(topic)
        )
        subscriber(_documentation_handler(model))
        broker.publisher(
            prefix + topics.dead_letter_topic(topic),
            title=f"to_{topic.replace('.', '_')}_dlq",
            description=f"Inputs from {topic} that cannot be applied: the original bytes, with "
            "headers dlq.error, dlq.detail, dlq.source.topic, dlq.source.partition, "
            "dlq.source.offset and dlq.event_id.",
            schema=bytes,
        )
    for topic, model in PRODUCED_EVENT_MODELS.items():
        broker.publisher(
            prefix + topic,
            title=f"to_{topic.replace('.', '_')}",
            description=_describe(topic),
            schema=model,
        )
    specification = AsyncAPI(
        broker,
        title="giftledger",
        version=DOCUMENT_VERSION,
        description="Kafka topics of the giftledger creator-monetisation ledger.",
    )
    document: dict[str, Any] = json.loads(specification.to_specification().to_json())
    return document
