"""One handler per consumed topic, in `HANDLERS`. Each takes the parsed events of one batch and
applies them in one unit of work of the ledger (`Ledger.transactions()`): it drops the events
already applied, posts the rest, and records them as applied (or dead-lettered) in the same
transaction, so a redelivered batch changes nothing.

Gifts, most of the traffic, take the ledger's path for new transfers (`post_new`): a gift whose
event is not applied yet has no transfer yet. Tips, fund rewards, marketplace payments and
reversals post linked chains of legs (`post`), whose stored ids make a repeat a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chain import metadata_json
from ledger.chart import AccountSpec
from ledger.ids import transfer_id
from ledger.model import (
    NewTransfers,
    PostResult,
    StoredTransfer,
    Transfer,
    TransferCode,
    TransferFlags,
)
from ledger.service import Ledger, LedgerTransaction
from schemas import topics
from schemas.events import (
    CashoutRequested,
    Event,
    FundRewarded,
    GiftReversed,
    GiftSent,
    MarketplacePaid,
    PayoutUpdated,
    TipReceived,
)
from services.cashout.desk import UNKNOWN_CASHOUT, CashoutDesk, request_accounts
from services.cashout.profiles import apply_creator_updates
from services.cashout.store import lock_cashout_rows
from services.ingestion.event_store import EventStore
from services.ingestion.event_transfers import (
    GIFT_DIAMOND_SOURCE,
    TIP_LEG,
    GiftTransfer,
    Leg,
    batch_coin_leg,
    fund_legs,
    gift_transfer,
    gift_transfer_id,
    legacy_gift_transfer_id,
    marketplace_legs,
    reversal_legs,
    tip_legs,
)
from services.ingestion.records import BatchReport, DeadLetter, ParsedEvent
from services.rates.rate_cards import RateCardBook
from services.runtime.creator_locks import lock_creators

# A payout result that would wait behind an earlier parked result of its cash-out, with the
# parking full (`_results_in`).
EARLIER_RESULT_PARKED = "earlier_result_parked"
# A tip whose card charge another event credited already (`_leg_transfer_id`).
CHARGE_ALREADY_APPLIED = "charge_already_applied"
CHARGE_LEG_PREFIX = "charge:"
# As plain ints: IntFlag members cost an enum lookup at each use in the per-transfer loop.
_NO_FLAGS = int(TransferFlags.NONE)
_LINKED = int(TransferFlags.LINKED)
_GIFT_DIAMONDS = int(TransferCode.GIFT_DIAMONDS)
_COIN_ACCOUNTS = (batch_coin_leg(1, 1).debit, batch_coin_leg(1, 1).credit)

# An event's legs and the rate card version that priced them (None: not priced by a card).
PlannedLegs = tuple[list[Leg], int | None]


@dataclass(slots=True)
class HandlerContext:
    """What the handlers work with: the ledger, the rate cards in force (refreshed by the
    consumer service), the cash-out desk and the ingestion's own store."""

    ledger: Ledger
    rate_cards: RateCardBook
    desk: CashoutDesk
    events: EventStore
    # Set for the sweep of parked events (`Ingestor.retry_parked`): its transaction locks the
    # parked rows first and gives an event dead-lettered already its verdict again
    # (`EventStore.hold_parked`), and a dead-lettered event stays parked, its verdict
    # committed, until its dead letter is published; then it leaves the parking.
    sweeping: bool = False


Handler = Callable[[HandlerContext, list[ParsedEvent], BatchReport], Awaitable[None]]


# gifts.sent ---------------------------------------------------------------------------------


async def on_gifts_sent(
    context: HandlerContext, items: list[ParsedEvent], report: BatchReport
) -> None:
    """Each fresh gift is one transfer, stored with no lookup of its id, since its `event_id`
    was not applied yet; the batch's coins are one transfer per rate card version."""
    gifts: dict[str, GiftTransfer] = {}
    specs = [GIFT_DIAMOND_SOURCE, *_COIN_ACCOUNTS]
    for item in items:
        event = item.event
        if event.event_id not in gifts:  # only a first copy can be applied
            assert isinstance(event, GiftSent)
            gift = gift_transfer(event, context.rate_cards.in_force_at(event.occurred_at))
            gifts[event.event_id] = gift
            specs.append(gift.creator_account)
    account_ids = await context.ledger.account_ids(specs)
    early_letters = list(report.dead_letters)
    async for tx in context.ledger.transactions():
        async with tx:
            batch_report = await _gifts_in(tx, context, items, gifts, account_ids, early_letters)
    report.absorb(batch_report)


async def _gifts_in(
    tx: LedgerTransaction,
    context: HandlerContext,
    items: list[ParsedEvent],
    gifts: dict[str, GiftTransfer],
    account_ids: dict[str, int],
    early_letters: list[DeadLetter],
) -> BatchReport:
    """The transaction of one batch of gifts. Its events are recorded as applied unless they
    are already (`EventStore.claim_applied`); one that another consumer is applying meanwhile
    is recorded once that consumer commits or rolls back, and then found applied or recorded.

    The applied events and dead letters are written first: the ledger's write locks the
    platform's accounts, which every consumer's batch of gifts updates, until the commit. It
    is the last statement, so it links the hash chain itself (`last=True`)."""
    report = BatchReport()
    conn = tx.connection
    events = context.events
    fresh = await events.claim_applied(conn, topics.GIFTS_SENT, items, report)
    report.dead_letters_recorded = await events.record_dead_letters(
        conn, topics.GIFTS_SENT, [*early_letters, *report.dead_letters]
    )
    sent = [item.event for item in fresh if isinstance(item.event, GiftSent)]
    batch = gift_batch(sent, gifts, account_ids)
    if batch:
        await tx.post_new(batch, last=True)
    report.applied = len(fresh)
    return report


def gift_batch(
    events: Sequence[GiftSent], gifts: Mapping[str, GiftTransfer], account_ids: Mapping[str, int]
) -> NewTransfers:
    """The transfers of gifts applied together: one per gift (its creator's share, issued as
    diamonds), then one coin transfer per rate card version for the gifts' coins.

    The coin transfer's id is new on every attempt: it is stored only with the gifts it counts,
    in the same transaction, and a redelivered gift is filtered out before it is counted again."""
    planned = [gifts[event.event_id] for event in events]
    size = len(planned)
    # Column by column: a list per column costs less than a call per gift.
    versions: list[int | None] = [gift.rate_card_version for gift in planned]
    event_ids: list[str | None] = [event.event_id for event in events]
    texts: list[str | None] = [gift.metadata_text for gift in planned]
    batch = NewTransfers(
        ids=[gift.transfer_id for gift in planned],
        debit_account_ids=[account_ids[GIFT_DIAMOND_SOURCE.name]] * size,
        credit_account_ids=[account_ids[gift.creator_account.name] for gift in planned],
        amounts=[gift.milli_diamonds for gift in planned],
        codes=[_GIFT_DIAMONDS] * size,
        rate_card_versions=versions,
        event_ids=event_ids,
        metadata_texts=texts,
    )
    coins_by_version: dict[int, tuple[int, int]] = {}
    for event, gift in zip(events, planned, strict=True):
        coins, gift_count = coins_by_version.get(gift.rate_card_version, (0, 0))
        coins_by_version[gift.rate_card_version] = (
            coins + event.coins * event.count,
            gift_count + 1,
        )
    for version, (coins, count) in sorted(coins_by_version.items()):
        leg = batch_coin_leg(coins, count)
        batch.add(
            transfer_id=uuid.uuid4(),
            debit_account_id=account_ids[leg.debit.name],
            credit_account_id=account_ids[leg.credit.name],
            amount=leg.amount,
            code=int(leg.code),
            rate_card_version=version,
            event_id=None,
            metadata_text=metadata_json(leg.metadata),
        )
    return batch


# tips.received, fund.rewarded, marketplace.paid ---------------------------------------------


async def on_tips_received(
    context: HandlerContext, items: list[ParsedEvent], report: BatchReport
) -> None:
    await _post_legs(context, topics.TIPS_RECEIVED, items, report)


async def on_fund_rewarded(
    context: HandlerContext, items: list[ParsedEvent], report: BatchReport
) -> None:
    await _post_legs(context, topics.FUND_REWARDED, items, report)


async def on_marketplace_paid(
    context: HandlerContext, items: list[ParsedEvent], report: BatchReport
) -> None:
    await _post_legs(context, topics.MARKETPLACE_PAID, items, report)


def _legs_of(event: Event) -> list[Leg]:
    """The legs of a tip, a fund reward or a marketplace payment."""
    if isinstance(event, TipReceived):
        return tip_legs(event)
    if isinstance(event, FundRewarded):
        return fund_legs(event)
    if isinstance(event, MarketplacePaid):
        return marketplace_legs(event)
    raise AssertionError(f"no legs for {type(event).__name__}")


async def _post_legs(
    context: HandlerContext, topic: str, items: list[ParsedEvent], report: BatchReport
) -> None:
    planned: dict[str, PlannedLegs] = {}
    specs: list[AccountSpec] = []
    for item in items:
        if item.event.event_id not in planned:  # only a first copy can be applied
            legs = _legs_of(item.event)
            planned[item.event.event_id] = (legs, None)
            specs += [spec for leg in legs for spec in (leg.debit, leg.credit)]
    await _post_planned(context, topic, items, planned, specs, report)


# gifts.reversed -----------------------------------------------------------------------------


async def on_gifts_reversed(
    context: HandlerContext, items: list[ParsedEvent], report: BatchReport
) -> None:
    """A reversal is priced from its gift's stored transfer; one whose gift has not arrived is
    parked, and dead-lettered once its wait is over."""
    specs = [spec for item in items for spec in _reversal_accounts(item.event)]
    await _post_planned(context, topics.GIFTS_REVERSED, items, {}, specs, report)


def _reversal_accounts(event: Event) -> list[AccountSpec]:
    """The accounts a reversal touches, known before its gift is looked up."""
    assert isinstance(event, GiftReversed)
    legs = reversal_legs(event, coins=1, milli_diamonds=1)
    return [spec for leg in legs for spec in (leg.debit, leg.credit)]


async def _gift_transfer_ids(
    tx: LedgerTransaction, events: EventStore, gift_event_ids: list[str]
) -> dict[str, tuple[uuid.UUID, ...]]:
    """The ids under which each applied gift's transfer may be stored: the time-ordered id from
    the `occurred_at` recorded with the gift's event, and the name-based id of gifts stored
    before time-ordered ids. A gift not applied yet has none: its event is recorded as applied
    in the transaction that stores its transfer."""
    occurred = await events.occurred_at_of(tx.connection, topics.GIFTS_SENT, gift_event_ids)
    return {
        gift_event_id: (
            gift_transfer_id(gift_event_id, occurred_at),
            legacy_gift_transfer_id(gift_event_id),
        )
        for gift_event_id, occurred_at in occurred.items()
    }


def _stored_gift(
    stored: Mapping[uuid.UUID, StoredTransfer], candidate_ids: tuple[uuid.UUID, ...]
) -> StoredTransfer | None:
    for candidate_id in candidate_ids:
        gift = stored.get(candidate_id)
        if gift is not None:
            return gift
    return None


def _gift_coins(gift_diamonds: StoredTransfer) -> int:
    """A gift's coins, as recorded on its diamonds transfer."""
    assert gift_diamonds.metadata is not None
    return int(gift_diamonds.metadata["coins"])


async def _plan_reversals(
    tx: LedgerTransaction,
    context: HandlerContext,
    items: list[ParsedEvent],
    planned: dict[str, PlannedLegs],
    account_ids: dict[str, int],
    report: BatchReport,
) -> list[ParsedEvent]:
    """Price each reversal from its gift's stored transfers; park those whose gift is
    missing (or dead-letter them once their parking deadline has passed)."""
    reversals = [item for item in items if isinstance(item.event, GiftReversed)]
    gift_event_ids = [
        item.event.gift_event_id  # type: ignore[attr-defined]
        for item in reversals
    ]
    gift_ids = await _gift_transfer_ids(tx, context.events, gift_event_ids)
    stored, _ = await tx.read_stored([id_ for ids in gift_ids.values() for id_ in ids])
    now = datetime.now(UTC)
    ready: list[ParsedEvent] = []
    to_park: list[ParsedEvent] = []
    for item in reversals:
        event = item.event
        assert isinstance(event, GiftReversed)
        gift_diamonds = _stored_gift(stored, gift_ids.get(event.gift_event_id, ()))
        if gift_diamonds is not None:
            creator_account = account_ids[_reversal_accounts(event)[2].name]
            if gift_diamonds.credit_account_id != creator_account:
                report.dead_letters.append(
                    DeadLetter(
                        item.record,
                        "creator_mismatch",
                        f"gift {event.gift_event_id} was sent to another creator",
                        event.event_id,
                    )
                )
                continue
            planned[event.event_id] = (
                reversal_legs(event, _gift_coins(gift_diamonds), gift_diamonds.amount),
                gift_diamonds.rate_card_version,
            )
            ready.append(item)
        elif item.from_parking and item.parked_until is not None and item.parked_until <= now:
            report.dead_letters.append(
                DeadLetter(
                    item.record,
                    "gift_not_found",
                    f"gift {event.gift_event_id} did not arrive before {item.parked_until}",
                    event.event_id,
                )
            )
        elif item.from_parking:
            report.still_waiting.add(event.event_id)
        else:
            to_park.append(item)
    await context.events.park(tx.connection, topics.GIFTS_REVERSED, to_park, now)
    report.parked += len(to_park)
    return ready


# Posting planned legs (tips, fund, marketplace, reversals) ----------------------------------


async def _post_planned(
    context: HandlerContext,
    topic: str,
    items: list[ParsedEvent],
    planned: dict[str, PlannedLegs],
    specs: list[AccountSpec],
    report: BatchReport,
) -> None:
    account_ids = await context.ledger.account_ids(specs)
    early_letters = list(report.dead_letters)
    async for tx in context.ledger.transactions():
        async with tx:
            batch_report = await _legs_in(
                tx, context, topic, items, dict(planned), account_ids, early_letters
            )
    report.absorb(batch_report)


async def _legs_in(
    tx: LedgerTransaction,
    context: HandlerContext,
    topic: str,
    items: list[ParsedEvent],
    planned: dict[str, PlannedLegs],
    account_ids: dict[str, int],
    early_letters: list[DeadLetter],
) -> BatchReport:
    """The transaction of one batch; `early_letters` (bad input found before it) are
    recorded with it."""
    report = BatchReport()
    conn = tx.connection
    events = context.events
    if context.sweeping:
        items = await events.hold_parked(conn, topic, items, report)
    fresh = await events.drop_applied(conn, topic, items, report)
    if topic == topics.GIFTS_REVERSED:
        fresh = await _plan_reversals(tx, context, fresh, planned, account_ids, report)
    transfers: list[Transfer] = []
    owners: list[ParsedEvent] = []
    for item in fresh:
        legs, version = planned[item.event.event_id]
        for position, leg in enumerate(legs):
            last = position == len(legs) - 1
            transfers.append(
                Transfer(
                    id=_leg_transfer_id(topic, item.event, leg),
                    debit_account_id=account_ids[leg.debit.name],
                    credit_account_id=account_ids[leg.credit.name],
                    amount=leg.amount,
                    code=leg.code,
                    flags=_NO_FLAGS if last else _LINKED,
                    rate_card_version=version,
                    event_id=item.event.event_id,
                    metadata=leg.metadata,
                )
            )
            owners.append(item)
    outcome = await tx.post(transfers)
    results_by_event: dict[str, list[PostResult]] = {}
    for item, result in zip(owners, outcome.results, strict=False):
        results_by_event.setdefault(item.event.event_id, []).append(result)
    applied: list[ParsedEvent] = []
    charged_again: list[ParsedEvent] = []
    for item in fresh:
        results = results_by_event[item.event.event_id]
        if all(result is PostResult.OK for result in results):
            applied.append(item)
        elif all(result is PostResult.EXISTS for result in results):
            report.duplicates += 1
        elif isinstance(item.event, TipReceived) and _found_stored(results):
            charged_again.append(item)
        else:
            refused = sorted({r.value for r in results if r is not PostResult.OK})
            error = "already_reversed" if topic == topics.GIFTS_REVERSED else "ledger_refused"
            report.dead_letters.append(
                DeadLetter(item.record, error, ", ".join(refused), item.event.event_id)
            )
    report.dead_letters += await _charges_credited_before(tx, charged_again)
    await events.record_applied(conn, topic, applied)
    letters = [*early_letters, *report.dead_letters]
    report.dead_letters_recorded = await events.record_dead_letters(conn, topic, letters)
    await events.unpark(conn, topic, _settled(context, items, report, letters))
    report.applied = len(applied)
    return report


def _leg_transfer_id(topic: str, event: Event, leg: Leg) -> uuid.UUID:
    # A gift is reversed at most once, whatever the reversal event's id.
    if isinstance(event, GiftReversed):
        return transfer_id(topic, event.gift_event_id, leg.name)
    # A card processor's charge is credited at most once, whatever the tip event's id (a
    # webhook retried upstream under a new event id). The leg names of a charge's ids start
    # with `charge:`, so they never meet an id named after an event.
    if isinstance(event, TipReceived):
        return _charge_leg_id(event.charge_id, leg.name)
    return transfer_id(topic, event.event_id, leg.name)


def _charge_leg_id(charge_id: str, leg_name: str) -> uuid.UUID:
    return transfer_id(topics.TIPS_RECEIVED, charge_id, f"{CHARGE_LEG_PREFIX}{leg_name}")


def _found_stored(results: list[PostResult]) -> bool:
    """Whether a leg of the event found a transfer of its id stored already (the event's other
    legs then fail with it: they are linked)."""
    stored = (PostResult.EXISTS, PostResult.EXISTS_WITH_DIFFERENT_FIELDS)
    return any(result in stored for result in results)


async def _charges_credited_before(
    tx: LedgerTransaction, items: list[ParsedEvent]
) -> list[DeadLetter]:
    """Dead letters for tips whose charge another event credited already, each naming it."""
    if not items:
        return []
    first_ids = {
        item.event.event_id: _charge_leg_id(item.event.charge_id, TIP_LEG)
        for item in items
        if isinstance(item.event, TipReceived)
    }
    stored, _ = await tx.read_stored(first_ids.values())
    letters = []
    for item in items:
        event = item.event
        assert isinstance(event, TipReceived)
        credited = stored.get(first_ids[event.event_id])
        by = f"event {credited.event_id}" if credited is not None else "another event"
        detail = f"charge {event.charge_id} was credited by {by} already"
        letters.append(DeadLetter(item.record, CHARGE_ALREADY_APPLIED, detail, event.event_id))
    return letters


# creators.updated ---------------------------------------------------------------------------


async def on_creators_updated(
    context: HandlerContext, items: list[ParsedEvent], report: BatchReport
) -> None:
    """Creator profile updates: a projection, not transfers, but applied exactly like them:
    deduplicated by event_id and recorded in the same transaction."""
    early_letters = list(report.dead_letters)
    topic = topics.CREATORS_UPDATED
    events = context.events
    async for tx in context.ledger.transactions():
        async with tx:
            batch_report = BatchReport()
            conn = tx.connection
            fresh = await events.drop_applied(conn, topic, items, batch_report)
            updates = [item.event for item in fresh]
            await apply_creator_updates(conn, updates)  # type: ignore[arg-type]
            await events.record_applied(conn, topic, fresh)
            letters = [*early_letters, *batch_report.dead_letters]
            batch_report.dead_letters_recorded = await events.record_dead_letters(
                conn, topic, letters
            )
            batch_report.applied = len(fresh)
    report.absorb(batch_report)


# cashouts.requested, payouts.updated --------------------------------------------------------


async def on_cashouts_requested(
    context: HandlerContext, items: list[ParsedEvent], report: BatchReport
) -> None:
    specs = [
        spec
        for item in items
        if isinstance(item.event, CashoutRequested)
        for spec in request_accounts(item.event)
    ]
    await _apply_cashouts(context, topics.CASHOUTS_REQUESTED, items, specs, report)


async def on_payouts_updated(
    context: HandlerContext, items: list[ParsedEvent], report: BatchReport
) -> None:
    """The accounts a payout result moves are its cash-out's: they are looked up in the batch's
    unit of work, with the cash-outs (`_results_in`)."""
    await _apply_cashouts(context, topics.PAYOUTS_UPDATED, items, [], report)


async def _apply_cashouts(
    context: HandlerContext,
    topic: str,
    items: list[ParsedEvent],
    specs: list[AccountSpec],
    report: BatchReport,
) -> None:
    """Cash-out requests and payout results, applied together in one transaction per batch."""
    account_ids = await context.ledger.account_ids(specs)
    early_letters = list(report.dead_letters)
    events = context.events
    async for tx in context.ledger.transactions():
        async with tx:
            batch_report = BatchReport()
            conn = tx.connection
            # Another consumer may be deciding these very records (a rebalance: the old owner
            # still applying the batch the new one read from the committed offsets). What it
            # locks is locked first, until the commit; then what it decided meanwhile is taken
            # as it decided it, never decided again on the state it left.
            await _lock_what_cashouts_decide_on(conn, topic, items)
            if context.sweeping:  # parked results: their rows locked, their verdicts again
                undecided = await events.hold_parked(conn, topic, items, batch_report)
            else:
                undecided = await _verdicts_again(events, conn, topic, items, batch_report)
            fresh = await events.drop_applied(conn, topic, undecided, batch_report)
            if topic == topics.CASHOUTS_REQUESTED:
                applied = await _requests_in(tx, context, fresh, account_ids)
            else:
                applied = await _results_in(tx, context, fresh, batch_report)
            await events.record_applied(conn, topic, applied)
            letters = [*early_letters, *batch_report.dead_letters]
            batch_report.dead_letters_recorded = await events.record_dead_letters(
                conn, topic, letters
            )
            await events.unpark(conn, topic, _settled(context, items, batch_report, letters))
            batch_report.applied = len(applied)
    report.absorb(batch_report)


def _settled(
    context: HandlerContext,
    items: list[ParsedEvent],
    report: BatchReport,
    letters: list[DeadLetter],
) -> list[str]:
    """The event_ids of parked items that leave the parking with this transaction: applied or
    duplicates. Those still waiting stay; so do those a sweep dead-letters, until their dead
    letters are published (`Ingestor.retry_parked`)."""
    staying = report.still_waiting
    if context.sweeping:
        staying = staying | {letter.event_id for letter in letters if letter.event_id}
    return [
        item.event.event_id
        for item in items
        if item.from_parking and item.event.event_id not in staying
    ]


async def _lock_what_cashouts_decide_on(
    conn: AsyncConnection, topic: str, items: Sequence[ParsedEvent]
) -> None:
    """The locks the desk takes first for these items (the creators' of requests, the cash-outs'
    rows of results, each in the desk's order), taken before anything is read."""
    if topic == topics.CASHOUTS_REQUESTED:
        await lock_creators(
            conn,
            [item.event.creator_id for item in items if isinstance(item.event, CashoutRequested)],
        )
        return
    cashout_ids = sorted(
        {item.event.cashout_id for item in items if isinstance(item.event, PayoutUpdated)}
    )
    await lock_cashout_rows(conn, cashout_ids)


async def _verdicts_again(
    events: EventStore,
    conn: AsyncConnection,
    topic: str,
    items: Sequence[ParsedEvent],
    report: BatchReport,
) -> list[ParsedEvent]:
    """The items no one has dead-lettered yet; those someone has are dead-lettered again as they
    were (added to `report`)."""
    verdicts = await events.dead_lettered_before(conn, topic, [item.record for item in items])
    undecided: list[ParsedEvent] = []
    for item in items:
        verdict = verdicts.get((item.record.partition, item.record.offset))
        if verdict is None:
            undecided.append(item)
        else:
            report.dead_letters.append(verdict)
    return undecided


async def _requests_in(
    tx: LedgerTransaction,
    context: HandlerContext,
    fresh: list[ParsedEvent],
    account_ids: dict[str, int],
) -> list[ParsedEvent]:
    """Apply a batch's new cash-out requests together (`CashoutDesk.requests`): their creators'
    locks are all taken first, in key order, before any request locks an account (see
    `services.cashout.desk`)."""
    requests = [item.event for item in fresh if isinstance(item.event, CashoutRequested)]
    assert len(requests) == len(fresh)
    await context.desk.requests(tx, requests, context.rate_cards, account_ids)
    return fresh


async def _results_in(
    tx: LedgerTransaction,
    context: HandlerContext,
    fresh: list[ParsedEvent],
    report: BatchReport,
) -> list[ParsedEvent]:
    """Apply a batch's new payout results together (`CashoutDesk.payout_results`, which locks
    their cash-outs before any account, in id order, as the outbox relay locks the ones it
    submits); one the desk refuses for a state the result does not apply to is dead-lettered
    with the reason.

    A result for a cash-out not known yet (its request not read yet, as after a restore) is
    parked until the request arrives, for `payout_park_s` at most, then dead-lettered
    `unknown_cashout`; while the parking holds `payout_park_count_max` results, it is
    dead-lettered at once. A result whose cash-out has an earlier result parked waits behind it
    (`EventStore.results_behind`). With `payout_park_s` 0 nothing is parked."""
    events = context.events
    parking = events.payout_park_s > 0
    behind = await events.results_behind(tx.connection, fresh) if parking else set()
    deciding = [item for item in fresh if item.event.event_id not in behind]
    results = [item.event for item in deciding if isinstance(item.event, PayoutUpdated)]
    assert len(results) == len(deciding)
    refusals = await context.desk.payout_results(tx, context.ledger, results, context.rate_cards)
    now = datetime.now(UTC)
    applied: list[ParsedEvent] = []
    to_park = [item for item in fresh if item.event.event_id in behind and not item.from_parking]
    report.still_waiting |= {item.event.event_id for item in fresh if item.from_parking} & behind
    for item, result, refusal in zip(deciding, results, refusals, strict=True):
        if refusal is None:
            applied.append(item)
        elif refusal != UNKNOWN_CASHOUT or not parking:
            report.dead_letters.append(_result_letter(item, result, refusal))
        elif not item.from_parking:
            to_park.append(item)
        elif item.parked_until is not None and item.parked_until <= now:
            waited = f"no request for it arrived before {item.parked_until.isoformat()}"
            report.dead_letters.append(_result_letter(item, result, refusal, waited))
        else:
            report.still_waiting.add(result.event_id)
    parked, left_out = await events.park_results(tx.connection, to_park, now)
    report.parked += len(parked)
    no_room = (
        f"not parked: {events.payout_park_count_max} payout results are parked already"
        " (PAYOUT_PARK_COUNT_MAX)"
    )
    for item in left_out:
        event = item.event
        assert isinstance(event, PayoutUpdated)
        refusal = EARLIER_RESULT_PARKED if event.event_id in behind else UNKNOWN_CASHOUT
        report.dead_letters.append(_result_letter(item, event, refusal, no_room))
    return applied


def _result_letter(
    item: ParsedEvent, result: PayoutUpdated, refusal: str, why: str = ""
) -> DeadLetter:
    """The dead letter of a payout result refused for `refusal` (its error), `why` added."""
    detail = f"payout {result.status} for cash-out {result.cashout_id}: {refusal}"
    if why:
        detail += f" ({why})"
    return DeadLetter(item.record, refusal[:64], detail, result.event_id)


HANDLERS: dict[str, Handler] = {
    topics.GIFTS_SENT: on_gifts_sent,
    topics.GIFTS_REVERSED: on_gifts_reversed,
    topics.TIPS_RECEIVED: on_tips_received,
    topics.FUND_REWARDED: on_fund_rewarded,
    topics.MARKETPLACE_PAID: on_marketplace_paid,
    topics.CREATORS_UPDATED: on_creators_updated,
    topics.CASHOUTS_REQUESTED: on_cashouts_requested,
    topics.PAYOUTS_UPDATED: on_payouts_updated,
}
