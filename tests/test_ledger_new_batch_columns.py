"""Both writes, `post_new`'s and the general one of walked batches, send their columns as few
parameters: integers as array literals, texts joined by a separator (or, when a value holds it,
as arrays); `post_new`'s writes what every new plain transfer shares in the statement. Whatever
the values, the stored rows must be the ones asked for, the same by every path (`post_new`,
`post`, which gives such a batch to `post_new`'s write, and `post` walked): `post` finds each
one EXISTS (same fields), and `verify` recomputes the totals, running balances and hash chain
from them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chain import metadata_json
from ledger.model import AccountFlags, NewTransfers, PostResult, Transfer, TransferCode
from ledger.service import Ledger
from ledger.store import (
    _int_array_text,
    _joined_texts,
    _nullable_int_array_text,
    read_stored,
)
from tests.ledger_helpers import ledger_problems, make_accounts, new_id


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database: the full `verify` after each example reads only its data."""
    return module_engine


pytestmark = pytest.mark.server

ACCOUNT_COUNT = 3
# Texts that PostgreSQL can store, the separators among them often; an event id is not empty.
characters = st.sampled_from(["a", "é", " ", '"', "\\", "\x1e", "\x1f", ",", "{", "}", "🎁"]) | (
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
)
notes = st.sampled_from(["NULL", "None"]) | st.text(characters, max_size=5)
event_ids = st.sampled_from(["NULL", "None"]) | st.text(characters, min_size=1, max_size=5)
rows = st.lists(
    st.tuples(
        st.integers(0, ACCOUNT_COUNT - 1),
        st.integers(1, ACCOUNT_COUNT - 1),
        st.integers(1, 10**15),
        st.just(TransferCode.SYNTHETIC),
        st.none() | st.integers(-(2**31), 2**31 - 1),
        st.none() | event_ids,
        st.none() | notes,
    ),
    min_size=1,
    max_size=12,
)


def batch_of(
    accounts: list[int],
    moves: Sequence[tuple[int, int, int, TransferCode, int | None, str | None, str | None]],
) -> NewTransfers:
    batch = NewTransfers()
    for debit, step, amount, code, version, event_id, note in moves:
        batch.add(
            transfer_id=new_id(),
            debit_account_id=accounts[debit],
            credit_account_id=accounts[(debit + step) % ACCOUNT_COUNT],
            amount=amount,
            code=code,
            rate_card_version=version,
            event_id=event_id,
            metadata_text=None if note is None else metadata_json({"note": note}),
        )
    return batch


def as_transfers(batch: NewTransfers) -> list[Transfer]:
    return [
        Transfer(
            batch.ids[index],
            batch.debit_account_ids[index],
            batch.credit_account_ids[index],
            batch.amounts[index],
            TransferCode(batch.codes[index]),
            rate_card_version=batch.rate_card_versions[index],
            event_id=batch.event_ids[index],
            metadata=None if text is None else metadata_from(text),
        )
        for index, text in enumerate(batch.metadata_texts)
    ]


def metadata_from(text: str) -> dict[str, object]:
    loaded = json.loads(text)
    assert isinstance(loaded, dict)
    return loaded


async def post_new(ledger: Ledger, batch: NewTransfers) -> None:
    async for tx in ledger.transactions(retry_count_max=0):
        async with tx:
            await tx.post_new(batch)


async def assert_stored_as_given(engine: AsyncEngine, ledger: Ledger, batch: NewTransfers) -> None:
    async with engine.connect() as conn:
        stored, _ = await read_stored(conn, batch.ids)
    for index, transfer_id in enumerate(batch.ids):
        row = stored[transfer_id]
        assert (row.debit_account_id, row.credit_account_id, row.amount) == (
            batch.debit_account_ids[index],
            batch.credit_account_ids[index],
            batch.amounts[index],
        )
        assert (row.code, row.rate_card_version, row.event_id) == (
            int(batch.codes[index]),
            batch.rate_card_versions[index],
            batch.event_ids[index],
        )
        text = batch.metadata_texts[index]
        assert row.metadata == (None if text is None else metadata_from(text))
        assert (row.asset, row.flags, row.pending_id, row.timeout_s, row.expires_at) == (
            "DIAMOND",
            0,
            None,
            None,
            None,
        )
    assert await ledger.post(as_transfers(batch)) == [PostResult.EXISTS] * len(batch)
    assert await ledger_problems(engine) == []


async def post_general(ledger: Ledger, batch: NewTransfers) -> None:
    """`post`, which takes such a batch to `post_new`'s statement (`ledger.store._plain_batch`)."""
    assert await ledger.post(as_transfers(batch)) == [PostResult.OK] * len(batch)


async def post_walked(ledger: Ledger, batch: NewTransfers) -> None:
    """`post` with the accounts locked first: walked, and written by the general statement."""
    async for tx in ledger.transactions():
        async with tx:
            outcome = await tx.post(as_transfers(batch), lock_accounts_first=True, last=True)
    assert outcome.results == [PostResult.OK] * len(batch)


@pytest.mark.parametrize(
    "post", [post_new, post_general, post_walked], ids=["post_new", "post", "post_walked"]
)
@given(moves=rows)
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_any_values_are_stored_as_given_by_either_path(
    engine: AsyncEngine,
    post: Callable[[Ledger, NewTransfers], Awaitable[None]],
    moves: list[tuple[int, int, int, TransferCode, int | None, str | None, str | None]],
) -> None:
    ledger = Ledger(engine)
    accounts = await make_accounts(
        ledger, f"columns-{uuid.uuid4().hex[:8]}", [AccountFlags.NONE] * ACCOUNT_COUNT
    )
    batch = batch_of(accounts, moves)

    await post(ledger, batch)

    await assert_stored_as_given(engine, ledger, batch)


@pytest.mark.parametrize(
    ("event_ids", "joined"),
    [
        (["a", None, "b"], True),
        ([None], True),
        (["a\x1fb", "c"], False),
        (["\x1e", None], False),
    ],
)
async def test_a_text_column_is_joined_unless_a_value_holds_a_separator(
    engine: AsyncEngine, unique_id: str, event_ids: list[str | None], joined: bool
) -> None:
    assert (_joined_texts(event_ids) is not None) == joined
    ledger = Ledger(engine)
    accounts = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * ACCOUNT_COUNT)
    moves = [(0, 1, 5, TransferCode.SYNTHETIC, None, event_id, event_id) for event_id in event_ids]
    batch = batch_of(accounts, moves)

    await post_new(ledger, batch)

    await assert_stored_as_given(engine, ledger, batch)


def test_empty_strings_are_joined_unless_one_alone_would_split_into_nothing() -> None:
    assert _joined_texts(["", ""]) == "\x1f"
    assert _joined_texts(["", None]) == "\x1f\x1e"
    assert _joined_texts([""]) is None


def test_integers_are_written_as_their_numbers() -> None:
    assert _int_array_text([1, -2, TransferCode.SYNTHETIC, True]) == (
        f"{{1,-2,{int(TransferCode.SYNTHETIC)},1}}"
    )
    assert _nullable_int_array_text([None, 3, None]) == "{NULL,3,NULL}"
    assert _int_array_text([]) == "{}"
    with pytest.raises(TypeError):
        _int_array_text(["1"])  # type: ignore[list-item]
