"""What an input event produced: its transfers, or why it was refused."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from schemas import topics
from schemas.topics import ConsumedTopic
from services.api.deps import ApiSettings, IdPath, Reader, token_route
from services.api.models import EventDocument
from services.api.queries import applied_events, event_dead_letters, event_transfers
from services.api.responses import conflict, not_found

router = APIRouter()


@token_route(
    router,
    "/v1/events/{event_id:path}",
    summary="What an input event produced: its transfers, or why it was refused",
    description="`status` is `applied` when the event was applied (then `applied` names the "
    "topic, creator, times and Kafka position, and `transfers` lists what it posted), else "
    "`dead_lettered`; `dead_letters` lists every refusal naming this event id (a conflicting "
    "redelivery of an applied event shows up there too). Without `topic`, every consumed "
    "topic is searched, and an id applied in several topics is a 409.",
    response_model=EventDocument,
    responses={
        **not_found("Neither applied nor dead-lettered."),
        **conflict("Applied in several topics: pass `topic`."),
    },
)
async def event_route(
    conn: Reader,
    settings: ApiSettings,
    event_id: IdPath,
    topic: Annotated[ConsumedTopic | None, Query(description="The topic, without prefix.")] = None,
) -> dict[str, Any]:
    searched = topics.CONSUMED_TOPICS if topic is None else (topic,)
    applied = await applied_events(conn, event_id, searched)
    if len(applied) > 1:
        names = ", ".join(entry["topic"] for entry in applied)
        raise HTTPException(409, detail=f"event {event_id!r} was applied in {names}: pass topic")
    letters = await event_dead_letters(conn, settings.kafka_topic_prefix, event_id, topic)
    if not applied and not letters:
        raise HTTPException(404, detail=f"no event {event_id!r} was applied or dead-lettered")
    return {
        "event_id": event_id,
        "status": "applied" if applied else "dead_lettered",
        "applied": applied[0] if applied else None,
        "transfers": await event_transfers(conn, event_id, applied[0]["topic"]) if applied else [],
        "dead_letters": letters,
    }
