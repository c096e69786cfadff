"""Operator recovery: re-drive dead letters, cancel a stale hold, resubmit a failed payout.

As every operator action (services/api/routes/operator.py): the `operator` role only (`finance`
gets 403), an `Idempotency-Key` header (the same key with the same request answers what it did
again, with `recorded: false` or `already_redriven`; with another request, 409), a reason, the
caller's token name as the actor, the writer role for the transaction.

A re-drive reads the dead letters' records back from Kafka and publishes their copies: it needs
the cluster the service runs on (`KAFKA_BOOTSTRAP_SERVERS`, or the one `giftledger run` started)
and answers 503 with `Retry-After` while the broker does not answer; nothing is recorded then,
and the same request with the same key may simply be sent again.
"""

from __future__ import annotations

from typing import Annotated, Final

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from fastapi import APIRouter, Depends, HTTPException, Request

from services.api.auth import OPERATOR_ROLES
from services.api.deps import Decorator, IdPath
from services.api.recovery_models import (
    CancelDocument,
    CashoutActionBody,
    RedriveDocument,
    RedriveRequestBody,
    ResubmitDocument,
    cancel_document,
    redrive_document,
    resubmit_document,
)
from services.api.responses import (
    Responses,
    conflict,
    not_found,
    token_responses,
    unavailable,
)
from services.api.routes.operator import KEY_CONFLICT, TAG, IdempotencyKey, Operator
from services.api.writers import cashout_recovery_of
from services.cashout.recovery import (
    ActionRequest,
    CashoutActionRefusedError,
    CashoutNotFoundError,
    CashoutRecovery,
)
from services.ingestion.redrive import DeadLetterNotFoundError, DeadLetterRedriver, RedriveRequest
from services.operator.actions_log import ActionKeyConflictError, InvalidActionError

BROKER_RETRY_AFTER_S: Final = 5

router = APIRouter()


def _recovery(request: Request) -> CashoutRecovery:
    return cashout_recovery_of(request.app.state)


def _redriver(request: Request) -> DeadLetterRedriver:
    """A re-driver on the app's Kafka cluster: the one the running service was given
    (`app.state.kafka_bootstrap_servers`), else `KAFKA_BOOTSTRAP_SERVERS`; 503 without one. It
    records on the primary (`app.state.engine`)."""
    state = request.app.state
    settings = state.settings
    servers = getattr(state, "kafka_bootstrap_servers", None) or settings.kafka_bootstrap_servers
    if not servers:
        raise HTTPException(
            503,
            detail="no Kafka cluster is configured for this API (KAFKA_BOOTSTRAP_SERVERS)",
            headers={"Retry-After": str(BROKER_RETRY_AFTER_S)},
        )
    return DeadLetterRedriver(
        state.engine,
        servers,
        settings.kafka_topic_prefix,
        database_role=settings.database_writer_role,
    )


Recovery = Annotated[CashoutRecovery, Depends(_recovery)]
Redriver = Annotated[DeadLetterRedriver, Depends(_redriver)]


def _http_error(error: Exception) -> HTTPException:
    """404 for what does not exist, 422 for what the log cannot take, 409 for what the state
    (or an earlier use of the key) refuses."""
    if isinstance(error, CashoutNotFoundError | DeadLetterNotFoundError):
        return HTTPException(404, detail=str(error))
    if isinstance(error, InvalidActionError):
        return HTTPException(422, detail=str(error))
    assert isinstance(error, CashoutActionRefusedError | ActionKeyConflictError), error
    return HTTPException(409, detail=str(error))


_REFUSALS = (
    CashoutNotFoundError,
    DeadLetterNotFoundError,
    InvalidActionError,
    CashoutActionRefusedError,
    ActionKeyConflictError,
)


def _action_route(path: str, *, summary: str, responses: Responses) -> Decorator:
    """`router.post` for an action: the `operator` role only."""
    return router.post(
        path,
        summary=summary,
        tags=[TAG],
        responses={**token_responses(OPERATOR_ROLES), **responses},
    )


@_action_route(
    "/v1/operator/dead-letters/redrive",
    summary="Re-drive dead letters to their source topic, by id or by topic, error and time",
    responses={
        **not_found("A dead letter named by id does not exist."),
        **conflict(KEY_CONFLICT),
        **unavailable(
            description="The Kafka cluster does not answer (or none is configured), too many "
            "requests are in hand, or the database does not answer: nothing was recorded; send "
            "the same request again after `Retry-After` seconds."
        ),
    },
)
async def redrive_route(
    caller: Operator,
    redriver: Redriver,
    idempotency_key: IdempotencyKey,
    body: RedriveRequestBody,
) -> RedriveDocument:
    request = RedriveRequest(
        idempotency_key=idempotency_key,
        actor=caller.name,
        reason=body.reason,
        ticket=body.ticket,
        selection=body.selection(),
    )
    try:
        outcomes = await redriver.redrive(request)
    except _REFUSALS as error:
        raise _http_error(error) from None
    except (KafkaError, TimeoutError) as error:
        raise HTTPException(
            503,
            detail=f"the Kafka cluster does not answer ({type(error).__name__}): nothing was"
            " recorded; send the same request again",
            headers={"Retry-After": str(BROKER_RETRY_AFTER_S)},
        ) from None
    return RedriveDocument.model_validate(redrive_document(outcomes))


@_action_route(
    "/v1/operator/cashouts/{cashout_id:path}/cancel",
    summary="Cancel a stale hold: release the Diamonds and tell the bank to drop the payout",
    responses={
        **not_found("No cash-out has this id."),
        **conflict(
            f"{KEY_CONFLICT} Or the cash-out is not held or submitted, or has not waited longer "
            "than `CASHOUT_ANSWER_WINDOW_S` for the bank."
        ),
    },
)
async def cancel_route(
    caller: Operator,
    recovery: Recovery,
    idempotency_key: IdempotencyKey,
    cashout_id: IdPath,
    body: CashoutActionBody,
) -> CancelDocument:
    said = ActionRequest(idempotency_key, caller.name, body.reason, body.ticket)
    try:
        outcome = await recovery.cancel_stale_hold(cashout_id, said)
    except _REFUSALS as error:
        raise _http_error(error) from None
    return CancelDocument.model_validate(cancel_document(outcome))


@_action_route(
    "/v1/operator/cashouts/{cashout_id:path}/resubmit",
    summary="Resubmit a failed payout as a new cash-out, to the creator's current account",
    responses={
        **not_found("No cash-out has this id."),
        **conflict(
            f"{KEY_CONFLICT} Or the cash-out is not failed, was resubmitted already, or the "
            "creator is frozen, no longer eligible, without a payout account or without the "
            "available balance."
        ),
    },
)
async def resubmit_route(
    caller: Operator,
    recovery: Recovery,
    idempotency_key: IdempotencyKey,
    cashout_id: IdPath,
    body: CashoutActionBody,
) -> ResubmitDocument:
    said = ActionRequest(idempotency_key, caller.name, body.reason, body.ticket)
    try:
        outcome = await recovery.resubmit_failed_payout(cashout_id, said)
    except _REFUSALS as error:
        raise _http_error(error) from None
    return ResubmitDocument.model_validate(resubmit_document(outcome))
