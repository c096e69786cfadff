"""The README's main command: `giftledger demo` runs the sample stream to a sound ledger, serves
the finance API until Ctrl-C, then stops cleanly; `--no-wait` exits after the summary.

The demos run for real, as subprocesses on the session's broker. One runs on the session's test
database (`DATABASE_URL`); three run one after the other on an embedded PostgreSQL in a data
directory of their own, as `giftledger demo` does on a laptop: the first on a busy `API_PORT`,
the second over the ledger the first kept, the third with `--fresh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.errors import KafkaTimeoutError  # type: ignore[import-untyped]
from sqlalchemy import text

from ledger.database import create_engine
from services.cli import main
from services.commands.common import EXIT_OK, EXIT_USAGE
from services.demo import (
    EMBEDDED_HANDLES_FILE,
    STAGES,
    FreshStartError,
    Stage,
    _acknowledged,
    embedded_database_dir,
    print_cashouts,
    records_line,
    start_fresh,
)
from services.runtime import settings as settings_module
from services.runtime.embedded_broker import BrokerUnavailableError
from services.runtime.metrics import IngestCounts
from services.runtime.settings import Settings
from tests.api_server import free_port
from tests.console_http import sign_in, table
from tests.fresh_database import fresh_database
from tests.ledger_helpers import newest_verify_run

DEMO_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 10
TRY_LINE = re.compile(r"try: curl -H 'Authorization: Bearer (?P<token>[^']+)' (?P<url>\S+)")
RECORDS_LINE = re.compile(r"consumed \d+: applied (?P<applied>\d+), duplicates (?P<duplicates>\d+)")


def _demo_env(database_url: str | None, kafka_bootstrap: str) -> dict[str, str]:
    """The environment of one demo: its own topics and consumer group on the session's broker;
    `database_url` None means the embedded PostgreSQL."""
    prefix = f"d{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_CONSUMER_GROUP": f"g-{prefix}",
        "KAFKA_PARTITION_COUNT": "2",
        "API_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    env.pop("API_TOKENS", None)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env


def _assert_summary(out: str) -> None:
    assert "verify: every invariant holds" in out
    assert "still parked 0" in out
    assert "1 x malformed_json" in out
    assert "1 x schema_violation" in out
    assert "total DIAMOND" in out
    for line in ("paid", "rejected (country)", "rejected (daily_limit)", "rejected (minimum)"):
        assert f"  {line} " in out


def _assert_each_stage_once(out: str) -> None:
    """Every stage's line exactly once, done, in order, and no bar redrawn with a \\r."""
    assert "\r" not in out
    stage_lines = [line for line in out.splitlines() if re.match(r"\d+/\d+ ", line)]
    assert len(stage_lines) == len(STAGES), stage_lines
    for number, ((name, unit), line) in enumerate(zip(STAGES, stage_lines, strict=True), 1):
        assert line.startswith(f"{number}/{len(STAGES)} {name} "), line
        done_of_total = re.search(r" (\d+)/(\d+) ", line)
        assert done_of_total is not None, line
        assert done_of_total.group(1) == done_of_total.group(2), line
        assert line.endswith(f" {unit}"), line


def _applied_and_duplicates(out: str) -> tuple[int, int]:
    records = RECORDS_LINE.search(out)
    assert records is not None, out
    return int(records.group("applied")), int(records.group("duplicates"))


def _ledger_outcome(out: str) -> tuple[str, str]:
    """The run's records line and its cash-outs by status: the same for the same sample on an
    empty ledger, whatever the run."""
    records = RECORDS_LINE.search(out)
    assert records is not None, out
    records_line = out[records.start() : out.index("\n", records.start())]
    cashouts = out.index("Cash-outs by status")
    return records_line, out[cashouts : out.index("\n\n", cashouts)]


def _get(url: str, token: str) -> bytes:
    # The URL the demo printed: http://127.0.0.1, checked by the caller.
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:  # noqa: S310
        body: bytes = response.read()
    return body


def _get_json(url: str, token: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(_get(url, token))
    return document


def _run_demo(env: dict[str, str], cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--no-wait", *options],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )


async def _console_verify_rows(base_url: str, token: str) -> list[list[str]]:
    """The rows of the console overview's Verify table, signed in with `token`."""
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        assert (await sign_in(client, token)).status_code == 303
        page = await client.get("/console/")
    assert page.status_code == 200, page.text
    return table(page.text, "The last giftledger verify").rows


@contextlib.contextmanager
def _busy_port() -> Iterator[int]:
    """A port something else listens on, for as long as the block runs."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield int(listener.getsockname()[1])


# On the session's database, serving the API -------------------------------------------------------


def test_demo_serves_the_api_until_ctrl_c_and_stops_cleanly(
    database_url: str, kafka_bootstrap: str
) -> None:
    env = _demo_env(database_url, kafka_bootstrap)
    run_before = asyncio.run(newest_verify_run(database_url))
    demo = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        out = "".join(lines)
        _assert_summary(out)
        _assert_each_stage_once(out)
        try_line = TRY_LINE.search(out)
        assert try_line is not None, out
        assert try_line["url"] == (
            f"http://127.0.0.1:{env['API_PORT']}/v1/creators/creator-00/balances"
        )
        assert f"token for this run (role finance): {try_line['token']}\n" in out
        balances = _get_json(try_line["url"], try_line["token"])
        assert isinstance(balances["balances"], list)
        assert {line["asset"] for line in balances["balances"]} >= {"DIAMOND", "USD"}
        # The partitions are kept, and their gauge set, as by `giftledger run` (it read 0,
        # "run giftledger migrate", with every partition there).
        metrics = _get(f"http://127.0.0.1:{env['API_PORT']}/metrics", try_line["token"]).decode()
        months = re.search(r"^giftledger_transfer_partition_months_ahead (\S+)$", metrics, re.M)
        assert months is not None, metrics
        assert float(months[1]) >= 1
        # The demo's verify is recorded as `giftledger verify`'s is, and the console's overview
        # shows it (not "the ledger has not been verified yet").
        run = asyncio.run(newest_verify_run(database_url))
        assert run is not None
        assert run.id > (0 if run_before is None else run_before.id)
        assert (run.clean, run.full_check) == (True, True)
        assert run.checkpoint_id is not None
        base_url = f"http://127.0.0.1:{env['API_PORT']}"
        rows = asyncio.run(_console_verify_rows(base_url, try_line["token"]))
        assert ["Found", f"no problem (checkpoint {run.checkpoint_id})"] in rows
        assert ["Checked", f"the whole ledger: {run.walked_transfer_count} transfers"] in rows
        demo.send_signal(signal.SIGINT)
        assert demo.wait(STOP_TIMEOUT_S) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


# On an embedded PostgreSQL of its own: a busy port, a rerun, --fresh ------------------------------


@dataclass(frozen=True)
class EmbeddedRuns:
    """Three `demo --no-wait` runs over one data directory, one after the other."""

    busy_port: int
    first: subprocess.CompletedProcess[str]
    again: subprocess.CompletedProcess[str]
    fresh: subprocess.CompletedProcess[str]
    database_dir: Path


@pytest.fixture(scope="module")
def embedded_runs(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> EmbeddedRuns:
    # A directory of its own as the working directory too: no `.env` file is read from the
    # repository, and the default data directory is not the developer's `.giftledger/`.
    workdir = tmp_path_factory.mktemp("demo")
    data_dir = workdir / "data"

    def env() -> dict[str, str]:
        return {**_demo_env(None, kafka_bootstrap), "DATA_DIR": str(data_dir)}

    with _busy_port() as busy_port:
        first = _run_demo({**env(), "API_PORT": str(busy_port)}, workdir)
    again = _run_demo(env(), workdir)
    fresh = _run_demo(env(), workdir, "--fresh")
    return EmbeddedRuns(busy_port, first, again, fresh, data_dir / "postgres")


def _output(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout + run.stderr


def test_a_busy_api_port_is_reported_at_the_end_and_the_summary_still_prints(
    embedded_runs: EmbeddedRuns,
) -> None:
    first = embedded_runs.first
    assert first.returncode == EXIT_OK, _output(first)
    _assert_summary(first.stdout)
    report = (
        f"giftledger: API_PORT {embedded_runs.busy_port} is in use: the finance API was not "
        "started; set API_PORT to a free port\n"
    )
    assert first.stdout.endswith(report), first.stdout
    assert "try: curl" not in first.stdout


def test_each_stage_is_printed_once_when_the_output_is_not_a_terminal(
    embedded_runs: EmbeddedRuns,
) -> None:
    for run in (embedded_runs.first, embedded_runs.again, embedded_runs.fresh):
        _assert_each_stage_once(run.stdout)


def test_the_first_run_starts_on_an_empty_ledger_and_says_nothing_was_kept(
    embedded_runs: EmbeddedRuns,
) -> None:
    assert "kept" not in embedded_runs.first.stdout
    applied, duplicates = _applied_and_duplicates(embedded_runs.first.stdout)
    assert applied > 1_000
    assert duplicates == 1  # the sample's one redelivered gift


def test_a_second_run_over_the_same_data_says_the_ledger_was_kept_and_how_to_start_afresh(
    embedded_runs: EmbeddedRuns,
) -> None:
    again = embedded_runs.again
    assert again.returncode == EXIT_OK, _output(again)
    assert f"ledger: kept from an earlier run in {embedded_runs.database_dir}:" in again.stdout
    assert "  to start from an empty ledger: giftledger demo --fresh\n" in again.stdout
    applied, duplicates = _applied_and_duplicates(again.stdout)
    assert applied == 0
    assert duplicates > 1_000
    _assert_summary(again.stdout)


def test_fresh_removes_the_embedded_database_and_starts_from_an_empty_ledger(
    embedded_runs: EmbeddedRuns,
) -> None:
    fresh = embedded_runs.fresh
    assert fresh.returncode == EXIT_OK, _output(fresh)
    assert fresh.stdout.startswith(
        f"--fresh: removed the database in {embedded_runs.database_dir}; starting from an empty "
        "ledger\n"
    )
    assert "kept" not in fresh.stdout
    assert _ledger_outcome(fresh.stdout) == _ledger_outcome(embedded_runs.first.stdout), _output(
        fresh
    )
    _assert_summary(fresh.stdout)
    # --no-wait: the API stops with the demo, so no token or address to try is offered.
    assert "\nFinance API: served on http://127.0.0.1:" in fresh.stdout
    assert "stopped with it (--no-wait)" in fresh.stdout
    assert "try: curl" not in fresh.stdout
    assert "token for this run" not in fresh.stdout


# --fresh refusals, without running a demo ---------------------------------------------------------


def test_fresh_is_a_usage_error_when_database_url_is_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ledger@127.0.0.1:9/giftledger")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    database_dir = tmp_path / "postgres"
    database_dir.mkdir()
    settings_module.get_settings.cache_clear()
    try:
        assert main(["demo", "--fresh", "--no-wait"]) == EXIT_USAGE
    finally:
        settings_module.get_settings.cache_clear()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("giftledger: --fresh removes only the embedded database")
    assert "DATABASE_URL is set" in captured.err
    assert database_dir.exists()


def test_fresh_refuses_an_embedded_database_another_process_holds_open(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None)
    handles = embedded_database_dir(settings) / EMBEDDED_HANDLES_FILE
    handles.parent.mkdir(parents=True)
    handles.write_text(json.dumps([os.getppid()]))
    with pytest.raises(FreshStartError, match=f"in use by process {os.getppid()}"):
        start_fresh(settings)
    assert handles.exists()


def test_fresh_on_a_data_dir_without_a_database_says_so(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "never-used", database_url=None)
    assert start_fresh(settings).startswith("--fresh: no earlier database in ")


# Progress lines -----------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_stage_redraws_its_bar_on_a_terminal_and_prints_one_line_elsewhere() -> None:
    for out in (_Terminal(), io.StringIO()):
        stage = Stage.of(out, STAGES[1])
        for done in (0, 250, 500):
            stage.show(done, 1_000)
        stage.end(1_000, 1_000)
        written = out.getvalue()
        assert written.endswith(" 1000/1000 records\n")
        assert written.count("\n") == 1
        assert written.count("\r") == (4 if out.isatty() else 0)
        assert ("[####" in written) == out.isatty()


def test_a_stage_that_runs_out_of_time_says_so() -> None:
    out = io.StringIO()
    Stage.of(out, STAGES[2]).end(17, 2_030, in_time=False)
    assert out.getvalue().endswith(" 17/2030 records consumed (not done in time)\n")


# The records line ----------------------------------------------------------------------------


def test_the_records_line_adds_up_when_parked_events_end_as_duplicates() -> None:
    """Parked reversals end applied, duplicates or dead-lettered: each is counted in its part,
    so the parts add up to the consumed."""
    counts = IngestCounts(consumed=20, applied=10, duplicates=1, dead_lettered=2, parked=7)
    counts.unparked_applied, counts.unparked_duplicates, counts.unparked_dead_lettered = 2, 3, 1
    assert counts.balanced()

    line = records_line(counts)

    assert line == "  consumed 20: applied 12, duplicates 4, dead-lettered 3, still parked 1\n"


async def test_the_cashouts_by_status_sum_each_asset_and_each_payout_currency_apart(
    postgres_admin_url: str,
) -> None:
    """On a database of its own (the summary reads every cash-out): 100.00 EUR and 100.00 USD
    requested are two lines, not 200.00 of one asset, and Diamond cash-outs' payouts are summed
    in their currency."""
    columns = ("status", "rule", "asset", "amount", "currency", "payout")
    cashouts = [
        ("paid", None, "EUR", 10_000, "EUR", 10_000),
        ("paid", None, "USD", 10_000, "USD", 10_000),
        ("paid", None, "DIAMOND", 2_000_000, "USD", 1_000),
        ("paid", None, "DIAMOND", 4_000_000, "USD", 2_000),
        ("paid", None, "DIAMOND", 2_000_000, "GBP", 800),
        ("rejected", "country", "DIAMOND", 2_000_000, "USD", None),
    ]
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO cashouts (cashout_id, status, rejected_rule, asset, amount,"
                        " payout_currency, payout_amount, creator_id, usd_value_micros,"
                        " requested_on, occurred_at) VALUES (:id, :status, :rule, :asset,"
                        " :amount, :currency, :payout, 'creator-00', 0, current_date, now())"
                    ),
                    [
                        dict(zip(columns, values, strict=True)) | {"id": f"cashout-{index}"}
                        for index, values in enumerate(cashouts)
                    ],
                )
            out = io.StringIO()
            await print_cashouts(engine, out)
        finally:
            await engine.dispose()
    lines = out.getvalue().splitlines()
    assert [line.split() for line in lines[2:]] == [
        ["paid", "1", "2,000.000", "DIAMOND", "8.00", "GBP"],
        ["paid", "2", "6,000.000", "DIAMOND", "30.00", "USD"],
        ["paid", "1", "100.00", "EUR", "100.00", "EUR"],
        ["paid", "1", "100.00", "USD", "100.00", "USD"],
        ["rejected", "(country)", "1", "2,000.000", "DIAMOND", "-"],
    ]
    assert lines[:2] == ["", "Cash-outs by status (count, requested, payout)"]


async def test_a_record_the_broker_refuses_ends_the_demo_naming_it() -> None:
    """The sample stream's sends are answered one by one: a refusal (here a delivery failed as
    aiokafka fails it, with its error) stops the demo naming the record, instead of the demo
    waiting for records the consumers will never see and saying only that they did not come."""
    loop = asyncio.get_running_loop()
    delivered, refused = loop.create_future(), loop.create_future()
    delivered.set_result(None)
    refused.set_exception(KafkaTimeoutError("batch expired"))
    with pytest.raises(BrokerUnavailableError) as raised:
        await _acknowledged([delivered, refused], before=250, total=2_030)
    assert str(raised.value) == (
        "the broker did not take record 252 of 2030 of the sample stream"
        " (KafkaTimeoutError: batch expired)"
    )
