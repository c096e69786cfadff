"""The operator desk: balance adjustments with four eyes (proposed by one operator, approved and
posted by another, or withdrawn by any), and freezing a creator. The finance API, the console and
`giftledger operator` act through it.

Every action runs in one transaction that first takes the operator log's lock
(`actions_log.hold_log`), then checks its idempotency key and the state it acts on, then appends
the action (`HeldLog.record`, which queues its `operator.actions` message) and makes its change.
Operator actions are few, so running them one at a time costs nothing and makes each check hold
until the commit. Each transaction acts as `database_role` (the services' writer role) when given.

Outcomes: the action and whether it was recorded now (`recorded`), or, when nothing was left to do
(the same key again, an adjustment approved or withdrawn already, a creator frozen already), the
action that did it (`recorded` False). An adjustment is approved or withdrawn, never both: an
approved one was posted (undo it with a new adjustment the other way), a withdrawn one never is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.model import PostResult
from ledger.service import Ledger, LedgerTransaction
from schemas.assets import format_amount
from services.operator.actions_log import (
    ActionEntry,
    HeldLog,
    OperatorAction,
    hold_log,
    load_action,
)
from services.operator.adjustments import (
    Adjustment,
    adjustment_accounts,
    adjustment_problem,
    adjustment_transfer,
    available_balance,
    creator_account,
    insert_adjustment,
    insert_approval,
    insert_withdrawal,
    load_adjustment,
)
from services.operator.freezes import (
    FreezeState,
    creator_is_known,
    freeze_state,
    record_freeze,
)
from services.runtime.creator_locks import lock_creators

ADJUSTMENT_PROPOSED: Final = "adjustment_proposed"
ADJUSTMENT_APPROVED: Final = "adjustment_approved"
ADJUSTMENT_WITHDRAWN: Final = "adjustment_withdrawn"
CREATOR_FROZEN: Final = "creator_frozen"
CREATOR_UNFROZEN: Final = "creator_unfrozen"
APPROVAL_REASON_DEFAULT: Final = "four-eyes approval"


class OperatorError(Exception):
    """An action that cannot be taken as asked; the message says why."""


class UnknownCreatorError(OperatorError):
    """The ledger has never heard of the creator (no account, no profile)."""


class AdjustmentNotFoundError(OperatorError):
    """No adjustment has this id."""


class InvalidAdjustmentError(OperatorError):
    """The asset or amount of a proposed adjustment is not one that can be posted."""


class FourEyesError(OperatorError):
    """The operator who proposed an adjustment tried to approve it."""


class AdjustmentRefusedError(OperatorError):
    """The ledger refused the adjustment's transfer: a debit that would overdraw the creator."""


class AdjustmentApprovedError(OperatorError):
    """The adjustment to withdraw was approved and posted: only a new adjustment undoes it."""


class AdjustmentWithdrawnError(OperatorError):
    """The adjustment to approve was withdrawn: it is never posted."""


@dataclass(frozen=True, slots=True)
class AdjustmentOutcome:
    adjustment: Adjustment
    action: OperatorAction
    recorded: bool


@dataclass(frozen=True, slots=True)
class FreezeOutcome:
    state: FreezeState
    action: OperatorAction | None
    recorded: bool


async def _stored_adjustment(conn: AsyncConnection, adjustment_id: int) -> Adjustment:
    """An adjustment this transaction knows exists (found, or just inserted)."""
    adjustment = await load_adjustment(conn, adjustment_id)
    assert adjustment is not None, adjustment_id
    return adjustment


async def _recorded_action(conn: AsyncConnection, action_id: int) -> OperatorAction:
    """An action an adjustment's row names (its approval or its withdrawal)."""
    action = await load_action(conn, action_id)
    assert action is not None, action_id
    return action


def _adjustment_details(adjustment: Adjustment) -> dict[str, Any]:
    """What the log records of the adjustment an approval or a withdrawal acts on."""
    return {
        "adjustment_id": adjustment.id,
        "asset": adjustment.asset,
        "amount_minor": adjustment.amount_minor,
    }


def _withdrawn_error(adjustment: Adjustment) -> AdjustmentWithdrawnError:
    return AdjustmentWithdrawnError(
        f"adjustment {adjustment.id} was withdrawn by {adjustment.withdrawn_by}"
        f" (action {adjustment.withdrawal_action_id}): it cannot be approved; propose it again"
        " if it is still wanted"
    )


def _approved_error(adjustment: Adjustment) -> AdjustmentApprovedError:
    undo = format_amount(-adjustment.amount_minor, adjustment.asset)
    return AdjustmentApprovedError(
        f"adjustment {adjustment.id} was approved by {adjustment.approved_by} and posted as"
        f" transfer {adjustment.transfer_id}: it cannot be withdrawn; to undo it, propose an"
        f" adjustment of {undo} (the other way)"
    )


class OperatorDesk:
    def __init__(self, ledger: Ledger, *, topic_prefix: str, database_role: str | None) -> None:
        self._ledger = ledger
        # Whose outbox the `operator.actions` messages go to (see CashoutDesk.topic_prefix).
        self.topic_prefix = topic_prefix
        self._database_role = database_role

    async def _hold_log(self, conn: AsyncConnection) -> HeldLog:
        return await hold_log(
            conn, database_role=self._database_role, topic_prefix=self.topic_prefix
        )

    # Adjustments ---------------------------------------------------------------------------

    async def propose_adjustment(
        self,
        *,
        idempotency_key: str,
        actor: str,
        creator_id: str,
        asset: str,
        amount_minor: int,
        reason: str,
        ticket: str | None,
    ) -> AdjustmentOutcome:
        problem = adjustment_problem(asset, amount_minor)
        if problem is not None:
            raise InvalidAdjustmentError(problem)
        entry = ActionEntry(
            idempotency_key=idempotency_key,
            actor=actor,
            action=ADJUSTMENT_PROPOSED,
            target=creator_id,
            reason=reason,
            ticket=ticket,
            details={"asset": asset, "amount_minor": amount_minor},
        )
        async with self._ledger.begin() as conn:
            log = await self._hold_log(conn)
            recorded = await log.recorded(entry)
            if recorded is None:
                if not await creator_is_known(conn, creator_id):
                    raise UnknownCreatorError(f"no creator {creator_id!r} in the ledger")
                recorded = await log.record(entry)
                await insert_adjustment(
                    conn,
                    proposal_action_id=recorded.id,
                    creator_id=creator_id,
                    asset=asset,
                    amount_minor=amount_minor,
                    proposed_by=actor,
                )
                new = True
            else:
                new = False
            adjustment = await _stored_adjustment(conn, recorded.id)
        return AdjustmentOutcome(adjustment, recorded, new)

    async def approve_adjustment(
        self,
        adjustment_id: int,
        *,
        idempotency_key: str,
        actor: str,
        reason: str = APPROVAL_REASON_DEFAULT,
        ticket: str | None = None,
    ) -> AdjustmentOutcome:
        """Approve and post an adjustment; raises `AdjustmentWithdrawnError` when it was
        withdrawn, `FourEyesError` when `actor` proposed it and `AdjustmentRefusedError` when its
        debit would overdraw the creator (nothing is then recorded). Approving an approved
        adjustment again changes nothing."""
        async with self._ledger.connect() as conn:
            found = await load_adjustment(conn, adjustment_id)
        if found is None:
            raise AdjustmentNotFoundError(f"no adjustment {adjustment_id}")
        account_ids = await self._ledger.account_ids(adjustment_accounts(found))
        details = _adjustment_details(found)
        async for tx in self._ledger.transactions():
            async with tx:
                outcome = await self._approve_once(
                    tx,
                    await self._hold_log(tx.connection),
                    adjustment_id,
                    account_ids,
                    idempotency_key=idempotency_key,
                    actor=actor,
                    reason=reason,
                    ticket=ticket,
                    details=details,
                )
        return outcome

    async def _approve_once(
        self,
        tx: LedgerTransaction,
        log: HeldLog,
        adjustment_id: int,
        account_ids: dict[str, int],
        *,
        idempotency_key: str,
        actor: str,
        reason: str,
        ticket: str | None,
        details: dict[str, Any],
    ) -> AdjustmentOutcome:
        """One attempt at an approval, in the unit of work `tx` that holds the log (`log`)."""
        conn = tx.connection
        adjustment = await _stored_adjustment(conn, adjustment_id)
        entry = ActionEntry(
            idempotency_key=idempotency_key,
            actor=actor,
            action=ADJUSTMENT_APPROVED,
            target=adjustment.creator_id,
            reason=reason,
            ticket=ticket,
            details=details,
        )
        recorded = await log.recorded(entry)
        if recorded is not None:
            return AdjustmentOutcome(adjustment, recorded, recorded=False)
        if adjustment.approval_action_id is not None:
            approval = await _recorded_action(conn, adjustment.approval_action_id)
            return AdjustmentOutcome(adjustment, approval, recorded=False)
        if adjustment.withdrawal_action_id is not None:
            raise _withdrawn_error(adjustment)
        if actor == adjustment.proposed_by:
            raise FourEyesError(
                f"{actor} proposed adjustment {adjustment_id}: another operator must approve it"
            )
        recorded = await log.record(entry)
        transfer = adjustment_transfer(
            adjustment, account_ids, f"operator-action:{recorded.id}", actor
        )
        posted = await tx.post([transfer], lock_accounts_first=True)
        if posted.results[0] is not PostResult.OK:
            raise await self._refusal(conn, adjustment, account_ids, posted.results[0])
        await insert_approval(
            conn,
            adjustment,
            approved_by=actor,
            approval_action_id=recorded.id,
            posted_transfer_id=transfer.id,
        )
        return AdjustmentOutcome(
            await _stored_adjustment(conn, adjustment_id), recorded, recorded=True
        )

    async def withdraw_adjustment(
        self,
        adjustment_id: int,
        *,
        idempotency_key: str,
        actor: str,
        reason: str,
        ticket: str | None = None,
    ) -> AdjustmentOutcome:
        """Withdraw a proposed adjustment: it is never approved nor posted. Any operator may,
        the proposer too (it moves no money). Raises `AdjustmentApprovedError` when it was
        approved (and posted) already; withdrawing a withdrawn adjustment again changes
        nothing."""
        async with self._ledger.begin() as conn:
            log = await self._hold_log(conn)
            adjustment = await load_adjustment(conn, adjustment_id)
            if adjustment is None:
                raise AdjustmentNotFoundError(f"no adjustment {adjustment_id}")
            entry = ActionEntry(
                idempotency_key=idempotency_key,
                actor=actor,
                action=ADJUSTMENT_WITHDRAWN,
                target=adjustment.creator_id,
                reason=reason,
                ticket=ticket,
                details=_adjustment_details(adjustment),
            )
            recorded = await log.recorded(entry)
            if recorded is not None:
                return AdjustmentOutcome(adjustment, recorded, recorded=False)
            if adjustment.withdrawal_action_id is not None:
                withdrawal = await _recorded_action(conn, adjustment.withdrawal_action_id)
                return AdjustmentOutcome(adjustment, withdrawal, recorded=False)
            if adjustment.approval_action_id is not None:
                raise _approved_error(adjustment)
            recorded = await log.record(entry)
            await insert_withdrawal(
                conn, adjustment_id, withdrawn_by=actor, withdrawal_action_id=recorded.id
            )
            adjustment = await _stored_adjustment(conn, adjustment_id)
        return AdjustmentOutcome(adjustment, recorded, recorded=True)

    async def _refusal(
        self,
        conn: AsyncConnection,
        adjustment: Adjustment,
        account_ids: dict[str, int],
        result: PostResult,
    ) -> OperatorError:
        account = creator_account(adjustment.creator_id, adjustment.asset)
        if result is not PostResult.EXCEEDS_CREDITS:
            return AdjustmentRefusedError(
                f"the ledger refused adjustment {adjustment.id}: {result.value}"
            )
        available = await available_balance(conn, account_ids[account.name])
        return AdjustmentRefusedError(
            f"adjustment {adjustment.id} would take {account.name} below zero: a debit of"
            f" {format_amount(-adjustment.amount_minor, adjustment.asset)} against"
            f" {format_amount(available, adjustment.asset)} available"
        )

    # Freezes -------------------------------------------------------------------------------

    async def set_frozen(
        self,
        creator_id: str,
        *,
        frozen: bool,
        idempotency_key: str,
        actor: str,
        reason: str,
        ticket: str | None,
    ) -> FreezeOutcome:
        """Freeze (or unfreeze) a creator; a creator already in that state is left alone."""
        entry = ActionEntry(
            idempotency_key=idempotency_key,
            actor=actor,
            action=CREATOR_FROZEN if frozen else CREATOR_UNFROZEN,
            target=creator_id,
            reason=reason,
            ticket=ticket,
            details={},
        )
        async with self._ledger.begin() as conn:
            log = await self._hold_log(conn)
            # After the log's lock, as a resubmission takes it: a batch of cash-out requests
            # that read this creator unfrozen holds it until its commit, so the freeze is
            # recorded after those requests, and every request decided later sees it.
            await lock_creators(conn, [creator_id])
            recorded = await log.recorded(entry)
            state = await freeze_state(conn, creator_id)
            if recorded is not None:
                return FreezeOutcome(state, recorded, recorded=False)
            if not await creator_is_known(conn, creator_id):
                raise UnknownCreatorError(f"no creator {creator_id!r} in the ledger")
            if state.frozen == frozen:
                done = None if state.action_id is None else await load_action(conn, state.action_id)
                return FreezeOutcome(state, done, recorded=False)
            recorded = await log.record(entry)
            await record_freeze(conn, creator_id, frozen=frozen, action_id=recorded.id)
            state = await freeze_state(conn, creator_id)
        return FreezeOutcome(state, recorded, recorded=True)
