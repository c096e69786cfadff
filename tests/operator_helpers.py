"""What the operator tests share: named tokens, the API served on a free port, creators fed
through the real ingestion path, and the check that the books and the actions log are sound."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chart import creator_diamonds_available
from ledger.verify import verify
from schemas import topics
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.operator.actions_log import verify_action_chain
from services.rates.rate_cards import load_rate_cards
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.api_server import served_client
from tests.ingestion_fixtures import make_ingestor
from tests.ledger_helpers import one_snapshot

REQUEST_TIMEOUT_S = 30.0

ALICE_TOKEN = f"alice-{uuid.uuid4().hex}"
BOB_TOKEN = f"bob-{uuid.uuid4().hex}"
FINANCE_TOKEN = f"finance-{uuid.uuid4().hex}"
# An operator token in the old form (`"<digest>": "operator"`): named by its digest's start.
UNNAMED_OPERATOR_TOKEN = f"unnamed-{uuid.uuid4().hex}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def operator_settings(topic_prefix: str = "") -> Settings:
    return Settings(
        api_tokens={
            digest(ALICE_TOKEN): {"role": "operator", "name": "alice"},
            digest(BOB_TOKEN): {"role": "operator", "name": "bob"},
            digest(FINANCE_TOKEN): {"role": "finance", "name": "fiona"},
            digest(UNNAMED_OPERATOR_TOKEN): "operator",
        },
        kafka_topic_prefix=topic_prefix,
    )


def bearer(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


def new_creator() -> str:
    return f"op-creator-{uuid.uuid4().hex[:10]}"


def served(app: FastAPI) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    """`app` served on a free port and a client on it (`served_client`), with the operator
    tests' request timeout."""
    return served_client(app, request_timeout_s=REQUEST_TIMEOUT_S)


class Feed:
    """Events fed to `Ingestor.process` (the function the consumers call), one record each."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.partition = 700 + uuid.uuid4().int % 100
        self.offset = uuid.uuid4().int % 2**40

    @classmethod
    async def on(cls, engine: AsyncEngine, topic_prefix: str = "") -> Feed:
        async with engine.connect() as conn:
            rate_cards = await load_rate_cards(conn)
        return cls(make_ingestor(engine, rate_cards, topic_prefix=topic_prefix))

    async def send(self, topic: str, event: dict[str, Any], key: str) -> None:
        self.offset += 1
        record = InputRecord(
            topic, self.partition, self.offset, key.encode(), json.dumps(event).encode()
        )
        report = await self.ingestor.process(topic, [record])
        assert report.applied == 1, report

    async def eligible_creator(self, diamonds: int) -> str:
        """A creator who passes every cash-out rule and holds `diamonds` whole Diamonds (gifts
        of 2 coins = 1 diamond, at most 10,000 per gift)."""
        creator = new_creator()
        await self.send(topics.CREATORS_UPDATED, make.creator_update(creator), creator)
        while diamonds > 0:
            count = min(diamonds, 10_000)
            await self.send(topics.GIFTS_SENT, make.gift(creator, coins=2, count=count), creator)
            diamonds -= count
        return creator


async def assert_books_sound(engine: AsyncEngine) -> None:
    """`giftledger verify` finds nothing: the ledger's invariants and the actions log's chain."""
    async with one_snapshot(engine) as conn:  # as `giftledger verify` reads: writers may run
        assert await verify(conn) == []
        assert await verify_action_chain(conn) == []


async def available_diamonds(engine: AsyncEngine, creator: str) -> int:
    """The creator's available Diamonds (milli-diamonds): posted credits less posted and pending
    debits of its `creator_diamonds_available` account."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT credits_posted - debits_posted - debits_pending FROM accounts"
                " WHERE name = :name"
            ),
            {"name": creator_diamonds_available(creator).name},
        )
        return int(found.scalar_one())
