"""The `giftledger` command line against the session's test database.

`main()` calls `asyncio.run`, which cannot run inside a running event loop, so these tests are
plain functions; they post their data through a short `asyncio.run` with an engine of their own.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command as alembic_command
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from ledger.chart import (
    AccountKind,
    creator_diamonds_available,
    creator_diamonds_held,
    creator_wallet,
    platform,
)
from ledger.database import create_engine
from ledger.migrate import alembic_config, head_revision
from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.queries import STATEMENT_PAGE_SIZE_MAX
from ledger.service import Ledger
from schemas.events import CreatorUpdated
from services.cashout.profiles import apply_creator_updates
from services.cli import main
from services.commands.common import EXIT_BROKEN_PIPE, STATEMENT_PAGE_SIZE_DEFAULT
from services.runtime import settings
from tests import event_factory

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUBPROCESS_TIMEOUT_S = 60
PASSWORD = "s3cret-word"
NO_SCHEMA = "giftledger: the database has no giftledger schema: run giftledger migrate\n"
REVISION_BEFORE_HEAD = "0010"

Configure = Callable[[str, str], None]


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session's migrated database as `DATABASE_URL`, with the settings cache cleared."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    settings.get_settings.cache_clear()
    yield database_url
    settings.get_settings.cache_clear()


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """Set one variable for `main`, with the settings cache cleared around the test."""

    def set_variable(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        settings.get_settings.cache_clear()

    yield set_variable
    settings.get_settings.cache_clear()


async def _as_admin(admin_url: str, statement: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()


@contextmanager
def _new_database(admin_url: str) -> Iterator[str]:
    """An empty database on the test server, never migrated, dropped afterwards."""
    name = f"giftledger_empty_{uuid.uuid4().hex[:12]}"
    asyncio.run(_as_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_as_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def unmigrated_database_url(postgres_admin_url: str) -> Iterator[str]:
    with _new_database(postgres_admin_url) as url:
        yield url


async def _run_on(url: str, statements: Callable[[Connection], None]) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(statements)
    finally:
        await engine.dispose()


def _future_instant() -> str:
    """An instant far ahead that no other test picks: FX versions are keyed by their start."""
    offset = timedelta(seconds=uuid.uuid4().int % 10**9)
    return (datetime(2300, 1, 1, tzinfo=UTC) + offset).isoformat()


async def _post_creator_activity(database_url: str, creator_id: str) -> None:
    """Two gifts (12.500 and 3.000 diamonds), a 2.000 diamond cash-out hold, a 10.50 USD tip."""
    engine = create_engine(database_url, pool_size=2)
    try:
        ledger = Ledger(engine)
        specs = [
            platform(AccountKind.DIAMOND_ISSUANCE, "DIAMOND"),
            creator_diamonds_available(creator_id),
            creator_diamonds_held(creator_id),
            platform(AccountKind.TIPS_CLEARING, "USD"),
            creator_wallet(creator_id, "USD"),
            platform(AccountKind.COINS_SPENT, "COIN"),
            platform(AccountKind.COIN_GIFT_REVENUE, "COIN"),
        ]
        ids = await ledger.account_ids(specs)
        issuance, available, held, tips, wallet, spent, revenue = (ids[spec.name] for spec in specs)

        def transfer(
            debit: int,
            credit: int,
            amount: int,
            code: TransferCode,
            flags: TransferFlags = TransferFlags.NONE,
        ) -> Transfer:
            event_id = f"{creator_id}-{uuid.uuid4().hex[:8]}"
            card = 1 if code in (TransferCode.GIFT_DIAMONDS, TransferCode.GIFT_COINS) else None
            return Transfer(
                uuid.uuid4(),
                debit,
                credit,
                amount,
                code,
                flags,
                rate_card_version=card,
                event_id=event_id,
            )

        results = await ledger.post(
            [
                transfer(issuance, available, 12_500, TransferCode.GIFT_DIAMONDS),
                transfer(issuance, available, 3_000, TransferCode.GIFT_DIAMONDS),
                transfer(spent, revenue, 31, TransferCode.GIFT_COINS),
                transfer(available, held, 2_000, TransferCode.CASHOUT_HOLD, TransferFlags.PENDING),
                transfer(tips, wallet, 1_050, TransferCode.TIP),
            ]
        )
        assert results == [PostResult.OK] * 5
    finally:
        await engine.dispose()


@pytest.fixture
def creator_id(cli_database: str, unique_id: str) -> str:
    creator_id = f"cli-{unique_id}"
    asyncio.run(_post_creator_activity(cli_database, creator_id))
    return creator_id


def test_migrate_twice_succeeds_and_prints_the_revision(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0] == lines[1]
    assert lines[0].startswith("database at revision ")


def test_balance_json_sums_the_creators_accounts_per_asset(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["balance", creator_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "creator_id": creator_id,
        "balances": [
            {"asset": "DIAMOND", "available": 13_500, "pending": 2_000, "scale": 3},
            {"asset": "USD", "available": 1_050, "pending": 0, "scale": 2},
        ],
    }


def test_balance_text_shows_decimals_in_the_major_unit(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["balance", creator_id]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        ["DIAMOND", "available", "13.500", "pending", "2.000"],
        ["USD", "available", "10.50", "pending", "0.00"],
    ]


def test_balance_of_an_unknown_creator_is_a_usage_error(
    cli_database: str, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["balance", f"nobody-{unique_id}", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"no accounts for creator 'nobody-{unique_id}'" in captured.err


def test_statement_csv_parses_and_its_running_balance_adds_up(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = f"creator:{creator_id}:DIAMOND:available"
    assert main(["statement", account, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["code"], row["debit"], row["credit"], row["pending"]) for row in rows] == [
        ("gift_diamonds", "0", "12500", "false"),
        ("gift_diamonds", "0", "3000", "false"),
        ("cashout_hold", "2000", "0", "true"),
    ]
    running = 0
    for row in rows:
        if row["pending"] == "false":
            running += int(row["credit"]) - int(row["debit"])
        assert int(row["balance_after"]) == running
    assert running == 15_500
    # the hold reserves 2.000 diamonds: minus the balance's pending, credits less debits
    assert [row["pending_after"] for row in rows] == ["0", "0", "-2000"]
    assert rows[2]["counterparty"] == f"creator:{creator_id}:DIAMOND:held"
    assert all(row["event_id"].startswith(creator_id) for row in rows)
    # each line names what its amounts count: 12500 is 12.500 diamonds, not 125.00 of a currency
    assert [(row["asset"], row["scale"]) for row in rows] == [("DIAMOND", "3")] * 3


def test_statement_text_shows_the_running_balance_and_pending_amount(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = f"creator:{creator_id}:DIAMOND:available"
    assert main(["statement", account]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [
        "seq",
        "created_at",
        "code",
        "counterparty",
        "debit",
        "credit",
        "balance",
        "pending",
    ]
    assert [line.split()[3:] for line in lines[2:]] == [
        [f"platform:DIAMOND:{AccountKind.DIAMOND_ISSUANCE.value}", "12.500", "12.500", "0.000"],
        [f"platform:DIAMOND:{AccountKind.DIAMOND_ISSUANCE.value}", "3.000", "15.500", "0.000"],
        [f"creator:{creator_id}:DIAMOND:held", "2.000", "pending", "15.500", "-2.000"],
    ]


def test_statement_pages_continue_from_the_printed_cursor(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = f"creator:{creator_id}:DIAMOND:available"
    assert main(["statement", account, "--csv", "--page-size", "2"]) == 0
    first = capsys.readouterr()
    assert len(list(csv.DictReader(io.StringIO(first.out)))) == 2
    cursor = first.err.strip().removeprefix("next cursor: ")
    assert main(["statement", account, "--csv", "--page-size", "2", "--cursor", cursor]) == 0
    second = capsys.readouterr()
    assert [row["code"] for row in csv.DictReader(io.StringIO(second.out))] == ["cashout_hold"]
    assert second.err == ""


async def _post_tips(database_url: str, creator_id: str, count: int) -> None:
    """`count` tips to the creator's USD wallet, of 1, 2, ... `count` cents."""
    engine = create_engine(database_url, pool_size=2)
    try:
        ledger = Ledger(engine)
        specs = [platform(AccountKind.TIPS_CLEARING, "USD"), creator_wallet(creator_id, "USD")]
        ids = await ledger.account_ids(specs)
        clearing, wallet = (ids[spec.name] for spec in specs)
        results = await ledger.post(
            [
                Transfer(uuid.uuid4(), clearing, wallet, amount, TransferCode.TIP)
                for amount in range(1, count + 1)
            ]
        )
        assert results == [PostResult.OK] * count
    finally:
        await engine.dispose()


def test_statement_csv_holds_the_whole_range_and_text_a_page(
    cli_database: str, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV written to a file is the whole statement, read a page at a time; the text for the
    terminal is one page, its cursor on stderr."""
    creator_id = f"cli-pages-{unique_id}"
    count = STATEMENT_PAGE_SIZE_MAX + 50
    asyncio.run(_post_tips(cli_database, creator_id, count))
    account = f"creator:{creator_id}:USD:wallet"

    assert main(["statement", account, "--csv"]) == 0
    whole = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(whole.out)))
    assert [int(row["credit"]) for row in rows] == list(range(1, count + 1))
    assert {(row["asset"], row["scale"]) for row in rows} == {("USD", "2")}
    assert int(rows[-1]["balance_after"]) == count * (count + 1) // 2
    assert whole.err == ""

    assert main(["statement", account, "--csv", "--cursor", rows[9]["seq"]]) == 0
    rest = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["seq"] for row in rest] == [row["seq"] for row in rows[10:]]

    assert main(["statement", account]) == 0
    page = capsys.readouterr()
    assert len(page.out.splitlines()) == 2 + STATEMENT_PAGE_SIZE_DEFAULT  # title and header
    assert page.err == f"next cursor: {rows[STATEMENT_PAGE_SIZE_DEFAULT - 1]['seq']}\n"


def test_statement_window_ending_in_the_past_is_empty(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = f"creator:{creator_id}:USD:wallet"
    assert main(["statement", account, "--to", "2000-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{account} (USD, scale 2)", "no transfers"]


def test_statement_refuses_a_timestamp_without_a_time_zone(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["statement", "creator:c1:DIAMOND:available", "--from", "2026-11-01T00:00"]) == 2
    assert "has no time zone" in capsys.readouterr().err


def test_statement_of_an_unknown_account_is_a_usage_error(
    cli_database: str, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["statement", f"creator:{unique_id}:DIAMOND:available"]) == 2
    assert "no account named" in capsys.readouterr().err


def test_trial_balance_totals_are_zero_per_asset(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trial-balance", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    totals = {entry["asset"]: entry["total"] for entry in document["assets"]}
    assert {"DIAMOND", "USD"} <= set(totals)
    for total in totals.values():
        assert total["balance"] == 0
        assert total["debits"] == total["credits"]
    diamonds = next(entry for entry in document["assets"] if entry["asset"] == "DIAMOND")
    accounts = {line["account"]: line for line in diamonds["accounts"]}
    # the pending hold is not posted, so only the two gifts count
    assert accounts[f"creator:{creator_id}:DIAMOND:available"]["balance"] == 15_500


def test_trial_balance_text_formats_amounts_with_their_asset(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trial-balance", "--as-of", "2999-01-01T00:00:00+00:00"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "Trial balance, posted as of 2999-01-01T00:00:00+00:00: each account's balance on its side"
    )
    # Creators' accounts summed per kind, each balance on its side, totals that add up.
    wallets = next(line.split() for line in lines if "creator:*:USD:wallet" in line)
    assert wallets[:2] == ["liability", "creator:*:USD:wallet"]
    assert re.fullmatch(r"[\d,]+\.\d\d", wallets[-1])
    for line in lines:
        if line.strip().startswith("total "):
            _, _, debits, credits = line.split()
            assert debits == credits, line
    assert any(line.strip().startswith("outstanding ") for line in lines)


def test_verify_passes_on_the_test_database(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify"]) == 0
    assert capsys.readouterr().out.startswith("ledger verified: ")


def test_a_file_command_given_a_place_it_cannot_use_says_so_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a traceback (schemas export), not an empty bank file and success (settlement-file)."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory\n")
    assert main(["schemas", "export", str(blocked / "schemas")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"giftledger: cannot write the schemas to {blocked / 'schemas'}: ")
    assert "Traceback" not in err
    missing = tmp_path / "no-bank"
    out = tmp_path / "out.csv"
    arguments = ["settlement-file", "--date", "2026-11-02", str(out), "--dir", str(missing)]
    assert main(arguments) == 2
    assert capsys.readouterr().err == (
        f"giftledger: {missing}: no such directory (the bank's, with its journal)\n"
    )
    assert not out.exists()


def test_schemas_export_writes_one_file_per_topic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schemas", "export", str(tmp_path / "schemas")]) == 0
    printed = capsys.readouterr().out.splitlines()
    written = sorted((tmp_path / "schemas").glob("*.json"))
    assert "gifts.sent.schema.json" in {path.name for path in written}
    assert sorted(printed) == [str(path) for path in written]
    for path in written:
        json.loads(path.read_text(encoding="utf-8"))
    asyncapi = json.loads((tmp_path / "schemas" / "asyncapi.json").read_text(encoding="utf-8"))
    channels = {channel["address"] for channel in asyncapi["channels"].values()}
    assert {"gifts.sent", "gifts.sent.dlq", "payouts.requested"} <= channels
    assert "GiftSent" in asyncapi["components"]["schemas"]


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ["migrate", "verify", "balance", "statement", "trial-balance", "schemas"]:
        assert main([command, "--help"]) == 0
        assert f"usage: giftledger {command}" in capsys.readouterr().out


def test_an_unreachable_database_names_the_host_but_not_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ledger:s3cret-word@127.0.0.1:9/giftledger")
    settings.get_settings.cache_clear()
    try:
        assert main(["verify"]) == 1
    finally:
        settings.get_settings.cache_clear()
    captured = capsys.readouterr()
    assert "127.0.0.1:9" in captured.err
    assert "s3cret-word" not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1


def test_the_module_runs_as_a_program_with_json_alone_on_stdout(creator_id: str) -> None:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "balance", creator_id, "--json"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=PROJECT_ROOT,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["creator_id"] == creator_id


def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly_with_141(
    cli_database: str, unique_id: str
) -> None:
    """`giftledger statement ... --csv | head -1`: the reader has what it wants and closes the
    pipe, and the statement ends as a Unix tool does when its reader goes (exit 128 + SIGPIPE),
    with no traceback and without an exit code that says the database or verify failed."""
    creator_id = f"cli-pipe-{unique_id}"
    asyncio.run(_post_tips(cli_database, creator_id, STATEMENT_PAGE_SIZE_MAX + 50))
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "services.cli", "statement"]
    with subprocess.Popen(
        [*command, f"creator:{creator_id}:USD:wallet", "--csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=PROJECT_ROOT,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        header = process.stdout.readline()
        # the rest of the CSV (some 150 kB, far past a pipe's buffer) is still being written
        process.stdout.close()
        code = process.wait(timeout=SUBPROCESS_TIMEOUT_S)
        errors = process.stderr.read().decode()
    assert header.startswith(b"seq,created_at,")
    assert code == EXIT_BROKEN_PIPE == 141, errors
    assert errors == ""


def test_a_reader_that_closes_the_pipe_before_reading_gets_the_same_quiet_141(
    creator_id: str,
) -> None:
    """`giftledger balance ... --json | true`: a short output still sits in stdout's buffer when
    the command ends, and meets the closed pipe when it is flushed."""
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "services.cli", "balance", creator_id, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=PROJECT_ROOT,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()  # before the command has connected to the database
        code = process.wait(timeout=SUBPROCESS_TIMEOUT_S)
        errors = process.stderr.read().decode()
    assert code == EXIT_BROKEN_PIPE, errors
    assert errors == ""


def test_eligibility_names_each_rule_and_the_first_that_fails(
    cli_database: str, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    creator = f"creator-{unique_id}"
    update = CreatorUpdated.model_validate_json(
        event_factory.encode(event_factory.creator_update(creator, country="CA"))
    )

    async def store_profile() -> None:
        engine = create_engine(cli_database, pool_size=1)
        async with engine.begin() as conn:
            await apply_creator_updates(conn, [update])
        await engine.dispose()

    asyncio.run(store_profile())
    assert main(["eligibility", creator, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["eligible"] is False
    failed = [rule["rule"] for rule in document["rules"] if not rule["passed"]]
    assert failed == ["country"]


def test_eligibility_of_a_creator_with_accounts_but_no_profile_fails_profile_known(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eligibility", creator_id]) == 0
    assert f"{creator_id}: not eligible (profile_known)" in capsys.readouterr().out


def test_eligibility_of_an_unknown_creator_is_a_usage_error(
    cli_database: str, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eligibility", f"nobody-{unique_id}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"giftledger: no creator 'nobody-{unique_id}'")


def test_rates_lists_the_default_card_and_adds_a_future_version(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rates", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)["rate_cards"]
    assert before[0] == {
        "version": 1,
        "effective_from": None,
        "milli_diamonds_per_coin": 500,
        "diamonds_per_usd": 200,
        "note": "contract default: creator share 50 %, 200 diamonds = 1 USD",
        "created_by": None,
    }
    past = ["rates", "add", "--as", "rita", "--effective-from", "2020-01-01T00:00:00Z"]
    past += ["--milli-diamonds-per-coin", "600", "--diamonds-per-usd", "200"]
    assert main(past) == 2
    assert "in the future" in capsys.readouterr().err
    years_ahead = 50 + len(before)
    future = ["rates", "add", "--as", "rita"]
    future += ["--effective-from", f"{2026 + years_ahead}-01-01T00:00:00Z"]
    future += ["--milli-diamonds-per-coin", "600", "--diamonds-per-usd", "250", "--note", "test"]
    assert main(future) == 0
    assert f"rate card version {len(before) + 1}" in capsys.readouterr().out
    assert main(["rates", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)["rate_cards"]
    added = [card for card in after if card["version"] == len(before) + 1]
    assert [(card["milli_diamonds_per_coin"], card["created_by"]) for card in added] == [
        (600, "rita")
    ]
    assert len(after) == len(before) + 1


def test_cashouts_of_an_unknown_creator_is_a_usage_error(
    cli_database: str, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cashouts", "--creator", f"nobody-{unique_id}", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"giftledger: no creator 'nobody-{unique_id}'")


def test_cashouts_of_a_known_creator_without_any_is_an_empty_list(
    creator_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cashouts", "--creator", creator_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cashouts": [], "next_cursor": None}


async def _insert_rejected_cashouts(database_url: str, rows: list[dict[str, object]]) -> None:
    """Cash-outs rejected by the daily limit once priced: rows only, nothing in the ledger."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO cashouts (cashout_id, creator_id, asset, amount, payout_currency,"
                    " payout_amount, usd_value_micros, status, rejected_rule, requested_on,"
                    " occurred_at) VALUES (:cashout_id, :creator_id, :asset, :amount,"
                    " :payout_currency, :payout_amount, 0, 'rejected', 'daily_limit',"
                    " current_date, now())"
                ),
                rows,
            )
            await conn.execute(
                text(
                    "INSERT INTO cashout_transitions (cashout_id, status)"
                    " VALUES (:cashout_id, 'rejected')"
                ),
                rows,
            )
    finally:
        await engine.dispose()


def test_cashouts_print_each_amount_with_its_asset(
    cli_database: str, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """100.00 EUR and 100.00 USD must not look alike; a Diamond cash-out pays in a currency."""
    creator = f"cli-cashouts-{unique_id}"
    rows: list[dict[str, object]] = [
        {"asset": "EUR", "amount": 10_000, "payout_currency": "EUR", "payout_amount": 10_000},
        {"asset": "USD", "amount": 10_000, "payout_currency": "USD", "payout_amount": 10_000},
        {"asset": "DIAMOND", "amount": 2_000_000, "payout_currency": "GBP", "payout_amount": 800},
    ]
    for index, row in enumerate(rows):
        row.update(cashout_id=f"{creator}-{index}", creator_id=creator)
    asyncio.run(_insert_rejected_cashouts(cli_database, rows))
    assert main(["cashouts", "--creator", creator]) == 0
    printed = {
        line.split()[0]: line.split()[3:7] for line in capsys.readouterr().out.splitlines()[1:]
    }
    assert printed == {
        f"{creator}-0": ["100.00", "EUR", "100.00", "EUR"],
        f"{creator}-1": ["100.00", "USD", "100.00", "USD"],
        f"{creator}-2": ["2000.000", "DIAMOND", "8.00", "GBP"],
    }


def test_cashouts_page_with_the_cursor_printed_on_stderr(
    cli_database: str, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five cash-outs requested at one instant, two a page: each listed once, by id, the next
    page's cursor on stderr until the last page; a malformed cursor is a usage error."""
    creator = f"cli-paged-{unique_id}"
    rows: list[dict[str, object]] = [
        {
            "cashout_id": f"{creator}-{index}",
            "creator_id": creator,
            "asset": "USD",
            "amount": 100,
            "payout_currency": "USD",
            "payout_amount": 100,
        }
        for index in (3, 0, 4, 1, 2)
    ]
    asyncio.run(_insert_rejected_cashouts(cli_database, rows))
    listed: list[str] = []
    cursor: list[str] = []
    for _ in range(len(rows)):
        assert main(["cashouts", "--creator", creator, "--limit", "2", "--json", *cursor]) == 0
        printed = capsys.readouterr()
        document = json.loads(printed.out)
        listed += [cashout["cashout_id"] for cashout in document["cashouts"]]
        if document["next_cursor"] is None:
            assert printed.err == ""
            break
        assert printed.err == f"next cursor: {document['next_cursor']}\n"
        cursor = ["--cursor", document["next_cursor"]]
    assert listed == [f"{creator}-{index}" for index in range(5)]
    assert main(["cashouts", "--creator", creator, "--cursor", "2026-01-01T00:00:00Z"]) == 2
    assert "argument --cursor: not a cursor of the cash-outs list" in capsys.readouterr().err


@pytest.mark.parametrize("currency", ["XXX", "DIAMOND"])
def test_fx_add_of_an_unknown_currency_names_it(
    cli_database: str, currency: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fx_add = ["rates", "fx-add", currency, "1.5", "--effective-from", _future_instant()]
    fx_add += ["--as", "rita"]
    assert main(fx_add) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"giftledger: unknown currency {currency!r}")


def test_fx_add_echoes_the_rate_as_the_decimal_given(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    effective_from = _future_instant()
    fx_add = ["rates", "fx-add", "EUR", "0.92", "--effective-from", effective_from]
    assert main([*fx_add, "--as", "rita"]) == 0
    assert capsys.readouterr().out == f"EUR: 0.92 per USD from {effective_from}, added by rita\n"


def test_rates_lists_the_fx_versions_with_the_rate_cards(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    effective_from = _future_instant()
    fx_add = ["rates", "fx-add", "JPY", "151.25", "--effective-from", effective_from]
    assert main([*fx_add, "--as", "rita"]) == 0
    capsys.readouterr()
    assert main(["rates", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["rate_cards"][0]["version"] == 1
    usd = {"currency": "USD", "effective_from": None, "units_per_usd": "1", "created_by": None}
    assert usd in document["fx_rates"]
    added = {
        "currency": "JPY",
        "effective_from": effective_from,
        "units_per_usd": "151.25",
        "created_by": "rita",
    }
    assert added in document["fx_rates"]
    assert main(["rates"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["currency", "effective", "from", "units/USD", "added", "by"] in lines
    assert ["USD", "always", "1", "-"] in lines
    assert ["JPY", effective_from, "151.25", "rita"] in lines


CONFIGURATION_MISTAKES = [
    ("DATABASE_URL", f"mysql://ledger:{PASSWORD}@db/giftledger"),
    ("DATABASE_URL", "not-a-url"),
    ("DATABASE_URL", f"postgresql://ledger:{PASSWORD}@db:abc/giftledger"),
    ("API_PORT", "abc"),
    ("API_TOKENS", "notjson"),
    ("API_TOKENS", json.dumps({"ab" * 32: "admin"})),
    ("KAFKA_BOOTSTRAP_SERVERS", "host-without-port"),
]


@pytest.mark.parametrize(("variable", "value"), CONFIGURATION_MISTAKES)
def test_a_configuration_mistake_names_the_variable_and_exits_2(
    configure: Configure, variable: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(variable, value)
    assert main(["verify"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"giftledger: configuration: {variable}: ")
    assert len(captured.err.splitlines()) == 1
    assert PASSWORD not in captured.err


@pytest.mark.parametrize(
    "arguments",
    [
        ["run", "--api", "--payout-rail"],
        ["demo", "--no-wait"],
        ["migrate"],
        ["balance", "c1"],
        ["statement", "creator:c1:DIAMOND:available"],
        ["trial-balance"],
        ["eligibility", "c1"],
        ["cashouts"],
        ["rates"],
    ],
)
def test_every_command_refuses_a_database_url_that_is_not_postgresql(
    configure: Configure, arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    configure("DATABASE_URL", f"mysql://ledger:{PASSWORD}@db/giftledger")
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("giftledger: configuration: DATABASE_URL: mysql://")
    assert PASSWORD not in captured.out + captured.err


def test_an_eligibility_variable_that_does_not_parse_exits_2(
    creator_id: str, configure: Configure, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("ELIGIBILITY_ENABLED_COUNTRIES", "US,GB")
    assert main(["eligibility", creator_id]) == 2
    assert capsys.readouterr().err == (
        "giftledger: configuration: ELIGIBILITY_ENABLED_COUNTRIES: not valid JSON\n"
    )


def test_a_configuration_mistake_in_the_program_prints_one_line_and_no_traceback() -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "DATABASE_URL": f"postgresql://ledger:{PASSWORD}@db:abc/giftledger",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "balance", "c1"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=PROJECT_ROOT,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr == (
        "giftledger: configuration: DATABASE_URL: the port is not a number\n"
    )
    assert completed.stdout == ""


@pytest.mark.parametrize(
    "arguments",
    [
        ["verify"],
        ["balance", "c1"],
        ["statement", "creator:c1:DIAMOND:available"],
        ["trial-balance"],
        ["eligibility", "c1"],
        ["cashouts"],
        ["cashouts", "--creator", "c1", "--stale"],
        ["rates"],
        ["rates", "--json"],
        ["rates", "fx-add", "EUR", "0.92", "--effective-from", "2300-01-01T00:00:00Z"],
        [
            *["rates", "add", "--effective-from", "2300-01-01T00:00:00Z"],
            *["--milli-diamonds-per-coin", "600", "--diamonds-per-usd", "250"],
        ],
        ["run", "--api", "--payout-rail"],
    ],
)
def test_every_command_on_a_database_never_migrated_says_run_giftledger_migrate(
    unmigrated_database_url: str,
    configure: Configure,
    arguments: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("DATABASE_URL", unmigrated_database_url)
    assert main(arguments) == 2
    assert capsys.readouterr() == ("", NO_SCHEMA)


def test_migrate_is_the_command_that_works_on_a_database_never_migrated(
    postgres_admin_url: str, configure: Configure, capsys: pytest.CaptureFixture[str]
) -> None:
    with _new_database(postgres_admin_url) as url:
        configure("DATABASE_URL", url)
        assert main(["verify"]) == 2
        assert main(["migrate"]) == 0
        assert main(["verify"]) == 0
    captured = capsys.readouterr()
    assert captured.err == NO_SCHEMA
    assert captured.out.splitlines()[0] == f"database at revision {head_revision()}"


def _upgrade_to_revision_before_head(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.upgrade(config, REVISION_BEFORE_HEAD)


def test_a_database_at_an_older_revision_says_run_giftledger_migrate(
    postgres_admin_url: str, configure: Configure, capsys: pytest.CaptureFixture[str]
) -> None:
    with _new_database(postgres_admin_url) as url:
        asyncio.run(_run_on(url, _upgrade_to_revision_before_head))
        configure("DATABASE_URL", url)
        assert main(["balance", "c1"]) == 2
        assert main(["run"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0] == lines[1]
    assert f"revision {REVISION_BEFORE_HEAD}" in lines[0]
    assert lines[0].endswith(": run giftledger migrate")


def _record_a_revision_from_the_future(connection: Connection) -> None:
    connection.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
    connection.execute(text("INSERT INTO alembic_version VALUES ('9999')"))


def test_a_database_newer_than_this_giftledger_says_so(
    postgres_admin_url: str, configure: Configure, capsys: pytest.CaptureFixture[str]
) -> None:
    with _new_database(postgres_admin_url) as url:
        asyncio.run(_run_on(url, _record_a_revision_from_the_future))
        configure("DATABASE_URL", url)
        assert main(["verify"]) == 2
    assert capsys.readouterr().err == (
        "giftledger: the database schema is at revision 9999, newer than this giftledger knows"
        f" (its latest is {head_revision()}): run a newer giftledger\n"
    )
