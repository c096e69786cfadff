"""Data and a running API for the console's tests: the seeded ledger of tests/api_server.py, plus
what the console must show safely or act on.

- a creator whose id is `<script>alert(1)</script>`, with a profile and a gift;
- two dead letters whose records are really in `gifts.sent` on the test broker (so the console
  reads their bytes back and an operator can re-drive them): one of raw HTML with a script, one
  of bytes that are not UTF-8;
- an adjustment proposed by another operator (`alice`), awaiting approval.

Import the fixtures into a test module (`from tests.console_fixtures import console_api,
console_data`) with what they depend on (`seeded_ledger`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.service import Ledger
from schemas import topics
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.operator.desk import OperatorDesk
from services.rates.rate_cards import load_rate_cards
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.api_server import SeededLedger, running_api_server
from tests.ingestion_fixtures import make_ingestor

CONSOLE_OPERATOR_TOKEN = f"console-operator-{uuid.uuid4().hex}"
CONSOLE_FINANCE_TOKEN = f"console-finance-{uuid.uuid4().hex}"
CONSOLE_OPERATOR_NAME = "console-operator"
CONSOLE_FINANCE_NAME = "console-finance"
HOSTILE_CREATOR = "<script>alert(1)</script>"
HTML_RECORD = b'<h1>not json</h1><script>alert("dead letter")</script><img src=x onerror=alert(3)>'
BINARY_RECORD = b"\xff\xfe\x00<b>not utf-8</b>\x80\x81"
PROPOSER = "alice"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def console_settings(kafka_bootstrap_servers: str) -> Settings:
    return Settings(
        api_tokens={
            _digest(CONSOLE_OPERATOR_TOKEN): {"role": "operator", "name": CONSOLE_OPERATOR_NAME},
            _digest(CONSOLE_FINANCE_TOKEN): {"role": "finance", "name": CONSOLE_FINANCE_NAME},
        },
        kafka_bootstrap_servers=kafka_bootstrap_servers,
    )


@dataclass(frozen=True)
class ConsoleData:
    ledger: SeededLedger
    hostile_creator: str
    html_dead_letter_id: int
    binary_dead_letter_id: int
    adjustment_id: int


@dataclass(frozen=True)
class ConsoleApi:
    base_url: str
    data: ConsoleData


async def _apply(ingestor: Ingestor, record: InputRecord) -> None:
    report = await ingestor.process(record.topic, [record])
    assert report.applied + len(report.dead_letters) == 1, report


async def _publish_and_apply(
    ingestor: Ingestor, producer: Any, topic: str, key: bytes, value: bytes
) -> tuple[int, int]:
    """`value` published to `topic`, then handed to the ingestor at its real place."""
    sent = await producer.send_and_wait(topic, value=value, key=key)
    await _apply(ingestor, InputRecord(topic, sent.partition, sent.offset, key, value))
    return sent.partition, sent.offset


async def _dead_letter_id(engine: AsyncEngine, topic: str, place: tuple[int, int]) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT id FROM dead_letters WHERE topic_prefix = '' AND topic = :topic"
                " AND kafka_partition = :partition AND kafka_offset = :offset"
            ),
            {"topic": topic, "partition": place[0], "offset": place[1]},
        )
        return int(found.scalar_one())


async def seed_console(
    engine: AsyncEngine, kafka_bootstrap: str, ledger: SeededLedger
) -> ConsoleData:
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = make_ingestor(engine, rate_cards)
    offset = uuid.uuid4().int % 2**40
    for index, event in enumerate(
        (make.creator_update(HOSTILE_CREATOR), make.gift(HOSTILE_CREATOR, coins=4))
    ):
        topic = topics.CREATORS_UPDATED if index == 0 else topics.GIFTS_SENT
        record = InputRecord(
            topic, 900, offset + index, HOSTILE_CREATOR.encode(), json.dumps(event).encode()
        )
        await _apply(ingestor, record)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        html_place = await _publish_and_apply(
            ingestor, producer, topics.GIFTS_SENT, b"html-key", HTML_RECORD
        )
        binary_place = await _publish_and_apply(
            ingestor, producer, topics.GIFTS_SENT, b"binary-key", BINARY_RECORD
        )
    finally:
        await producer.stop()
    desk = OperatorDesk(Ledger(engine), topic_prefix="", database_role="giftledger_writer")
    proposal = await desk.propose_adjustment(
        idempotency_key=f"console-test-{uuid.uuid4().hex}",
        actor=PROPOSER,
        creator_id=ledger.creator,
        asset="DIAMOND",
        amount_minor=1_500,
        reason="goodwill credit after a missed gift",
        ticket="TICKET-1",
    )
    return ConsoleData(
        ledger=ledger,
        hostile_creator=HOSTILE_CREATOR,
        html_dead_letter_id=await _dead_letter_id(engine, topics.GIFTS_SENT, html_place),
        binary_dead_letter_id=await _dead_letter_id(engine, topics.GIFTS_SENT, binary_place),
        adjustment_id=proposal.adjustment.id,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def console_data(
    engine: AsyncEngine, kafka_bootstrap: str, seeded_ledger: SeededLedger
) -> ConsoleData:
    return await seed_console(engine, kafka_bootstrap, seeded_ledger)


@pytest.fixture(scope="module")
def console_api(
    database_url: str, kafka_bootstrap: str, console_data: ConsoleData
) -> Iterator[ConsoleApi]:
    """The API (and its console) on a free port, in a thread, on the seeded test database."""
    with running_api_server(database_url, console_settings(kafka_bootstrap)) as base_url:
        yield ConsoleApi(base_url, console_data)


__all__ = [
    "BINARY_RECORD",
    "CONSOLE_FINANCE_NAME",
    "CONSOLE_FINANCE_TOKEN",
    "CONSOLE_OPERATOR_NAME",
    "CONSOLE_OPERATOR_TOKEN",
    "HOSTILE_CREATOR",
    "HTML_RECORD",
    "ConsoleApi",
    "ConsoleData",
    "console_api",
    "console_data",
    "console_settings",
]
