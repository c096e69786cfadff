"""Console page benchmark: how fast each page of the console answers on a big ledger, beside the
finance API's JSON routes on the same data.

It creates a database `giftledger_bench_<random>` (on `DATABASE_URL`, else `127.0.0.1:5432`,
else the embedded PostgreSQL), migrates it to head, fills it through giftledger's own code
(`bench.console_fill`: `--creators` creators' profiles, about `--transfers` gift transfers
through the ledger's batch path, cash-outs in every state, dead letters, operator actions and a
bank reconciliation; the gifts' commit timestamps spread over the month's days before today),
runs ANALYZE, rolls up every final day (`ledger.rollups`, as `giftledger run` does), serves the
API app (`build_api_app`) from a process of its own, signs in to the console with a token, and
requests each page `--requests` times in a row (after `--warm-up` untimed requests), one request
at a time. It prints p50 and p95 per page and
route, and `console worst p95/300ms ratio: 0.NN` (the slowest console page's p95 over the
300 ms target); the database is dropped at the end.

Run: python -m bench.console_bench [--transfers 1000000] [--creators 10000] [--requests 50]
                                   [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.routing import Mount, Route

from bench.console_fill import Filled, FillSizes, fill, what_was_filled
from bench.console_server import running_api
from bench.harness import CALIBRATION_NAME, admin_url, load_average, python_loop_s
from ledger.database import create_engine
from ledger.migrate import upgrade_to_head
from ledger.rollups import roll_all_days
from services.app.bootstrap import build_api_app
from services.runtime.settings import Settings

TARGET_P95_MS: Final = 300.0
REQUEST_TIMEOUT_S: Final = 60.0
TRANSFERS_MAX: Final = 20_000_000
CREATORS_MAX: Final = 1_000_000
REQUESTS_MAX: Final = 10_000
# A page that takes seconds stops after this long (and at least 5 timed requests): its row says
# how many requests its figures come from.
TARGET_SECONDS_MAX: Final = 60.0
OPERATOR_NAME: Final = "bench-operator"
CONSOLE_PREFIX: Final = "/console"
# Console GET routes that are not pages to time: the sign-in form and the stylesheet.
NOT_PAGES: Final = frozenset({"/sign-in", "/static/console.css"})


@dataclass(frozen=True, slots=True)
class BenchSettings:
    sizes: FillSizes
    requests: int
    warm_up: int
    json_path: Path | None
    keep_database: bool
    reuse_database: str | None


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to time: a console page (counted against the target), a download, or an API
    route."""

    kind: str  # "console", "download" or "api"
    name: str
    path: str


@dataclass(frozen=True, slots=True)
class Timing:
    kind: str
    name: str
    path: str
    status: int
    requests: int
    p50_ms: float
    p95_ms: float
    max_ms: float


def parse_settings(argv: Sequence[str] | None = None) -> BenchSettings:
    parser = argparse.ArgumentParser(prog="python -m bench.console_bench", description=__doc__)
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--creators", type=int, default=10_000)
    parser.add_argument("--cashouts", type=int, default=5_000)
    parser.add_argument("--dead-letters", type=int, default=20_000)
    parser.add_argument("--operator-actions", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page")
    parser.add_argument("--warm-up", type=int, default=3, help="untimed requests per page first")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--keep-database", action="store_true", help="do not drop the database at the end"
    )
    parser.add_argument(
        "--reuse-database",
        default=None,
        help="time a database a --keep-database run filled (migrated to head first, not filled)",
    )
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.transfers <= TRANSFERS_MAX:
        parser.error(f"--transfers must be between 1 and {TRANSFERS_MAX}")
    if not 100 <= arguments.creators <= CREATORS_MAX:
        parser.error(f"--creators must be between 100 and {CREATORS_MAX}")
    if not 1 <= arguments.requests <= REQUESTS_MAX:
        parser.error(f"--requests must be between 1 and {REQUESTS_MAX}")
    if min(arguments.cashouts, arguments.dead_letters, arguments.operator_actions) < 10:
        parser.error("--cashouts, --dead-letters and --operator-actions must be at least 10")
    if not 0 <= arguments.warm_up <= REQUESTS_MAX:
        parser.error(f"--warm-up must be between 0 and {REQUESTS_MAX}")
    return BenchSettings(
        sizes=FillSizes(
            transfers=arguments.transfers,
            creators=arguments.creators,
            cashouts=arguments.cashouts,
            dead_letters=arguments.dead_letters,
            operator_actions=arguments.operator_actions,
        ),
        requests=arguments.requests,
        warm_up=arguments.warm_up,
        json_path=arguments.json,
        keep_database=arguments.keep_database,
        reuse_database=arguments.reuse_database,
    )


# What to time -------------------------------------------------------------------------------


def _path(base: str, **query: object) -> str:
    return f"{base}?{urlencode(query)}" if query else base


def console_targets(filled: Filled, statement_cursor: int | None) -> list[Target]:
    today = datetime.now(UTC).date().isoformat()
    account = f"creator:{filled.top_creator}:DIAMOND:available"
    pages = [
        ("overview", _path("/console/")),
        ("creator, top, statement page 1", _path("/console/creator", id=filled.top_creator)),
        ("creator, middle", _path("/console/creator", id=filled.middle_creator)),
        ("cash-outs", _path("/console/cashouts")),
        ("cash-outs, held", _path("/console/cashouts", status="held")),
        ("cash-outs, paid today", _path("/console/cashouts", status="paid", **{"from": today})),
        ("cash-outs, one creator", _path("/console/cashouts", creator_id=filled.top_creator)),
        ("cash-out", _path("/console/cashout", id=filled.cashout_id)),
        ("dead letters", _path("/console/dead-letters")),
        (
            "dead letters, topic and error",
            _path("/console/dead-letters", topic="gifts.sent", error=filled.dead_letter_error),
        ),
        ("dead letters, today", _path("/console/dead-letters", **{"from": today, "to": today})),
        ("dead letter", _path("/console/dead-letter", id=filled.dead_letter_id)),
        ("operator", _path("/console/operator")),
        ("books", _path("/console/books")),
        ("books, journal", _path("/console/books/journal")),
        (
            "books, reconciliation",
            _path("/console/books/reconciliation", id=filled.reconciliation_id),
        ),
    ]
    if statement_cursor is not None:
        pages.insert(
            2,
            (
                "creator, top, statement page 3",
                _path("/console/creator", id=filled.top_creator, cursor=statement_cursor),
            ),
        )
    targets = [Target("console", name, path) for name, path in pages]
    targets.append(
        Target(
            "download",
            "statement CSV (the whole statement)",
            _path("/console/statement.csv", account=account),
        )
    )
    return targets


def api_targets(filled: Filled) -> list[Target]:
    account = quote(f"creator:{filled.top_creator}:DIAMOND:available", safe=":")
    period = datetime.now(UTC).strftime("%Y-%m")
    routes = [
        ("balances", f"/v1/creators/{filled.top_creator}/balances"),
        ("statement", f"/v1/accounts/{account}/statement"),
        ("cash-outs", "/v1/cashouts"),
        ("cash-out", f"/v1/cashouts/{filled.cashout_id}"),
        ("trial balance", "/v1/reports/trial-balance"),
        ("gifts report", "/v1/reports/gifts"),
        ("cash-outs report", "/v1/reports/cashouts"),
        ("money report", "/v1/reports/money"),
        ("journal", _path("/v1/journal", period=period)),
    ]
    return [Target("api", name, path) for name, path in routes]


def console_get_paths(engine: AsyncEngine, settings: Settings) -> set[str]:
    """The console's GET routes as the app has them (relative to /console)."""
    app = build_api_app(engine, settings)
    found: set[str] = set()
    for route in app.routes:
        if isinstance(route, Mount) and route.path == CONSOLE_PREFIX:
            for inner in route.routes:
                if isinstance(inner, Route) and inner.methods and "GET" in inner.methods:
                    found.add(inner.path)
    return found


def untimed_pages(paths: set[str], targets: Sequence[Target]) -> list[str]:
    """Console pages the app has that no target asks for (pages added since)."""
    asked = {target.path.split("?", 1)[0].removeprefix(CONSOLE_PREFIX) or "/" for target in targets}
    return sorted(paths - asked - NOT_PAGES)


# The client ---------------------------------------------------------------------------------


def sign_in(client: httpx.Client, token: str) -> None:
    form = client.get("/console/sign-in")
    form.raise_for_status()
    found = re.search(r'name="sign_in_token" value="([^"]+)"', form.text)
    assert found is not None, "the sign-in form has no sign_in_token"
    answer = client.post("/console/sign-in", data={"token": token, "sign_in_token": found.group(1)})
    assert answer.status_code == 303, f"signing in answered {answer.status_code}"


def percentile_ms(samples_s: Sequence[float], fraction: float) -> float:
    """Nearest rank."""
    ordered = sorted(samples_s)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1] * 1_000


def time_target(client: httpx.Client, target: Target, requests: int, warm_up: int) -> Timing:
    status = 0
    for _ in range(warm_up):
        status = client.get(target.path).status_code
    samples: list[float] = []
    deadline = time.monotonic() + TARGET_SECONDS_MAX
    while len(samples) < requests and (len(samples) < 5 or time.monotonic() < deadline):
        started = time.perf_counter()
        answer = client.get(target.path)
        answer.read()
        samples.append(time.perf_counter() - started)
        status = answer.status_code
    return Timing(
        target.kind,
        target.name,
        target.path,
        status,
        len(samples),
        percentile_ms(samples, 0.5),
        percentile_ms(samples, 0.95),
        max(samples) * 1_000,
    )


def statement_cursor(client: httpx.Client, filled: Filled) -> int | None:
    """Where the top creator's third statement page starts (from the API)."""
    account = quote(f"creator:{filled.top_creator}:DIAMOND:available", safe=":")
    cursor: int | None = 0
    for _ in range(2):
        answer = client.get(f"/v1/accounts/{account}/statement", params={"cursor": cursor})
        answer.raise_for_status()
        cursor = answer.json().get("next_cursor")
        if cursor is None:
            return None
    return cursor


# The report ---------------------------------------------------------------------------------


def table(timings: Sequence[Timing]) -> str:
    lines = [
        "| kind | page or route | status | requests | p50 ms | p95 ms | max ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for t in timings:
        lines.append(
            f"| {t.kind} | {t.name} | {t.status} | {t.requests} | {t.p50_ms:.1f} | {t.p95_ms:.1f} |"
            f" {t.max_ms:.1f} |"
        )
    return "\n".join(lines)


def worst_console(timings: Sequence[Timing]) -> Timing:
    return max((t for t in timings if t.kind == "console"), key=lambda t: t.p95_ms)


def _fill_text(filled: Filled) -> str:
    statuses = ", ".join(
        f"{status} {count:,}" for status, count in filled.cashouts_by_status.items()
    )
    return (
        f"transfers {filled.transfers:,}; cash-outs: {statuses}; dead letters"
        f" {filled.dead_letters:,}; operator actions {filled.operator_actions:,}"
    )


# The run ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_database(maintenance_url: str, settings: BenchSettings) -> AsyncIterator[str]:
    """The database to time: a new one (dropped at the end unless kept), or the one to reuse."""
    name = settings.reuse_database or f"giftledger_bench_{uuid.uuid4().hex[:12]}"
    url = make_url(maintenance_url).set(database=name).render_as_string(hide_password=False)
    admin = create_async_engine(maintenance_url, isolation_level="AUTOCOMMIT")
    try:
        if settings.reuse_database is None:
            async with admin.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url
        finally:
            if settings.keep_database or settings.reuse_database is not None:
                print(f"database kept: {name}", flush=True)
            else:
                async with admin.connect() as conn:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def prepare(
    url: str, settings: BenchSettings, api_settings: Settings
) -> tuple[Filled, set[str]]:
    """The database migrated to head and filled (unless reused, then analyzed), and the
    console's GET routes."""
    engine = create_engine(url, pool_size=4)
    try:
        await upgrade_to_head(engine)
        started = time.perf_counter()
        if settings.reuse_database is None:
            filled = await fill(engine, api_settings, settings.sizes)
        else:
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE"))
            filled = await what_was_filled(engine)
        print(f"ready in {time.perf_counter() - started:.0f} s: {_fill_text(filled)}", flush=True)
        await roll_up(engine)
        return filled, console_get_paths(engine, api_settings)
    finally:
        await engine.dispose()


async def roll_up(engine: AsyncEngine) -> None:
    """Roll up every final day, as `giftledger run` would have, then ANALYZE the totals."""
    started = time.perf_counter()
    rolled_day_count = await roll_all_days(engine)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE rolled_days, day_account_totals, day_gift_totals"))
    print(f"rolled up {rolled_day_count} days in {time.perf_counter() - started:.1f} s", flush=True)


def measure(
    base_url: str, token: str, filled: Filled, settings: BenchSettings
) -> tuple[list[Timing], list[Target]]:
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as api_client:
        api_client.headers["Authorization"] = f"Bearer {token}"
        cursor = statement_cursor(api_client, filled)
        console = console_targets(filled, cursor)
        timings = [
            time_target(api_client, target, settings.requests, settings.warm_up)
            for target in api_targets(filled)
        ]
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as browser:
        sign_in(browser, token)
        console_timings = [
            time_target(browser, target, settings.requests, settings.warm_up) for target in console
        ]
    return console_timings + timings, console


async def run(settings: BenchSettings) -> dict[str, Any]:
    token = secrets.token_urlsafe(32)
    settings_values: dict[str, Any] = {
        "api_tokens": {
            hashlib.sha256(token.encode()).hexdigest(): {"role": "operator", "name": OPERATOR_NAME}
        },
        # No Kafka cluster: the dead letter page says it cannot read the original record
        # instead of waiting for a broker, so its figure is the database's and the page's.
        "kafka_bootstrap_servers": None,
    }
    api_settings = Settings(**settings_values)
    load_at_start, loop_s_at_start = load_average(), python_loop_s()
    async with (
        admin_url() as (maintenance_url, server),
        bench_database(maintenance_url, settings) as url,
    ):
        print(f"database on {server}", flush=True)
        filled, console_paths = await prepare(url, settings, api_settings)
        with running_api(url, settings_values) as base_url:
            timings, console = await asyncio.to_thread(measure, base_url, token, filled, settings)
    not_timed = untimed_pages(console_paths, console)
    worst = worst_console(timings)
    return {
        "settings": {**asdict(settings.sizes), "requests": settings.requests},
        "filled": asdict(filled),
        "timings": [asdict(t) for t in timings],
        "worst_console_page": worst.name,
        "worst_console_p95_ms": worst.p95_ms,
        "console_worst_p95_over_target": worst.p95_ms / TARGET_P95_MS,
        "untimed_console_pages": not_timed,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            f"{CALIBRATION_NAME}_at_start": round(loop_s_at_start, 3),
            f"{CALIBRATION_NAME}_at_end": round(python_loop_s(), 3),
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    figures = asyncio.run(run(settings))
    timings = [Timing(**t) for t in figures["timings"]]
    print(table(timings))
    bad = [t for t in timings if t.status != 200]
    if bad:
        print("answers other than 200: " + ", ".join(f"{t.name} {t.status}" for t in bad))
    if figures["untimed_console_pages"]:
        print("console pages not timed: " + ", ".join(figures["untimed_console_pages"]))
    print(
        f"{settings.requests} requests per page, one at a time, after {settings.warm_up} untimed;"
        f" worst console page: {figures['worst_console_page']}"
    )
    print(f"console worst p95/300ms ratio: {figures['console_worst_p95_over_target']:.2f}")
    print("machine: " + ", ".join(f"{key} {value}" for key, value in figures["machine"].items()))
    if settings.json_path is not None:
        settings.json_path.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
