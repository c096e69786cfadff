"""Operator recovery of cash-outs: cancel a stale hold, resubmit a failed payout.

Both are operator actions (services/operator/actions_log.py): one unit of work takes the log's
lock, checks the idempotency key (the same key with the same content returns what it did, with
`recorded` False), checks the cash-out under its row lock, appends the action and makes the
change. Transfers carry the event id `operator-action:<action id>`.

Cancel a stale hold (`cashout_cancelled`). Only a cash-out `held` or `submitted` whose last change
is older than the answer window (`CASHOUT_ANSWER_WINDOW_S`, what `giftledger cashouts --stale`
lists) may be cancelled. Its hold is released, as for a failed payout (voided while pending, its
submission undone by new transfers once posted), so the Diamonds (or the currency) are back in
the creator's available balance; the cash-out becomes `failed` with the failure code
`operator_cancelled`; and a `PayoutCancelRequested` is queued on `payouts.requested`
(after the request it cancels, same key) to tell the bank. A bank that paid anyway reports `paid`:
the ledger then takes the released amount again and settles the payout once (`paid_after_cancel`
in services/cashout/desk.py); a bank that stops the payout reports `failed`, which changes no
balance and is recorded in `cashout_cancel_confirmations` (`record_cancel_confirmations`).

Resubmit a failed payout (`payout_resubmitted`). A `failed` cash-out (whatever the failure, an
operator's cancellation included) is resubmitted as a new cash-out `<cashout_id>:resubmit` with
the original's amounts, rate card version and FX rate, and its `occurred_at` (so it counts in the
daily limit of the original's day in place of the original); the creator's current payout
account; a new hold; and a new `payouts.requested`. The creator must still pass the Creator Next
rules today and not be frozen, the resubmission must fit in the daily limit of the original's day
beside the creator's other cash-outs of that day (which may have used the room the failure
left), and the hold must fit in the available balance. A cash-out an operator cancelled is
resubmitted only once the bank has confirmed that it will not pay it (`awaits_bank_confirmation`):
its payout request may have reached the bank, and a late `paid` of it beside a resubmission would
pay the creator twice. A cash-out is resubmitted at most once; a resubmission that fails is
resubmitted in turn.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger, LedgerTransaction
from schemas import topics
from schemas.events import ID_LENGTH_MAX, PayoutRequested
from schemas.payout_cancel import PayoutCancelRequested
from services.cashout.conversion import USD_MICROS
from services.cashout.desk import (
    OPERATOR_CANCELLED,
    CashoutDesk,
    cancelled_by_operator,
    hold_id,
    hold_source,
    hold_target,
    settlement_accounts,
    store_cashout,
)
from services.cashout.eligibility import creator_eligibility
from services.cashout.request_facts import day_spent_micros
from services.cashout.store import Cashout, cashout_event_id, load_cashout
from services.operator.actions_log import (
    MESSAGE_KEY_DETAIL,
    ActionEntry,
    HeldLog,
    OperatorAction,
    hold_log,
)
from services.operator.desk import OperatorError
from services.operator.freezes import creator_is_frozen
from services.runtime.creator_locks import lock_creators
from services.runtime.outbox_rows import queue
from services.trial_balance_text import grouped_amount

CASHOUT_CANCELLED: Final = "cashout_cancelled"
PAYOUT_RESUBMITTED: Final = "payout_resubmitted"
CANCELLABLE_STATUSES: Final = ("held", "submitted")
RESUBMIT_SUFFIX: Final = "resubmit"


class CashoutNotFoundError(OperatorError):
    """No cash-out has this id."""


class CashoutActionRefusedError(OperatorError):
    """The cash-out is not in a state the action applies to; the message says why."""


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """Who acts, why, and under which idempotency key."""

    idempotency_key: str
    actor: str
    reason: str
    ticket: str | None


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    cashout: Cashout
    action: OperatorAction
    recorded: bool


@dataclass(frozen=True, slots=True)
class ResubmitOutcome:
    original: Cashout
    resubmitted: Cashout
    action: OperatorAction
    recorded: bool


def resubmission_id(cashout_id: str) -> str:
    """The id of a cash-out's resubmission: `<cashout_id>:resubmit` while it fits in an id, else
    `resubmit#<sha256 of cashout_id>` (as `cashout_event_id` names long ids)."""
    readable = f"{cashout_id}:{RESUBMIT_SUFFIX}"
    if len(readable) <= ID_LENGTH_MAX:
        return readable
    return f"{RESUBMIT_SUFFIX}#{hashlib.sha256(cashout_id.encode()).hexdigest()}"


def _entry(request: ActionRequest, action: str, cashout: Cashout) -> ActionEntry:
    """The log entry of `action` on `cashout`: keyed on `operator.actions` by its creator."""
    return ActionEntry(
        idempotency_key=request.idempotency_key,
        actor=request.actor,
        action=action,
        target=cashout.cashout_id,
        reason=request.reason,
        ticket=request.ticket,
        details={MESSAGE_KEY_DETAIL: cashout.creator_id},
    )


async def _locked_cashout(conn: AsyncConnection, cashout_id: str) -> Cashout:
    cashout = await load_cashout(conn, cashout_id, lock=True)
    if cashout is None:
        raise CashoutNotFoundError(f"no cash-out {cashout_id!r}")
    return cashout


class CashoutRecovery:
    """Cancels stale holds and resubmits failed payouts of one deployment (its desk)."""

    def __init__(
        self,
        ledger: Ledger,
        desk: CashoutDesk,
        *,
        answer_window_s: float,
        database_role: str | None,
    ) -> None:
        if answer_window_s <= 0:
            raise ValueError("answer_window_s must be positive")
        self._ledger = ledger
        self._desk = desk
        self.answer_window_s = answer_window_s
        self._database_role = database_role

    async def _hold_log(self, conn: AsyncConnection) -> HeldLog:
        return await hold_log(
            conn, database_role=self._database_role, topic_prefix=self._desk.topic_prefix
        )

    # Cancel --------------------------------------------------------------------------------

    async def cancel_stale_hold(self, cashout_id: str, request: ActionRequest) -> CancelOutcome:
        """Void the hold of a stale cash-out and tell the bank; see the module's docstring.
        Raises `CashoutNotFoundError`, or `CashoutActionRefusedError` when the cash-out is not
        a stale hold."""
        async for tx in self._ledger.transactions():
            async with tx:
                outcome = await self._cancel_once(tx, cashout_id, request)
        return outcome

    async def _cancel_once(
        self, tx: LedgerTransaction, cashout_id: str, request: ActionRequest
    ) -> CancelOutcome:
        conn = tx.connection
        log = await self._hold_log(conn)
        cashout = await _locked_cashout(conn, cashout_id)
        entry = _entry(request, CASHOUT_CANCELLED, cashout)
        recorded = await log.recorded(entry)
        if recorded is not None:
            return CancelOutcome(cashout, recorded, recorded=False)
        await self._check_stale(conn, cashout)
        action = await log.record(entry)
        release = await self._desk.cancel_transfers(
            tx, self._ledger, cashout, f"operator-action:{action.id}"
        )
        posted = await tx.post(release, lock_accounts_first=True)
        if any(result is not PostResult.OK for result in posted.results):
            refused = sorted({result.value for result in posted.results})
            raise RuntimeError(f"cash-out {cashout_id}: the ledger refused its release {refused}")
        cashout.status, cashout.failure_code = "failed", OPERATOR_CANCELLED
        await store_cashout(self._desk, conn, cashout, detail=f"operator-action:{action.id}")
        cancel = PayoutCancelRequested(
            event_id=cashout_event_id(cashout_id, "cancel"),
            occurred_at=datetime.now(UTC),
            cashout_id=cashout_id,
            creator_id=cashout.creator_id,
            cancel=True,
        )
        await queue(
            conn,
            self._desk.topic_prefix,
            topics.PAYOUTS_REQUESTED,
            cashout.creator_id,
            cancel.model_dump_json(),
        )
        return CancelOutcome(cashout, action, recorded=True)

    async def _check_stale(self, conn: AsyncConnection, cashout: Cashout) -> None:
        if cashout.status not in CANCELLABLE_STATUSES:
            raise CashoutActionRefusedError(
                f"cash-out {cashout.cashout_id} is {cashout.status}: only a held or submitted"
                " one can be cancelled"
            )
        waited_s = (
            await conn.execute(
                text(
                    "SELECT extract(epoch FROM clock_timestamp() - updated_at)"
                    " FROM cashouts WHERE cashout_id = :id"
                ),
                {"id": cashout.cashout_id},
            )
        ).scalar_one()
        if waited_s <= self.answer_window_s:
            raise CashoutActionRefusedError(
                f"cash-out {cashout.cashout_id} has waited {float(waited_s):.0f} s for the bank,"
                f" not more than the answer window of {self.answer_window_s:g} s: not stale yet"
            )

    # Resubmit ------------------------------------------------------------------------------

    async def resubmit_failed_payout(
        self, cashout_id: str, request: ActionRequest
    ) -> ResubmitOutcome:
        """Resubmit a failed cash-out as a new one; see the module's docstring. Raises
        `CashoutNotFoundError`, or `CashoutActionRefusedError` with the reason."""
        async with self._ledger.connect() as conn:
            found = await load_cashout(conn, cashout_id)
        if found is None:
            raise CashoutNotFoundError(f"no cash-out {cashout_id!r}")
        account_ids = await self._ledger.account_ids(
            [
                hold_source(found.creator_id, found.asset),
                hold_target(found.creator_id, found.asset),
                *settlement_accounts(found.payout_currency),
            ]
        )
        async for tx in self._ledger.transactions():
            async with tx:
                outcome = await self._resubmit_once(tx, cashout_id, request, account_ids)
        return outcome

    async def _resubmit_once(
        self,
        tx: LedgerTransaction,
        cashout_id: str,
        request: ActionRequest,
        account_ids: dict[str, int],
    ) -> ResubmitOutcome:
        conn = tx.connection
        log = await self._hold_log(conn)
        original = await _locked_cashout(conn, cashout_id)
        # The creator's lock before any account lock, as a cash-out request takes it: the daily
        # limit of the creator's day is checked by requests under it.
        await lock_creators(conn, [original.creator_id])
        entry = _entry(request, PAYOUT_RESUBMITTED, original)
        recorded = await log.recorded(entry)
        if recorded is not None:
            resubmitted = await _resubmission_of(conn, cashout_id)
            assert resubmitted is not None, "a recorded resubmission has its cash-out"
            return ResubmitOutcome(original, resubmitted, recorded, recorded=False)
        resubmitted = await self._resubmission(conn, original)
        action = await log.record(entry)
        hold = Transfer(
            id=hold_id(resubmitted.cashout_id),
            debit_account_id=account_ids[hold_source(original.creator_id, original.asset).name],
            credit_account_id=account_ids[hold_target(original.creator_id, original.asset).name],
            amount=resubmitted.amount,
            code=TransferCode.CASHOUT_HOLD,
            flags=TransferFlags.PENDING | TransferFlags.FUNDED,
            rate_card_version=resubmitted.rate_card_version,
            event_id=f"operator-action:{action.id}",
            metadata={"cashout_id": resubmitted.cashout_id, "resubmission_of": cashout_id},
        )
        posted = await tx.post([hold], lock_accounts_first=True)
        if posted.results[0] is not PostResult.OK:
            raise CashoutActionRefusedError(
                f"cash-out {cashout_id} cannot be resubmitted: the creator's available balance"
                f" no longer covers it ({posted.results[0].value})"
            )
        await store_cashout(
            self._desk, conn, resubmitted, new=True, detail=f"resubmission of {cashout_id}"
        )
        await conn.execute(
            text(
                "INSERT INTO cashout_resubmissions"
                " (cashout_id, resubmitted_cashout_id, operator_action_id)"
                " VALUES (:original, :resubmitted, :action)"
            ),
            {"original": cashout_id, "resubmitted": resubmitted.cashout_id, "action": action.id},
        )
        payout = PayoutRequested(
            event_id=cashout_event_id(resubmitted.cashout_id, "payout"),
            occurred_at=datetime.now(UTC),
            cashout_id=resubmitted.cashout_id,
            creator_id=resubmitted.creator_id,
            amount=resubmitted.payout_amount or 0,
            currency=resubmitted.payout_currency,
            payout_account_ref=resubmitted.payout_account_ref or "",
        )
        await queue(
            conn,
            self._desk.topic_prefix,
            topics.PAYOUTS_REQUESTED,
            resubmitted.creator_id,
            payout.model_dump_json(),
        )
        return ResubmitOutcome(original, resubmitted, action, recorded=True)

    async def _resubmission(self, conn: AsyncConnection, original: Cashout) -> Cashout:
        """The new cash-out for a failed one, checked: the original at its own conversion, the
        creator's current payout account, held."""
        cashout_id = original.cashout_id
        if original.status != "failed":
            raise CashoutActionRefusedError(
                f"cash-out {cashout_id} is {original.status}: only a failed one can be resubmitted"
            )
        earlier = await _resubmission_of(conn, cashout_id)
        if earlier is not None:
            raise CashoutActionRefusedError(
                f"cash-out {cashout_id} was resubmitted already, as {earlier.cashout_id}"
            )
        if await awaits_bank_confirmation(conn, original):
            raise CashoutActionRefusedError(
                f"cash-out {cashout_id} was cancelled by an operator and the bank has not yet"
                " confirmed that it will not pay it (a failed report): resubmitting now could"
                " pay it twice"
            )
        creator_id = original.creator_id
        if await creator_is_frozen(conn, creator_id):
            raise CashoutActionRefusedError(f"creator {creator_id} is frozen")
        report = await creator_eligibility(conn, creator_id, self._desk.eligibility)
        if not report.eligible:
            raise CashoutActionRefusedError(
                f"creator {creator_id} no longer passes the rule {report.first_failed_rule}"
            )
        account_ref = await conn.scalar(
            text("SELECT payout_account_ref FROM creators WHERE creator_id = :c"),
            {"c": creator_id},
        )
        if account_ref is None:
            raise CashoutActionRefusedError(f"creator {creator_id} has no payout account")
        new_id = resubmission_id(cashout_id)
        if await load_cashout(conn, new_id) is not None:
            raise CashoutActionRefusedError(f"a cash-out {new_id!r} exists already")
        await self._check_daily_limit(conn, original)
        return dataclasses.replace(
            original,
            cashout_id=new_id,
            status="held",
            rejected_rule=None,
            failure_code=None,
            payout_account_ref=str(account_ref),
        )

    async def _check_daily_limit(self, conn: AsyncConnection, original: Cashout) -> None:
        """The resubmission counts in the daily limit of the original's day, as the original did
        before it failed; since then the creator's other cash-outs of that day may have used
        the room it left. Correct under the creator's lock, which the caller holds."""
        day = original.occurred_at.astimezone(UTC).date()
        spent = await day_spent_micros(conn, original.creator_id, day)
        limit_micros = self._desk.limits.daily_maximum_usd_cents * (USD_MICROS // 100)
        if spent + original.usd_value_micros > limit_micros:
            raise CashoutActionRefusedError(
                f"cash-out {original.cashout_id} cannot be resubmitted: with creator"
                f" {original.creator_id}'s other cash-outs of {day} it would come to"
                f" {usd_text(spent + original.usd_value_micros)}, over the daily limit of"
                f" {usd_text(limit_micros)}"
            )


async def awaits_bank_confirmation(conn: AsyncConnection, cashout: Cashout) -> bool:
    """Whether `cashout` was cancelled by an operator and the bank has not yet confirmed that
    it will not pay it: its payout request may have reached the bank, which could still pay it,
    so it must not be resubmitted yet."""
    if not cancelled_by_operator(cashout):
        return False
    confirmed = await conn.scalar(
        text("SELECT 1 FROM cashout_cancel_confirmations WHERE cashout_id = :id"),
        {"id": cashout.cashout_id},
    )
    return confirmed is None


def usd_text(micros: int) -> str:
    """USD micros as dollars and cents, rounded down: `1,012.34 USD`."""
    return f"{grouped_amount(micros // (USD_MICROS // 100), 'USD')} USD"


async def _resubmission_of(conn: AsyncConnection, cashout_id: str) -> Cashout | None:
    resubmitted_id = await conn.scalar(
        text("SELECT resubmitted_cashout_id FROM cashout_resubmissions WHERE cashout_id = :id"),
        {"id": cashout_id},
    )
    if resubmitted_id is None:
        return None
    return await load_cashout(conn, str(resubmitted_id))
