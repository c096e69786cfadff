"""Requests and answers of the operator's recovery routes (services/api/routes/
operator_recovery.py); `giftledger operator redrive|cancel|resubmit --json` prints the same
documents."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from schemas.events import ActionReason, Identifier, RuleName
from schemas.topics import ConsumedTopic
from services.api.deps import Timestamp
from services.api.models import CashoutDocument, Document
from services.api.operator_models import OperatorActionDocument, Request, action_document
from services.cashout.recovery import CancelOutcome, ResubmitOutcome
from services.cashout.store import cashout_document
from services.ingestion.redrive import REDRIVE_COUNT_MAX, DeadLetterSelection, RedriveOutcome

# Identity values, far below 2**53: every JSON client can write them exactly.
DeadLetterId = Annotated[int, Field(ge=1, le=2**53 - 1)]

# Requests -----------------------------------------------------------------------------------


# Exactly one way of naming dead letters: by id (no filter), or by topic (no id).
_ONE_SELECTION: dict[str, Any] = {
    "oneOf": [
        {
            "required": ["dead_letter_ids"],
            "properties": {
                "dead_letter_ids": {"type": "array"},
                **{name: {"type": "null"} for name in ("topic", "error")},
                **{name: {"type": "null"} for name in ("recorded_from", "recorded_to")},
            },
        },
        {
            "required": ["topic"],
            "properties": {"topic": {"type": "string"}, "dead_letter_ids": {"type": "null"}},
        },
    ]
}


class RedriveRequestBody(Request):
    """Which dead letters to re-drive: `dead_letter_ids`, or those of `topic` (with `error`,
    recorded in `[recorded_from, recorded_to)`; an empty range selects nothing), oldest first,
    at most `limit`."""

    model_config = ConfigDict(**Request.model_config, json_schema_extra=_ONE_SELECTION)

    dead_letter_ids: (
        Annotated[list[DeadLetterId], Field(min_length=1, max_length=REDRIVE_COUNT_MAX)] | None
    ) = Field(
        default=None,
        description="The dead letters to re-drive, by id (a dead letter that is the copy of a "
        "re-drive failing again is re-driven only so).",
        examples=[[17, 18]],
    )
    topic: ConsumedTopic | None = Field(
        default=None,
        description="The source topic, without the deployment's prefix, when no id is given.",
        examples=["gifts.reversed"],
    )
    error: RuleName | None = Field(
        default=None, description="Only dead letters with this error.", examples=["gift_not_found"]
    )
    recorded_from: Timestamp | None = Field(
        default=None, description="Only dead letters recorded at or after this time."
    )
    recorded_to: Timestamp | None = Field(
        default=None, description="Only dead letters recorded before this time."
    )
    limit: Annotated[int, Field(ge=1, le=REDRIVE_COUNT_MAX)] = Field(
        default=100, description="At most this many dead letters (by topic only)."
    )
    reason: ActionReason = Field(description="Why, for the audit log (one line).")
    ticket: Identifier | None = Field(default=None, description="The ticket it belongs to.")

    @model_validator(mode="after")
    def _one_selection(self) -> Self:
        self.selection()  # raises ValueError (a 422) for ids and a topic at once, or neither
        return self

    def selection(self) -> DeadLetterSelection:
        return DeadLetterSelection(
            dead_letter_ids=tuple(self.dead_letter_ids or ()),
            topic=self.topic,
            error=self.error,
            recorded_from=self.recorded_from,
            recorded_to=self.recorded_to,
            limit=self.limit,
        )


class CashoutActionBody(Request):
    """Why a cash-out is cancelled or resubmitted."""

    reason: ActionReason = Field(description="Why, for the audit log (one line).")
    ticket: Identifier | None = Field(default=None, description="The ticket it belongs to.")


# Answers ------------------------------------------------------------------------------------


class RedriveOutcomeDocument(Document):
    """One dead letter: `redriven` now (its copy's partition and offset in the source topic),
    `already_redriven` (by this request before, or by another: the action that did it), or
    `source_unavailable` (its record is no longer in the source topic; nothing was done)."""

    dead_letter_id: int
    topic: str
    event_id: str | None
    error: str
    outcome: Literal["redriven", "already_redriven", "source_unavailable"]
    operator_action_id: int | None
    copy_partition: int | None
    copy_offset: int | None


class RedriveDocument(Document):
    """What a re-drive request did, dead letter by dead letter, in id order."""

    redriven_count: int
    dead_letters: list[RedriveOutcomeDocument]


class CancelDocument(Document):
    """The cash-out after the action (`failed`, `operator_cancelled`); `recorded` is false when
    the same `Idempotency-Key` came again: `action` is then the one that cancelled it."""

    cashout: CashoutDocument
    action: OperatorActionDocument
    recorded: bool


class ResubmitDocument(Document):
    """The failed cash-out and its resubmission (a new cash-out, `held`); `recorded` is false
    when the same `Idempotency-Key` came again."""

    cashout: CashoutDocument
    resubmitted: CashoutDocument
    action: OperatorActionDocument
    recorded: bool


# Documents ----------------------------------------------------------------------------------


def redrive_document(outcomes: list[RedriveOutcome]) -> dict[str, Any]:
    return {
        "redriven_count": sum(outcome.outcome == "redriven" for outcome in outcomes),
        "dead_letters": [outcome.document() for outcome in outcomes],
    }


def cancel_document(outcome: CancelOutcome) -> dict[str, Any]:
    return {
        "cashout": cashout_document(outcome.cashout),
        "action": action_document(outcome.action),
        "recorded": outcome.recorded,
    }


def resubmit_document(outcome: ResubmitOutcome) -> dict[str, Any]:
    return {
        "cashout": cashout_document(outcome.original),
        "resubmitted": cashout_document(outcome.resubmitted),
        "action": action_document(outcome.action),
        "recorded": outcome.recorded,
    }
