"""The operator routes' requests and answers (services/api/routes/operator.py), and the documents
they write; `giftledger operator ... --json` prints the same documents.

Amounts are integers in the asset's minor unit, with the asset's `scale`; `amount_minor` is
signed: > 0 credits the creator, < 0 debits them. Timestamps are RFC 3339 text.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.events import ActionReason, CashoutAsset, Identifier
from services.api.models import Document, TimestampText, UuidText
from services.operator.actions_log import OperatorAction
from services.operator.adjustments import ADJUSTMENT_AMOUNT_MAX, Adjustment, AdjustmentStatus
from services.operator.desk import APPROVAL_REASON_DEFAULT, AdjustmentOutcome, FreezeOutcome

# Requests -----------------------------------------------------------------------------------


def _whole(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole(item) for item in value]
    return value


class Request(BaseModel):
    """A request body: strict types, no unknown fields. A whole number written with a fraction
    (`194.0`) is that integer, as JSON Schema counts it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: object) -> object:
        if isinstance(data, dict):
            return {key: _whole(value) for key, value in data.items()}
        return data


class AdjustmentProposal(Request):
    """A balance adjustment to propose; another operator approves it."""

    creator_id: Identifier = Field(description="The creator whose balance changes.")
    # DIAMOND or a currency: what a cash-out may take, the assets a creator holds.
    asset: CashoutAsset = Field(
        description="`DIAMOND` (the creator's available Diamonds) or a currency (their wallet).",
        examples=["DIAMOND"],
    )
    amount_minor: Annotated[int, Field(ge=-ADJUSTMENT_AMOUNT_MAX, le=ADJUSTMENT_AMOUNT_MAX)] = (
        Field(
            description="Signed, in the asset's minor unit (milli-diamonds for `DIAMOND`): > 0 "
            "credits the creator, < 0 debits them (refused at approval if it would take their "
            "available balance below zero); never 0.",
            examples=[-5000],
            json_schema_extra={"not": {"const": 0}},
        )
    )
    reason: ActionReason = Field(description="Why, for the audit log (one line).")
    ticket: Identifier | None = Field(default=None, description="The ticket it belongs to.")

    @field_validator("amount_minor")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("amount_minor must not be 0: > 0 credits the creator, < 0 debits")
        return value


class ApprovalRequest(Request):
    """What the approver says (the body may be left out)."""

    reason: ActionReason = Field(
        default=APPROVAL_REASON_DEFAULT, description="Why, for the audit log (one line)."
    )
    ticket: Identifier | None = Field(default=None, description="The ticket it belongs to.")


class WithdrawalRequest(Request):
    """Why a proposed adjustment is withdrawn (a wrong amount, a wrong creator, ...)."""

    reason: ActionReason = Field(
        description="Why it is withdrawn, for the audit log (one line).",
        examples=["wrong creator: meant creator-43"],
    )
    ticket: Identifier | None = Field(default=None, description="The ticket it belongs to.")


class FreezeRequest(Request):
    """Why a creator is frozen or unfrozen."""

    reason: ActionReason = Field(description="Why, for the audit log (one line).")
    ticket: Identifier | None = Field(default=None, description="The ticket it belongs to.")


# Answers ------------------------------------------------------------------------------------


class OperatorActionDocument(Document):
    """An entry of the operator actions log."""

    action_id: int
    idempotency_key: str
    actor: str
    action: str
    target: str
    reason: str
    ticket: str | None
    details: dict[str, Any]
    recorded_at: TimestampText


class AdjustmentDocument(Document):
    """A balance adjustment: `proposed` (waiting for a second operator), `approved` (posted as
    `transfer_id`) or `withdrawn` (never posted); never both approved and withdrawn."""

    adjustment_id: int
    creator_id: str
    asset: str
    scale: int
    amount_minor: int
    status: AdjustmentStatus
    reason: str
    ticket: str | None
    proposed_by: str
    proposed_at: TimestampText
    approved_by: str | None
    approved_at: TimestampText | None
    transfer_id: UuidText | None
    withdrawn_by: str | None
    withdrawn_at: TimestampText | None


class AdjustmentActionDocument(Document):
    """The adjustment after the action; `recorded` is false when the action was already taken
    (the same `Idempotency-Key` again, or an adjustment approved, or withdrawn, already): `action`
    is then the one that took it."""

    adjustment: AdjustmentDocument
    action: OperatorActionDocument
    recorded: bool


class AdjustmentListDocument(Document):
    adjustments: list[AdjustmentDocument]


class FreezeDocument(Document):
    """A creator's freeze state after the action; `action` set it (null for a creator never
    frozen); `recorded` is false when the creator was already in that state or the same
    `Idempotency-Key` came again."""

    creator_id: str
    frozen: bool
    since: TimestampText | None
    action: OperatorActionDocument | None
    recorded: bool


# Documents ----------------------------------------------------------------------------------


def action_document(action: OperatorAction) -> dict[str, Any]:
    return {
        "action_id": action.id,
        "idempotency_key": action.idempotency_key,
        "actor": action.actor,
        "action": action.action,
        "target": action.target,
        "reason": action.reason,
        "ticket": action.ticket,
        "details": action.details,
        "recorded_at": action.recorded_at.isoformat(),
    }


def adjustment_document(adjustment: Adjustment) -> dict[str, Any]:
    return {
        "adjustment_id": adjustment.id,
        "creator_id": adjustment.creator_id,
        "asset": adjustment.asset,
        "scale": adjustment.scale,
        "amount_minor": adjustment.amount_minor,
        "status": adjustment.status,
        "reason": adjustment.reason,
        "ticket": adjustment.ticket,
        "proposed_by": adjustment.proposed_by,
        "proposed_at": adjustment.proposed_at.isoformat(),
        "approved_by": adjustment.approved_by,
        "approved_at": None
        if adjustment.approved_at is None
        else adjustment.approved_at.isoformat(),
        "transfer_id": None if adjustment.transfer_id is None else str(adjustment.transfer_id),
        "withdrawn_by": adjustment.withdrawn_by,
        "withdrawn_at": None
        if adjustment.withdrawn_at is None
        else adjustment.withdrawn_at.isoformat(),
    }


def adjustment_outcome_document(outcome: AdjustmentOutcome) -> dict[str, Any]:
    return {
        "adjustment": adjustment_document(outcome.adjustment),
        "action": action_document(outcome.action),
        "recorded": outcome.recorded,
    }


def freeze_outcome_document(outcome: FreezeOutcome) -> dict[str, Any]:
    state = outcome.state
    return {
        "creator_id": state.creator_id,
        "frozen": state.frozen,
        "since": None if state.since is None else state.since.isoformat(),
        "action": None if outcome.action is None else action_document(outcome.action),
        "recorded": outcome.recorded,
    }
