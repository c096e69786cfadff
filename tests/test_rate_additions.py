"""What `giftledger rates add` and `rates fx-add` refuse, each with a message and exit 2 rather
than the database's error; USD's rate stays 1 (the table refuses another, migration 0038); a
far-future rate card never prices today's events; the FX listing shows each currency's versions
in the order they take effect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from alembic import command as alembic_command
from sqlalchemy import Connection, make_url, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger.database import create_engine
from ledger.migrate import alembic_config, upgrade_to_head
from services.cashout.request_facts import fx_rates_in_force
from services.cli import main
from services.commands.common import EXIT_OK, EXIT_USAGE
from services.rates.fx import FxRate, list_fx_rates
from services.rates.rate_cards import BEGINNING_OF_TIME, RateCard, RateCardBook
from services.runtime.settings import get_settings

LATER = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)


@pytest.fixture
def database_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("OPERATOR_NAME", "rates-test")
    get_settings.cache_clear()  # the settings are read once a process
    yield
    get_settings.cache_clear()


def _rates(*arguments: str) -> int:
    return main(["rates", *arguments])


@pytest.mark.usefixtures("database_env")
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["fx-add", "USD", "2"], "USD is 1 per USD by definition"),
        (["fx-add", "EUR", "Infinity"], "not a decimal number: 'Infinity'"),
        (["fx-add", "EUR", "NaN"], "not a decimal number: 'NaN'"),
        (["fx-add", "EUR", "1e-30"], "too large or has too many digits"),
        (["fx-add", "EUR", "1e30"], "too large or has too many digits"),
        (["add", "--milli-diamonds-per-coin", "0", "--diamonds-per-usd", "200"], "between 1"),
        (["add", "--milli-diamonds-per-coin", "1001", "--diamonds-per-usd", "200"], "between 1"),
        (["add", "--milli-diamonds-per-coin", "500", "--diamonds-per-usd", "0"], "between 1"),
        (
            ["add", "--milli-diamonds-per-coin", "500", "--diamonds-per-usd", "99999999999"],
            "between 1",
        ),
    ],
)
def test_a_value_the_tables_cannot_keep_is_refused_with_exit_2(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--effective-from" not in arguments:
        arguments = [*arguments, "--effective-from", LATER.isoformat()]
    assert _rates(*arguments) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "database error" not in err


@pytest.mark.usefixtures("database_env")
def test_a_start_past_the_latest_event_moment_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for arguments in (
        ["add", "--milli-diamonds-per-coin", "1", "--diamonds-per-usd", "200"],
        ["fx-add", "EUR", "0.9"],
    ):
        assert _rates(*arguments, "--effective-from", "9999-12-31T22:00:00Z") == EXIT_USAGE
        latest = "effective_from must be at most 2999-12-31T23:59:59.999999"
        assert latest in capsys.readouterr().err


@pytest.mark.usefixtures("database_env")
def test_a_second_version_at_the_same_instant_is_refused_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    moment = LATER + timedelta(days=1, seconds=7)
    same_instant_elsewhere = moment.astimezone(
        datetime.fromisoformat("2000-01-01T00:00:00+05:30").tzinfo
    ).isoformat()
    card = ["add", "--milli-diamonds-per-coin", "400", "--diamonds-per-usd", "200"]
    assert _rates(*card, "--effective-from", moment.isoformat()) == EXIT_OK
    capsys.readouterr()
    assert _rates(*card, "--effective-from", same_instant_elsewhere) == EXIT_USAGE
    assert "takes effect at" in capsys.readouterr().err
    fx = ["fx-add", "GBP", "0.8"]
    assert _rates(*fx, "--effective-from", moment.isoformat()) == EXIT_OK
    capsys.readouterr()
    assert _rates(*fx, "--effective-from", same_instant_elsewhere) == EXIT_USAGE
    assert "has a rate taking effect at" in capsys.readouterr().err


async def test_the_table_refuses_a_usd_rate_other_than_1(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError, match="fx_rates_usd_is_one"):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO fx_rates (currency, effective_from, units_per_usd_numerator,"
                    " units_per_usd_denominator, created_by) VALUES ('USD', :at, 2, 1, 'test')"
                ),
                {"at": LATER},
            )


async def test_a_currency_s_versions_are_listed_in_the_order_they_take_effect(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO fx_rates (currency, effective_from, units_per_usd_numerator,"
                " units_per_usd_denominator, created_by)"
                " VALUES ('CHF', '-infinity', 9, 10, 'test'), ('CHF', :at, 4, 5, 'test')"
            ),
            {"at": LATER},
        )
        chf = [fx for fx in await list_fx_rates(conn) if fx.currency == "CHF"]
    assert [(fx.effective_from, fx.units_per_usd) for fx in chf] == [
        (None, Fraction(9, 10)),
        (LATER, Fraction(4, 5)),
    ]


def test_a_card_starting_in_year_9999_never_prices_an_earlier_moment_east_of_utc() -> None:
    far = datetime(9999, 12, 31, 22, tzinfo=UTC)
    book = RateCardBook(
        [
            RateCard(1, BEGINNING_OF_TIME, 500, 200),
            RateCard(2, datetime(2031, 1, 1, tzinfo=UTC), 400, 200),
            RateCard(3, far, 1, 200),
        ]
    )
    east = datetime.fromisoformat("2026-12-08T03:00:00+05:00")
    assert book.in_force_at(east).version == 1
    assert book.in_force_at(datetime.fromisoformat("2032-01-01T03:00:00+05:00")).version == 2
    assert book.in_force_at(datetime(2026, 12, 7, 22, tzinfo=UTC)).version == 1


def _upgrade_to_0037(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.upgrade(config, "0037")


async def test_a_usd_rate_an_older_version_let_in_is_kept_and_ignored(
    postgres_admin_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Migration 0038 upgrades a database holding a USD version of 2 (the rows are immutable,
    so a check of every row would have stopped the upgrade for good), and USD is priced at 1
    whatever the table holds; `giftledger rates` says so."""
    name = f"giftledger_usd_before_0038_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade_to_0037)
                await conn.execute(
                    text(
                        "INSERT INTO fx_rates (currency, effective_from, units_per_usd_numerator,"
                        " units_per_usd_denominator, created_by) VALUES ('USD', :at, 2, 1, 'old')"
                    ),
                    {"at": datetime(2001, 1, 1, tzinfo=UTC)},
                )
            await upgrade_to_head(engine)
            async with engine.connect() as conn:
                rates = await fx_rates_in_force(conn, [("USD", datetime.now(UTC))])
        finally:
            await engine.dispose()
        assert list(rates.values()) == [FxRate("USD", Fraction(1))]
        monkeypatch.setenv("DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            assert await asyncio.to_thread(main, ["rates"]) == EXIT_OK
        finally:
            get_settings.cache_clear()
        assert "2 (ignored: USD is 1)" in capsys.readouterr().out
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
