"""Property tests: random batches of transfers, chains, pendings, posts and voids keep every
invariant, and the stored totals and result codes equal a plain Python model of the rules."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import AccountFlags, PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger
from tests.ledger_helpers import ledger_problems, make_accounts, totals


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database: the full `verify` after each example reads only its data."""
    return module_engine


F = TransferFlags
R = PostResult
ACCOUNT_COUNT = 4


@dataclass
class Model:
    """The ledger's rules written as plainly as possible, one transfer at a time."""

    flags: list[AccountFlags]
    totals: list[list[int]] = field(default_factory=list)  # [dp, cp, dpend, cpend] per account
    stored: dict[uuid.UUID, Transfer] = field(default_factory=dict)
    pendings: dict[uuid.UUID, tuple[int, int, int]] = field(default_factory=dict)
    outcomes: dict[uuid.UUID, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.totals = [[0, 0, 0, 0] for _ in self.flags]

    def rules_hold(self, account: int, funded: bool) -> R:
        dp, cp, dpend, cpend = self.totals[account]
        if self.flags[account] & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and dp + dpend > cp:
            return R.EXCEEDS_CREDITS
        if self.flags[account] & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS and cp + cpend > dp:
            return R.EXCEEDS_DEBITS
        if funded and cp - dp - dpend < 0:
            return R.EXCEEDS_CREDITS
        return R.OK

    def asks_for_stored(self, t: Transfer) -> bool:
        """Whether `t` asks for exactly what is stored under its id. A post or void sent again
        with amount 0 asks for whatever amount it moved."""
        stored = self.stored[t.id]
        if t.pending_id is not None and t.amount == 0:
            return dataclasses.replace(t, amount=stored.amount) == stored
        return t == stored

    def apply(self, t: Transfer, index: dict[int, int]) -> R:
        if t.id in self.stored:
            return R.EXISTS if self.asks_for_stored(t) else R.EXISTS_WITH_DIFFERENT_FIELDS
        saved = copy.deepcopy(self.totals)
        if t.pending_id is not None:
            if t.pending_id not in self.pendings:
                return R.PENDING_NOT_FOUND
            if t.pending_id in self.outcomes:
                return {"posted": R.PENDING_ALREADY_POSTED, "voided": R.PENDING_ALREADY_VOIDED}[
                    self.outcomes[t.pending_id]
                ]
            debit, credit, pending_amount = self.pendings[t.pending_id]
            posting = bool(t.flags & F.POST_PENDING)
            if posting and t.amount > pending_amount:
                return R.AMOUNT_EXCEEDS_PENDING
            if not posting and t.amount not in (0, pending_amount):
                return R.AMOUNT_DIFFERS_FROM_PENDING
            self.totals[debit][2] -= pending_amount
            self.totals[credit][3] -= pending_amount
            if posting:
                self.totals[debit][0] += t.amount
                self.totals[credit][1] += t.amount
            self.outcomes[t.pending_id] = "posted" if posting else "voided"
            # Stored with what it moved: a void always the whole pending amount.
            self.stored[t.id] = dataclasses.replace(
                t, amount=t.amount if posting else pending_amount
            )
            return R.OK
        debit, credit = index[t.debit_account_id], index[t.credit_account_id]
        column = 2 if t.flags & F.PENDING else 0
        self.totals[debit][column] += t.amount
        self.totals[credit][column + 1] += t.amount
        for account, funded in ((debit, bool(t.flags & F.FUNDED)), (credit, False)):
            result = self.rules_hold(account, funded)
            if result is not R.OK:
                self.totals = saved
                return result
        if t.flags & F.PENDING:
            self.pendings[t.id] = (debit, credit, t.amount)
        self.stored[t.id] = t
        return R.OK

    def apply_batch(self, batch: list[Transfer], index: dict[int, int]) -> list[R]:
        results: list[R] = []
        chain: list[Transfer] = []
        for t in batch:
            chain.append(t)
            if not t.flags & F.LINKED:
                results += self.apply_chain(chain, index)
                chain = []
        if chain:
            results += [R.LINKED_EVENT_FAILED] * (len(chain) - 1) + [R.LINKED_EVENT_CHAIN_OPEN]
        return results

    def apply_chain(self, chain: list[Transfer], index: dict[int, int]) -> list[R]:
        snapshot = copy.deepcopy((self.totals, self.stored, self.pendings, self.outcomes))
        results = []
        for t in chain:
            results.append(self.apply(t, index))
            if results[-1] not in (R.OK, R.EXISTS):
                self.totals, self.stored, self.pendings, self.outcomes = snapshot
                failed = [R.LINKED_EVENT_FAILED] * len(chain)
                failed[len(results) - 1] = results[-1]
                return failed
        return results


account_flags = st.sampled_from(
    [
        AccountFlags.NONE,
        AccountFlags.NONE,
        AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
        AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS,
    ]
)
op = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(
            ["plain", "plain", "pending", "pending", "post", "post", "void", "repeat", "changed"]
        ),
        "debit": st.integers(0, ACCOUNT_COUNT - 1),
        "credit_offset": st.integers(1, ACCOUNT_COUNT - 1),
        "amount": st.integers(1, 100),
        "linked": st.sampled_from([False, False, False, True]),
        "funded": st.sampled_from([False, False, False, True]),
        "target": st.integers(0, 1_000),
    }
)


def build(ops: list[dict[str, object]], ids: list[int], earlier: list[Transfer]) -> list[Transfer]:
    """Turn generated op descriptions into transfers; posts and voids aim at earlier pendings."""
    batch: list[Transfer] = []
    for spec in ops:
        debit_index = int(str(spec["debit"]))
        credit_index = (debit_index + int(str(spec["credit_offset"]))) % ACCOUNT_COUNT
        amount, target = int(str(spec["amount"])), int(str(spec["target"]))
        linked = F.LINKED if spec["linked"] else F.NONE
        seen = earlier + batch
        pendings = [t for t in seen if t.flags & F.PENDING]
        kind = spec["kind"]
        code = TransferCode.SYNTHETIC
        if kind in ("post", "void") and pendings:
            pending = pendings[target % len(pendings)]
            flag = F.POST_PENDING if kind == "post" else F.VOID_PENDING
            post_amount = amount if kind == "post" else 0
            batch.append(Transfer(uuid.uuid4(), 0, 0, post_amount, code, flag | linked, pending.id))
        elif kind in ("repeat", "changed") and seen:
            original = seen[target % len(seen)]
            if kind == "repeat":
                batch.append(original)
            else:
                batch.append(
                    Transfer(
                        original.id,
                        original.debit_account_id,
                        original.credit_account_id,
                        original.amount + 1,
                        code,
                        original.flags,
                        original.pending_id,
                    )
                )
        else:
            flags = linked | (F.PENDING if kind == "pending" else F.NONE)
            flags |= F.FUNDED if spec["funded"] else F.NONE
            batch.append(
                Transfer(uuid.uuid4(), ids[debit_index], ids[credit_index], amount, code, flags)
            )
    return batch


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    flags=st.lists(account_flags, min_size=ACCOUNT_COUNT, max_size=ACCOUNT_COUNT),
    batches=st.lists(st.lists(op, min_size=1, max_size=10), min_size=1, max_size=4),
)
async def test_random_batches_match_the_model_and_keep_every_invariant(
    engine: AsyncEngine, flags: list[AccountFlags], batches: list[list[dict[str, object]]]
) -> None:
    ledger = Ledger(engine, batch_size_max=1_000)
    ids = await make_accounts(ledger, uuid.uuid4().hex, flags)
    index = {account_id: position for position, account_id in enumerate(ids)}
    model = Model(flags)
    earlier: list[Transfer] = []
    for ops in batches:
        batch = build(ops, ids, earlier)
        earlier += batch
        expected = model.apply_batch(batch, index)
        assert await ledger.post(batch) == expected
        stored = await totals(engine, ids)
        for position, account_id in enumerate(ids):
            account = stored[account_id]
            got = [
                account.debits_posted,
                account.credits_posted,
                account.debits_pending,
                account.credits_pending,
            ]
            assert got == model.totals[position], f"account {position}"
    assert await ledger_problems(engine) == []
