"""What the console's HTTP tests share: tokens, the API app (with its console) on the test
database behind an in-process client, signing in through the form, reading a form's hidden
fields, and creators and cash-outs fed through the real ingestion path for the actions to act on.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.app.bootstrap import build_api_app
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.ingestion_fixtures import make_ingestor

OPERATOR_TOKEN = "console-http-operator-token"
FINANCE_TOKEN = "console-http-finance-token"
OPERATOR_NAME = "http-operator"
FINANCE_NAME = "http-finance"
SESSION_S = 3_600


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def console_settings(**overrides: Any) -> Settings:
    """An operator and a finance token, and `overrides` (e.g. `cashout_answer_window_s`)."""
    return Settings(
        api_tokens={
            _digest(OPERATOR_TOKEN): {"role": "operator", "name": OPERATOR_NAME},
            _digest(FINANCE_TOKEN): {"role": "finance", "name": FINANCE_NAME},
        },
        console_session_s=SESSION_S,
        **overrides,
    )


@contextlib.asynccontextmanager
async def console_client(
    engine: AsyncEngine, settings: Settings, base_url: str = "http://console.test"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API app (and its console) built on `engine`, served in process."""
    app = build_api_app(engine, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


def hidden(page: str, name: str) -> str:
    """The value of the first hidden field `name` of a page."""
    found = re.search(rf'name="{name}" value="([^"]+)"', page)
    assert found is not None, name
    return html.unescape(found.group(1))


async def sign_in(client: httpx.AsyncClient, token: str, name: str | None = None) -> httpx.Response:
    """Sign in through the form with `token`, and `name` when given (else by the token alone)."""
    form = await client.get("/console/sign-in")
    assert form.status_code == 200
    data = {"token": token, "sign_in_token": hidden(form.text, "sign_in_token")}
    if name is not None:
        data["name"] = name
    return await client.post("/console/sign-in", data=data)


@dataclass
class Table:
    """A table of a page: its caption and its rows' cell texts (entities decoded, spaces
    collapsed), header and body rows alike."""

    caption: str = ""
    rows: list[list[str]] = field(default_factory=list)


class _TableReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[Table] = []
        self._table: Table | None = None
        self._text: list[str] | None = None
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = Table()
            self.tables.append(self._table)
        elif self._table is not None and tag == "tr":
            self._table.rows.append([])
        elif self._table is not None and tag in ("th", "td", "caption"):
            self._text = []
            self._in_caption = tag == "caption"

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif self._table is not None and self._text is not None and tag in ("th", "td", "caption"):
            said = " ".join("".join(self._text).split())
            if self._in_caption:
                self._table.caption = said
            elif self._table.rows:
                self._table.rows[-1].append(said)
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def tables(page: str) -> list[Table]:
    reader = _TableReader()
    reader.feed(page)
    return reader.tables


def table(page: str, caption_start: str) -> Table:
    """The page's one table whose caption starts with `caption_start`."""
    [found] = [t for t in tables(page) if t.caption.startswith(caption_start)]
    return found


# Data to act on -------------------------------------------------------------------------------


class Feed:
    """Events handed to `Ingestor.process` (the function the consumers call) at unique places."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.partition = 700 + uuid.uuid4().int % 100
        self.offset = uuid.uuid4().int % 2**40

    @classmethod
    async def on(cls, engine: AsyncEngine) -> Feed:
        async with engine.connect() as conn:
            rate_cards = await load_rate_cards(conn)
        return cls(make_ingestor(engine, rate_cards))

    async def send(self, topic: str, event: dict[str, Any], key: str) -> None:
        self.offset += 1
        record = InputRecord(
            topic, self.partition, self.offset, key.encode(), json.dumps(event).encode()
        )
        report = await self.ingestor.process(topic, [record])
        assert report.applied == 1, report

    async def eligible_creator(self, creator_id: str, diamonds: int) -> str:
        """A creator who passes every cash-out rule, with `diamonds` available."""
        await self.send(topics.CREATORS_UPDATED, make.creator_update(creator_id), creator_id)
        await self.send(
            topics.GIFTS_SENT, make.gift(creator_id, coins=2, count=diamonds), creator_id
        )
        return creator_id

    async def held_cashout(self, creator_id: str, diamonds: int) -> str:
        request = make.cashout_request(creator_id, diamonds)
        await self.send(topics.CASHOUTS_REQUESTED, request, creator_id)
        return str(request["event_id"])

    async def failed_cashout(self, creator_id: str, diamonds: int) -> str:
        cashout_id = await self.held_cashout(creator_id, diamonds)
        failed = make.payout_update(cashout_id, "failed", failure_code="AC04")
        await self.send(topics.PAYOUTS_UPDATED, failed, creator_id)
        return cashout_id


def new_creator_id(what: str) -> str:
    return f"console-{what}-{uuid.uuid4().hex[:10]}"


def hostile_creator_id() -> str:
    """A creator id that is a script tag (visible ASCII, as ids are), unique to a run."""
    return f'<script>alert("{uuid.uuid4().hex[:8]}")</script>'


@dataclass(frozen=True)
class ActionCount:
    """How many times an action on a target is in the operator log."""

    engine: AsyncEngine

    async def __call__(self, action: str, target: str) -> int:
        async with self.engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM operator_actions WHERE action = :action"
                    " AND target = :target"
                ),
                {"action": action, "target": target},
            )
            return int(found.scalar_one())


async def cashout_state(engine: AsyncEngine, cashout_id: str) -> tuple[str, str | None] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, failure_code FROM cashouts WHERE cashout_id = :id"),
                {"id": cashout_id},
            )
        ).first()
    return None if row is None else (row.status, row.failure_code)
