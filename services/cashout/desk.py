"""Cash-outs: a request is checked, held, converted to money, sent to the bank, and posted, or
released when the bank fails or returns it. Every state change is stored with its time and
queued in the outbox for `cashouts.updated`; a held cash-out also queues `payouts.requested`.

Ledger legs (`services/cashout/postings.py`; docs/accounting.md has them with numbers):

- held: a pending, funded transfer from the creator's available Diamonds to their held Diamonds
  (or from their currency wallet to `payouts_payable`): refused when it would take the available
  balance below zero, however many requests race, because the account is locked while posting.
- submitted (the relay sent the payout request to the bank): the hold is posted; the held
  Diamonds are redeemed (`diamonds_redeemed`), the part worth less than one minor unit of the
  payout currency goes to `DIAMOND:rounding`, and the money moves from `cashout_conversion` to
  `payouts_payable`.
- paid: `payouts_payable` is settled against `cash_at_bank` (after the submission's legs, when
  the bank answered before the relay marked the cash-out submitted).
- failed: a hold still pending is voided; a submitted one is undone by new transfers.
- returned (after paid): new transfers undo the settlement and the submission; the creator's
  balance is restored.

Whether the hold is still pending is read from the ledger, not guessed from the status.

Conversion is exact integer arithmetic (fractions), rounding down to the payout currency's minor
unit: `payout = floor(milli_diamonds / 1000 / diamonds_per_usd * fx * 10^scale)`. The rate card and
the FX rate are those in force when the request is approved: the moment the desk takes up its
batch (`requests`), so a request that waited in a backlog is priced when it is decided, not when it
was made. Both are stored on the cash-out, which is decided once: a redelivery is a duplicate, and
a resubmission keeps the original's conversion. The day the request counts against for the daily
limit stays its `occurred_at`'s in UTC; the age rule is judged on the date at UTC-12 of the
earlier of its `occurred_at` and the approval (`eligibility.age_day`), and the profile's video
views and posts count when it is dated at most `ELIGIBILITY_PROFILE_MAX_AGE_DAYS` before that
same moment.

The daily limit holds however Kafka spreads the requests over consumers: a request takes its
creator's lock (`lock_creators`, a transaction-scoped advisory lock) before it reads what the
creator cashed out that day, and keeps it until its hold is committed, so two requests of one
creator are checked one after the other. Creator locks come before any account lock of the
transaction: a transaction waiting for a creator's lock holds no account lock, so it cannot
close a cycle with the ledger's account locks (taken in id order). A transaction that applies
several requests takes all their creators' locks first, in key order.

A batch is applied as applying its items one at a time in their order would, with the round
trips of the batch, not of each item (`requests`, `payout_results`, `mark_submitted`). The reads
the checks make are one statement each for the whole batch (`services.cashout.request_facts`).
Items are then taken in rounds: per round, the day's spent sums are read again, the holds (or
the results' legs) are posted in one `post`, and the rows and transitions are written with one
statement each. The outbox rows are queued with one statement at the end, in batch order, as one
at a time would have queued them. A round of requests takes a creator's requests together, in
order (the ledger walks their holds in order, and each counts the earlier ones that passed the
checks toward the day's limit); a request refused the limit only by counting those is left to a
next round, which reads the sums again once the round's rows are stored, since a hold of theirs
may yet be refused. Payout results go the n-th result of each cash-out in round n. A batch holds
one round unless a cash-out comes more than once in it, or a creator's requests cross the limit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chart import AccountSpec
from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger, LedgerTransaction
from schemas import topics
from schemas.assets import DIAMOND
from schemas.events import CashoutRequested, PayoutRequested, PayoutUpdated
from services.cashout.conversion import MILLI_PER_DIAMOND, USD_MICROS, convert
from services.cashout.eligibility import age_day, evaluate
from services.cashout.postings import (
    StepNames,
    cashout_accounts,
    hold_id,
    hold_source,
    hold_target,
    paid_after_cancel_transfers,
    paid_transfers,
    release_transfers,
    returned_transfers,
    settlement_accounts,
    submission_transfers,
)
from services.cashout.request_facts import (
    RequestFacts,
    read_request_facts,
    request_day,
    spent_micros,
)
from services.cashout.store import (
    Cashout,
    Transition,
    cashout_event_id,
    insert_cashouts,
    load_cashouts,
    queue_transitions,
    record_transitions,
    store_transitions,
    update_cashouts,
)
from services.rates.rate_cards import RateCard, RateCardBook
from services.runtime.creator_locks import lock_creators
from services.runtime.settings import EligibilitySettings, Settings

__all__ = [
    "ALLOWED_BEFORE",
    "OPERATOR_CANCELLED",
    "UNKNOWN_CASHOUT",
    "CashoutDesk",
    "CashoutLimits",
    "cancelled_by_operator",
    "hold_id",
    "hold_source",
    "hold_target",
    "paid_after_cancel",
    "request_accounts",
    "settlement_accounts",
    "store_cashout",
]


@dataclass(frozen=True, slots=True)
class CashoutLimits:
    minimum_usd_cents: int = 1_000
    daily_maximum_usd_cents: int = 100_000


def request_accounts(event: CashoutRequested) -> list[AccountSpec]:
    specs = [hold_source(event.creator_id, event.asset), hold_target(event.creator_id, event.asset)]
    return [*specs, *settlement_accounts(event.payout_currency)]


class CashoutDesk:
    """Applies cash-out requests and payout results inside the caller's transaction."""

    def __init__(
        self, limits: CashoutLimits, eligibility: EligibilitySettings, topic_prefix: str = ""
    ) -> None:
        self.limits = limits
        self.eligibility = eligibility
        # Whose outbox rows these are: the deployment that publishes to `<topic_prefix><topic>`.
        self.topic_prefix = topic_prefix

    @classmethod
    def from_settings(
        cls, settings: Settings, eligibility: EligibilitySettings | None = None
    ) -> CashoutDesk:
        """The desk with the CASHOUT_* limits and the ELIGIBILITY_* rules of `settings`."""
        return cls(
            CashoutLimits(
                settings.cashout_minimum_usd_cents, settings.cashout_daily_limit_usd_cents
            ),
            eligibility or settings.eligibility,
            settings.kafka_topic_prefix,
        )

    async def request(
        self,
        tx: LedgerTransaction,
        event: CashoutRequested,
        rate_cards: RateCardBook,
        account_ids: dict[str, int],
    ) -> Cashout:
        """Check, price and hold one request in the unit of work `tx` (`requests` with one);
        returns the cash-out, held or rejected."""
        return (await self.requests(tx, [event], rate_cards, account_ids))[0]

    async def requests(
        self,
        tx: LedgerTransaction,
        events: Sequence[CashoutRequested],
        rate_cards: RateCardBook,
        account_ids: dict[str, int],
    ) -> list[Cashout]:
        """Check, price and hold a batch of requests in the unit of work `tx`, as applying them
        one at a time in their order would; returns each cash-out, held or rejected, in order.
        The creators' locks are all taken first and held from before the checks until the
        commit; then the requests go in rounds (see the module's docstring)."""
        conn = tx.connection
        await lock_creators(conn, [event.creator_id for event in events])
        approved_at = datetime.now(UTC)  # the moment whose rates price the batch
        facts = await read_request_facts(conn, events, approved_at)
        decided: list[Cashout | None] = [None] * len(events)
        to_queue: list[list[Transition]] = [[] for _ in events]
        waiting = list(range(len(events)))
        while waiting:  # each round decides at least the first waiting request of each creator
            round_events = [events[position] for position in waiting]
            stored = await self._request_round(tx, round_events, rate_cards, account_ids, facts)
            deferred: list[int] = []
            for position, outcome in zip(waiting, stored, strict=True):
                if outcome is None:
                    deferred.append(position)
                else:
                    decided[position], to_queue[position] = outcome
            waiting = deferred
        # In batch order: each creator's messages in the order one at a time would write them.
        await queue_transitions(conn, [t for ts in to_queue for t in ts], self.topic_prefix)
        return [cashout for cashout in decided if cashout is not None]

    async def _request_round(
        self,
        tx: LedgerTransaction,
        events: list[CashoutRequested],
        rate_cards: RateCardBook,
        account_ids: dict[str, int],
        facts: RequestFacts,
    ) -> list[tuple[Cashout, list[Transition]] | None]:
        """Requests in batch order, several of a creator among them: checked, their holds
        posted in one batch (each refused hold rejects its request for the available balance;
        the ledger takes a creator's holds in order), then stored as held or rejected, each with
        its two transitions (requested, then the decision). Returns, per request, the cash-out
        with its transitions, to queue, or None for a request left to a later round.

        A request counts its creator's earlier requests of the round that passed the checks
        toward the day's limit, as if their holds were all taken. Passing so, it passes whatever
        the ledger then says of theirs; refused so, it might not be refused once a hold of
        theirs is: it is left, with the creator's later requests, to a round that reads the
        day's sums again, after this round's rows are stored. Nothing reads a round's rows
        before they are stored: the day's spent sums leave the checked requests out."""
        conn = tx.connection
        spent = await spent_micros(conn, events)
        # The USD micros of this round's requests that passed the checks, per (creator, day).
        passed: dict[tuple[str, date], int] = {}
        left: set[str] = set()  # creators whose later requests wait for a later round
        cashouts: list[Cashout | None] = []
        requested: list[Transition] = []  # each stored cash-out as it was before its checks
        holding: list[Cashout] = []
        holds: list[Transfer] = []
        for event in events:
            if event.creator_id in left:
                cashouts.append(None)
                continue
            card = rate_cards.in_force_at(facts.approved_at)
            cashout = new_cashout(event, card)
            before_checks = dataclasses.replace(cashout)
            day = (event.creator_id, request_day(event))
            counted = passed.get(day, 0)
            rule = self._refusal(event, cashout, facts, card.diamonds_per_usd, spent[day] + counted)
            if rule == "daily_limit" and counted:
                left.add(event.creator_id)
                cashouts.append(None)
                continue
            cashouts.append(cashout)
            requested.append(Transition(before_checks))
            if rule is None:
                passed[day] = counted + cashout.usd_value_micros
                holding.append(cashout)
                holds.append(hold_transfer(cashout, account_ids))
            else:
                cashout.status, cashout.rejected_rule = "rejected", rule
        if holds:
            outcome = await tx.post(holds, lock_accounts_first=True)
            for cashout, result in zip(holding, outcome.results, strict=True):
                if result is PostResult.OK:
                    cashout.status = "held"
                else:
                    cashout.status, cashout.rejected_rule = "rejected", "available_balance"
        stored = [cashout for cashout in cashouts if cashout is not None]
        decided = [
            Transition(cashout, then_queue=(topics.PAYOUTS_REQUESTED, payout_request(cashout)))
            if cashout.status == "held"
            else Transition(cashout, detail=cashout.rejected_rule or "")
            for cashout in stored
        ]
        await insert_cashouts(conn, stored)
        await store_transitions(conn, [*requested, *decided])
        transitions = iter(zip(requested, decided, strict=True))
        return [
            None if cashout is None else (cashout, list(next(transitions))) for cashout in cashouts
        ]

    def _refusal(
        self,
        event: CashoutRequested,
        cashout: Cashout,
        facts: RequestFacts,
        diamonds_per_usd: int,
        spent_micros_that_day: int,
    ) -> str | None:
        """The first rule the request breaks, or None; prices the cash-out as it goes."""
        if facts.is_frozen(event.creator_id):
            return "frozen"  # by an operator (services/operator/freezes.py)
        profile = facts.profile(event.creator_id)
        # The request's moment, or the approval for a request dated ahead of it: a request is
        # not made after it is decided. Age: judged on that moment's day at UTC-12 (`age_day`),
        # never a day the creator has not reached. Video views and posts: the profile's, when
        # it is dated at most `profile_max_age_days` before that moment.
        judged_at = min(event.occurred_at, facts.approved_at)
        report = evaluate(
            profile,
            self.eligibility,
            age_day(judged_at),
            requested_at=judged_at,
            creator_id=event.creator_id,
        )
        if not report.eligible:
            return report.first_failed_rule
        cashout.payout_account_ref = None if profile is None else profile.payout_account_ref
        if cashout.payout_account_ref is None:
            return "payout_account"
        if event.asset != DIAMOND and event.asset != event.payout_currency:
            return "payout_currency"
        payout_fx = facts.fx_in_force(event.payout_currency)
        if payout_fx is None:
            return "fx_rate"
        conversion = convert(cashout.asset, cashout.amount, diamonds_per_usd, payout_fx, payout_fx)
        # Stored only when there is something to pay: a request worth less than one minor unit
        # is rejected below (`minimum`) with no payout amount, never with 0.
        cashout.payout_amount = conversion.payout_amount or None
        cashout.usd_value_micros = math.floor(conversion.usd_value * USD_MICROS)
        cashout.fx_numerator = payout_fx.units_per_usd.numerator
        cashout.fx_denominator = payout_fx.units_per_usd.denominator
        if (
            conversion.usd_value * 100 < self.limits.minimum_usd_cents
            or not conversion.payout_amount
        ):
            return "minimum"
        # The creator's other cash-outs of the day not rejected, failed or returned: correct
        # only under the creator's lock (`lock_creators`), which `requests` holds.
        daily_micros = self.limits.daily_maximum_usd_cents * (USD_MICROS // 100)
        if spent_micros_that_day + cashout.usd_value_micros > daily_micros:
            return "daily_limit"
        return None

    async def payout_result(
        self,
        tx: LedgerTransaction,
        ledger: Ledger,
        event: PayoutUpdated,
        rate_cards: RateCardBook,
    ) -> str | None:
        """Apply one payout result in the unit of work `tx` (`payout_results` with one);
        returns None, or why it was not applied (for the DLQ)."""
        return (await self.payout_results(tx, ledger, [event], rate_cards))[0]

    async def payout_results(
        self,
        tx: LedgerTransaction,
        ledger: Ledger,
        events: Sequence[PayoutUpdated],
        rate_cards: RateCardBook,
    ) -> list[str | None]:
        """Apply a batch of payout results in the unit of work `tx`, as applying them one at a
        time in their order would; returns, per result, None or why it was not applied (for the
        DLQ). The cash-outs' rows are all locked first, in id order (as the outbox relay locks
        the ones it submits), then their accounts; then the results go in rounds."""
        conn = tx.connection
        cashouts = await load_cashouts(conn, [event.cashout_id for event in events], lock=True)
        # Created with the request, so normally known to the ledger's cache: no statement at
        # all. On this transaction's connection: the cash-outs are locked already, and waiting
        # for a second pooled connection here could wait on transactions waiting for them.
        specs = [spec for cashout in cashouts.values() for spec in cashout_accounts(cashout)]
        account_ids = await ledger.account_ids_in(conn, specs)
        refusals: list[str | None] = [None] * len(events)
        to_queue: list[Transition | None] = [None] * len(events)
        for positions in rounds([event.cashout_id for event in events]):
            outcomes = await self._result_round(
                tx, [events[position] for position in positions], cashouts, rate_cards, account_ids
            )
            for position, (refusal, transition) in zip(positions, outcomes, strict=True):
                refusals[position], to_queue[position] = refusal, transition
        # In batch order: each creator's messages in the order one at a time would write them.
        await queue_transitions(conn, [t for t in to_queue if t is not None], self.topic_prefix)
        return refusals

    async def _result_round(
        self,
        tx: LedgerTransaction,
        events: list[PayoutUpdated],
        cashouts: dict[str, Cashout],
        rate_cards: RateCardBook,
        account_ids: dict[str, int],
    ) -> list[tuple[str | None, Transition | None]]:
        """Results of distinct cash-outs: checked, their holds read in one statement, their
        legs posted in one batch, their cash-outs stored; returns per result why it was not
        applied (or None) and the transition it stored (to queue), if any."""
        refusals: list[str | None] = []
        applying: list[tuple[int, Cashout, PayoutUpdated]] = []
        confirmations: list[PayoutUpdated] = []
        for position, event in enumerate(events):
            cashout = cashouts.get(event.cashout_id)
            if cashout is None:
                refusals.append(UNKNOWN_CASHOUT)
            elif cancelled_by_operator(cashout) and event.status == "failed":
                # The bank confirms the cancellation: released already; recorded, so that the
                # cash-out may now be resubmitted (services/cashout/recovery.py).
                refusals.append(None)
                confirmations.append(event)
            elif cashout.status not in ALLOWED_BEFORE[event.status] and not paid_after_cancel(
                cashout, event
            ):
                refusals.append(f"cashout_is_{cashout.status}")
            else:
                refusals.append(None)
                applying.append((position, cashout, event))
        reading = [
            c
            for _, c, e in applying
            if e.status in ("paid", "failed") and not paid_after_cancel(c, e)
        ]
        open_holds = await holds_open(tx, reading)
        steps = [
            (cashout, result_transfers(cashout, event, open_holds, rate_cards, account_ids))
            for _, cashout, event in applying
        ]
        await post_steps(tx, steps)
        await record_cancel_confirmations(tx.connection, confirmations)
        transitions: list[Transition | None] = [None] * len(events)
        for position, cashout, event in applying:
            cashout.status = event.status
            cashout.failure_code = event.failure_code
            # A copy: a later round may change the cash-out again before the batch queues this.
            transitions[position] = Transition(
                dataclasses.replace(cashout), event.failure_code or ""
            )
        await update_cashouts(tx.connection, [cashout for _, cashout, _ in applying])
        stored = [transition for transition in transitions if transition is not None]
        await store_transitions(tx.connection, stored)
        for transition in stored:
            cashouts[
                transition.cashout.cashout_id
            ].transitioned_at = transition.cashout.transitioned_at
        return list(zip(refusals, transitions, strict=True))

    async def mark_submitted(
        self, tx: LedgerTransaction, ledger: Ledger, cashout_ids: Sequence[str]
    ) -> None:
        """The payout requests of `cashout_ids` left for the bank: each cash-out still `held`
        becomes `submitted`, its hold posted and its money payable; one that a result has
        already moved on is left alone. The cash-outs' rows are all locked first, then their
        accounts, as the payout results lock theirs."""
        conn = tx.connection
        found = await load_cashouts(conn, list(cashout_ids), lock=True)
        held = [cashout for _, cashout in sorted(found.items()) if cashout.status == "held"]
        if not held:
            return
        # On this connection: the cash-outs' rows are locked already.
        specs = [spec for cashout in held for spec in cashout_accounts(cashout)]
        account_ids = await ledger.account_ids_in(conn, specs)
        rates = await diamonds_per_usd_of_versions(conn, held)
        transfers: list[Transfer] = []
        for cashout in held:
            diamonds_per_usd = (
                rates.get(cashout.rate_card_version or 0) if cashout.asset == DIAMOND else None
            )
            transfers += submission_transfers(cashout, diamonds_per_usd, account_ids)
        # One batch: its accounts are locked in one pass, in id order.
        outcome = await tx.post(transfers, lock_accounts_first=True)
        refused = sorted({r.value for r in outcome.results if r is not PostResult.OK})
        if refused:
            raise RuntimeError(f"submitting cash-outs: the ledger refused {refused}")
        for cashout in held:
            cashout.status = "submitted"
        await update_cashouts(conn, held)
        await record_transitions(conn, [Transition(cashout) for cashout in held], self.topic_prefix)

    async def cancel_transfers(
        self, tx: LedgerTransaction, ledger: Ledger, cashout: Cashout, event_id: str
    ) -> list[Transfer]:
        """What an operator's cancellation of a stale cash-out posts: its hold voided while
        pending, or its submission undone once posted (ids named after the cash-out under
        `operator.actions`)."""
        names = StepNames(topics.OPERATOR_ACTIONS, f"cashout:{cashout.cashout_id}", event_id)
        hold_open = await hold_is_open(tx, cashout)
        account_ids = await ledger.account_ids_in(tx.connection, cashout_accounts(cashout))
        diamonds_per_usd = await diamonds_per_usd_of(tx.connection, cashout)
        return release_transfers(
            cashout, hold_open, diamonds_per_usd, account_ids, names, void_name="cancel"
        )

    async def _store(
        self, conn: AsyncConnection, cashout: Cashout, *, new: bool = False, detail: str = ""
    ) -> None:
        if new:
            await insert_cashouts(conn, [cashout])
        else:
            await update_cashouts(conn, [cashout])
        await record_transitions(conn, [Transition(cashout, detail)], self.topic_prefix)


# Why a payout result is refused when the desk has no cash-out of its id (yet: the ingestion
# parks it until the request arrives, services/ingestion/handlers.py).
UNKNOWN_CASHOUT = "unknown_cashout"

ALLOWED_BEFORE = {
    "paid": ("held", "submitted"),
    "failed": ("held", "submitted"),
    "returned": ("paid",),
}


def rounds(keys: Sequence[str]) -> list[list[int]]:
    """The positions of a batch's items in rounds: the n-th item of each key in round n, in
    batch order, so no round holds a key twice."""
    found: list[list[int]] = []
    seen: dict[str, int] = {}
    for position, key in enumerate(keys):
        number = seen.get(key, 0)
        seen[key] = number + 1
        if number == len(found):
            found.append([])
        found[number].append(position)
    return found


def new_cashout(event: CashoutRequested, card: RateCard) -> Cashout:
    """A request as a cash-out, `requested` and not yet priced."""
    amount = event.amount * MILLI_PER_DIAMOND if event.asset == DIAMOND else event.amount
    return Cashout(
        cashout_id=event.event_id,
        creator_id=event.creator_id,
        asset=event.asset,
        amount=amount,
        payout_currency=event.payout_currency,
        payout_amount=None,
        usd_value_micros=0,
        rate_card_version=card.version if event.asset == DIAMOND else None,
        fx_numerator=None,
        fx_denominator=None,
        status="requested",
        rejected_rule=None,
        failure_code=None,
        payout_account_ref=None,
        occurred_at=event.occurred_at,
    )


def hold_transfer(cashout: Cashout, account_ids: dict[str, int]) -> Transfer:
    """The cash-out's hold: pending and funded, so refused below an available balance of 0."""
    return Transfer(
        id=hold_id(cashout.cashout_id),
        debit_account_id=account_ids[hold_source(cashout.creator_id, cashout.asset).name],
        credit_account_id=account_ids[hold_target(cashout.creator_id, cashout.asset).name],
        amount=cashout.amount,
        code=TransferCode.CASHOUT_HOLD,
        flags=TransferFlags.PENDING | TransferFlags.FUNDED,
        rate_card_version=cashout.rate_card_version,
        event_id=cashout.cashout_id,
        metadata={"cashout_id": cashout.cashout_id},
    )


def payout_request(cashout: Cashout) -> str:
    """The `payouts.requested` record of a held cash-out, as JSON."""
    return PayoutRequested(
        event_id=cashout_event_id(cashout.cashout_id, "payout"),
        occurred_at=datetime.now(UTC),
        cashout_id=cashout.cashout_id,
        creator_id=cashout.creator_id,
        amount=cashout.payout_amount or 0,
        currency=cashout.payout_currency,
        payout_account_ref=cashout.payout_account_ref or "",
    ).model_dump_json()


def result_transfers(
    cashout: Cashout,
    event: PayoutUpdated,
    open_holds: dict[str, bool],
    rate_cards: RateCardBook,
    account_ids: dict[str, int],
) -> list[Transfer]:
    """What a payout result that applies to `cashout` posts (`open_holds`: whether its hold is
    still pending, read for the results that need it)."""
    diamonds_per_usd = None
    if cashout.asset == DIAMOND:
        assert cashout.rate_card_version is not None
        diamonds_per_usd = rate_cards.version(cashout.rate_card_version).diamonds_per_usd
    names = StepNames(topics.PAYOUTS_UPDATED, cashout.cashout_id, event.event_id)
    if paid_after_cancel(cashout, event):
        return paid_after_cancel_transfers(cashout, diamonds_per_usd, account_ids, names)
    if event.status == "returned":
        return returned_transfers(cashout, diamonds_per_usd, account_ids, names)
    hold_open = open_holds[cashout.cashout_id]
    if event.status == "paid":
        return paid_transfers(cashout, hold_open, diamonds_per_usd, account_ids, names)
    return release_transfers(cashout, hold_open, diamonds_per_usd, account_ids, names)


async def holds_open(tx: LedgerTransaction, cashouts: Sequence[Cashout]) -> dict[str, bool]:
    """Per cash-out id, whether its hold is still pending (True) or posted (False), as the
    ledger says, in one read; a hold that is missing, voided or expired has nothing left to
    post or undo here."""
    if not cashouts:
        return {}
    pending_ids = [hold_id(cashout.cashout_id) for cashout in cashouts]
    stored, outcomes = await tx.read_stored(pending_ids)
    found: dict[str, bool] = {}
    for cashout, pending_id in zip(cashouts, pending_ids, strict=True):
        if pending_id not in stored:
            raise RuntimeError(f"cash-out {cashout.cashout_id} has no hold in the ledger")
        outcome = outcomes[pending_id]
        if outcome not in (None, "posted"):
            raise RuntimeError(f"cash-out {cashout.cashout_id}: its hold was {outcome} already")
        found[cashout.cashout_id] = outcome is None
    return found


async def hold_is_open(tx: LedgerTransaction, cashout: Cashout) -> bool:
    """Whether the cash-out's hold is still pending (True) or posted (False) (`holds_open`)."""
    return (await holds_open(tx, [cashout]))[cashout.cashout_id]


async def diamonds_per_usd_of(conn: AsyncConnection, cashout: Cashout) -> int | None:
    """The rate of the cash-out's rate card version (None for a currency cash-out)."""
    if cashout.asset != DIAMOND:
        return None
    return (await diamonds_per_usd_of_versions(conn, [cashout]))[cashout.rate_card_version or 0]


_RATES_OF_VERSIONS = text(
    "SELECT version, diamonds_per_usd FROM rate_cards"
    " WHERE version = ANY(CAST(:versions AS integer[]))"
)


async def diamonds_per_usd_of_versions(
    conn: AsyncConnection, cashouts: Sequence[Cashout]
) -> dict[int, int]:
    """The rates of the Diamond cash-outs' rate card versions, by version, in one read."""
    versions = sorted(
        {c.rate_card_version for c in cashouts if c.asset == DIAMOND and c.rate_card_version}
    )
    if not versions:
        return {}
    rows = await conn.execute(_RATES_OF_VERSIONS, {"versions": versions})
    rates = {int(row.version): int(row.diamonds_per_usd) for row in rows}
    for cashout in cashouts:
        if cashout.asset == DIAMOND:
            assert cashout.rate_card_version in rates, (
                f"rate card {cashout.rate_card_version} of {cashout.cashout_id}"
            )
    return rates


async def post_steps(
    tx: LedgerTransaction, steps: Sequence[tuple[Cashout, list[Transfer]]]
) -> None:
    """Post the linked transfers of several cash-outs' steps in one batch (each step one
    chain, all or nothing); the ledger refusing any is a bug, not an outcome."""
    transfers = [transfer for _, step in steps for transfer in step]
    if not transfers:
        return
    outcome = await tx.post(transfers, lock_accounts_first=True)
    start = 0
    for cashout, step in steps:
        results = outcome.results[start : start + len(step)]
        start += len(step)
        if not all(result is PostResult.OK for result in results):
            refused = sorted({r.value for r in results if r is not PostResult.OK})
            raise RuntimeError(f"cash-out {cashout.cashout_id}: ledger refused {refused}")


async def post_all(tx: LedgerTransaction, cashout: Cashout, transfers: list[Transfer]) -> None:
    """Post one step's linked transfers; the ledger refusing any is a bug, not an outcome."""
    await post_steps(tx, [(cashout, transfers)])


# A hold an operator cancelled (services/cashout/recovery.py) ------------------------------------

# The failure code of a cash-out whose hold an operator cancelled because the bank had not
# answered within the answer window: its hold was released, as for a failed payout.
OPERATOR_CANCELLED = "operator_cancelled"


def cancelled_by_operator(cashout: Cashout) -> bool:
    return cashout.status == "failed" and cashout.failure_code == OPERATOR_CANCELLED


_RECORD_CANCEL_CONFIRMATIONS = text(
    """
    INSERT INTO cashout_cancel_confirmations (cashout_id, event_id, failure_code)
    SELECT * FROM unnest(
        CAST(:cashout_ids AS text[]), CAST(:event_ids AS text[]), CAST(:codes AS text[]))
    ON CONFLICT (cashout_id) DO NOTHING
    """
)


async def record_cancel_confirmations(
    conn: AsyncConnection, reports: Sequence[PayoutUpdated]
) -> None:
    """The bank's `failed` reports about cash-outs an operator cancelled: the payouts will not be
    made (the first report of each cash-out is kept)."""
    if not reports:
        return
    await conn.execute(
        _RECORD_CANCEL_CONFIRMATIONS,
        {
            "cashout_ids": [report.cashout_id for report in reports],
            "event_ids": [report.event_id for report in reports],
            "codes": [report.failure_code or "" for report in reports],
        },
    )


def paid_after_cancel(cashout: Cashout, event: PayoutUpdated) -> bool:
    """The bank paid a cash-out after an operator cancelled its hold: the money left once, so
    the ledger takes the released amount again (`postings.paid_after_cancel_transfers`, an
    ordinary transfer that may take the available balance below zero, as a reversal may),
    converts it and settles it as a `paid`."""
    return cancelled_by_operator(cashout) and event.status == "paid"


async def store_cashout(
    desk: CashoutDesk,
    conn: AsyncConnection,
    cashout: Cashout,
    *,
    new: bool = False,
    detail: str = "",
) -> None:
    """Store a cash-out's row and its transition as the desk does (for operator recovery)."""
    await desk._store(conn, cashout, new=new, detail=detail)
