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
unit: `payout = floor(milli_diamonds / 1000 / diamonds_per_usd * fx * 10^scale)`. Rates in force at
the request's `occurred_at` are used, so a redelivered request is priced the same way.

The daily limit holds however Kafka spreads the requests over consumers: a request takes its
creator's lock (`lock_creators`, a transaction-scoped advisory lock) before it reads what the
creator cashed out that day, and keeps it until its hold is committed, so two requests of one
creator are checked one after the other. Creator locks come before any account lock of the
transaction: a transaction waiting for a creator's lock holds no account lock, so it cannot
close a cycle with the ledger's account locks (taken in id order). A transaction that applies
several requests takes all their creators' locks first, in key order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chart import AccountSpec
from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger, LedgerTransaction
from schemas import topics
from schemas.assets import DIAMOND
from schemas.events import CashoutRequested, PayoutRequested, PayoutUpdated
from services.cashout.conversion import MILLI_PER_DIAMOND, USD_MICROS, convert
from services.cashout.eligibility import creator_eligibility
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
from services.cashout.store import (
    Cashout,
    cashout_event_id,
    load_cashout,
    load_cashouts,
    record_transition,
)
from services.operator.freezes import creator_is_frozen
from services.rates.fx import fx_in_force
from services.rates.rate_cards import RateCardBook
from services.runtime.outbox_rows import queue
from services.runtime.settings import EligibilitySettings, Settings

__all__ = [
    "ALLOWED_BEFORE",
    "OPERATOR_CANCELLED",
    "CashoutDesk",
    "CashoutLimits",
    "cancelled_by_operator",
    "hold_id",
    "hold_source",
    "hold_target",
    "lock_creators",
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
    return specs + settlement_accounts(event.payout_currency)


CREATOR_LOCK_NAMESPACE = b"giftledger.cashout.creator:"


def creator_lock_key(creator_id: str) -> int:
    """The advisory lock key of a creator's cash-outs: the first 8 bytes of a SHA-256 of the
    creator id, as a signed 64-bit integer; the same in every process and on every server."""
    digest = hashlib.sha256(CREATOR_LOCK_NAMESPACE + creator_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def lock_creators(conn: AsyncConnection, creator_ids: Iterable[str]) -> None:
    """Take the cash-out locks of these creators until the transaction ends, in key order (so
    two transactions taking several never wait on each other in a cycle). Take them before any
    account lock of the transaction. Taking a lock the transaction holds already is a no-op."""
    keys = sorted({creator_lock_key(creator_id) for creator_id in creator_ids})
    if keys:  # unnest yields the sorted keys in array order, and each is locked as it comes
        await conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(key) FROM unnest(CAST(:keys AS bigint[])) AS k(key)"
            ),
            {"keys": keys},
        )


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
        """Check, price and hold one request in the unit of work `tx`; returns the cash-out,
        held or rejected. The creator's lock is held from before the checks until the commit."""
        conn = tx.connection
        await lock_creators(conn, [event.creator_id])
        amount = event.amount * MILLI_PER_DIAMOND if event.asset == DIAMOND else event.amount
        card = rate_cards.in_force_at(event.occurred_at)
        cashout = Cashout(
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
        await self._store(conn, cashout, new=True)
        rule = await self._refusal(conn, event, cashout, card.diamonds_per_usd)
        if rule is None:
            hold = Transfer(
                id=hold_id(cashout.cashout_id),
                debit_account_id=account_ids[hold_source(event.creator_id, event.asset).name],
                credit_account_id=account_ids[hold_target(event.creator_id, event.asset).name],
                amount=amount,
                code=TransferCode.CASHOUT_HOLD,
                flags=TransferFlags.PENDING | TransferFlags.FUNDED,
                rate_card_version=cashout.rate_card_version,
                event_id=event.event_id,
                metadata={"cashout_id": cashout.cashout_id},
            )
            outcome = await tx.post([hold], lock_accounts_first=True)
            if outcome.results[0] is not PostResult.OK:
                rule = "available_balance"
        if rule is not None:
            cashout.status, cashout.rejected_rule = "rejected", rule
            await self._store(conn, cashout, detail=rule)
            return cashout
        cashout.status = "held"
        await self._store(conn, cashout)
        payout = PayoutRequested(
            event_id=cashout_event_id(cashout.cashout_id, "payout"),
            occurred_at=datetime.now(UTC),
            cashout_id=cashout.cashout_id,
            creator_id=cashout.creator_id,
            amount=cashout.payout_amount or 0,
            currency=cashout.payout_currency,
            payout_account_ref=cashout.payout_account_ref or "",
        )
        await queue(
            conn,
            self.topic_prefix,
            topics.PAYOUTS_REQUESTED,
            cashout.creator_id,
            payout.model_dump_json(),
        )
        return cashout

    async def _refusal(
        self,
        conn: AsyncConnection,
        event: CashoutRequested,
        cashout: Cashout,
        diamonds_per_usd: int,
    ) -> str | None:
        """The first rule the request breaks, or None; prices the cash-out as it goes."""
        if await creator_is_frozen(conn, event.creator_id):
            return "frozen"  # by an operator (services/operator/freezes.py)
        report = await creator_eligibility(
            conn, event.creator_id, self.eligibility, event.occurred_at.astimezone(UTC).date()
        )
        if not report.eligible:
            return report.first_failed_rule
        profile_ref = await conn.execute(
            text("SELECT payout_account_ref FROM creators WHERE creator_id = :c"),
            {"c": event.creator_id},
        )
        cashout.payout_account_ref = profile_ref.scalar_one_or_none()
        if cashout.payout_account_ref is None:
            return "payout_account"
        if event.asset != DIAMOND and event.asset != event.payout_currency:
            return "payout_currency"
        payout_fx = await fx_in_force(conn, event.payout_currency, event.occurred_at)
        if payout_fx is None:
            return "fx_rate"
        conversion = convert(cashout.asset, cashout.amount, diamonds_per_usd, payout_fx, payout_fx)
        cashout.payout_amount = conversion.payout_amount
        cashout.usd_value_micros = math.floor(conversion.usd_value * USD_MICROS)
        cashout.fx_numerator = payout_fx.units_per_usd.numerator
        cashout.fx_denominator = payout_fx.units_per_usd.denominator
        if (
            conversion.usd_value * 100 < self.limits.minimum_usd_cents
            or not conversion.payout_amount
        ):
            return "minimum"
        if await self._over_daily_limit(conn, cashout):
            return "daily_limit"
        return None

    async def _over_daily_limit(self, conn: AsyncConnection, cashout: Cashout) -> bool:
        """Whether the cash-out would take its creator past the limit of its UTC day, counting
        the creator's other cash-outs of that day not rejected, failed or returned. Correct only
        under the creator's lock (`lock_creators`), which `request` holds."""
        spent = await conn.execute(
            text(
                "SELECT coalesce(sum(usd_value_micros), 0) FROM cashouts"
                " WHERE creator_id = :c AND requested_on = :day AND cashout_id <> :id"
                " AND status NOT IN ('rejected', 'failed', 'returned')"
            ),
            {
                "c": cashout.creator_id,
                "day": cashout.occurred_at.astimezone(UTC).date(),
                "id": cashout.cashout_id,
            },
        )
        daily_micros = self.limits.daily_maximum_usd_cents * (USD_MICROS // 100)
        return int(spent.scalar_one()) + cashout.usd_value_micros > daily_micros

    async def payout_result(
        self,
        tx: LedgerTransaction,
        event: PayoutUpdated,
        rate_cards: RateCardBook,
        account_ids: dict[str, int],
    ) -> str | None:
        """Apply a payout result in the unit of work `tx`; returns None, or why it was not
        applied (for the DLQ)."""
        conn = tx.connection
        cashout = await load_cashout(conn, event.cashout_id, lock=True)
        if cashout is None:
            return "unknown_cashout"
        if cancelled_by_operator(cashout) and event.status == "failed":
            return None  # the bank confirms the cancellation: the hold was released already
        if cashout.status not in ALLOWED_BEFORE[event.status] and not paid_after_cancel(
            cashout, event
        ):
            return f"cashout_is_{cashout.status}"
        diamonds_per_usd = None
        if cashout.asset == DIAMOND:
            assert cashout.rate_card_version is not None
            diamonds_per_usd = rate_cards.version(cashout.rate_card_version).diamonds_per_usd
        names = StepNames(topics.PAYOUTS_UPDATED, cashout.cashout_id, event.event_id)
        if paid_after_cancel(cashout, event):
            transfers = paid_after_cancel_transfers(cashout, diamonds_per_usd, account_ids, names)
        elif event.status == "returned":
            transfers = returned_transfers(cashout, diamonds_per_usd, account_ids, names)
        elif event.status == "paid":
            hold_open = await hold_is_open(tx, cashout)
            transfers = paid_transfers(cashout, hold_open, diamonds_per_usd, account_ids, names)
        else:
            hold_open = await hold_is_open(tx, cashout)
            transfers = release_transfers(cashout, hold_open, diamonds_per_usd, account_ids, names)
        await post_all(tx, cashout, transfers)
        cashout.status = event.status
        cashout.failure_code = event.failure_code
        await self._store(conn, cashout, detail=event.failure_code or "")
        return None

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
        transfers: list[Transfer] = []
        for cashout in held:
            account_ids = await ledger.account_ids(cashout_accounts(cashout))
            diamonds_per_usd = await diamonds_per_usd_of(conn, cashout)
            transfers += submission_transfers(cashout, diamonds_per_usd, account_ids)
        if transfers:  # one batch: its accounts are locked in one pass, in id order
            outcome = await tx.post(transfers, lock_accounts_first=True)
            refused = sorted({r.value for r in outcome.results if r is not PostResult.OK})
            if refused:
                raise RuntimeError(f"submitting cash-outs: the ledger refused {refused}")
        for cashout in held:
            cashout.status = "submitted"
            await self._store(conn, cashout)

    async def cancel_transfers(
        self, tx: LedgerTransaction, ledger: Ledger, cashout: Cashout, event_id: str
    ) -> list[Transfer]:
        """What an operator's cancellation of a stale cash-out posts: its hold voided while
        pending, or its submission undone once posted (ids named after the cash-out under
        `operator.actions`)."""
        names = StepNames(topics.OPERATOR_ACTIONS, f"cashout:{cashout.cashout_id}", event_id)
        hold_open = await hold_is_open(tx, cashout)
        account_ids = await ledger.account_ids(cashout_accounts(cashout))
        diamonds_per_usd = await diamonds_per_usd_of(tx.connection, cashout)
        return release_transfers(
            cashout, hold_open, diamonds_per_usd, account_ids, names, void_name="cancel"
        )

    async def _store(
        self, conn: AsyncConnection, cashout: Cashout, *, new: bool = False, detail: str = ""
    ) -> None:
        values = {
            "id": cashout.cashout_id,
            "creator": cashout.creator_id,
            "asset": cashout.asset,
            "amount": cashout.amount,
            "currency": cashout.payout_currency,
            "payout": cashout.payout_amount,
            "usd": cashout.usd_value_micros,
            "card": cashout.rate_card_version,
            "fx_n": cashout.fx_numerator,
            "fx_d": cashout.fx_denominator,
            "status": cashout.status,
            "rule": cashout.rejected_rule,
            "failure": cashout.failure_code,
            "ref": cashout.payout_account_ref,
            "day": cashout.occurred_at.astimezone(UTC).date(),
            "occurred_at": cashout.occurred_at,
        }
        if new:
            await conn.execute(
                text(
                    """
                    INSERT INTO cashouts (cashout_id, creator_id, asset, amount, payout_currency,
                        payout_amount, usd_value_micros, rate_card_version, fx_numerator,
                        fx_denominator, status, rejected_rule, failure_code, payout_account_ref,
                        requested_on, occurred_at)
                    VALUES (:id, :creator, :asset, :amount, :currency, :payout, :usd, :card,
                        :fx_n, :fx_d, :status, :rule, :failure, :ref, :day, :occurred_at)
                    """
                ),
                values,
            )
        else:
            await conn.execute(
                text(
                    """
                    UPDATE cashouts SET payout_amount = :payout, usd_value_micros = :usd,
                        rate_card_version = :card, fx_numerator = :fx_n, fx_denominator = :fx_d,
                        status = :status, rejected_rule = :rule, failure_code = :failure,
                        payout_account_ref = :ref, updated_at = clock_timestamp()
                    WHERE cashout_id = :id
                    """
                ),
                values,
            )
        await record_transition(conn, cashout, self.topic_prefix, detail)


ALLOWED_BEFORE = {
    "paid": ("held", "submitted"),
    "failed": ("held", "submitted"),
    "returned": ("paid",),
}


async def hold_is_open(tx: LedgerTransaction, cashout: Cashout) -> bool:
    """Whether the cash-out's hold is still pending (True) or posted (False), as the ledger
    says; a hold that is missing, voided or expired has nothing left to post or undo here."""
    pending_id = hold_id(cashout.cashout_id)
    stored, outcomes = await tx.read_stored([pending_id])
    if pending_id not in stored:
        raise RuntimeError(f"cash-out {cashout.cashout_id} has no hold in the ledger")
    outcome = outcomes[pending_id]
    if outcome not in (None, "posted"):
        raise RuntimeError(f"cash-out {cashout.cashout_id}: its hold was {outcome} already")
    return outcome is None


async def diamonds_per_usd_of(conn: AsyncConnection, cashout: Cashout) -> int | None:
    """The rate of the cash-out's rate card version (None for a currency cash-out)."""
    if cashout.asset != DIAMOND:
        return None
    rate = await conn.scalar(
        text("SELECT diamonds_per_usd FROM rate_cards WHERE version = :version"),
        {"version": cashout.rate_card_version},
    )
    assert rate is not None, f"rate card {cashout.rate_card_version} of {cashout.cashout_id}"
    return int(rate)


async def post_all(tx: LedgerTransaction, cashout: Cashout, transfers: list[Transfer]) -> None:
    """Post one step's linked transfers; the ledger refusing any is a bug, not an outcome."""
    outcome = await tx.post(transfers, lock_accounts_first=True)
    if not all(result is PostResult.OK for result in outcome.results):
        refused = sorted({r.value for r in outcome.results if r is not PostResult.OK})
        raise RuntimeError(f"cash-out {cashout.cashout_id}: ledger refused {refused}")


# A hold an operator cancelled (services/cashout/recovery.py) ------------------------------------

# The failure code of a cash-out whose hold an operator cancelled because the bank had not
# answered within the answer window: its hold was released, as for a failed payout.
OPERATOR_CANCELLED = "operator_cancelled"


def cancelled_by_operator(cashout: Cashout) -> bool:
    return cashout.status == "failed" and cashout.failure_code == OPERATOR_CANCELLED


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
