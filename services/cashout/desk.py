"""Cash-outs: a request is checked, held, converted to money, sent to the bank, and posted, or
released when the bank fails or returns it. Every state change is stored with its time and
queued in the outbox for `cashouts.updated`; a held cash-out also queues `payouts.requested`.

Ledger legs (milli-diamonds for DIAMOND, minor units for currencies):

- held: a pending, funded transfer from the creator's available Diamonds to their held Diamonds
  (or from their currency wallet to `payouts_payable`): refused when it would take the available
  balance below zero, however many requests race, because the account is locked while posting.
- paid: the hold is posted; the held Diamonds are redeemed (`diamonds_redeemed`), the part worth
  less than one minor unit of the payout currency goes to `DIAMOND:rounding`, and the money leaves
  through `cashout_conversion` -> `payouts_payable`.
- failed: the hold is voided; the Diamonds are back.
- returned (after paid): new transfers undo the paid legs; the creator's balance is restored.

Conversion is exact integer arithmetic (fractions), rounding down to the payout currency's minor
unit: `payout = floor(milli_diamonds / 1000 / diamonds_per_usd * fx * 10^scale)`. Rates in force at
the request's `occurred_at` are used, so a redelivered request is priced the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger import chart
from ledger.chart import AccountKind, AccountSpec
from ledger.ids import transfer_id
from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import LedgerTransaction
from schemas import topics
from schemas.assets import ASSET_SCALES, CURRENCIES, DIAMOND
from schemas.events import CashoutRequested, CashoutUpdated, PayoutRequested, PayoutUpdated
from services.cashout.eligibility import creator_eligibility
from services.rates.rate_cards import RateCardBook
from services.runtime.settings import EligibilitySettings

MILLI_PER_DIAMOND = 1_000
USD_MICROS = 1_000_000
FX_DECIMAL_PLACES = 18


@dataclass(frozen=True, slots=True)
class CashoutLimits:
    minimum_usd_cents: int = 1_000
    daily_maximum_usd_cents: int = 100_000


@dataclass(frozen=True, slots=True)
class FxRate:
    currency: str
    units_per_usd: Fraction


@dataclass(frozen=True, slots=True)
class Conversion:
    """What a cash-out is worth and pays, all in integers (minor units)."""

    usd_value: Fraction
    payout_amount: int
    redeemed_amount: int  # of the source asset: the part that buys payout_amount exactly
    rounding_amount: int  # of the source asset: worth less than one payout minor unit


async def fx_in_force(conn: AsyncConnection, currency: str, moment: datetime) -> FxRate | None:
    row = (
        await conn.execute(
            text(
                "SELECT units_per_usd_numerator AS n, units_per_usd_denominator AS d"
                " FROM fx_rates WHERE currency = :currency AND effective_from <= :moment"
                " ORDER BY effective_from DESC LIMIT 1"
            ),
            {"currency": currency, "moment": moment},
        )
    ).first()
    return None if row is None else FxRate(currency, Fraction(row.n, row.d))


def convert(
    asset: str, amount: int, diamonds_per_usd: int, source_fx: FxRate | None, payout_fx: FxRate
) -> Conversion:
    """Value `amount` minor units of `asset` in USD and in the payout currency, rounding down."""
    if asset == DIAMOND:
        usd = Fraction(amount, MILLI_PER_DIAMOND * diamonds_per_usd)
    else:
        assert source_fx is not None
        usd = Fraction(amount, 10 ** ASSET_SCALES[asset]) / source_fx.units_per_usd
    payout_per_source_unit = (
        usd / amount * payout_fx.units_per_usd * 10 ** ASSET_SCALES[payout_fx.currency]
    )
    payout = math.floor(amount * payout_per_source_unit)
    redeemed = min(amount, math.ceil(payout / payout_per_source_unit))
    return Conversion(usd, payout, redeemed, amount - redeemed)


def decimal_text(value: Fraction) -> str:
    """A positive fraction as a decimal string, exact when it terminates, else truncated."""
    whole, remainder = divmod(value.numerator, value.denominator)
    digits = []
    for _ in range(FX_DECIMAL_PLACES):
        if remainder == 0:
            break
        digit, remainder = divmod(remainder * 10, value.denominator)
        digits.append(str(digit))
    return f"{whole}.{''.join(digits)}" if digits else str(whole)


@dataclass(slots=True, kw_only=True)
class Cashout:
    cashout_id: str
    creator_id: str
    asset: str
    amount: int
    payout_currency: str
    payout_amount: int | None
    usd_value_micros: int
    rate_card_version: int | None
    fx_numerator: int | None
    fx_denominator: int | None
    status: str
    rejected_rule: str | None
    failure_code: str | None
    payout_account_ref: str | None
    occurred_at: datetime

    def updated_event(self, moment: datetime) -> CashoutUpdated:
        fx = None
        if self.fx_numerator is not None and self.fx_denominator is not None:
            fx = decimal_text(Fraction(self.fx_numerator, self.fx_denominator))
        return CashoutUpdated(
            event_id=f"{self.cashout_id}:{self.status}"[:128],
            occurred_at=moment,
            cashout_id=self.cashout_id,
            creator_id=self.creator_id,
            status=self.status,  # type: ignore[arg-type]
            asset=self.asset,
            amount=self.amount,
            payout_currency=self.payout_currency,
            payout_amount=self.payout_amount,
            rate_card_version=self.rate_card_version,
            fx_rate=fx,
            failure_code=self.failure_code,
            rejected_rule=self.rejected_rule,
        )


def hold_source(creator_id: str, asset: str) -> AccountSpec:
    if asset == DIAMOND:
        return chart.creator_diamonds_available(creator_id)
    return chart.creator_wallet(creator_id, asset)


def hold_target(creator_id: str, asset: str) -> AccountSpec:
    if asset == DIAMOND:
        return chart.creator_diamonds_held(creator_id)
    return chart.platform(AccountKind.PAYOUTS_PAYABLE, asset)


def request_accounts(event: CashoutRequested) -> list[AccountSpec]:
    specs = [hold_source(event.creator_id, event.asset), hold_target(event.creator_id, event.asset)]
    return specs + settlement_accounts(event.payout_currency)


def settlement_accounts(payout_currency: str) -> list[AccountSpec]:
    return [
        chart.platform(AccountKind.DIAMONDS_REDEEMED, DIAMOND),
        chart.platform(AccountKind.ROUNDING, DIAMOND),
        chart.platform(AccountKind.CASHOUT_CONVERSION, payout_currency),
        chart.platform(AccountKind.PAYOUTS_PAYABLE, payout_currency),
    ]


def _hold_id(cashout_id: str) -> uuid.UUID:
    return transfer_id(topics.CASHOUTS_REQUESTED, cashout_id, "hold")


class CashoutDesk:
    """Applies cash-out requests and payout results inside the caller's transaction."""

    def __init__(
        self, limits: CashoutLimits, eligibility: EligibilitySettings, topic_prefix: str = ""
    ) -> None:
        self.limits = limits
        self.eligibility = eligibility
        # Whose outbox rows these are: the deployment that publishes to `<topic_prefix><topic>`.
        self.topic_prefix = topic_prefix

    async def request(
        self,
        tx: LedgerTransaction,
        event: CashoutRequested,
        rate_cards: RateCardBook,
        account_ids: dict[str, int],
    ) -> Cashout:
        """Check, price and hold one request in the unit of work `tx`; returns the cash-out,
        held or rejected."""
        conn = tx.connection
        amount = event.amount * MILLI_PER_DIAMOND if event.asset == DIAMOND else event.amount
        card = rate_cards.in_force_at(event.occurred_at)
        cashout = Cashout(
            cashout_id=event.event_id,
            creator_id=event.creator_id,
            asset=event.asset,
            amount=amount,
            payout_currency=event.payout_currency,
            payout_amount=None,
            usd_value_micros=0,
            rate_card_version=card.version if event.asset == DIAMOND else None,
            fx_numerator=None,
            fx_denominator=None,
            status="requested",
            rejected_rule=None,
            failure_code=None,
            payout_account_ref=None,
            occurred_at=event.occurred_at,
        )
        await self._store(conn, cashout, new=True)
        rule = await self._refusal(conn, event, cashout, card.diamonds_per_usd)
        if rule is None:
            hold = Transfer(
                id=_hold_id(cashout.cashout_id),
                debit_account_id=account_ids[hold_source(event.creator_id, event.asset).name],
                credit_account_id=account_ids[hold_target(event.creator_id, event.asset).name],
                amount=amount,
                code=TransferCode.CASHOUT_HOLD,
                flags=TransferFlags.PENDING | TransferFlags.FUNDED,
                rate_card_version=cashout.rate_card_version,
                event_id=event.event_id,
                metadata={"cashout_id": cashout.cashout_id},
            )
            outcome = await tx.post([hold], lock_accounts_first=True)
            if outcome.results[0] is not PostResult.OK:
                rule = "available_balance"
        if rule is not None:
            cashout.status, cashout.rejected_rule = "rejected", rule
            await self._store(conn, cashout, detail=rule)
            return cashout
        cashout.status = "held"
        await self._store(conn, cashout)
        payout = PayoutRequested(
            event_id=f"{cashout.cashout_id}:payout"[:128],
            occurred_at=datetime.now(UTC),
            cashout_id=cashout.cashout_id,
            creator_id=cashout.creator_id,
            amount=cashout.payout_amount or 0,
            currency=cashout.payout_currency,
            payout_account_ref=cashout.payout_account_ref or "",
        )
        await queue(
            conn,
            self.topic_prefix,
            topics.PAYOUTS_REQUESTED,
            cashout.creator_id,
            payout.model_dump_json(),
        )
        return cashout

    async def _refusal(
        self,
        conn: AsyncConnection,
        event: CashoutRequested,
        cashout: Cashout,
        diamonds_per_usd: int,
    ) -> str | None:
        """The first rule the request breaks, or None; prices the cash-out as it goes."""
        report = await creator_eligibility(
            conn, event.creator_id, self.eligibility, event.occurred_at.astimezone(UTC).date()
        )
        if not report.eligible:
            return report.first_failed_rule
        profile_ref = await conn.execute(
            text("SELECT payout_account_ref FROM creators WHERE creator_id = :c"),
            {"c": event.creator_id},
        )
        cashout.payout_account_ref = profile_ref.scalar_one_or_none()
        if cashout.payout_account_ref is None:
            return "payout_account"
        if event.asset != DIAMOND and event.asset != event.payout_currency:
            return "payout_currency"
        payout_fx = await fx_in_force(conn, event.payout_currency, event.occurred_at)
        if payout_fx is None:
            return "fx_rate"
        conversion = convert(cashout.asset, cashout.amount, diamonds_per_usd, payout_fx, payout_fx)
        cashout.payout_amount = conversion.payout_amount
        cashout.usd_value_micros = math.floor(conversion.usd_value * USD_MICROS)
        cashout.fx_numerator = payout_fx.units_per_usd.numerator
        cashout.fx_denominator = payout_fx.units_per_usd.denominator
        if (
            conversion.usd_value * 100 < self.limits.minimum_usd_cents
            or not conversion.payout_amount
        ):
            return "minimum"
        spent = await conn.execute(
            text(
                "SELECT coalesce(sum(usd_value_micros), 0) FROM cashouts"
                " WHERE creator_id = :c AND requested_on = :day AND cashout_id <> :id"
                " AND status NOT IN ('rejected', 'failed', 'returned')"
            ),
            {
                "c": event.creator_id,
                "day": event.occurred_at.astimezone(UTC).date(),
                "id": cashout.cashout_id,
            },
        )
        daily_micros = self.limits.daily_maximum_usd_cents * (USD_MICROS // 100)
        if int(spent.scalar_one()) + cashout.usd_value_micros > daily_micros:
            return "daily_limit"
        return None

    async def payout_result(
        self,
        tx: LedgerTransaction,
        event: PayoutUpdated,
        rate_cards: RateCardBook,
        account_ids: dict[str, int],
    ) -> str | None:
        """Apply a payout result in the unit of work `tx`; returns None, or why it was not
        applied (for the DLQ)."""
        conn = tx.connection
        cashout = await load_cashout(conn, event.cashout_id, lock=True)
        if cashout is None:
            return "unknown_cashout"
        if cashout.status not in ALLOWED_BEFORE[event.status]:
            return f"cashout_is_{cashout.status}"
        transfers = result_transfers(cashout, event, rate_cards, account_ids)
        outcome = await tx.post(transfers, lock_accounts_first=True)
        if not all(result is PostResult.OK for result in outcome.results):
            refused = sorted({r.value for r in outcome.results if r is not PostResult.OK})
            raise RuntimeError(f"cash-out {cashout.cashout_id}: ledger refused {refused}")
        cashout.status = event.status
        cashout.failure_code = event.failure_code
        await self._store(conn, cashout, detail=event.failure_code or "")
        return None

    async def mark_submitted(self, conn: AsyncConnection, cashout_id: str) -> None:
        """The payout request left for the bank: `held` becomes `submitted` (a result that came
        back first has already moved it on, and is left alone)."""
        cashout = await load_cashout(conn, cashout_id, lock=True)
        if cashout is not None and cashout.status == "held":
            cashout.status = "submitted"
            await self._store(conn, cashout)

    async def _store(
        self, conn: AsyncConnection, cashout: Cashout, *, new: bool = False, detail: str = ""
    ) -> None:
        values = {
            "id": cashout.cashout_id,
            "creator": cashout.creator_id,
            "asset": cashout.asset,
            "amount": cashout.amount,
            "currency": cashout.payout_currency,
            "payout": cashout.payout_amount,
            "usd": cashout.usd_value_micros,
            "card": cashout.rate_card_version,
            "fx_n": cashout.fx_numerator,
            "fx_d": cashout.fx_denominator,
            "status": cashout.status,
            "rule": cashout.rejected_rule,
            "failure": cashout.failure_code,
            "ref": cashout.payout_account_ref,
            "day": cashout.occurred_at.astimezone(UTC).date(),
            "occurred_at": cashout.occurred_at,
        }
        if new:
            await conn.execute(
                text(
                    """
                    INSERT INTO cashouts (cashout_id, creator_id, asset, amount, payout_currency,
                        payout_amount, usd_value_micros, rate_card_version, fx_numerator,
                        fx_denominator, status, rejected_rule, failure_code, payout_account_ref,
                        requested_on, occurred_at)
                    VALUES (:id, :creator, :asset, :amount, :currency, :payout, :usd, :card,
                        :fx_n, :fx_d, :status, :rule, :failure, :ref, :day, :occurred_at)
                    """
                ),
                values,
            )
        else:
            await conn.execute(
                text(
                    """
                    UPDATE cashouts SET payout_amount = :payout, usd_value_micros = :usd,
                        rate_card_version = :card, fx_numerator = :fx_n, fx_denominator = :fx_d,
                        status = :status, rejected_rule = :rule, failure_code = :failure,
                        payout_account_ref = :ref, updated_at = clock_timestamp()
                    WHERE cashout_id = :id
                    """
                ),
                values,
            )
        await record_transition(conn, cashout, self.topic_prefix, detail)


ALLOWED_BEFORE = {
    "paid": ("held", "submitted"),
    "failed": ("held", "submitted"),
    "returned": ("paid",),
}

LegSpec = tuple[str, AccountSpec, AccountSpec, int, TransferCode]


def settlement_legs(cashout: Cashout, rate_cards: RateCardBook) -> list[LegSpec]:
    """What a paid cash-out moves besides posting its hold: the held Diamonds are redeemed (the
    part worth less than a minor unit of money to rounding) and the money goes to
    payouts_payable. A currency cash-out's hold already sits in payouts_payable: nothing more."""
    if cashout.asset != DIAMOND:
        return []
    assert cashout.payout_amount is not None
    assert cashout.rate_card_version is not None
    assert cashout.fx_numerator is not None
    assert cashout.fx_denominator is not None
    card = rate_cards.version(cashout.rate_card_version)
    fx = FxRate(cashout.payout_currency, Fraction(cashout.fx_numerator, cashout.fx_denominator))
    conversion = convert(DIAMOND, cashout.amount, card.diamonds_per_usd, None, fx)
    held = chart.creator_diamonds_held(cashout.creator_id)
    legs: list[LegSpec] = [
        (
            "redeem",
            held,
            chart.platform(AccountKind.DIAMONDS_REDEEMED, DIAMOND),
            conversion.redeemed_amount,
            TransferCode.CASHOUT_CONVERSION,
        )
    ]
    if conversion.rounding_amount:
        rounding = chart.platform(AccountKind.ROUNDING, DIAMOND)
        legs.append(("rounding", held, rounding, conversion.rounding_amount, TransferCode.ROUNDING))
    money_from = chart.platform(AccountKind.CASHOUT_CONVERSION, cashout.payout_currency)
    money_to = chart.platform(AccountKind.PAYOUTS_PAYABLE, cashout.payout_currency)
    legs.append(("money", money_from, money_to, cashout.payout_amount, TransferCode.CASHOUT_PAID))
    return legs


def result_transfers(
    cashout: Cashout, event: PayoutUpdated, rate_cards: RateCardBook, account_ids: dict[str, int]
) -> list[Transfer]:
    """The linked chain that a payout result posts."""
    hold_id = _hold_id(cashout.cashout_id)

    def resolve(name: str, flags: TransferFlags, code: TransferCode) -> Transfer:
        return Transfer(
            id=transfer_id(topics.PAYOUTS_UPDATED, cashout.cashout_id, name),
            debit_account_id=0,
            credit_account_id=0,
            amount=0,
            code=code,
            flags=flags,
            pending_id=hold_id,
            event_id=event.event_id,
        )

    if event.status == "failed":
        return [resolve("void", TransferFlags.VOID_PENDING, TransferCode.CASHOUT_RELEASED)]
    settle = settlement_legs(cashout, rate_cards)
    if event.status == "paid":
        first = [resolve("post", TransferFlags.POST_PENDING, TransferCode.CASHOUT_PAID)]
        legs = settle
    else:  # returned: undo the settlement legs, then the hold's own movement
        first = []
        source = hold_source(cashout.creator_id, cashout.asset)
        target = hold_target(cashout.creator_id, cashout.asset)
        legs = [(f"return_{n}", c, d, a, TransferCode.CASHOUT_RETURNED) for n, d, c, a, _ in settle]
        legs.append(("return_hold", target, source, cashout.amount, TransferCode.CASHOUT_RETURNED))
    chain = first + [
        Transfer(
            id=transfer_id(topics.PAYOUTS_UPDATED, cashout.cashout_id, name),
            debit_account_id=account_ids[debit.name],
            credit_account_id=account_ids[credit.name],
            amount=amount,
            code=code,
            rate_card_version=cashout.rate_card_version,
            event_id=event.event_id,
            metadata={"cashout_id": cashout.cashout_id},
        )
        for name, debit, credit, amount, code in legs
    ]
    return [
        dataclasses.replace(transfer, flags=transfer.flags | TransferFlags.LINKED)
        if position < len(chain) - 1
        else transfer
        for position, transfer in enumerate(chain)
    ]


async def record_transition(
    conn: AsyncConnection, cashout: Cashout, topic_prefix: str, detail: str = ""
) -> None:
    """Store the state change with its time and queue it for `cashouts.updated` (on the topics
    of the deployment with `topic_prefix`)."""
    moment = (
        await conn.execute(
            text(
                "INSERT INTO cashout_transitions (cashout_id, status, detail)"
                " VALUES (:id, :status, :detail) RETURNING at"
            ),
            {"id": cashout.cashout_id, "status": cashout.status, "detail": detail},
        )
    ).scalar_one()
    event = cashout.updated_event(moment)
    await queue(
        conn, topic_prefix, topics.CASHOUTS_UPDATED, cashout.creator_id, event.model_dump_json()
    )


async def queue(
    conn: AsyncConnection, topic_prefix: str, topic: str, key: str, payload: str
) -> None:
    """An outbox row for the deployment publishing to `<topic_prefix><topic>`."""
    await conn.execute(
        text(
            "INSERT INTO outbox (topic_prefix, topic, message_key, payload)"
            " VALUES (:prefix, :t, :k, :p)"
        ),
        {"prefix": topic_prefix, "t": topic, "k": key, "p": payload.encode()},
    )


_CASHOUT_ROWS = """
    SELECT cashout_id, creator_id, asset, amount, payout_currency, payout_amount,
           usd_value_micros, rate_card_version, fx_numerator, fx_denominator, status,
           rejected_rule, failure_code, payout_account_ref, occurred_at
    FROM cashouts
"""
_SELECT_CASHOUT = _CASHOUT_ROWS + " WHERE cashout_id = :id"
_SELECT_LOCKED_CASHOUT = _SELECT_CASHOUT + " FOR UPDATE"


async def load_cashout(
    conn: AsyncConnection, cashout_id: str, *, lock: bool = False
) -> Cashout | None:
    row = (
        await conn.execute(
            text(_SELECT_LOCKED_CASHOUT if lock else _SELECT_CASHOUT),
            {"id": cashout_id},
        )
    ).first()
    return None if row is None else Cashout(**row._mapping)


def cashout_document(cashout: Cashout) -> dict[str, Any]:
    return json.loads(cashout.updated_event(datetime.now(UTC)).model_dump_json())  # type: ignore[no-any-return]


CASHOUT_LIST_LIMIT_MAX = 1_000
OPEN_STATUSES = ("held", "submitted")


async def list_cashouts(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    creator_id: str | None = None,
    stale_after_s: float | None = None,
    limit: int = 100,
) -> list[Cashout]:
    """Cash-outs, newest first, filtered by status and creator; with `stale_after_s`, only the
    holds that have waited longer than that for the bank's answer."""
    if not 1 <= limit <= CASHOUT_LIST_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {CASHOUT_LIST_LIMIT_MAX}")
    rows = await conn.execute(
        text(
            _CASHOUT_ROWS
            + """
            WHERE (CAST(:status AS text) IS NULL OR status = :status)
              AND (CAST(:creator AS text) IS NULL OR creator_id = :creator)
              AND (CAST(:stale_s AS double precision) IS NULL
                   OR (status IN ('held', 'submitted')
                       AND updated_at < clock_timestamp() - make_interval(secs => :stale_s)))
            ORDER BY occurred_at DESC, cashout_id
            LIMIT :limit
            """
        ),
        {"status": status, "creator": creator_id, "stale_s": stale_after_s, "limit": limit},
    )
    return [Cashout(**row._mapping) for row in rows]


@dataclass(frozen=True, slots=True)
class FxVersion:
    currency: str
    effective_from: datetime | None  # None: in force since the beginning of time
    units_per_usd: Fraction


async def list_fx_rates(conn: AsyncConnection) -> list[FxVersion]:
    """Every FX version, by currency then start."""
    rows = await conn.execute(
        text(
            "SELECT currency,"
            " CASE WHEN isfinite(effective_from) THEN effective_from END AS effective_from,"
            " units_per_usd_numerator AS n, units_per_usd_denominator AS d"
            " FROM fx_rates ORDER BY currency, effective_from"
        )
    )
    return [FxVersion(row.currency, row.effective_from, Fraction(row.n, row.d)) for row in rows]


async def add_fx_rate(
    conn: AsyncConnection, currency: str, units_per_usd: Fraction, effective_from: datetime
) -> None:
    """Add a rate; like rate cards, it must take effect in the future, never rewrite the past."""
    if currency not in CURRENCIES:
        raise ValueError(f"unknown currency {currency!r}: not an ISO 4217 code giftledger pays in")
    now = (await conn.execute(text("SELECT now()"))).scalar_one()
    if effective_from <= now:
        raise ValueError(f"effective_from must be in the future (now is {now.isoformat()})")
    if units_per_usd <= 0:
        raise ValueError("units per USD must be positive")
    await conn.execute(
        text(
            "INSERT INTO fx_rates (currency, effective_from, units_per_usd_numerator,"
            " units_per_usd_denominator) VALUES (:c, :at, :n, :d)"
        ),
        {
            "c": currency,
            "at": effective_from,
            "n": units_per_usd.numerator,
            "d": units_per_usd.denominator,
        },
    )
