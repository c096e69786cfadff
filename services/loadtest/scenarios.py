"""Named load-test scenarios: `giftledger generate --scenario NAME` and
`giftledger loadtest --scenario NAME` (`services.loadtest.generator`).

Every scenario is the steady mix (gifts, money events, profiles, duplicates, out-of-order and bad
records, then a cash-out phase) with one shape laid over it, and each keeps an exact expected end
state: what the shape adds is decided by the same contract rules as the rest of the stream. Where
the shape lies in the stream (its records, its recorded time, its creators) is written into the
expected state's `scenario` document.

- `steady` (the default): the mix alone, at a steady mean rate with short LIVE bursts.
  Stresses: throughput of the everyday mix on every topic.
- `live-burst`: from 40 % of the main phase on, one creator (not one of the stars) goes viral on
  a LIVE session: for 60 s the stream's record rate is 10 times its rate before, and half of the
  records are gifts to that session (the mix goes on in the other half, 10 times faster). The
  window is shorter where 60 s would hold more than a quarter of the main phase's records: a
  100,000-record stream at 1,000 records/s gets about 1.6 s, 60 s needs some 2.5 million.
  Stresses: one hot creator account (every gift credits it), one partition of `gifts.sent`
  far busier than the others, and consumer lag during the burst.
- `chargeback-wave`: the main phase is the day; after it, one gift in 20 of the day (5 %) is
  reversed in one wave, mostly as chargebacks, within minutes (at least 5 times the base rate,
  and fast enough to average four minutes). For a fifth of them the gift was delayed upstream:
  the reversal is published first and the gift within 50 records after it; a reversal the
  ledger sees before its gift is parked, then applied when the gift arrives. The wave's gifts
  are kept out of the mix's own reversals. Stresses: `gifts.reversed` at a rate it never sees
  in the mix, debits spread over many creators, and parked reversals resolved in bulk.
- `payday`: the cash-out phase is payday: a third (to the nearest creator) of the creators who
  may cash out (every Creator Next rule passes, a payout account, at least the minimum of
  2,000 Diamonds) ask for a payout within ten minutes (from 09:00 UTC the day after the main
  phase), each for at most what they hold and the daily limit, so each is paid. The other
  requests, a quarter as many (at least 10), come from the same creators after their payday
  request (again, under the minimum, over the balance) or from creators who may not cash out,
  so exactly that third of the eligible creators has a cash-out. The phase is sized on the
  eligible creators once the main phase is written (records kept for it and not needed go back
  to the main phase). Stresses: the cash-out desk (eligibility, holds, the daily limit under its
  per-creator lock), the outbox and the bank's reports at once.

Memory stays bounded: the wave keeps at most `WAVE_REVERSALS_MAX` gifts; the rest is per creator.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from services.loadtest.cashout_phase import (
    CASHOUT_MINIMUM_DIAMONDS,
    CashoutPhase,
    cashout_count,
)
from services.loadtest.creator_profiles import CreatorProfiles
from services.loadtest.gift_events import LIVE_COMBO_SHARE, STAR_COUNT, GiftEvents
from services.loadtest.oracle import (
    CASHOUT_DAILY_LIMIT_USD_CENTS,
    DIAMONDS_PER_USD,
    MILLI_PER_DIAMOND,
)
from services.loadtest.stream_context import Outgoing, StreamContext, creator_count_for
from services.loadtest.stream_format import StreamShape

STEADY = "steady"
LIVE_BURST = "live-burst"
CHARGEBACK_WAVE = "chargeback-wave"
PAYDAY = "payday"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    shape: str  # what the stream looks like
    stresses: str  # what it puts under load


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        STEADY,
        "the everyday mix at a steady mean rate, then a cash-out phase",
        "throughput of the everyday mix on every topic",
    ),
    Scenario(
        LIVE_BURST,
        "one creator's LIVE session gets half the records at 10x the rate for 60 s "
        "(shorter in short streams)",
        "one hot creator account and one hot partition of gifts.sent; lag during the burst",
    ),
    Scenario(
        CHARGEBACK_WAVE,
        "5 % of the day's gifts reversed within minutes, a fifth of them published before "
        "their gift",
        "gifts.reversed at a burst rate; parked reversals resolved in bulk",
    ),
    Scenario(
        PAYDAY,
        "a third of the creators who may cash out ask for a payout within ten minutes",
        "the cash-out desk, the daily-limit lock, the outbox and the bank's reports at once",
    ),
)
SCENARIO_NAMES: tuple[str, ...] = tuple(scenario.name for scenario in SCENARIOS)


def scenario_named(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise ValueError(f"unknown scenario {name!r}: one of {', '.join(SCENARIO_NAMES)}")


class ScenarioRun:
    """What a scenario adds to one generator run. This base adds nothing: the steady mix."""

    def __init__(
        self,
        stream: StreamContext,
        creators: CreatorProfiles,
        gifts: GiftEvents,
        cashouts: CashoutPhase,
    ) -> None:
        self.stream = stream
        self.creators = creators
        self.gifts = gifts
        self.cashouts = cashouts
        self.rng = stream.rng

    def step(self) -> bool:
        """Make the main phase's next record instead of the mix; True when it did."""
        return False

    def main_phase_extension(self, kept_for_cashouts: int) -> int:
        """How many of the records kept for the cash-out phase it does not need, once the main
        phase's mix is written: the mix goes on for that many more."""
        return 0

    def after_main_phase(self) -> None:
        """Records after the main phase's mix (every held-back record written), before the
        cash-out phase."""

    def cashout_phase(self, count: int) -> bool:
        """Make the `count` records of the cash-out phase; False to leave them to the mix."""
        return False

    def facts(self) -> dict[str, Any]:
        """Where the scenario's shape lies in the stream, for the expected state."""
        return {"name": STEADY}


# live-burst ----------------------------------------------------------------------------------

BURST_RATE_FACTOR = 10.0
BURST_CREATOR_SHARE = 0.5  # of the burst's records
BURST_DURATION_MS_MAX = 60_000
BURST_RECORDS_SHARE_MAX = 0.25  # of the main phase: a short stream gets a shorter burst
BURST_START_SHARE = 0.4  # of the main phase's records written before the burst


class LiveBurst(ScenarioRun):
    """From `BURST_START_SHARE` of the main phase on, the clock runs `BURST_RATE_FACTOR` times
    faster for the mix, and every other record (on average) is a gift to the burst's LIVE
    session, spaced so that the window's record rate is ten times the rate before it."""

    def __init__(
        self,
        stream: StreamContext,
        creators: CreatorProfiles,
        gifts: GiftEvents,
        cashouts: CashoutPhase,
    ) -> None:
        super().__init__(stream, creators, gifts, cashouts)
        self.start_record = int(stream.main_target * BURST_START_SHARE)
        self.phase = "before"  # then "during", then "after"
        self.rank = 0
        self.live_id = ""
        self.duration_ms = 0
        self.gift_speedup = 1.0
        self.from_record = self.to_record = 0
        self.from_ms = self.to_ms = 0

    def step(self) -> bool:
        stream = self.stream
        if self.phase == "before" and stream.writer.count >= self.start_record:
            self.begin()
        if self.phase != "during":
            return False
        if stream.now_ms() >= self.from_ms + self.duration_ms:
            self.end()
            return False
        if self.rng.random() >= BURST_CREATOR_SHARE:
            return False
        stream.advance(self.gift_speedup)
        place = {"surface": "live", "live_id": self.live_id}
        self.gifts.emit_gift(self.rank, place, LIVE_COMBO_SHARE)
        return True

    def begin(self) -> None:
        """Pick the creator (not a star) and size the window on the rate measured so far: 60 s,
        or less where 60 s at ten times that rate would be more than a quarter of the main
        phase's records."""
        stream = self.stream
        events_per_ms = stream.shape.events_per_s / 1_000
        ms_per_record = 1 / events_per_ms
        if stream.writer.count and stream.now_ms():
            ms_per_record = stream.now_ms() / stream.writer.count
        records_max = stream.main_target * BURST_RECORDS_SHARE_MAX
        burst_ms_per_record = ms_per_record / BURST_RATE_FACTOR
        self.duration_ms = max(
            1, min(BURST_DURATION_MS_MAX, int(records_max * burst_ms_per_record))
        )
        # The mix runs BURST_RATE_FACTOR times faster; the burst's own gifts come at the same
        # mean spacing, ms_per_record / BURST_RATE_FACTOR.
        self.gift_speedup = 1 / (events_per_ms * BURST_RATE_FACTOR * burst_ms_per_record)
        first = min(STAR_COUNT + 1, stream.creator_count)
        self.rank = self.rng.randint(first, stream.creator_count)
        self.live_id = stream.next_id("live")
        self.from_record, self.from_ms = stream.writer.count, stream.now_ms()
        stream.rate_factor = BURST_RATE_FACTOR
        self.phase = "during"

    def end(self) -> None:
        stream = self.stream
        self.to_record, self.to_ms = stream.writer.count, stream.now_ms()
        stream.rate_factor = 1.0
        self.phase = "after"

    def after_main_phase(self) -> None:
        if self.phase == "during":
            self.end()

    def facts(self) -> dict[str, Any]:
        return {
            "name": LIVE_BURST,
            "burst_creator": self.stream.creator_id(self.rank) if self.rank else None,
            "live_id": self.live_id,
            "rate_factor": BURST_RATE_FACTOR,
            "creator_share": BURST_CREATOR_SHARE,
            "duration_ms_planned": self.duration_ms,
            "from_record": self.from_record,
            "to_record": self.to_record,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
        }


# chargeback-wave -----------------------------------------------------------------------------

WAVE_GIFTS_PER_REVERSAL = 20  # 5 % of the gifts
WAVE_REVERSALS_MAX = 50_000
WAVE_LATE_SHARE = 0.2  # of the wave's reversals: the gift was delayed upstream
WAVE_LATE_GAP_RECORDS_MAX = 50  # its gift follows within this many records
WAVE_RATE_FACTOR_MIN = 5.0
WAVE_DURATION_MS_MEAN = 240_000
WAVE_REASONS = (("chargeback", 85), ("fraud", 10), ("refund", 5))
WAVE_REASON_NAMES = [name for name, _ in WAVE_REASONS]
WAVE_REASON_CUMULATIVE = list(itertools.accumulate(weight for _, weight in WAVE_REASONS))


@dataclass(slots=True)
class WaveGift:
    event_id: str
    rank: int
    milli: int
    late: Outgoing | None  # the gift's record, when it is published after its reversal


class ChargebackWave(ScenarioRun):
    def __init__(
        self,
        stream: StreamContext,
        creators: CreatorProfiles,
        gifts: GiftEvents,
        cashouts: CashoutPhase,
    ) -> None:
        super().__init__(stream, creators, gifts, cashouts)
        self.marked: list[WaveGift] = []
        self.reversals = 0
        self.reversals_before_gift = 0
        self.from_record = self.to_record = 0
        self.from_ms = self.to_ms = 0
        gifts.gift_taker = self.take_gift

    def take_gift(self, record: Outgoing) -> bool:
        """Mark one gift in 20 for the wave (kept out of the mix's reversals); keep a fifth of
        those back to publish after their reversal. True when the record was kept back."""
        stream = self.stream
        due = min(stream.tally.totals["gifts"] // WAVE_GIFTS_PER_REVERSAL, WAVE_REVERSALS_MAX)
        if record.gift is None or len(self.marked) >= due or not stream.room(2):
            return False
        event_id, rank, milli = record.gift
        record.gift = None  # not in the ring of recent gifts: nothing else reverses it
        late = self.rng.random() < WAVE_LATE_SHARE
        self.marked.append(WaveGift(event_id, rank, milli, record if late else None))
        stream.reserved += 2 if late else 1
        return late

    def after_main_phase(self) -> None:
        stream = self.stream
        self.from_record, self.from_ms = stream.writer.count, stream.now_ms()
        self.rng.shuffle(self.marked)
        records = stream.reserved
        mean_rate_factor = records * 1_000 / (stream.shape.events_per_s * WAVE_DURATION_MS_MEAN)
        stream.rate_factor = max(WAVE_RATE_FACTOR_MIN, mean_rate_factor)
        for gift in self.marked:
            stream.release_due()
            stream.advance()
            reason = self.rng.choices(WAVE_REASON_NAMES, cum_weights=WAVE_REASON_CUMULATIVE)[0]
            stream.send(self.gifts.reversal_record(gift.event_id, gift.rank, gift.milli, reason))
            stream.reserved -= 1
            self.reversals += 1
            if gift.late is not None:
                stream.hold_back(gift.late, self.rng.randint(1, WAVE_LATE_GAP_RECORDS_MAX))
                stream.reserved -= 1
                self.reversals_before_gift += 1
                stream.tally.totals["reversals_before_gift"] += 1
        stream.release_all()
        assert stream.reserved == 0, stream.reserved
        stream.rate_factor = 1.0
        stream.tally.totals["wave_reversals"] = self.reversals
        self.to_record, self.to_ms = stream.writer.count, stream.now_ms()
        self.marked = []

    def facts(self) -> dict[str, Any]:
        return {
            "name": CHARGEBACK_WAVE,
            "gifts_per_reversal": WAVE_GIFTS_PER_REVERSAL,
            "reversals": self.reversals,
            "reversals_before_gift": self.reversals_before_gift,
            "from_record": self.from_record,
            "to_record": self.to_record,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
        }


# payday --------------------------------------------------------------------------------------

PAYDAY_WINDOW_MS = 600_000
PAYDAY_RECORDED_MS_MEAN = 480_000  # the requests' recorded time, on average: within the window
PAYDAY_DIAMONDS_MAX = CASHOUT_DAILY_LIMIT_USD_CENTS * DIAMONDS_PER_USD // 100
PAYDAY_OTHER_REQUESTS_MIN = 10
PAYDAY_OTHER_KINDS = (
    ("again", 40),
    ("minimum", 10),
    ("over_balance", 15),
    ("not_eligible", 30),
    ("bad", 5),
)
PAYDAY_OTHER_NAMES = [name for name, _ in PAYDAY_OTHER_KINDS]
PAYDAY_OTHER_CUMULATIVE = list(itertools.accumulate(weight for _, weight in PAYDAY_OTHER_KINDS))


def payday_records(eligible: int) -> int:
    """The payday phase for `eligible` creators who may cash out: a third of them, a quarter as
    many other requests (at least 10), and room for a tenth more paying creators (those who
    become eligible while the main phase goes on)."""
    paying = (eligible + 1) // 3
    return paying + max(paying // 4, PAYDAY_OTHER_REQUESTS_MIN) + paying // 10 + 5


def payday_count(events: int, shape: StreamShape) -> int:
    """The records kept for the payday phase before the main phase: enough were every creator
    eligible (what it does not need goes back to the main phase); none where the mix would
    have no cash-out phase."""
    if cashout_count(events, shape) == 0:
        return 0
    return min(payday_records(creator_count_for(events, shape)), events // 2)


class Payday(ScenarioRun):
    def __init__(
        self,
        stream: StreamContext,
        creators: CreatorProfiles,
        gifts: GiftEvents,
        cashouts: CashoutPhase,
    ) -> None:
        super().__init__(stream, creators, gifts, cashouts)
        self.eligible = 0
        self.paying: list[int] = []
        self.asked: list[int] = []  # paying creators whose payday request is written
        self.window_from = self.window_to = ""

    def eligible_creators(self, moment: datetime) -> list[int]:
        return [
            rank
            for rank in sorted(self.stream.tally.diamonds)
            if self.cashouts.can_cash_out(rank, moment)
        ]

    def main_phase_extension(self, kept_for_cashouts: int) -> int:
        if kept_for_cashouts == 0:
            return 0
        needed = payday_records(len(self.eligible_creators(self.cashouts.cashout_days()[0])))
        return max(kept_for_cashouts - needed, 0)

    def cashout_phase(self, count: int) -> bool:
        stream = self.stream
        start = self.cashouts.cashout_days()[0]
        eligible = self.eligible_creators(start)
        self.eligible = len(eligible)
        self.paying = self.rng.sample(eligible, min((len(eligible) + 1) // 3, count))
        eligible_set = set(eligible)
        others = [rank for rank in sorted(self.creators.seen) if rank not in eligible_set]
        kinds = ["payday"] * len(self.paying)
        kinds += self.rng.choices(
            PAYDAY_OTHER_NAMES, cum_weights=PAYDAY_OTHER_CUMULATIVE, k=count - len(self.paying)
        )
        self.rng.shuffle(kinds)
        mean_rate_factor = count * 1_000 / (stream.shape.events_per_s * PAYDAY_RECORDED_MS_MEAN)
        stream.rate_factor = max(1.0, mean_rate_factor)
        paying = iter(self.paying)
        spent: dict[tuple[int, date], int] = {}
        for index, kind in enumerate(kinds):
            stream.advance()
            moment = start + timedelta(milliseconds=index * PAYDAY_WINDOW_MS // count)
            if kind == "payday":
                rank = next(paying)
                request = self.payday_request(rank)
                self.asked.append(rank)
            else:
                if not others and not self.asked:
                    kind = "bad"  # no creator to ask without adding an eligible one
                request = self.other_request(kind, others)
            self.cashouts.emit_request(request, moment, spent, bad=kind == "bad")
            self.window_to = moment.isoformat().replace("+00:00", "Z")
            if not self.window_from:
                self.window_from = self.window_to
        stream.rate_factor = 1.0
        return True

    def payday_request(self, rank: int) -> tuple[int, str, int, str]:
        """Up to what the creator holds and the daily limit: the creator's first request of the
        day, within every rule, so it is paid."""
        diamonds = self.stream.tally.diamonds[rank] // MILLI_PER_DIAMOND
        upper = max(CASHOUT_MINIMUM_DIAMONDS, min(diamonds, PAYDAY_DIAMONDS_MAX))
        return rank, "DIAMOND", self.rng.randint(CASHOUT_MINIMUM_DIAMONDS, upper), "USD"

    def other_request(self, kind: str, others: list[int]) -> tuple[int, str, int, str]:
        """A request that adds no creator to those with a cash-out among the eligible: a paying
        creator again (after the payday request), or a creator who may not cash out."""
        rng = self.rng
        if kind in ("again", "minimum", "over_balance") and self.asked:
            rank = rng.choice(self.asked)
            diamonds = max(self.stream.tally.diamonds.get(rank, 0), 0) // MILLI_PER_DIAMOND
            if kind == "minimum":
                return rank, "DIAMOND", rng.randint(1, CASHOUT_MINIMUM_DIAMONDS - 1), "USD"
            if kind == "over_balance":
                return rank, "DIAMOND", diamonds + rng.randint(1, 10_000), "USD"
            return rank, "DIAMOND", rng.randint(CASHOUT_MINIMUM_DIAMONDS, 60_000), "USD"
        pool = others or self.asked or [1]
        return rng.choice(pool), "DIAMOND", rng.randint(CASHOUT_MINIMUM_DIAMONDS, 20_000), "USD"

    def facts(self) -> dict[str, Any]:
        return {
            "name": PAYDAY,
            "eligible_creators": self.eligible,
            "paying_creators": len(self.paying),
            "window_ms": PAYDAY_WINDOW_MS,
            "first_request_at": self.window_from,
            "last_request_at": self.window_to,
        }


RUNS: dict[str, type[ScenarioRun]] = {
    STEADY: ScenarioRun,
    LIVE_BURST: LiveBurst,
    CHARGEBACK_WAVE: ChargebackWave,
    PAYDAY: Payday,
}


def start_scenario(
    name: str,
    stream: StreamContext,
    creators: CreatorProfiles,
    gifts: GiftEvents,
    cashouts: CashoutPhase,
) -> ScenarioRun:
    """The run of scenario `name` over the generator's parts (ValueError for an unknown name)."""
    return RUNS[scenario_named(name).name](stream, creators, gifts, cashouts)


def scenario_cashout_count(events: int, shape: StreamShape) -> int:
    """How many of `events` records are the cash-out phase, under `shape.scenario`."""
    if shape.scenario == PAYDAY:
        return payday_count(events, shape)
    return cashout_count(events, shape)
