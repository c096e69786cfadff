"""The load-test stream's final phase (`services.loadtest.generator`): cash-out requests, after
everything else. Most fit, some are over the balance, under the minimum, over the daily limit,
from ineligible creators or creators with no profile, in a currency that does not match.

Cash-outs are exact because they come last (strategy (a) of the load test's brief): the load
test replays the stream up to `cashout_phase_from`, waits until every record is applied and no
reversal is parked, then replays the cash-outs. Their outcome is then a pure function of the
rules (`services.loadtest.oracle`), evaluated here in stream order per creator: eligibility (the
Creator Next defaults), a payout account, the payout currency, the minimum (10 USD), the daily
limit (1,000 USD per creator per UTC day) and the available balance. The load test runs the
simulated bank with `failure_rate=0` and `return_rate=0`, so every held cash-out ends paid: one
paid cash-out debits its whole diamonds * 1,000 (or its currency amount) from the balance.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas import topics
from services.loadtest.creator_profiles import CreatorProfiles
from services.loadtest.oracle import (
    CASHOUT_DAILY_LIMIT_USD_CENTS,
    CASHOUT_MINIMUM_USD_CENTS,
    DIAMONDS_PER_USD,
    FX_CURRENCIES,
    MILLI_PER_DIAMOND,
    USD_MICROS,
    age_day,
    cashout_value,
    first_failed_rule,
)
from services.loadtest.stream_context import StreamContext
from services.loadtest.stream_format import (
    SCHEMA_VIOLATION,
    STREAM_START,
    StreamShape,
    compact,
)

CASHOUT_MINIMUM_DIAMONDS = CASHOUT_MINIMUM_USD_CENTS * DIAMONDS_PER_USD // 100
CASHOUT_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("fits", 45),
    ("wallet", 10),
    ("minimum", 10),
    ("over_balance", 12),
    ("ineligible", 10),
    ("daily_limit", 5),
    ("no_profile", 4),
    ("wrong_currency", 2),
    ("bad", 2),
)
# The first cash-outs walk every category once, so that even a short stream shows each path.
CASHOUT_CATEGORY_CYCLE = (
    "fits",
    "minimum",
    "over_balance",
    "ineligible",
    "fits",
    "wallet",
    "no_profile",
    "daily_limit",
    "daily_limit",
    "wrong_currency",
)


def cashout_count(events: int, shape: StreamShape) -> int:
    """How many of `events` records are the final phase's cash-out requests."""
    if events < 50 or shape.cashout_share == 0:
        return 0
    return min(max(round(events * shape.cashout_share), len(CASHOUT_CATEGORY_CYCLE)), events // 2)


class CashoutPhase:
    """The cash-out requests, decided against the stream's tally (the balances) and the
    creators' latest profiles."""

    def __init__(self, stream: StreamContext, creators: CreatorProfiles) -> None:
        self.stream = stream
        self.creators = creators
        self.rng = stream.rng
        self.candidates: list[int] = []  # eligible creators with 2,000 diamonds or more

    def run(self, count: int) -> None:
        """`count` cash-out requests on the two days after the main phase, decided in stream
        order by the contract's rules against the balances the main phase left."""
        stream = self.stream
        days = self.cashout_days()
        spent: dict[tuple[int, date], int] = {}
        self.candidates = [
            rank
            for rank, milli in stream.tally.diamonds.items()
            if milli >= 2_000 * MILLI_PER_DIAMOND
            and self.creators.profile_kind.get(rank) == "eligible"
        ]
        names = [name for name, _ in CASHOUT_CATEGORIES]
        weights = [weight for _, weight in CASHOUT_CATEGORIES]
        rich: int | None = None
        for index in range(count):
            stream.advance()
            category = (
                CASHOUT_CATEGORY_CYCLE[index]
                if index < len(CASHOUT_CATEGORY_CYCLE)
                else self.rng.choices(names, weights)[0]
            )
            day_start = days[0] if index < count * 0.6 else days[1]
            moment = day_start + timedelta(seconds=index)
            if category == "daily_limit":
                rich = rich if rich is not None else self.richest_eligible()
            request = self.cashout_request(category, rich)
            self.emit_request(request, moment, spent, bad=category == "bad")

    def cashout_days(self) -> list[datetime]:
        """09:00 UTC on each of the two days after the main phase's last day."""
        last_day = (STREAM_START + timedelta(milliseconds=self.stream.now_ms())).date()
        return [
            datetime(last_day.year, last_day.month, last_day.day, 9, tzinfo=UTC)
            + timedelta(days=offset)
            for offset in (1, 2)
        ]

    def emit_request(
        self,
        request: tuple[int, str, int, str],
        moment: datetime,
        spent: dict[tuple[int, date], int],
        *,
        bad: bool = False,
    ) -> None:
        """One cash-out request at `moment`, decided by the rules (`bad`: with amount 0, a
        schema violation the consumer dead-letters)."""
        stream = self.stream
        event: dict[str, Any] = {
            "event_id": stream.next_id("c"),
            "occurred_at": moment.isoformat().replace("+00:00", "Z"),
            "creator_id": stream.creator_id(request[0]),
            "asset": request[1],
            "amount": request[2],
            "payout_currency": request[3],
        }
        if bad:
            event["amount"] = 0
            stream.bad(
                topics.CASHOUTS_REQUESTED,
                str(event["creator_id"]),
                compact(event),
                SCHEMA_VIOLATION,
            )
            return
        self.decide(request, moment, spent)
        stream.send(stream.applied_event(topics.CASHOUTS_REQUESTED, event))

    def can_cash_out(self, rank: int, moment: datetime) -> bool:
        """Whether the rules let the creator cash out at `moment` (a profile that passes every
        Creator Next rule, a payout account) and the creator holds at least the minimum
        (2,000 diamonds)."""
        profile = self.creators.profiles.get(rank)
        if profile is None or profile.facts.get("payout_account_ref") is None:
            return False
        if first_failed_rule(profile.facts, age_day(moment), profile.age_at(moment)) is not None:
            return False
        return (
            self.stream.tally.diamonds.get(rank, 0) >= CASHOUT_MINIMUM_DIAMONDS * MILLI_PER_DIAMOND
        )

    def richest_eligible(self) -> int:
        diamonds = self.stream.tally.diamonds
        best, best_milli = 1, -1
        for rank in range(1, min(self.stream.creator_count, 50) + 1):
            milli = diamonds.get(rank, 0)
            if self.creators.profile_kind.get(rank) == "eligible" and milli > best_milli:
                best, best_milli = rank, milli
        return best

    def rich_creator(self) -> int:
        """Mostly any eligible creator with at least 2,000 diamonds, sometimes a star."""
        if self.candidates and self.rng.random() < 0.8:
            return self.rng.choice(self.candidates)
        diamonds = self.stream.tally.diamonds
        rank = self.stream.zipf_rank()
        for _ in range(20):
            if diamonds.get(rank, 0) >= 2_000 * MILLI_PER_DIAMOND:
                return rank
            rank = self.stream.zipf_rank()
        return rank

    def cashout_request(self, category: str, rich: int | None) -> tuple[int, str, int, str]:
        """(creator rank, asset, amount, payout currency) of one request of `category`."""
        rng = self.rng
        stream = self.stream
        creators = self.creators
        wallets = stream.tally.wallets
        if category == "wallet":
            rank = stream.zipf_rank()
            for _ in range(20):
                if wallets.get((rank, "USD"), 0) >= 1_000:
                    break
                rank = stream.zipf_rank()
            balance = wallets.get((rank, "USD"), 0)
            if rng.random() < 0.2:  # more than the wallet holds
                return rank, "USD", balance + rng.randint(1, 5_000), "USD"
            return rank, "USD", rng.randint(1_000, max(1_000, min(balance, 60_000))), "USD"
        if category == "ineligible" and creators.ineligible:
            return rng.choice(creators.ineligible), "DIAMOND", rng.randint(2_000, 20_000), "USD"
        if category == "no_profile":
            rank = (
                rng.choice(creators.without_profile)
                if creators.without_profile
                else stream.zipf_rank()
            )
            return rank, "DIAMOND", rng.randint(2_000, 20_000), "USD"
        if category == "wrong_currency":
            return self.rich_creator(), "EUR", rng.randint(1_000, 10_000), "USD"
        if category == "daily_limit" and rich is not None:
            return rich, "DIAMOND", rng.randint(110_000, 190_000), "USD"
        rank = self.rich_creator()
        diamonds = max(stream.tally.diamonds.get(rank, 0), 0) // MILLI_PER_DIAMOND
        if category == "minimum":
            return rank, "DIAMOND", rng.randint(1, 1_999), "USD"
        if category == "over_balance":
            return rank, "DIAMOND", max(2_000, diamonds + rng.randint(1, 10_000)), "USD"
        upper = max(2_000, min(diamonds // 2, 50_000))
        return rank, "DIAMOND", rng.randint(2_000, upper), "USD"

    def decide(
        self,
        request: tuple[int, str, int, str],
        moment: datetime,
        spent: dict[tuple[int, date], int],
    ) -> None:
        """Apply the cash-out rules in the service's order to a request made at `moment` (UTC);
        a held cash-out ends paid."""
        rank, asset, amount, payout_currency = request
        day = moment.date()  # the daily limit's
        tally = self.stream.tally
        tally.totals["cashouts"] += 1
        profile = self.creators.profiles.get(rank)
        facts = None if profile is None else profile.facts
        profile_age = timedelta(0) if profile is None else profile.age_at(moment)
        rule = first_failed_rule(facts, age_day(moment), profile_age)
        if rule is None and (facts is None or facts.get("payout_account_ref") is None):
            rule = "payout_account"
        if rule is None and asset != "DIAMOND" and asset != payout_currency:
            rule = "payout_currency"
        if rule is None and payout_currency not in FX_CURRENCIES:
            rule = "fx_rate"
        if rule is None:
            held, micros, payout = cashout_value(asset, amount)
            if micros * 100 < CASHOUT_MINIMUM_USD_CENTS * USD_MICROS or payout == 0:
                rule = "minimum"
            elif spent.get((rank, day), 0) + micros > CASHOUT_DAILY_LIMIT_USD_CENTS * (
                USD_MICROS // 100
            ):
                rule = "daily_limit"
            else:
                balances = tally.diamonds if asset == "DIAMOND" else None
                available = (
                    tally.diamonds.get(rank, 0)
                    if balances is not None
                    else tally.wallets.get((rank, asset), 0)
                )
                if available < held:
                    rule = "available_balance"
                else:
                    if asset == "DIAMOND":
                        tally.diamonds[rank] = available - held
                        tally.totals["cashouts_paid_milli_diamonds"] += held
                    else:
                        tally.wallets[(rank, asset)] = available - held
                        tally.totals[f"cashouts_paid_{asset.lower()}_minor"] += held
                    spent[(rank, day)] = spent.get((rank, day), 0) + micros
                    tally.totals["cashouts_payout_usd_cents"] += payout
        if rule is None:
            tally.cashouts["paid"] += 1
            tally.applied[topics.PAYOUTS_UPDATED] += 1
        else:
            tally.cashouts[f"rejected:{rule}"] += 1
