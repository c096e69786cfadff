"""What a cash-out posts at each step, as values: no I/O, so each step is tested alone. The desk
(`services/cashout/desk.py`) reads the cash-out and its hold and posts what these functions give;
docs/accounting.md shows every step with numbers.

- held: the hold, a pending and funded transfer from the creator's available Diamonds to their
  held Diamonds (or from their currency wallet to `payouts_payable`).
- submitted (the payout request left for the bank): the hold is posted; for Diamonds, the held
  Diamonds are redeemed (`diamonds_redeemed`; the part worth less than one minor unit of the
  payout currency goes to `DIAMOND:rounding`) and their money moves from `cashout_conversion` to
  `payouts_payable`. From here the payable holds exactly what the bank is asked to pay.
- paid: the payable is settled against `cash_at_bank`.
- failed: before submission the hold is voided; after it, new transfers undo the submission.
- returned (after paid): new transfers undo the settlement and the submission.

Every transfer carries the cash-out's id in its metadata, and each step's transfers form one
linked chain (all or nothing).
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from ledger import chart
from ledger.chart import AccountKind, AccountSpec
from ledger.ids import transfer_id
from ledger.model import Transfer, TransferCode, TransferFlags
from schemas import topics
from schemas.assets import DIAMOND
from services.cashout.conversion import convert
from services.cashout.store import Cashout, cashout_event_id
from services.rates.fx import FxRate

SETTLEMENT_CURRENCIES_CACHED_MAX = 256  # payout currencies: ISO 4217 has fewer than 200
_LINKED = int(TransferFlags.LINKED)  # a plain int, as `Transfer.flags` keeps it


def hold_source(creator_id: str, asset: str) -> AccountSpec:
    if asset == DIAMOND:
        return chart.creator_diamonds_available(creator_id)
    return chart.creator_wallet(creator_id, asset)


def hold_target(creator_id: str, asset: str) -> AccountSpec:
    if asset == DIAMOND:
        return chart.creator_diamonds_held(creator_id)
    return chart.platform(AccountKind.PAYOUTS_PAYABLE, asset)


@functools.lru_cache(maxsize=SETTLEMENT_CURRENCIES_CACHED_MAX)
def settlement_accounts(payout_currency: str) -> tuple[AccountSpec, ...]:
    """The platform accounts a cash-out paid in `payout_currency` may move (built once a
    currency: every step of every cash-out names them)."""
    return (
        chart.platform(AccountKind.DIAMONDS_REDEEMED, DIAMOND),
        chart.platform(AccountKind.ROUNDING, DIAMOND),
        chart.platform(AccountKind.CASHOUT_CONVERSION, payout_currency),
        chart.platform(AccountKind.PAYOUTS_PAYABLE, payout_currency),
        chart.platform(AccountKind.CASH_AT_BANK, payout_currency),
    )


def cashout_accounts(cashout: Cashout) -> list[AccountSpec]:
    """Every account a cash-out may move, at any step."""
    return [
        hold_source(cashout.creator_id, cashout.asset),
        hold_target(cashout.creator_id, cashout.asset),
        *settlement_accounts(cashout.payout_currency),
    ]


def hold_id(cashout_id: str) -> uuid.UUID:
    """The id of a cash-out's hold, the pending transfer its submission posts or a failure
    voids."""
    return transfer_id(topics.CASHOUTS_REQUESTED, cashout_id, "hold")


@dataclass(frozen=True, slots=True)
class Leg:
    """One plain transfer of a step, by account spec; `name` makes its id within the step."""

    name: str
    debit: AccountSpec
    credit: AccountSpec
    amount_minor: int
    code: TransferCode


@dataclass(frozen=True, slots=True)
class StepNames:
    """Where a step's transfer ids come from (`transfer_id(topic, key, name)`) and the event id
    its transfers carry."""

    topic: str
    key: str
    event_id: str

    def transfer_id(self, name: str) -> uuid.UUID:
        return transfer_id(self.topic, self.key, name)


def submission_names(cashout_id: str) -> StepNames:
    """A submission's transfers are named after the payout request that left: the same ids
    whether the relay marks it submitted or the bank's answer comes first."""
    return StepNames(topics.PAYOUTS_REQUESTED, cashout_id, cashout_event_id(cashout_id, "payout"))


def hold_leg(cashout: Cashout) -> Leg:
    """What the hold moves, as a plain leg (to undo it, or to take it again)."""
    return Leg(
        "hold",
        hold_source(cashout.creator_id, cashout.asset),
        hold_target(cashout.creator_id, cashout.asset),
        cashout.amount,
        TransferCode.CASHOUT_HOLD,
    )


def conversion_legs(cashout: Cashout, diamonds_per_usd: int | None) -> list[Leg]:
    """What a submission moves besides posting the hold: the held Diamonds redeemed (the part
    worth less than one minor unit to rounding) and their money made payable. A currency
    cash-out's hold already moves the money into `payouts_payable`: nothing more."""
    if cashout.asset != DIAMOND:
        return []
    assert diamonds_per_usd is not None, "a Diamond cash-out is priced by its rate card"
    assert cashout.payout_amount is not None
    assert cashout.fx_numerator is not None
    assert cashout.fx_denominator is not None
    fx = FxRate(cashout.payout_currency, Fraction(cashout.fx_numerator, cashout.fx_denominator))
    conversion = convert(DIAMOND, cashout.amount, diamonds_per_usd, None, fx)
    held = chart.creator_diamonds_held(cashout.creator_id)
    legs = [
        Leg(
            "redeem",
            held,
            chart.platform(AccountKind.DIAMONDS_REDEEMED, DIAMOND),
            conversion.redeemed_amount,
            TransferCode.CASHOUT_CONVERSION,
        )
    ]
    if conversion.rounding_amount:
        rounding = chart.platform(AccountKind.ROUNDING, DIAMOND)
        legs.append(
            Leg("rounding", held, rounding, conversion.rounding_amount, TransferCode.ROUNDING)
        )
    legs.append(
        Leg(
            "money",
            chart.platform(AccountKind.CASHOUT_CONVERSION, cashout.payout_currency),
            chart.platform(AccountKind.PAYOUTS_PAYABLE, cashout.payout_currency),
            cashout.payout_amount,
            TransferCode.CASHOUT_CONVERSION,
        )
    )
    return legs


def settlement_leg(cashout: Cashout, code: TransferCode = TransferCode.CASHOUT_SETTLED) -> Leg:
    """The bank paid: the payable is settled against cash at the bank."""
    assert cashout.payout_amount is not None
    return Leg(
        "settle",
        chart.platform(AccountKind.PAYOUTS_PAYABLE, cashout.payout_currency),
        chart.platform(AccountKind.CASH_AT_BANK, cashout.payout_currency),
        cashout.payout_amount,
        code,
    )


def undone(legs: Sequence[Leg], prefix: str, code: TransferCode) -> list[Leg]:
    """New legs that undo `legs` exactly: the same amounts the other way, last one first."""
    return [
        Leg(f"{prefix}_{leg.name}", leg.credit, leg.debit, leg.amount_minor, code)
        for leg in reversed(legs)
    ]


def resolve_hold(
    cashout: Cashout, names: StepNames, name: str, flags: TransferFlags, code: TransferCode
) -> Transfer:
    """The transfer that posts or voids the cash-out's hold (its accounts come from the hold)."""
    return Transfer(
        id=names.transfer_id(name),
        debit_account_id=0,
        credit_account_id=0,
        amount=0,
        code=code,
        flags=flags,
        pending_id=hold_id(cashout.cashout_id),
        event_id=names.event_id,
        metadata={"cashout_id": cashout.cashout_id},
    )


def linked_chain(
    cashout: Cashout,
    names: StepNames,
    legs: Sequence[Leg],
    account_ids: dict[str, int],
    first: Sequence[Transfer] = (),
) -> list[Transfer]:
    """`first` (a resolving transfer) and the legs as transfers, linked into one chain: each
    but the last carries LINKED (the legs' transfers are built with their flags, not copied)."""
    last = len(first) + len(legs) - 1
    chain = [
        transfer
        if position == last
        else dataclasses.replace(transfer, flags=transfer.flags | TransferFlags.LINKED)
        for position, transfer in enumerate(first)
    ]
    for position, leg in enumerate(legs, start=len(first)):
        chain.append(
            Transfer(
                id=names.transfer_id(leg.name),
                debit_account_id=account_ids[leg.debit.name],
                credit_account_id=account_ids[leg.credit.name],
                amount=leg.amount_minor,
                code=leg.code,
                flags=0 if position == last else _LINKED,
                rate_card_version=cashout.rate_card_version,
                event_id=names.event_id,
                metadata={"cashout_id": cashout.cashout_id},
            )
        )
    return chain


def submission_transfers(
    cashout: Cashout, diamonds_per_usd: int | None, account_ids: dict[str, int]
) -> list[Transfer]:
    """Submitted: the hold posted, the Diamonds converted, the money payable."""
    names = submission_names(cashout.cashout_id)
    post = resolve_hold(
        cashout, names, "post", TransferFlags.POST_PENDING, TransferCode.CASHOUT_SUBMITTED
    )
    return linked_chain(
        cashout, names, conversion_legs(cashout, diamonds_per_usd), account_ids, [post]
    )


def release_transfers(
    cashout: Cashout,
    hold_open: bool,
    diamonds_per_usd: int | None,
    account_ids: dict[str, int],
    names: StepNames,
    void_name: str = "void",
) -> list[Transfer]:
    """Failed (or cancelled by an operator): a hold still pending is voided; a submitted one's
    transfers are undone by new ones, so the creator's balance is back exactly."""
    if hold_open:
        return [
            resolve_hold(
                cashout, names, void_name, TransferFlags.VOID_PENDING, TransferCode.CASHOUT_RELEASED
            )
        ]
    submitted = [hold_leg(cashout), *conversion_legs(cashout, diamonds_per_usd)]
    legs = undone(submitted, "release", TransferCode.CASHOUT_RELEASED)
    return linked_chain(cashout, names, legs, account_ids)


def paid_transfers(
    cashout: Cashout,
    hold_open: bool,
    diamonds_per_usd: int | None,
    account_ids: dict[str, int],
    names: StepNames,
) -> list[Transfer]:
    """Paid: the payable settled against cash at the bank; first the submission, when the
    bank's answer came before the relay marked the cash-out submitted."""
    settle = linked_chain(cashout, names, [settlement_leg(cashout)], account_ids)
    if not hold_open:
        return settle
    submit = submission_transfers(cashout, diamonds_per_usd, account_ids)
    return [*linked_chain_head(submit), *settle]


def linked_chain_head(transfers: Sequence[Transfer]) -> list[Transfer]:
    """`transfers` with the last one linked too, so that a chain can follow it."""
    return [
        dataclasses.replace(transfer, flags=transfer.flags | TransferFlags.LINKED)
        for transfer in transfers
    ]


def paid_after_cancel_transfers(
    cashout: Cashout,
    diamonds_per_usd: int | None,
    account_ids: dict[str, int],
    names: StepNames,
) -> list[Transfer]:
    """The bank paid a cash-out whose hold an operator had released: the ledger takes the
    amount again (an ordinary transfer, which may take the available balance below zero, as a
    reversal may), converts it and settles it, once."""
    late = Leg(
        "late_hold",
        hold_source(cashout.creator_id, cashout.asset),
        hold_target(cashout.creator_id, cashout.asset),
        cashout.amount,
        TransferCode.CASHOUT_PAID,
    )
    converted = [
        dataclasses.replace(leg, name=f"late_{leg.name}")
        for leg in conversion_legs(cashout, diamonds_per_usd)
    ]
    legs = [late, *converted, settlement_leg(cashout)]
    return linked_chain(cashout, names, legs, account_ids)


def returned_transfers(
    cashout: Cashout,
    diamonds_per_usd: int | None,
    account_ids: dict[str, int],
    names: StepNames,
) -> list[Transfer]:
    """Returned after paid: new transfers undo the settlement, the conversion and the hold's
    movement, last first; the creator's balance is back exactly."""
    happened = [
        hold_leg(cashout),
        *conversion_legs(cashout, diamonds_per_usd),
        settlement_leg(cashout),
    ]
    legs = undone(happened, "return", TransferCode.CASHOUT_RETURNED)
    return linked_chain(cashout, names, legs, account_ids)


def catch_up_settlement_transfers(cashout: Cashout, account_ids: dict[str, int]) -> list[Transfer]:
    """A cash-out paid before payables were settled: its payable settled now, once, with a code
    of its own."""
    names = StepNames(
        topics.PAYOUTS_UPDATED,
        cashout.cashout_id,
        cashout_event_id(cashout.cashout_id, "paid"),
    )
    leg = settlement_leg(cashout, TransferCode.CASHOUT_SETTLED_CATCH_UP)
    catch_up = dataclasses.replace(leg, name="settle_catch_up")
    return linked_chain(cashout, names, [catch_up], account_ids)
