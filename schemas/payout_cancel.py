"""The cancellation of a payout, sent to the bank on `payouts.requested`.

An operator cancels a hold the bank has not answered within `CASHOUT_ANSWER_WINDOW_S`: the
Diamonds come back to the creator and the bank is told to drop the payout. The message travels on
the topic of the request it cancels, with the same key (the creator), so the bank reads it after
that request, in order, on the same partition. It is told apart from a `PayoutRequested` by its
`cancel` field, which a request never carries (both refuse unknown fields).

A bank that stops the payout answers `failed` (the simulated bank with the failure code
`cancelled`): the ledger records the confirmation, and only then may an operator resubmit the
cash-out (services/cashout/recovery.py). A bank that paid already answers `paid` anyway; the
ledger then takes the released Diamonds back and settles the payout once
(services/cashout/desk.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError

from schemas.events import Event, Identifier


class PayoutCancelRequested(Event):
    """Drop the payout of a cash-out that the ledger has cancelled."""

    cashout_id: Identifier = Field(
        description="The cash-out whose payout to drop.", examples=["cashout-01JC9X"]
    )
    creator_id: Identifier = Field(
        description="The creator the cash-out belongs to; also the Kafka message key.",
        examples=["creator-42"],
    )
    cancel: Literal[True] = Field(
        description="Always true: this message cancels the payout `cashout_id`.",
        examples=[True],
    )


def parse_payout_cancel(payload: bytes) -> PayoutCancelRequested | None:
    """The cancellation `payload` holds, or None when it holds anything else (a request)."""
    try:
        return PayoutCancelRequested.model_validate_json(payload)
    except ValidationError:
        return None
