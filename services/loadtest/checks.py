"""Checking a load test (`services.loadtest.run`) against the stream's expected end state.

Before the run, `check_assumptions`: the rules the expected state assumes (rate card, FX,
cash-out limits, eligibility) against this deployment's; a difference stops the run, as its
result could not match. After it, `observe` the namespace in the database (every creator's
available DIAMOND and currency balances, what is left pending, the events applied per topic, the
cash-outs per outcome and what they moved in the platform's accounts),
`read_dead_letter_topics`, and `compare` it all, with the duplicates counted, to the expected
state.

Dead letters are counted from the run's DLQ topics (`<prefix><topic>.dlq`, by `dlq.error`, a
record counted once per source partition and offset): they are what the contract promises. The
`dead_letters` table (the rows of the run's topic prefix) is compared with them, and a difference
is reported as a warning (`table_warnings`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import topics
from services.cashout.request_facts import fx_rates_in_force
from services.loadtest.oracle import cashout_platform_movements
from services.loadtest.stream_format import ExpectedState
from services.rates.fx import decimal_text
from services.rates.rate_cards import BEGINNING_OF_TIME, load_rate_cards
from services.runtime.settings import Settings, get_settings

MISMATCHES_SHOWN_MAX = 20
# The run's cash-outs are approved from its start until about this much later: a rate card or
# FX rate taking effect within it would price some of them.
APPROVAL_HORIZON = timedelta(hours=1)
DLQ_READ_WAIT_S = 60.0
DLQ_QUIET_S = 1.0


async def read_dead_letter_topics(
    bootstrap_servers: str, prefix: str, expected_count: int, wait_s: float = DLQ_READ_WAIT_S
) -> dict[str, dict[str, int]]:
    """Dead letters per source topic (the contract's name) and `dlq.error`, read from every
    `<prefix><topic>.dlq` from the start: until at least `expected_count` are there and nothing
    more comes for a moment, or `wait_s`. A record dead-lettered twice (redelivered) counts
    once: they are told apart by their source partition and offset."""
    consumer = AIOKafkaConsumer(
        *(
            topics.prefixed(prefix, topics.dead_letter_topic(name))
            for name in topics.CONSUMED_TOPICS
        ),
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    seen: dict[tuple[str, str, str], str] = {}
    await consumer.start()
    try:
        deadline = time.monotonic() + wait_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for partition, records in batches.items():
                source = partition.topic.removeprefix(prefix).removesuffix(
                    topics.DEAD_LETTER_SUFFIX
                )
                for record in records:
                    headers = {key: bytes(value).decode() for key, value in record.headers or ()}
                    place = (
                        source,
                        headers.get("dlq.source.partition", ""),
                        headers.get("dlq.source.offset", str(record.offset)),
                    )
                    seen[place] = headers.get("dlq.error", "unknown")
                quiet_since = time.monotonic()
            if len(seen) >= expected_count and time.monotonic() - quiet_since > DLQ_QUIET_S:
                break
    finally:
        await consumer.stop()
    counted: dict[str, dict[str, int]] = {}
    for (source, _, _), error in seen.items():
        by_error = counted.setdefault(source, {})
        by_error[error] = by_error.get(error, 0) + 1
    return counted


@dataclass
class Observed:
    """What the database and the consumers show for one namespace."""

    balances: dict[str, dict[str, int]] = field(default_factory=dict)
    left_pending: list[str] = field(default_factory=list)
    applied_by_topic: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)  # the DLQ topics
    dead_letter_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # the table
    cashouts: dict[str, int] = field(default_factory=dict)
    # what the namespace's cash-outs moved in platform accounts: name -> credits minus debits
    platform: dict[str, int] = field(default_factory=dict)
    consumed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    applied: int = 0
    parked: int = 0
    still_parked: int = 0
    reports_sent: int = 0


async def observe(
    conn: AsyncConnection, namespace: str, topic_prefix: str, since: datetime
) -> Observed:
    """The namespace's balances, applied events and cash-outs, and the run's `dead_letters` rows
    (its topic prefix, since `since`), from the database."""
    prefix = namespace + "-"
    observed = Observed()
    rows = await conn.execute(
        text(
            "SELECT creator_id, asset, kind, credits_posted - debits_posted AS posted,"
            " debits_pending, credits_pending FROM accounts"
            " WHERE starts_with(creator_id, :prefix) AND kind IN"
            " ('creator_diamonds_available', 'creator_diamonds_held', 'creator_wallet')"
        ),
        {"prefix": prefix},
    )
    for row in rows:
        if (
            row.debits_pending
            or row.credits_pending
            or (row.kind == "creator_diamonds_held" and row.posted)
        ):
            observed.left_pending.append(
                f"{row.creator_id} {row.asset} {row.kind}: posted {row.posted}, pending "
                f"debits {row.debits_pending}, credits {row.credits_pending}"
            )
        available = row.posted - row.debits_pending
        if row.kind != "creator_diamonds_held" and available:
            observed.balances.setdefault(row.creator_id, {})[row.asset] = available
    rows = await conn.execute(
        text(
            "SELECT topic, count(*) AS n FROM applied_events"
            " WHERE starts_with(event_id, :prefix)"
            " OR (topic = :reports AND (starts_with(event_id, 'rail:paid:' || :prefix)"
            " OR starts_with(event_id, 'rail:failed:' || :prefix)"
            " OR starts_with(event_id, 'rail:returned:' || :prefix)))"
            " GROUP BY topic"
        ),
        {"prefix": prefix, "reports": topics.PAYOUTS_UPDATED},
    )
    observed.applied_by_topic = {row.topic: row.n for row in rows}
    rows = await conn.execute(
        text(
            "SELECT topic, error, count(*) AS n FROM dead_letters"
            " WHERE topic_prefix = :topic_prefix AND recorded_at >= :since"
            " GROUP BY topic, error"
        ),
        {"topic_prefix": topic_prefix, "since": since},
    )
    for row in rows:
        observed.dead_letter_rows.setdefault(row.topic, {})[row.error] = row.n
    rows = await conn.execute(
        text(
            "SELECT status, rejected_rule, count(*) AS n FROM cashouts"
            " WHERE starts_with(creator_id, :prefix) GROUP BY status, rejected_rule"
        ),
        {"prefix": prefix},
    )
    for row in rows:
        name = row.status if row.rejected_rule is None else f"{row.status}:{row.rejected_rule}"
        observed.cashouts[name] = observed.cashouts.get(name, 0) + row.n
    rows = await conn.execute(
        text(
            "SELECT a.name, sum(CASE WHEN t.credit_account_id = a.id THEN t.amount"
            " ELSE -t.amount END) AS change"
            " FROM transfers t JOIN accounts a"
            " ON a.id = t.debit_account_id OR a.id = t.credit_account_id"
            " WHERE starts_with(t.metadata ->> 'cashout_id', :prefix) AND t.flags & 10 = 0"
            " AND a.creator_id IS NULL GROUP BY a.name"
        ),
        {"prefix": prefix},
    )
    observed.platform = {row.name: int(row.change) for row in rows if row.change}
    return observed


def _differences(label: str, expected: dict[str, Any], observed: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(expected) | set(observed)):
        if expected.get(key) != observed.get(key):
            lines.append(f"{label} {key}: expected {expected.get(key)}, got {observed.get(key)}")
    return lines


def table_warnings(observed: Observed) -> list[str]:
    """Where the `dead_letters` table disagrees with the DLQ topics. Both are written for every
    dead letter (the row in the batch's transaction, the record after its commit), so a
    difference points at a record published by something other than the consumers."""
    lines = _differences("dead_letters table", observed.dead_letters, observed.dead_letter_rows)
    return [line.replace("expected", "the DLQ topics hold", 1) for line in lines]


def compare(expected: ExpectedState, observed: Observed) -> list[str]:
    """Every difference between the expected end state and what was observed; empty if none."""
    mismatches: list[str] = []
    balance_lines = _differences("balance", expected.balances, observed.balances)
    if balance_lines:
        mismatches.append(f"{len(balance_lines)} creators' balances differ")
        mismatches += balance_lines[:MISMATCHES_SHOWN_MAX]
    if observed.left_pending:
        mismatches.append(f"{len(observed.left_pending)} creator accounts left pending")
        mismatches += observed.left_pending[:MISMATCHES_SHOWN_MAX]
    mismatches += _differences("applied", expected.applied_by_topic, observed.applied_by_topic)
    mismatches += _differences("dead letters", expected.dead_letters, observed.dead_letters)
    mismatches += _differences("cash-outs", expected.cashouts, observed.cashouts)
    expected_platform = cashout_platform_movements(expected.totals)
    mismatches += _differences("platform account", expected_platform, observed.platform)
    # Redelivery (a rebalance) and a bank report sent twice add duplicates, and only those.
    redelivered = max(observed.consumed - expected.records - observed.reports_sent, 0)
    repeated_reports = max(observed.reports_sent - expected.payout_reports, 0)
    allowance = redelivered + repeated_reports
    if not expected.duplicates <= observed.duplicates <= expected.duplicates + allowance:
        mismatches.append(
            f"duplicates: expected {expected.duplicates}"
            + (f" (+ up to {allowance} redelivered)" if allowance else "")
            + f", counted {observed.duplicates}"
        )
    if observed.still_parked:
        mismatches.append(f"{observed.still_parked} events still parked")
    return mismatches


async def check_assumptions(
    conn: AsyncConnection, settings: Settings, expected: ExpectedState
) -> list[str]:
    """Where this deployment's rules differ from those the expected state was derived from.

    Each rate is judged at the moments that price with it, as the services price: a gift's
    milli-diamonds per coin by the rate card in force at its `occurred_at` (the stream's recorded
    days), a cash-out's diamonds per USD and FX rate by those in force when the desk approves it
    (`services.cashout.desk`): during the run, so the versions in force now and those taking
    effect within `APPROVAL_HORIZON` from now."""
    assumed = expected.assumptions
    problems: list[str] = []
    start = datetime.fromisoformat(expected.stream_start)
    window = (
        start - timedelta(days=31),
        start + timedelta(days=3, milliseconds=expected.duration_ms),
    )
    book = await load_rate_cards(conn)
    gift_cards = [book.in_force_at(window[0])]
    gift_cards += [card for card in book.cards if window[0] < card.effective_from <= window[1]]
    for card in gift_cards:
        if card.milli_diamonds_per_coin != assumed["milli_diamonds_per_coin"]:
            problems.append(
                f"rate card {card.version} ({card.milli_diamonds_per_coin} milli-diamonds per "
                f"coin) prices gifts during the stream, which assumes "
                f"{assumed['milli_diamonds_per_coin']}"
            )
    now: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
    approval_end = now + APPROVAL_HORIZON
    approval_cards = [book.in_force_at(now)]
    approval_cards += [card for card in book.cards if now < card.effective_from <= approval_end]
    for card in approval_cards:
        if card.diamonds_per_usd != assumed["diamonds_per_usd"]:
            problems.append(
                f"rate card {card.version} ({card.diamonds_per_usd} diamonds per USD, from "
                f"{_moment_text(card.effective_from)}) prices the cash-outs approved during the "
                f"run, the stream assumes {assumed['diamonds_per_usd']}"
            )
    currencies = sorted(assumed["fx_units_per_usd"])
    rows = await conn.execute(
        text(
            "SELECT currency, effective_from FROM fx_rates WHERE currency = ANY(:currencies)"
            " AND effective_from > :now AND effective_from <= :end"
        ),
        {"currencies": currencies, "now": now, "end": approval_end},
    )
    moments = [(currency, now) for currency in currencies]
    moments += [(row.currency, row.effective_from) for row in rows]
    in_force = await fx_rates_in_force(conn, moments)
    for (currency, moment), rate in sorted(in_force.items(), key=lambda item: item[0]):
        wanted = Fraction(assumed["fx_units_per_usd"][currency])
        if rate is None or rate.units_per_usd != wanted:
            found = "no rate" if rate is None else f"{decimal_text(rate.units_per_usd)} per USD"
            problems.append(
                f"FX rate {currency}: {found} at {_moment_text(moment)}, when the run's cash-outs "
                f"are approved; the stream assumes {assumed['fx_units_per_usd'][currency]}"
            )
    limits = {
        "cashout_minimum_usd_cents": settings.cashout_minimum_usd_cents,
        "cashout_daily_limit_usd_cents": settings.cashout_daily_limit_usd_cents,
    }
    for name, value in limits.items():
        if value != assumed[name]:
            problems.append(f"{name.upper()} is {value}, the stream assumes {assumed[name]}")
    eligibility = get_settings().eligibility
    for name, value in assumed["eligibility"].items():
        actual = getattr(eligibility, name)
        same = (
            sorted(actual) == sorted(value)
            if isinstance(value, list)
            else (dict(actual) == value if isinstance(value, dict) else actual == value)
        )
        if not same:
            problems.append(f"ELIGIBILITY_{name.upper()} is {actual}, the stream assumes {value}")
    return problems


def _moment_text(moment: datetime) -> str:
    return "the beginning" if moment == BEGINNING_OF_TIME else moment.isoformat()
