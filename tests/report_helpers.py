"""What the report and analyst SQL tests share: events fed through the real ingestion path
(`Ingestor.process`, the function the Kafka consumers call), the database's clock, and the
finance token's header (the API itself is served by `tests.api_server.served_client`)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from tests.api_server import FINANCE_TOKEN
from tests.ingestion_fixtures import make_ingestor

FINANCE: Final = {"Authorization": f"Bearer {FINANCE_TOKEN}"}


async def database_time(engine: AsyncEngine) -> datetime:
    """The database's clock: the one that stamps bookings."""
    async with engine.connect() as conn:
        moment: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return moment


class EventFeed:
    """Events applied one record at a time through `Ingestor.process`, at unique offsets."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.partition = 700 + uuid.uuid4().int % 100
        self.offset = uuid.uuid4().int % 2**40

    @classmethod
    async def on(cls, engine: AsyncEngine) -> EventFeed:
        async with engine.connect() as conn:
            rate_cards = await load_rate_cards(conn)
        return cls(make_ingestor(engine, rate_cards))

    async def send(self, topic: str, event: dict[str, Any]) -> None:
        """Apply `event`; it must be applied, not dead-lettered."""
        self.offset += 1
        key = str(event.get("creator_id", "")).encode()
        record = InputRecord(topic, self.partition, self.offset, key, json.dumps(event).encode())
        report = await self.ingestor.process(topic, [record])
        assert report.applied == 1, report
