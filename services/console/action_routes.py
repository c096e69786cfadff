"""The console's actions (POST): re-drive a dead letter, approve or withdraw an adjustment; and
what every action shares (the role, the CSRF token, the form's fields, the refusal page). The
actions on a creator and their cash-outs are in `creator_action_routes`.

Each goes through the same operator logic as the API's routes (`DeadLetterRedriver`,
`OperatorDesk`), as the session's operator, with the idempotency key its form was rendered with
(submitting the same form twice is one action). Refused without a session (401), for a role
other than `operator` (403), and without the session's CSRF token (403); the fields are checked
against the operator log's rules before anything is sent or written (422).
"""

from __future__ import annotations

from typing import Final, Literal

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import Response

from services.api.writers import operator_desk_of
from services.console.context import (
    FormError,
    console_of,
    may_not_act,
    message_page,
    not_signed_in,
    query_int,
    read_form,
    session_of,
)
from services.console.page_routes import ID_MAX, dead_letter, operator_page
from services.console.sessions import ConsoleSession
from services.ingestion.redrive import (
    ACTION as REDRIVE_ACTION,
)
from services.ingestion.redrive import (
    DeadLetterNotFoundError,
    DeadLetterRedriver,
    DeadLetterSelection,
    RedriveRequest,
)
from services.operator.actions_log import (
    ActionKeyConflictError,
    InvalidActionError,
    check_action,
)
from services.operator.desk import (
    ADJUSTMENT_APPROVED,
    ADJUSTMENT_WITHDRAWN,
    AdjustmentNotFoundError,
    AdjustmentOutcome,
    OperatorError,
)

APPROVE_ACTION: Final = ADJUSTMENT_APPROVED
WITHDRAW_ACTION: Final = ADJUSTMENT_WITHDRAWN


class RefusedError(Exception):
    """An action refused before or by the desk: the status and the text the page shows."""

    def __init__(self, status_code: int, text: str) -> None:
        super().__init__(text)
        self.status_code = status_code
        self.text = text


async def acting_form(request: Request, session: ConsoleSession) -> dict[str, str]:
    """The form of an action, once the role and the CSRF token allow it."""
    if not session.may_act:
        raise RefusedError(
            403, f"The {session.caller.role} role reads; only the operator role acts."
        )
    try:
        form = await read_form(request)
    except FormError as error:
        raise RefusedError(400, str(error)) from None
    if not session.csrf_matches(form.get("csrf_token")):
        raise RefusedError(
            403, "The form was out of date (no valid CSRF token): load the page again."
        )
    return form


def said_in(form: dict[str, str]) -> tuple[str, str, str | None]:
    """The key, reason and ticket of a form."""
    ticket = form.get("ticket", "").strip() or None
    return form.get("idempotency_key", ""), form.get("reason", "").strip(), ticket


def refusal_page(request: Request, session: ConsoleSession, refused: RefusedError) -> Response:
    if refused.status_code == 403 and not session.may_act:
        return may_not_act(request, session)
    return message_page(request, session, refused.status_code, "Not done", refused.text)


async def redrive(request: Request) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    console = console_of(request)
    try:
        form = await acting_form(request, session)
        dead_letter_id = query_int(request, "id", 1, ID_MAX)
        if dead_letter_id is None:
            raise RefusedError(404, "No dead letter has this id.")
        key, reason, ticket = said_in(form)
        try:
            check_action(
                idempotency_key=key,
                actor=session.caller.name,
                action=REDRIVE_ACTION,
                target=f"dead-letter:{dead_letter_id}",
                reason=reason,
                ticket=ticket,
            )
        except InvalidActionError as error:
            raise RefusedError(422, str(error)) from None
        servers = console.kafka_bootstrap_servers
        if not servers:
            raise RefusedError(503, "No Kafka cluster is configured for this API.")
        settings = console.settings
        redriver = DeadLetterRedriver(
            console.api.state.engine,
            servers,
            settings.kafka_topic_prefix,
            database_role=settings.database_writer_role,
        )
        request_said = RedriveRequest(
            idempotency_key=key,
            actor=session.caller.name,
            reason=reason,
            ticket=ticket,
            selection=DeadLetterSelection(dead_letter_ids=(dead_letter_id,)),
        )
        try:
            [outcome] = await redriver.redrive(request_said)
        except DeadLetterNotFoundError as error:
            raise RefusedError(404, str(error)) from None
        except (ActionKeyConflictError, InvalidActionError) as error:
            raise RefusedError(409, str(error)) from None
        except (KafkaError, TimeoutError) as error:
            raise RefusedError(
                503,
                f"The Kafka cluster does not answer ({type(error).__name__}): nothing was "
                "recorded; try again.",
            ) from None
    except RefusedError as refused:
        return refusal_page(request, session, refused)
    said = {
        "redriven": f"Re-driven: the copy is at partition {outcome.copy_partition}, offset "
        f"{outcome.copy_offset} of {outcome.topic} (action {outcome.operator_action_id}).",
        "already_redriven": f"Already re-driven (action {outcome.operator_action_id}).",
        "source_unavailable": "Not re-driven: the original record is no longer in its topic.",
    }[outcome.outcome]
    return await dead_letter(request, outcome=said)


async def approve(request: Request) -> Response:
    """Approve (and post) an adjustment another operator proposed."""
    return await _act_on_adjustment(request, APPROVE_ACTION)


async def withdraw(request: Request) -> Response:
    """Withdraw a proposed adjustment (any operator, the proposer too)."""
    return await _act_on_adjustment(request, WITHDRAW_ACTION)


async def _act_on_adjustment(
    request: Request, action: Literal["adjustment_approved", "adjustment_withdrawn"]
) -> Response:
    session = session_of(request)
    if session is None:
        return not_signed_in(request)
    console = console_of(request)
    try:
        form = await acting_form(request, session)
        adjustment_id = query_int(request, "id", 1, ID_MAX)
        if adjustment_id is None:
            raise RefusedError(404, "No adjustment has this id.")
        key, reason, ticket = said_in(form)
        try:
            check_action(
                idempotency_key=key,
                actor=session.caller.name,
                action=action,
                target="adjustment",
                reason=reason,
                ticket=ticket,
            )
        except InvalidActionError as error:
            raise RefusedError(422, str(error)) from None
        desk = operator_desk_of(console.api.state)
        outcome: AdjustmentOutcome
        try:
            if action == WITHDRAW_ACTION:
                outcome = await desk.withdraw_adjustment(
                    adjustment_id,
                    idempotency_key=key,
                    actor=session.caller.name,
                    reason=reason,
                    ticket=ticket,
                )
            else:
                outcome = await desk.approve_adjustment(
                    adjustment_id,
                    idempotency_key=key,
                    actor=session.caller.name,
                    reason=reason,
                    ticket=ticket,
                )
        except AdjustmentNotFoundError as error:
            raise RefusedError(404, str(error)) from None
        except (OperatorError, ActionKeyConflictError, InvalidActionError) as error:
            # four eyes, an overdraft, approved or withdrawn already, a key used before
            raise RefusedError(409, str(error)) from None
    except RefusedError as refused:
        return refusal_page(request, session, refused)
    adjustment = outcome.adjustment
    return await operator_page(
        request,
        outcome=f"Adjustment {adjustment.id} is {adjustment.status} "
        f"(action {outcome.action.id}{'' if outcome.recorded else ', recorded before'}).",
    )
