"""Event ids giftledger publishes about a cash-out: the same every time, at most 128 characters,
and never another cash-out's or another state's, however long the cash-out id."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from schemas.events import ID_LENGTH_MAX, CashoutUpdated
from services.cashout.store import cashout_event_id

STATES = ("payout", "requested", "held", "submitted", "paid", "rejected", "failed", "returned")
cashout_ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1)


def test_a_short_cash_out_id_keeps_its_readable_event_ids() -> None:
    assert cashout_event_id("cashout-01", "paid") == "cashout-01:paid"


def test_two_long_ids_that_differ_only_at_the_end_get_different_event_ids() -> None:
    first, second = "c" * 127 + "1", "c" * 127 + "2"
    assert cashout_event_id(first, "paid") != cashout_event_id(second, "paid")


@given(first=cashout_ids, second=cashout_ids, state=st.sampled_from(STATES))
def test_event_ids_fit_and_differ_whenever_cash_outs_or_states_differ(
    first: str, second: str, state: str
) -> None:
    ids = {
        (cashout_id, what): cashout_event_id(cashout_id, what)
        for cashout_id in (first, second)
        for what in STATES
    }
    assert all(len(event_id) <= ID_LENGTH_MAX for event_id in ids.values())
    assert len(set(ids.values())) == len(ids)
    assert cashout_event_id(first, state) == cashout_event_id(first, state)


def test_the_event_id_of_a_long_cash_out_id_is_a_valid_event_id() -> None:
    event_id = cashout_event_id("x" * ID_LENGTH_MAX, "returned")
    document = json.dumps(
        {
            "event_id": event_id,
            "occurred_at": "2026-11-03T18:25:43Z",
            "cashout_id": "x" * ID_LENGTH_MAX,
            "creator_id": "creator-42",
            "status": "returned",
            "asset": "DIAMOND",
            "amount": 2_000_000,
            "payout_currency": "USD",
            "failure_code": "R01",
        }
    )
    assert CashoutUpdated.model_validate_json(document).event_id == event_id
