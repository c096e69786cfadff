"""The canonical line of a transfer, which the hash chain covers, is a fixed text form: each
stored field but `seq`, in order, joined by `|`. The fast formatter must give exactly that, and a
link's digest of either form (`ledger.chain`) is made of those lines as written down."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from ledger.chain import (
    LINK_FORM_HEADS_AND_BALANCES,
    LINK_FORM_LINES,
    canonical_line,
    heads_and_balances_digest,
    link_digest,
)
from ledger.model import StoredTransfer

_BIGINT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_TIMESTAMPS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.astimezone(timezone(timedelta(hours=-7))))
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def reference_line(fields: StoredTransfer) -> bytes:
    """The canonical form as written down: None is empty, timestamps ISO 8601 in UTC with
    microseconds, metadata JSON with sorted keys and no spaces, anything else `str`."""

    def as_text(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat(timespec="microseconds")
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return str(value)

    parts = (
        fields.id, fields.debit_account_id, fields.credit_account_id, fields.amount,
        fields.asset, fields.code, fields.flags, fields.pending_id, fields.timeout_s,
        fields.expires_at, fields.rate_card_version, fields.event_id, fields.metadata,
        fields.debit_balance_after, fields.credit_balance_after, fields.created_at,
    )  # fmt: skip
    return ("|".join(as_text(part) for part in parts) + "\n").encode("utf-8")


stored_transfers = st.builds(
    StoredTransfer,
    id=st.uuids(),
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    debit_account_id=st.integers(min_value=1, max_value=2**63 - 1),
    credit_account_id=st.integers(min_value=1, max_value=2**63 - 1),
    amount=st.integers(min_value=1, max_value=2**63 - 1),
    asset=st.sampled_from(["DIAMOND", "COIN", "USD", "EUR"]),
    code=st.integers(min_value=1, max_value=100),
    flags=st.integers(min_value=0, max_value=31),
    pending_id=st.none() | st.uuids(),
    timeout_s=st.none() | st.integers(min_value=1, max_value=10**6),
    expires_at=st.none() | _TIMESTAMPS,
    rate_card_version=st.none() | st.integers(min_value=1, max_value=10**6),
    event_id=st.none() | st.text(min_size=1, max_size=20),
    metadata=st.none() | st.dictionaries(st.text(max_size=8), _JSON_VALUES, max_size=4),
    debit_balance_after=_BIGINT,
    credit_balance_after=_BIGINT,
    created_at=_TIMESTAMPS,
)


@given(stored_transfers)
def test_canonical_line_is_the_written_form(fields: StoredTransfer) -> None:
    assert canonical_line(fields) == reference_line(fields)


def test_canonical_line_of_a_known_transfer() -> None:
    fields = StoredTransfer(
        id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        seq=7,
        debit_account_id=1,
        credit_account_id=2,
        amount=500,
        asset="DIAMOND",
        code=1,
        flags=0,
        pending_id=None,
        timeout_s=None,
        expires_at=None,
        rate_card_version=3,
        event_id="gift-1",
        metadata={"b": 1, "a": "x"},
        debit_balance_after=-500,
        credit_balance_after=500,
        created_at=datetime(2026, 11, 29, 1, 2, 3, 4, tzinfo=UTC),
    )
    assert canonical_line(fields) == (
        b"00000000-0000-4000-8000-000000000001|1|2|500|DIAMOND|1|0||||3|gift-1|"
        b'{"a":"x","b":1}|-500|500|2026-11-29T01:02:03.000004+00:00\n'
    )


def reference_heads_and_balances_digest(transfers: list[StoredTransfer]) -> bytes:
    """`LINK_FORM_HEADS_AND_BALANCES` as written down: sha256(sha256(heads) || sha256(balances)),
    the heads being each line up to its running balances, in id order, and the balances
    `{{d,c},...}|<timestamp>`, as PostgreSQL writes a two-dimensional bigint array."""
    ordered = sorted(transfers, key=lambda fields: str(fields.id))  # text order is id order
    heads = b""
    for fields in ordered:
        line = reference_line(fields)
        head, _, _ = line.rstrip(b"\n").rpartition(b"|")  # drop the timestamp,
        head, _, _ = head.rpartition(b"|")  # the credit balance
        head, _, _ = head.rpartition(b"|")  # and the debit balance
        heads += head + b"|"
    pairs = ",".join(f"{{{f.debit_balance_after},{f.credit_balance_after}}}" for f in ordered)
    moment = ordered[0].created_at.astimezone(UTC).isoformat(timespec="microseconds")
    balances = f"{{{pairs}}}|{moment}".encode()
    return hashlib.sha256(
        hashlib.sha256(heads).digest() + hashlib.sha256(balances).digest()
    ).digest()


@given(st.lists(stored_transfers, min_size=1, max_size=5, unique_by=lambda f: f.id), _TIMESTAMPS)
def test_a_heads_and_balances_digest_is_the_written_form(
    transfers: list[StoredTransfer], created_at: datetime
) -> None:
    shared = [dataclasses.replace(fields, created_at=created_at) for fields in transfers]
    expected = reference_heads_and_balances_digest(shared)
    assert heads_and_balances_digest(shared) == expected
    assert heads_and_balances_digest(list(reversed(shared))) == expected
    assert link_digest(LINK_FORM_HEADS_AND_BALANCES, shared) == expected
    assert link_digest(LINK_FORM_LINES, shared) != expected


@given(st.lists(stored_transfers, min_size=2, max_size=4, unique_by=lambda f: f.id))
def test_no_heads_and_balances_digest_covers_transfers_of_two_commit_timestamps(
    transfers: list[StoredTransfer],
) -> None:
    later = transfers[0].created_at + timedelta(microseconds=1)
    mixed = [transfers[0], *(dataclasses.replace(f, created_at=later) for f in transfers[1:])]
    assert heads_and_balances_digest(mixed) is None


@given(st.lists(stored_transfers, min_size=2, max_size=4, unique_by=lambda f: f.id), _TIMESTAMPS)
def test_two_transfers_balances_swapped_change_the_digest(
    transfers: list[StoredTransfer], created_at: datetime
) -> None:
    shared = [dataclasses.replace(fields, created_at=created_at) for fields in transfers]
    first, second = shared[0], shared[1]
    swapped = [
        dataclasses.replace(
            first,
            debit_balance_after=second.debit_balance_after,
            credit_balance_after=second.credit_balance_after,
        ),
        dataclasses.replace(
            second,
            debit_balance_after=first.debit_balance_after,
            credit_balance_after=first.credit_balance_after,
        ),
        *shared[2:],
    ]
    same = (first.debit_balance_after, first.credit_balance_after) == (
        second.debit_balance_after,
        second.credit_balance_after,
    )
    assert (heads_and_balances_digest(swapped) == heads_and_balances_digest(shared)) == same
