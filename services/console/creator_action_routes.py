"""The console's actions on a creator and their cash-outs (POST): freeze and unfreeze a creator,
cancel a stale hold, resubmit a failed payout.

Each calls what the API's operator routes call (`OperatorDesk.set_frozen`,
`CashoutRecovery.cancel_stale_hold`, `CashoutRecovery.resubmit_failed_payout`), as the session's
operator, with the idempotency key the page put in the form: sending the same form twice is one
action, and the second answer says it was recorded before. The rules of `action_routes` apply:
401 without a session, 403 for a role other than `operator` or without the session's CSRF token,
422 for fields the operator log cannot take; then 404 for an unknown creator or cash-out and 409
for what the state refuses (not stale yet, not failed, resubmitted already, frozen...). Done, the
creator's or the cash-out's page is shown again with what happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from services.api.writers import cashout_recovery_of, operator_desk_of
from services.cashout.recovery import (
    CASHOUT_CANCELLED,
    PAYOUT_RESUBMITTED,
    ActionRequest,
    CancelOutcome,
    CashoutNotFoundError,
    CashoutRecovery,
    ResubmitOutcome,
)
from services.console.action_routes import RefusedError, acting_form, refusal_page, said_in
from services.console.context import Console, console_of, not_signed_in, query_text, session_of
from services.console.page_routes import cashout, creator
from services.console.sessions import ConsoleSession
from services.operator.actions_log import (
    ActionKeyConflictError,
    InvalidActionError,
    check_action,
)
from services.operator.desk import (
    CREATOR_FROZEN,
    CREATOR_UNFROZEN,
    OperatorDesk,
    OperatorError,
    UnknownCreatorError,
)

OutcomeT = TypeVar("OutcomeT")


def _operator_desk(console: Console) -> OperatorDesk:
    return operator_desk_of(console.api.state)


def _cashout_recovery(console: Console) -> CashoutRecovery:
    return cashout_recovery_of(console.api.state)


async def _checked_request(
    request: Request, session: ConsoleSession, action: str, missing: str
) -> tuple[str, ActionRequest]:
    """The target (`?id=`) and what the form asks, once the role, the CSRF token and the
    operator log's rules allow it."""
    form = await acting_form(request, session)
    target = query_text(request, "id")
    if target is None:
        raise RefusedError(404, missing)
    key, reason, ticket = said_in(form)
    try:
        check_action(
            idempotency_key=key,
            actor=session.caller.name,
            action=action,
            target=target,
            reason=reason,
            ticket=ticket,
        )
    except InvalidActionError as error:
        raise RefusedError(422, str(error)) from None
    return target, ActionRequest(key, session.caller.name, reason, ticket)


def _recorded_text(recorded: bool) -> str:
    return "" if recorded else ", recorded before"


# Freeze and unfreeze ------------------------------------------------------------------------


async def _set_frozen(request: Request, *, frozen: bool) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    action = CREATOR_FROZEN if frozen else CREATOR_UNFROZEN
    try:
        creator_id, said = await _checked_request(request, session, action, "Give a creator id.")
        try:
            outcome = await _operator_desk(console_of(request)).set_frozen(
                creator_id,
                frozen=frozen,
                idempotency_key=said.idempotency_key,
                actor=said.actor,
                reason=said.reason,
                ticket=said.ticket,
            )
        except UnknownCreatorError as error:
            raise RefusedError(404, str(error)) from None
        except InvalidActionError as error:
            raise RefusedError(422, str(error)) from None
        except (OperatorError, ActionKeyConflictError) as error:
            raise RefusedError(409, str(error)) from None
    except RefusedError as refused:
        return refusal_page(request, session, refused)
    state = "Frozen" if outcome.state.frozen else "Not frozen"
    if outcome.action is None:
        return await creator(request, outcome=f"{state}: nothing to change.")
    return await creator(
        request,
        outcome=f"{state} (action {outcome.action.id}{_recorded_text(outcome.recorded)}).",
    )


async def freeze(request: Request) -> Response:
    return await _set_frozen(request, frozen=True)


async def unfreeze(request: Request) -> Response:
    return await _set_frozen(request, frozen=False)


# Cash-out recovery --------------------------------------------------------------------------


def _recovery_refusal(error: Exception) -> RefusedError:
    if isinstance(error, CashoutNotFoundError):
        return RefusedError(404, str(error))
    if isinstance(error, InvalidActionError):
        return RefusedError(422, str(error))
    return RefusedError(409, str(error))


_RECOVERY_ERRORS = (OperatorError, ActionKeyConflictError, InvalidActionError)


async def _recovery_action(
    request: Request,
    action: str,
    act: Callable[[CashoutRecovery, str, ActionRequest], Awaitable[OutcomeT]],
    outcome_text: Callable[[OutcomeT], str],
) -> Response:
    """Check the form for `action` on the cash-out `?id=`, `act` on it as the session's operator
    and show the cash-out's page with `outcome_text` of what happened (or the refusal)."""
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    try:
        cashout_id, said = await _checked_request(
            request, session, action, "No cash-out has this id."
        )
        try:
            outcome = await act(_cashout_recovery(console_of(request)), cashout_id, said)
        except _RECOVERY_ERRORS as error:
            raise _recovery_refusal(error) from None
    except RefusedError as refused:
        return refusal_page(request, session, refused)
    return await cashout(request, outcome=outcome_text(outcome))


def _cancelled_text(outcome: CancelOutcome) -> str:
    return (
        f"Cancelled: the hold is released and the bank is told to drop the payout "
        f"(action {outcome.action.id}{_recorded_text(outcome.recorded)})."
    )


def _resubmitted_text(outcome: ResubmitOutcome) -> str:
    resubmitted = outcome.resubmitted
    return (
        f"Resubmitted as {resubmitted.cashout_id} ({resubmitted.status}; action "
        f"{outcome.action.id}{_recorded_text(outcome.recorded)})."
    )


async def cancel_hold(request: Request) -> Response:
    return await _recovery_action(
        request, CASHOUT_CANCELLED, CashoutRecovery.cancel_stale_hold, _cancelled_text
    )


async def resubmit_payout(request: Request) -> Response:
    return await _recovery_action(
        request, PAYOUT_RESUBMITTED, CashoutRecovery.resubmit_failed_payout, _resubmitted_text
    )
