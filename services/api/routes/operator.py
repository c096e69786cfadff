"""Operator actions: balance adjustments with four eyes (or withdrawn), and freezing a creator.

Only the `operator` role may act (`finance` gets 403 on every `POST`); both roles may list
adjustments. Every action needs an `Idempotency-Key` header: the same key with the same request
answers the recorded action again (`recorded: false`), the same key with another request is 409.
The actor is the name of the caller's token (`API_TOKENS`). Actions write, so their transaction
acts as `DATABASE_WRITER_ROLE`, not as the read-only role of the other routes; each is appended
to the hash-chained operator actions log and published on `operator.actions` by the outbox relay
(services/operator/).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request

from schemas.events import ID_LENGTH_MAX, VISIBLE_ASCII_PATTERN
from services.api.auth import OPERATOR_ROLES, Caller, require_role
from services.api.deps import (
    ApiSettings,
    Decorator,
    IdPath,
    Reader,
    check_at_most,
    token_route,
)
from services.api.operator_models import (
    AdjustmentActionDocument,
    AdjustmentListDocument,
    AdjustmentProposal,
    ApprovalRequest,
    FreezeDocument,
    FreezeRequest,
    WithdrawalRequest,
    adjustment_document,
    adjustment_outcome_document,
    freeze_outcome_document,
)
from services.api.responses import Responses, conflict, not_found, token_responses
from services.api.writers import operator_desk_of
from services.operator.actions_log import ActionKeyConflictError, InvalidActionError
from services.operator.adjustments import (
    ADJUSTMENT_LIST_LIMIT_MAX,
    AdjustmentStatus,
    list_adjustments,
)
from services.operator.desk import (
    AdjustmentApprovedError,
    AdjustmentNotFoundError,
    AdjustmentRefusedError,
    AdjustmentWithdrawnError,
    FourEyesError,
    InvalidAdjustmentError,
    OperatorDesk,
    OperatorError,
    UnknownCreatorError,
)

TAG: Final = "operator"
ADJUSTMENT_LIST_LIMIT_DEFAULT: Final = 100
ADJUSTMENT_ID_MAX: Final = 2**63 - 1
KEY_CONFLICT: Final = "The `Idempotency-Key` was used for another action."

router = APIRouter()

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=ID_LENGTH_MAX,
        pattern=VISIBLE_ASCII_PATTERN,
        description="The client's key for this action, 1-128 visible ASCII characters: the same "
        "key with the same request is the same action.",
    ),
]
Operator = Annotated[Caller, Depends(require_role(OPERATOR_ROLES))]
AdjustmentId = Annotated[int, Path(ge=1, le=ADJUSTMENT_ID_MAX)]


def _desk(request: Request) -> OperatorDesk:
    return operator_desk_of(request.app.state)


Desk = Annotated[OperatorDesk, Depends(_desk)]


def _http_error(
    error: OperatorError | ActionKeyConflictError | InvalidActionError,
) -> HTTPException:
    """404 for what does not exist, 422 for what cannot be asked, 409 for what the state (or an
    earlier use of the key) refuses."""
    if isinstance(error, UnknownCreatorError | AdjustmentNotFoundError):
        return HTTPException(404, detail=str(error))
    if isinstance(error, InvalidAdjustmentError | InvalidActionError):
        return HTTPException(422, detail=str(error))
    assert isinstance(
        error,
        FourEyesError
        | AdjustmentRefusedError
        | AdjustmentApprovedError
        | AdjustmentWithdrawnError
        | ActionKeyConflictError,
    ), error
    return HTTPException(409, detail=str(error))


def _action_route(path: str, *, summary: str, responses: Responses) -> Decorator:
    """`router.post` for an action: the `operator` role only."""
    return router.post(
        path,
        summary=summary,
        tags=[TAG],
        responses={**token_responses(OPERATOR_ROLES), **responses},
    )


@_action_route(
    "/v1/operator/adjustments",
    summary="Propose a balance adjustment (another operator approves it)",
    responses={
        **not_found("The ledger has no such creator (no account, no profile)."),
        **conflict(KEY_CONFLICT),
    },
)
async def propose_adjustment_route(
    caller: Operator, desk: Desk, idempotency_key: IdempotencyKey, proposal: AdjustmentProposal
) -> AdjustmentActionDocument:
    try:
        outcome = await desk.propose_adjustment(
            idempotency_key=idempotency_key,
            actor=caller.name,
            creator_id=proposal.creator_id,
            asset=proposal.asset,
            amount_minor=proposal.amount_minor,
            reason=proposal.reason,
            ticket=proposal.ticket,
        )
    except (OperatorError, ActionKeyConflictError, InvalidActionError) as error:
        raise _http_error(error) from None
    return AdjustmentActionDocument.model_validate(adjustment_outcome_document(outcome))


@_action_route(
    "/v1/operator/adjustments/{adjustment_id}/approve",
    summary="Approve a balance adjustment proposed by another operator, and post it",
    responses={
        **not_found("No adjustment has this id."),
        **conflict(
            f"{KEY_CONFLICT} Or the caller proposed the adjustment (four eyes: another operator "
            "approves), or it was withdrawn, or its debit would take the creator's available "
            "balance below zero."
        ),
    },
)
async def approve_adjustment_route(
    caller: Operator,
    desk: Desk,
    idempotency_key: IdempotencyKey,
    adjustment_id: AdjustmentId,
    approval: ApprovalRequest | None = None,
) -> AdjustmentActionDocument:
    said = approval or ApprovalRequest()
    try:
        outcome = await desk.approve_adjustment(
            adjustment_id,
            idempotency_key=idempotency_key,
            actor=caller.name,
            reason=said.reason,
            ticket=said.ticket,
        )
    except (OperatorError, ActionKeyConflictError, InvalidActionError) as error:
        raise _http_error(error) from None
    return AdjustmentActionDocument.model_validate(adjustment_outcome_document(outcome))


@_action_route(
    "/v1/operator/adjustments/{adjustment_id}/withdraw",
    summary="Withdraw a proposed balance adjustment: it is never approved nor posted (any "
    "operator, the proposer too)",
    responses={
        **not_found("No adjustment has this id."),
        **conflict(
            f"{KEY_CONFLICT} Or the adjustment was approved and posted already: it cannot be "
            "withdrawn; propose a new adjustment the other way to undo it."
        ),
    },
)
async def withdraw_adjustment_route(
    caller: Operator,
    desk: Desk,
    idempotency_key: IdempotencyKey,
    adjustment_id: AdjustmentId,
    withdrawal: WithdrawalRequest,
) -> AdjustmentActionDocument:
    """A withdrawn adjustment stays in the list (`status` `withdrawn`); withdrawing it again
    answers its withdrawal (`recorded: false`)."""
    try:
        outcome = await desk.withdraw_adjustment(
            adjustment_id,
            idempotency_key=idempotency_key,
            actor=caller.name,
            reason=withdrawal.reason,
            ticket=withdrawal.ticket,
        )
    except (OperatorError, ActionKeyConflictError, InvalidActionError) as error:
        raise _http_error(error) from None
    return AdjustmentActionDocument.model_validate(adjustment_outcome_document(outcome))


@token_route(
    router,
    "/v1/operator/adjustments",
    summary="Balance adjustments, oldest first, by status and creator",
    response_model=AdjustmentListDocument,
)
async def adjustments_route(
    conn: Reader,
    settings: ApiSettings,
    status: AdjustmentStatus | None = None,
    creator_id: Annotated[
        str | None, Query(min_length=1, max_length=ID_LENGTH_MAX, pattern=VISIBLE_ASCII_PATTERN)
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=ADJUSTMENT_LIST_LIMIT_MAX,
            description=f"Most adjustments returned (default {ADJUSTMENT_LIST_LIMIT_DEFAULT}), "
            "at most `API_PAGE_SIZE_MAX`.",
        ),
    ] = None,
) -> dict[str, Any]:
    limit_max = min(settings.api_page_size_max, ADJUSTMENT_LIST_LIMIT_MAX)
    count = min(ADJUSTMENT_LIST_LIMIT_DEFAULT, limit_max) if limit is None else limit
    check_at_most("limit", count, limit_max)
    found = await list_adjustments(conn, status=status, creator_id=creator_id, limit=count)
    return {"adjustments": [adjustment_document(adjustment) for adjustment in found]}


async def _set_frozen(
    desk: OperatorDesk,
    caller: Caller,
    creator_id: str,
    idempotency_key: str,
    said: FreezeRequest,
    *,
    frozen: bool,
) -> FreezeDocument:
    try:
        outcome = await desk.set_frozen(
            creator_id,
            frozen=frozen,
            idempotency_key=idempotency_key,
            actor=caller.name,
            reason=said.reason,
            ticket=said.ticket,
        )
    except (OperatorError, ActionKeyConflictError, InvalidActionError) as error:
        raise _http_error(error) from None
    return FreezeDocument.model_validate(freeze_outcome_document(outcome))


_FREEZE_RESPONSES: Final = {
    **not_found("The ledger has no such creator (no account, no profile)."),
    **conflict(KEY_CONFLICT),
}


@_action_route(
    "/v1/operator/creators/{creator_id:path}/freeze",
    summary="Freeze a creator: their cash-out requests are rejected (`frozen`); gifts still credit",
    responses=_FREEZE_RESPONSES,
)
async def freeze_route(
    caller: Operator,
    desk: Desk,
    idempotency_key: IdempotencyKey,
    creator_id: IdPath,
    said: FreezeRequest,
) -> FreezeDocument:
    return await _set_frozen(desk, caller, creator_id, idempotency_key, said, frozen=True)


@_action_route(
    "/v1/operator/creators/{creator_id:path}/unfreeze",
    summary="Unfreeze a creator: their cash-out requests are decided as before",
    responses=_FREEZE_RESPONSES,
)
async def unfreeze_route(
    caller: Operator,
    desk: Desk,
    idempotency_key: IdempotencyKey,
    creator_id: IdPath,
    said: FreezeRequest,
) -> FreezeDocument:
    return await _set_frozen(desk, caller, creator_id, idempotency_key, said, frozen=False)
