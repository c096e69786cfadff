"""`giftledger generate`: a realistic, deterministic load-test stream and its expected end state.

The stream's file format and the expected state's document are in
`services.loadtest.stream_format`.

What is in it, from one seeded `random.Random` (the same seed and namespace give the same bytes),
made by collaborating parts that share one `StreamContext` (`services.loadtest.stream_context`:
the random source, the clock, ids, held-back records and the running tally):

- Gifts: LIVE sessions (a few at once, with bursts of gifts a few milliseconds apart and combo
  gifts, `count` > 1) and gifts on videos. Creators are Zipf-distributed, and a few stars get
  most LIVE sessions (`services.loadtest.gift_events`).
- Tips, Creator Fund rewards and Marketplace payments in several currencies
  (`services.loadtest.money_events`).
- Reversals of recent gifts (picked from a bounded ring of recent gifts), some sent before their
  gift (the gift is delayed: the ledger parks the reversal until the gift arrives)
  (`services.loadtest.gift_events`).
- Creator profiles: one when a creator first appears (most eligible to cash out; some not, for
  each rule; a few creators never get one), later updates, some of which arrive out of order
  (`services.loadtest.creator_profiles`).
- Duplicates (a recent record again, byte for byte), out-of-order records (held back a few
  hundred records; they keep their `occurred_at`), and bad records: malformed JSON, duplicate
  JSON keys, invalid UTF-8, schema violations, an `event_id` reused with another payload, a
  reversal naming another creator's gift, a payout report for an unknown cash-out
  (`services.loadtest.bad_records`).
- Then, in a final phase after everything else, cash-out requests: most fit, some are over the
  balance, under the minimum, over the daily limit, from ineligible creators or creators with no
  profile, in a currency that does not match (`services.loadtest.cashout_phase`).
- A named scenario (`StreamShape.scenario`, `services.loadtest.scenarios`) lays one shape over
  that mix: a LIVE burst, a wave of chargebacks, a payday. `steady` (the default) adds nothing.

The expected end state (`<path>.expected.json`) is computed here, from the contract alone (these
modules import nothing of the ledger, the ingestion or the cash-out code; the contract's rules
are re-derived in `services.loadtest.oracle`):

- Diamonds per creator: sum(coins * count) * 500 milli-diamonds per gift applied, minus each
  reversed gift's diamonds, minus each paid cash-out (whole diamonds * 1,000).
- Currency wallets per creator: tips (100 % of `amount`), fund rewards (`amount`), Marketplace
  payments (`amount - platform_fee`), minus each paid currency cash-out.
- Records per topic, and what each becomes: applied, duplicate, or dead-lettered (by reason).

Cash-outs are exact because they come last (strategy (a) of the load test's brief): the load
test replays the stream up to `cashout_phase_from`, waits until every record is applied and no
reversal is parked, then replays the cash-outs. Their outcome is then a pure function of the
rules, evaluated in stream order per creator: eligibility (the Creator Next defaults), a
payout account, the payout currency, the minimum (10 USD), the daily limit (1,000 USD per creator
per UTC day) and the available balance. The load test runs the simulated bank with
`failure_rate=0` and `return_rate=0`, so every held cash-out ends paid. The rules and rates this
assumes are written under `assumptions`; the load test refuses to compare against a deployment
configured otherwise. Replaying the file without that barrier (`giftledger replay` against running
consumers) gives the same gifts, tips and profiles, but cash-outs decided against whatever the
consumers had applied by then.

Memory is bounded whatever the length: records are written as they are made; what is kept is per
creator (balances, the latest profile; creators are capped by `creator_count`), plus bounded rings
of recent records (for duplicates, conflicts and reversals) and of held-back records.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from schemas import topics
from services.cli_text import positive_int
from services.loadtest.bad_records import BadRecords
from services.loadtest.cashout_phase import CashoutPhase
from services.loadtest.creator_profiles import CreatorProfiles
from services.loadtest.gift_events import GiftEvents
from services.loadtest.money_events import MoneyEvents
from services.loadtest.oracle import assumptions
from services.loadtest.scenarios import (
    SCENARIO_NAMES,
    SCENARIOS,
    scenario_cashout_count,
    scenario_named,
    start_scenario,
)
from services.loadtest.stream_context import StreamContext
from services.loadtest.stream_format import (
    EXPECTED_SUFFIX,
    FORMAT_VERSION,
    STREAM_START,
    ExpectedState,
    StreamShape,
    StreamWriter,
    check_namespace,
    default_namespace,
    expected_path,
    file_problem,
)

EVENTS_MAX = 1_000_000_000


class Generator:
    """One stream: the main phase (gifts, money events, profiles, duplicates, bad records, some
    held back out of order), then the cash-out phase; and the expected end state it leads to."""

    def __init__(
        self, writer: StreamWriter, *, events: int, seed: int, namespace: str, shape: StreamShape
    ) -> None:
        self.stream = StreamContext(
            writer,
            events=events,
            seed=seed,
            namespace=namespace,
            shape=shape,
            cashout_count=scenario_cashout_count(events, shape),
        )
        self.creators = CreatorProfiles(self.stream)
        self.gifts = GiftEvents(self.stream, self.creators)
        self.money = MoneyEvents(self.stream, self.creators)
        self.bad_records = BadRecords(self.stream, self.creators)
        self.cashouts = CashoutPhase(self.stream, self.creators)
        self.scenario = start_scenario(
            shape.scenario, self.stream, self.creators, self.gifts, self.cashouts
        )
        self.cashout_phase_from = 0

    # The main phase.

    def run(self) -> None:
        stream = self.stream
        self.main_phase()
        extension = self.scenario.main_phase_extension(stream.events - stream.writer.count)
        if extension:
            stream.main_target += extension
            self.main_phase()
        self.scenario.after_main_phase()
        self.cashout_phase_from = stream.writer.count
        count = stream.events - stream.writer.count
        if not self.scenario.cashout_phase(count):
            self.cashouts.run(count)

    def main_phase(self) -> None:
        stream = self.stream
        while stream.room(1):
            stream.release_due()
            if self.scenario.step() or self.gifts.burst_gift():
                continue
            stream.advance()
            self.step()
        stream.release_all()

    def step(self) -> None:
        shape = self.stream.shape
        point = self.stream.rng.random()
        for rate, action in (
            (shape.bad_rate, self.bad_records.bad_record),
            (shape.duplicate_rate, self.bad_records.duplicate),
            (shape.conflict_rate, self.bad_records.conflict),
            (shape.reversal_rate, self.gifts.reversal),
            (shape.tip_rate, self.money.tip),
            (shape.fund_rate, self.money.fund_reward),
            (shape.marketplace_rate, self.money.marketplace),
            (shape.profile_update_rate, self.creators.profile_update),
        ):
            if point < rate:
                if action():
                    return
                break
            point -= rate
        self.gifts.gift()

    # The result.

    def expected_state(self) -> ExpectedState:
        stream = self.stream
        tally = stream.tally
        balances: dict[str, dict[str, int]] = {}
        for rank, milli in tally.diamonds.items():
            if milli:
                balances.setdefault(stream.creator_id(rank), {})["DIAMOND"] = milli
        for (rank, currency), amount in tally.wallets.items():
            if amount:
                balances.setdefault(stream.creator_id(rank), {})[currency] = amount
        dead_letters: dict[str, dict[str, int]] = {}
        for (topic, reason), count in sorted(tally.dead_letters.items()):
            dead_letters.setdefault(topic, {})[reason] = count
        return ExpectedState(
            format_version=FORMAT_VERSION,
            namespace=stream.ns,
            seed=stream.seed,
            records=stream.writer.count,
            cashout_phase_from=self.cashout_phase_from,
            stream_start=STREAM_START.isoformat(),
            duration_ms=stream.writer.last_offset_ms,
            assumptions=assumptions(),
            records_by_topic=dict(sorted(tally.records_by_topic.items())),
            applied_by_topic=dict(sorted(tally.applied.items())),
            duplicates_by_topic=dict(sorted(tally.duplicates.items())),
            dead_letters=dead_letters,
            cashouts=dict(sorted(tally.cashouts.items())),
            payout_reports=tally.cashouts["paid"],
            balances=dict(sorted(balances.items())),
            totals=dict(sorted(tally.totals.items())),
            shape={"creator_count": stream.creator_count, **dataclasses.asdict(stream.shape)},
            scenario=self.scenario.facts(),
        )


def generate(
    path: Path,
    *,
    events: int,
    seed: int,
    namespace: str | None = None,
    shape: StreamShape | None = None,
) -> ExpectedState:
    """Write `events` records to `path` (gzip JSON Lines) and the expected end state next to it.

    Deterministic: the same `events`, `seed`, `namespace` (default `s<seed>`, the prefix of every
    event and creator id) and `shape` give the same bytes. Ids carry the namespace so that a load
    test can find its own rows in a database that holds other data.
    """
    if not 1 <= events <= EVENTS_MAX:
        raise ValueError(f"events must be between 1 and {EVENTS_MAX}, got {events}")
    namespace = default_namespace(seed) if namespace is None else namespace
    check_namespace(namespace)
    shape = shape or StreamShape()
    scenario_named(shape.scenario)
    partial = path.with_name(path.name + ".partial")
    writer = StreamWriter(partial)
    try:
        generator = Generator(writer, events=events, seed=seed, namespace=namespace, shape=shape)
        generator.run()
    finally:
        writer.close()
    assert writer.count == events, (writer.count, events)
    os.replace(partial, path)
    expected = generator.expected_state()
    expected.write(expected_path(path))
    return expected


# Command line --------------------------------------------------------------------------------

DEFAULT_STREAM_PATH = Path("giftledger-stream.jsonl.gz")


def _share(value: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from error
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from error
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return number


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the stream's shape, shared by `generate` and `loadtest`."""
    defaults = StreamShape()
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--scenario",
        choices=SCENARIO_NAMES,
        default=defaults.scenario,
        metavar="NAME",
        help="a named scenario over the mix: "
        + "; ".join(f"{scenario.name}: {scenario.shape}" for scenario in SCENARIOS).replace(
            "%", "%%"
        )
        + f" (default {defaults.scenario})",
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help="prefix of every event and creator id (default: s<seed>)",
    )
    parser.add_argument(
        "--events-per-s",
        type=_positive_float,
        default=defaults.events_per_s,
        metavar="RATE",
        help=f"mean recorded rate, for replay --speed (default {defaults.events_per_s:g})",
    )
    parser.add_argument(
        "--creators", type=positive_int, default=None, metavar="N", help="creators (default N/40)"
    )
    for name in ("duplicate_rate", "out_of_order_rate", "bad_rate", "conflict_rate"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag,
            type=_share,
            default=getattr(defaults, name),
            metavar="SHARE",
            help=f"share of records (default {getattr(defaults, name):g})",
        )


def shape_from_arguments(args: argparse.Namespace) -> StreamShape:
    return StreamShape(
        events_per_s=args.events_per_s,
        creator_count=args.creators,
        duplicate_rate=args.duplicate_rate,
        out_of_order_rate=args.out_of_order_rate,
        bad_rate=args.bad_rate,
        conflict_rate=args.conflict_rate,
        scenario=args.scenario,
    )


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        nargs="?",
        default=DEFAULT_STREAM_PATH,
        metavar="FILE",
        help=f"where to write the stream (default {DEFAULT_STREAM_PATH}); "
        f"the expected end state goes to FILE{EXPECTED_SUFFIX}",
    )
    parser.add_argument(
        "--events",
        type=positive_int,
        default=100_000,
        metavar="N",
        help="records (default 100000)",
    )
    add_shape_arguments(parser)


def describe(expected: ExpectedState, out: TextIO) -> None:
    out.write(
        f"{expected.records} records over {expected.duration_ms / 1000:.1f} s recorded, "
        f"namespace {expected.namespace}, cash-outs from record {expected.cashout_phase_from}\n"
    )
    if expected.scenario:
        facts = ", ".join(
            f"{name} {value}" for name, value in expected.scenario.items() if name != "name"
        )
        out.write(
            f"  scenario {expected.scenario['name']}" + (f": {facts}" if facts else "") + "\n"
        )
    for topic, count in expected.records_by_topic.items():
        applied = expected.applied_by_topic.get(topic, 0)
        duplicates = expected.duplicates_by_topic.get(topic, 0)
        letters = sum(expected.dead_letters.get(topic, {}).values())
        bank = ""
        if topic == topics.PAYOUTS_UPDATED:
            applied -= expected.payout_reports
            bank = f" (and {expected.payout_reports} reports from the bank, applied)"
        out.write(
            f"  {topic:<20} {count:>10} records: {applied} applied, {duplicates} duplicates, "
            f"{letters} dead letters{bank}\n"
        )
    outcomes = ", ".join(f"{name} {count}" for name, count in expected.cashouts.items())
    out.write(f"  cash-outs: {outcomes or 'none'}\n")


def generate_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`giftledger generate [FILE] --events N --seed S ...`; returns the exit code."""
    try:
        shape = shape_from_arguments(args)
    except ValueError as error:
        sys.stderr.write(f"giftledger: error: {error}\n")
        return 2
    started = time.monotonic()
    try:
        expected = generate(
            args.path, events=args.events, seed=args.seed, namespace=args.namespace, shape=shape
        )
    except ValueError as error:
        sys.stderr.write(f"giftledger: error: {error}\n")
        return 2
    except OSError as error:  # a directory that does not exist, the path a directory
        sys.stderr.write(f"giftledger: error: {args.path}: {file_problem(error)}\n")
        return 2
    elapsed_s = time.monotonic() - started
    rate = expected.records / max(elapsed_s, 1e-9)
    out.write(f"{args.path} ({elapsed_s:.1f} s, {rate:,.0f} records/s)\n")
    describe(expected, out)
    out.write(f"expected end state: {expected_path(args.path)}\n")
    return 0
