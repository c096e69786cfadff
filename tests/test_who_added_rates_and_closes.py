"""Who put a rate card version, an FX rate or a month's close in (migration 0031).

`giftledger rates add`, `rates fx-add` and `close` act as `--as NAME`, else `OPERATOR_NAME`, as
`giftledger operator` does: without a name, or with one the operator actions log would refuse,
they exit 2 and add nothing. The name is kept on the row they add (`rate_cards.created_by`,
`fx_rates.created_by`, `period_closes.closed_by`) and shown where those rows are: `giftledger
rates`, `close`, `journal`, the finance API's journal and the console's books. The database
refuses a new row without a name, for the writer too; the rows from before 0031 keep NULL and
show as not recorded. Each writes as `DATABASE_WRITER_ROLE`, not as the login.

On a database of the module's own: a close is about the whole ledger (and periods close in
order), so closing months here must not touch the session's database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
import pytest_asyncio
from alembic import command as alembic_command
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger.closes import ZERO_HASH, close_hash
from ledger.database import create_engine
from ledger.migrate import alembic_config, upgrade_to_head
from services.cli import main
from services.runtime import settings
from tests.console_http import (
    FINANCE_TOKEN,
    console_client,
    console_settings,
    sign_in,
    table,
)
from tests.fresh_database import fresh_database

pytestmark = pytest.mark.server

NO_NAME: Final = "giftledger: who acts? give --as NAME or set OPERATOR_NAME\n"
BAD_NAME: Final = "bad name"
REVISION_BEFORE: Final = "0030"
EMPTY_BALANCES_SHA256: Final = hashlib.sha256(b"").digest()


def _future_instant() -> str:
    """An instant far ahead that no other test picks (versions are keyed by their start)."""
    offset = timedelta(seconds=uuid.uuid4().int % 10**9)
    return (datetime(2300, 1, 1, tzinfo=UTC) + offset).isoformat()


def _rate_card(*, effective_from: str | None = None) -> list[str]:
    return [
        *["rates", "add", "--effective-from", effective_from or _future_instant()],
        *["--milli-diamonds-per-coin", "600", "--diamonds-per-usd", "250", "--note", "who test"],
    ]


def _fx_rate(currency: str = "EUR", *, effective_from: str | None = None) -> list[str]:
    return [
        "rates",
        "fx-add",
        currency,
        "0.92",
        "--effective-from",
        effective_from or _future_instant(),
    ]


@pytest.fixture(autouse=True)
def no_operator_name(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No `OPERATOR_NAME` unless a test sets it; the settings read afresh around each test."""
    monkeypatch.delenv("OPERATOR_NAME", raising=False)
    settings.get_settings.cache_clear()
    yield
    settings.get_settings.cache_clear()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_url(postgres_admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_admin_url) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def own(own_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncEngine]:
    """An engine on the module's database, which is also `DATABASE_URL` for `main`."""
    monkeypatch.setenv("DATABASE_URL", own_url)
    settings.get_settings.cache_clear()
    engine = create_engine(own_url, pool_size=2)
    yield engine
    await engine.dispose()


async def _run(capsys: pytest.CaptureFixture[str], arguments: list[str]) -> tuple[int, str, str]:
    """`giftledger ARGUMENTS` (in a thread: `main` runs its own event loop): the exit code, what
    it printed and what it said on stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, arguments)
    said = capsys.readouterr()
    return code, said.out, said.err


async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def _counts(engine: AsyncEngine) -> tuple[int, int, int]:
    [row] = await _rows(
        engine,
        "SELECT (SELECT count(*) FROM rate_cards) AS cards, (SELECT count(*) FROM fx_rates) AS fx,"
        " (SELECT count(*) FROM period_closes) AS closes",
    )
    return row.cards, row.fx, row.closes


# Refused without a name -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [_rate_card(), _fx_rate(), ["close", "--period", "2001-01"]],
    ids=["rates add", "rates fx-add", "close"],
)
async def test_without_a_name_the_command_exits_2_and_adds_nothing(
    own: AsyncEngine, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    before = await _counts(own)
    assert await _run(capsys, arguments) == (2, "", NO_NAME)
    assert await _counts(own) == before


@pytest.mark.parametrize(
    "arguments",
    [_rate_card(), _fx_rate(), ["close", "--period", "2001-01"]],
    ids=["rates add", "rates fx-add", "close"],
)
async def test_a_name_the_operator_log_would_refuse_is_refused_too(
    own: AsyncEngine, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    before = await _counts(own)
    code, out, err = await _run(capsys, [*arguments, "--as", BAD_NAME])
    assert (code, out) == (2, "")
    assert err == f"giftledger: operator name {BAD_NAME!r}: letters, digits and ._@- (at most 64)\n"
    assert await _counts(own) == before


@pytest.mark.parametrize(
    "arguments",
    [_rate_card(), _fx_rate(), ["close", "--period", "2001-01"]],
    ids=["rates add", "rates fx-add", "close"],
)
async def test_the_command_writes_as_the_writer_role_not_as_the_login(
    own: AsyncEngine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
) -> None:
    """A writer role that may only read is refused the insert, though the login (the
    migrations' owner) could make it: the command acted as `DATABASE_WRITER_ROLE`."""
    monkeypatch.setenv("DATABASE_WRITER_ROLE", "giftledger_reader")
    settings.get_settings.cache_clear()
    before = await _counts(own)
    code, out, err = await _run(capsys, [*arguments, "--as", "alice"])
    assert (code, out) == (1, "")
    assert err.startswith("giftledger: database error: permission denied for "), err
    assert await _counts(own) == before


# Kept and shown -------------------------------------------------------------------------------


async def test_rates_add_keeps_who_added_the_version_and_rates_shows_it(
    own: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await _run(capsys, [*_rate_card(), "--as", "alice"])
    assert code == 0
    assert out.endswith(", added by alice\n")
    [added] = await _rows(
        own, "SELECT version, created_by FROM rate_cards ORDER BY version DESC LIMIT 1"
    )
    assert added.created_by == "alice"

    code, out, _ = await _run(capsys, ["rates", "--json"])
    cards = {card["version"]: card for card in json.loads(out)["rate_cards"]}
    assert cards[added.version]["created_by"] == "alice"
    assert cards[1]["created_by"] is None  # the migrations' default card: nobody's

    code, out, _ = await _run(capsys, ["rates"])
    lines = [line.split() for line in out.splitlines() if line]
    assert lines[0] == [
        "version",
        "effective",
        "from",
        "milli-diamonds/coin",
        "diamonds/USD",
        "added",
        "by",
        "note",
    ]
    [row] = [line for line in lines if line[0] == str(added.version)]
    assert row[2:] == ["600", "250", "alice", "who", "test"]
    assert lines[1][:5] == ["1", "always", "500", "200", "-"]


async def test_fx_add_acts_as_operator_name_unless_given_as(
    own: AsyncEngine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPERATOR_NAME", "bob")
    settings.get_settings.cache_clear()
    by_setting, by_flag = _future_instant(), _future_instant()
    code, out, _ = await _run(capsys, _fx_rate("JPY", effective_from=by_setting))
    assert (code, out) == (0, f"JPY: 0.92 per USD from {by_setting}, added by bob\n")
    code, out, _ = await _run(capsys, [*_fx_rate("JPY", effective_from=by_flag), "--as", "carol"])
    assert (code, out) == (0, f"JPY: 0.92 per USD from {by_flag}, added by carol\n")

    code, out, _ = await _run(capsys, ["rates", "--json"])
    fx = {(rate["currency"], rate["effective_from"]): rate for rate in json.loads(out)["fx_rates"]}
    assert fx["JPY", by_setting]["created_by"] == "bob"
    assert fx["JPY", by_flag]["created_by"] == "carol"
    assert fx["USD", None] == {
        "currency": "USD",
        "effective_from": None,
        "units_per_usd": "1",
        "created_by": None,
    }
    code, out, _ = await _run(capsys, ["rates"])
    lines = [line.split() for line in out.splitlines()]
    assert ["currency", "effective", "from", "units/USD", "added", "by"] in lines
    assert ["JPY", by_setting, "0.92", "bob"] in lines
    assert ["USD", "always", "1", "-"] in lines


async def test_close_keeps_who_closed_the_month_and_every_view_of_it_shows_it(
    own: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await _run(capsys, ["close", "--period", "2001-02", "--as", "dana"])
    assert code == 0, err
    assert out.startswith("closed 2001-02: 0 accounts, hash ")
    assert out.endswith("; closed by dana\n")
    [stored] = await _rows(own, "SELECT closed_by FROM period_closes WHERE period = '2001-02'")
    assert stored.closed_by == "dana"

    code, out, _ = await _run(capsys, ["journal", "--period", "2001-02"])
    assert out.startswith("journal of 2001-02 (closed by dana), ")

    async with console_client(own, console_settings()) as client:
        journal = await client.get(
            "/v1/journal",
            params={"period": "2001-02"},
            headers={"Authorization": f"Bearer {FINANCE_TOKEN}"},
        )
        assert journal.status_code == 200, journal.text
        assert journal.json()["close"]["closed_by"] == "dana"
        assert (await sign_in(client, FINANCE_TOKEN)).status_code == 303
        books = (await client.get("/console/books")).text
        page = (await client.get("/console/books/journal", params={"period": "2001-02"})).text
    closes = table(books, "Closed periods")
    assert closes.rows[0][:3] == ["Period", "Closed", "Closed by"]
    [row] = [row for row in closes.rows[1:] if row[0] == "2001-02"]
    assert row[2] == "dana"
    assert " by dana (0 accounts, close hash " in page


# The database -----------------------------------------------------------------------------------


def _close_row(period: str, start: str, end: str) -> dict[str, Any]:
    """A close row of an empty ledger that the table's own checks accept: first of its chain."""
    digest = close_hash(ZERO_HASH, ZERO_HASH, period, EMPTY_BALANCES_SHA256)
    return {
        "period": period,
        "start": datetime.fromisoformat(start),
        "end": datetime.fromisoformat(end),
        "digest": EMPTY_BALANCES_SHA256,
        "zero": ZERO_HASH,
        "hash": digest,
    }


INSERT_CLOSE: Final = (
    "INSERT INTO period_closes (period, period_start, period_end, account_count,"
    " balances_sha256, chain_link_id, chain_hash, previous_hash, hash{by})"
    " VALUES (:period, :start, :end, 0, :digest, NULL, :zero, :zero, :hash{by_value})"
)
INSERT_RATE_CARD: Final = (
    "INSERT INTO rate_cards (version, effective_from, milli_diamonds_per_coin, diamonds_per_usd"
    "{by}) VALUES (:version, :at, 600, 250{by_value})"
)
INSERT_FX_RATE: Final = (
    "INSERT INTO fx_rates (currency, effective_from, units_per_usd_numerator,"
    " units_per_usd_denominator{by}) VALUES ('GBP', :at, 4, 5{by_value})"
)


def _insert(template: str, by: str | None = None) -> str:
    """The insert, naming `by`'s column (bound as `:by`) or leaving it out."""
    if by is None:
        return template.format(by="", by_value="")
    return template.format(by=f", {by}", by_value=", :by")


@pytest.mark.parametrize(
    ("relation", "template", "column"),
    [
        ("rate_cards", INSERT_RATE_CARD, "created_by"),
        ("fx_rates", INSERT_FX_RATE, "created_by"),
        ("period_closes", INSERT_CLOSE, "closed_by"),
    ],
    ids=["rate_cards", "fx_rates", "period_closes"],
)
async def test_the_database_refuses_a_new_row_without_a_name_and_the_writer_may_name_it(
    own_url: str, relation: str, template: str, column: str
) -> None:
    """The services write as `giftledger_writer`: it may add a named row (and the reader read
    the name), never one without a name or with a name longer than the log's 64 characters."""
    params = {
        "version": 10_000 + uuid.uuid4().int % 10**6,
        "at": datetime.fromisoformat(_future_instant()),
        **_close_row("1999-01", "1999-01-01T00:00:00+00:00", "1999-02-01T00:00:00+00:00"),
    }
    writer = create_engine(own_url, pool_size=1, role="giftledger_writer")
    reader = create_engine(own_url, pool_size=1, role="giftledger_reader")
    try:
        with pytest.raises(DBAPIError, match=f"{relation}_{column}_named"):
            async with writer.begin() as conn:
                await conn.execute(text(_insert(template)), params)
        with pytest.raises(DBAPIError, match=f"{relation}_{column}_length"):
            async with writer.begin() as conn:
                await conn.execute(text(_insert(template, column)), {**params, "by": "x" * 65})
        async with writer.connect() as conn:
            transaction = await conn.begin()
            await conn.execute(text(_insert(template, column)), {**params, "by": "erin"})
            await transaction.rollback()
        async with reader.connect() as conn:
            await conn.execute(text(f"SELECT {column} FROM {relation}"))  # noqa: S608
    finally:
        await writer.dispose()
        await reader.dispose()


# Rows from before migration 0031 ----------------------------------------------------------------


def _upgrade_to_revision_before(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.upgrade(config, REVISION_BEFORE)


async def _as_admin(admin_url: str, statement: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def upgraded_from_0030(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsyncEngine]:
    """A database migrated to 0030 that got a rate card version, an FX rate and January 2001's
    close then, upgraded to the head since; `DATABASE_URL` for `main`."""
    name = f"giftledger_before_0031_{uuid.uuid4().hex[:12]}"
    await _as_admin(postgres_admin_url, f'CREATE DATABASE "{name}"')
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=2)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to_revision_before)
            await conn.execute(
                text(_insert(INSERT_RATE_CARD)),
                {"version": 2, "at": datetime(2300, 1, 1, tzinfo=UTC)},
            )
            await conn.execute(
                text(_insert(INSERT_FX_RATE)), {"at": datetime(2300, 1, 1, tzinfo=UTC)}
            )
            await conn.execute(
                text(_insert(INSERT_CLOSE)),
                _close_row("2001-01", "2001-01-01T00:00:00+00:00", "2001-02-01T00:00:00+00:00"),
            )
        await upgrade_to_head(engine)
        monkeypatch.setenv("DATABASE_URL", url)
        settings.get_settings.cache_clear()
        yield engine
    finally:
        await engine.dispose()
        await _as_admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_rows_from_before_0031_keep_no_name_and_show_as_not_recorded(
    upgraded_from_0030: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = upgraded_from_0030
    kept = await _rows(
        engine,
        "SELECT 'rate_cards' AS relation, created_by AS who FROM rate_cards"
        " UNION ALL SELECT 'fx_rates', created_by FROM fx_rates"
        " UNION ALL SELECT 'period_closes', closed_by FROM period_closes",
    )
    assert sorted((row.relation, row.who) for row in kept) == [
        ("fx_rates", None),
        ("fx_rates", None),
        ("period_closes", None),
        ("rate_cards", None),
        ("rate_cards", None),
    ]
    code, out, _ = await _run(capsys, ["rates", "--json"])
    document = json.loads(out)
    assert [card["created_by"] for card in document["rate_cards"]] == [None, None]
    assert [rate["created_by"] for rate in document["fx_rates"]] == [None, None]
    code, out, _ = await _run(capsys, ["journal", "--period", "2001-01"])
    assert out.startswith("journal of 2001-01 (closed), ")

    # The next month closes after it, named, and the closes' chain still holds.
    code, out, err = await _run(capsys, ["close", "--period", "2001-02", "--as", "frank"])
    assert code == 0, err
    code, out, err = await _run(capsys, ["verify"])
    assert code == 0, out + err

    async with console_client(engine, console_settings()) as client:
        journal = await client.get(
            "/v1/journal",
            params={"period": "2001-01"},
            headers={"Authorization": f"Bearer {FINANCE_TOKEN}"},
        )
        assert journal.json()["close"]["closed_by"] is None
        assert (await sign_in(client, FINANCE_TOKEN)).status_code == 303
        books = (await client.get("/console/books")).text
    closes = table(books, "Closed periods")
    assert [row[:3] for row in closes.rows[1:]] == [
        ["2001-02", closes.rows[1][1], "frank"],
        ["2001-01", closes.rows[2][1], "not recorded"],
    ]
