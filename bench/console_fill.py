"""A big ledger for `bench.console_bench`, filled through giftledger's own code.

- creators' profiles: `Ingestor.process` on `creators.updated` (one creator in ten does not
  qualify to cash out, so that the desk rejects some requests);
- gifts: the very transfers the `gifts.sent` handler posts (`bench.ledger_alone`: one transfer
  per gift and one coin transfer per batch), posted through the `Ledger`'s batch path by two
  writers; creators Zipf-distributed, so that a few creators have long statements. The ledger
  stamps them with the database's clock, all within the minutes the fill takes; a month of a
  running service spreads them over its days, so the fill then moves their commit timestamps
  (and their keys') evenly over the days of the month before today, in `seq` order (as the
  schema's owner, with the append-only triggers off: the hash chain no longer matches, which no
  page reads). On the month's first day they stay where they were stamped;
- cash-outs: `Ingestor.process` on `cashouts.requested` (held, or rejected), then the desk's
  `mark_submitted` for most of the held ones and `payouts.updated` results (paid, failed,
  returned), so that every state has rows;
- dead letters: `Ingestor.process` on records that cannot be applied (not JSON, schema
  violations), over several topics;
- operator actions: the `OperatorDesk` proposes adjustments, approves some, freezes creators and
  unfreezes a few;
- a bank reconciliation (`services.reconcile.reconcile`) of a settlement file holding most of the
  paid cash-outs (the others are its breaks).

Everything is seeded (`random.Random`); ids are fresh per run.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.ledger_alone import post_batches, prepare_batches
from ledger.chart import AccountKind
from ledger.service import Ledger
from schemas import topics
from schemas.assets import DIAMOND
from schemas.events import GiftSent
from services.app.bootstrap import build_ingestor
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.operator.desk import OperatorDesk
from services.payout_rail.settlement_file import SettlementLine
from services.payout_rail.settlement_file import file_name as settlement_file_name
from services.payout_rail.settlement_file import render as render_settlement
from services.rates.rate_cards import load_rate_cards
from services.reconcile.files import SettlementFile, settlement_set
from services.reconcile.service import reconcile
from services.runtime.settings import Settings

FILL_SEED: Final = 20_261_204
GIFT_BATCH_SIZE: Final = 1_000
GIFT_CHUNK_SIZE: Final = 50_000
GIFT_WRITERS: Final = 2
RECORD_BATCH_SIZE: Final = 500
SUBMIT_BATCH_SIZE: Final = 100
ZIPF_EXPONENT: Final = 1.1
COINS: Final = (1, 5, 10, 99, 199, 499, 1_000, 29_999)
COIN_WEIGHTS: Final = (30, 25, 20, 10, 6, 5, 3, 1)
LIVE_SHARE: Final = 0.3
UNQUALIFIED_SHARE: Final = 0.1
MILLI_PER_DIAMOND: Final = 1_000
CASHOUT_DIAMONDS_MIN: Final = 2_000  # 10 USD at 200 Diamonds per USD, the default minimum
CASHOUT_DIAMONDS_MAX: Final = 50_000
REJECTED_CASHOUT_DIAMONDS: Final = 100  # under the minimum
CASHOUTS_PER_TOP_CREATOR: Final = 10
TOP_CREATOR_COUNT: Final = 20
SUBMITTED_SHARE: Final = 0.6
PAID_SHARE: Final = 0.5  # of the submitted
FAILED_SHARE: Final = 0.1  # of the submitted
RETURNED_SHARE: Final = 0.1  # of the paid
BENCH_PARTITION: Final = 0
RECONCILIATION_BREAK_SHARE: Final = 0.05


@dataclass(frozen=True, slots=True)
class FillSizes:
    transfers: int
    creators: int
    cashouts: int
    dead_letters: int
    operator_actions: int


@dataclass(frozen=True, slots=True)
class Filled:
    """Ids the pages are asked about, and what the database holds."""

    top_creator: str
    middle_creator: str
    cashout_id: str
    cashout_creator: str
    dead_letter_id: int
    dead_letter_error: str
    reconciliation_id: int
    transfers: int
    cashouts_by_status: dict[str, int]
    dead_letters: int
    operator_actions: int


def creator_id_of(index: int) -> str:
    return f"bench-creator-{index:05d}"


def _event_base(rng: random.Random, occurred_at: datetime) -> dict[str, Any]:
    return {
        "event_id": f"evt-{uuid.UUID(int=rng.getrandbits(128), version=4).hex}",
        "occurred_at": occurred_at.isoformat(),
    }


class _Feed:
    """Records of one run handed to `Ingestor.process`, with unique offsets."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.offset = 0

    async def send(self, topic: str, values: Sequence[tuple[bytes, bytes]]) -> int:
        """Each (key, value) applied in batches of RECORD_BATCH_SIZE; the dead letters' count."""
        dead_letters = 0
        for start in range(0, len(values), RECORD_BATCH_SIZE):
            records = []
            for key, value in values[start : start + RECORD_BATCH_SIZE]:
                self.offset += 1
                records.append(InputRecord(topic, BENCH_PARTITION, self.offset, key, value))
            report = await self.ingestor.process(topic, records)
            dead_letters += len(report.dead_letters)
        return dead_letters


def _encoded(event: dict[str, Any], key: str) -> tuple[bytes, bytes]:
    return key.encode(), json.dumps(event).encode()


# Creators and gifts -------------------------------------------------------------------------


async def _profiles(feed: _Feed, rng: random.Random, creators: int, now: datetime) -> None:
    values = []
    for index in range(creators):
        creator = creator_id_of(index)
        qualified = rng.random() >= UNQUALIFIED_SHARE
        event = {
            **_event_base(rng, now),
            "creator_id": creator,
            "birth_date": "1995-06-01",
            "country": "US",
            "followers": 25_000 if qualified else 120,
            "video_views_30d": 50_000,
            "posts_30d": 12,
            "in_good_standing": True,
            "identity_verified": True,
            "payout_account_ref": f"pa_bench_{index}",
        }
        values.append(_encoded(event, creator))
    dead = await feed.send(topics.CREATORS_UPDATED, values)
    assert dead == 0, f"{dead} creator profiles were dead-lettered"


def _zipf_weights(count: int) -> list[float]:
    cumulative, total = [], 0.0
    for rank in range(1, count + 1):
        total += 1.0 / rank**ZIPF_EXPONENT
        cumulative.append(total)
    return cumulative


def _gifts(rng: random.Random, count: int, creators: int, now: datetime) -> list[GiftSent]:
    chosen = rng.choices(range(creators), cum_weights=_zipf_weights(creators), k=count)
    coins = rng.choices(COINS, weights=COIN_WEIGHTS, k=count)
    gifts = []
    for creator_index, coin_count in zip(chosen, coins, strict=True):
        live = rng.random() < LIVE_SHARE
        place = {"live_id": f"live-{creator_index}"} if live else {"video_id": f"v-{creator_index}"}
        occurred_at = now - timedelta(seconds=rng.randint(0, 3_600))
        gifts.append(
            GiftSent.model_validate(
                {
                    **_event_base(rng, occurred_at),
                    "occurred_at": occurred_at,  # strict: a datetime in Python, text in JSON
                    "sender_id": f"fan-{rng.randint(1, 200_000)}",
                    "creator_id": creator_id_of(creator_index),
                    "surface": "live" if live else "video",
                    **place,
                    "gift_id": rng.choice(("rose", "lion", "galaxy", "heart")),
                    "coins": coin_count,
                    "count": 1,
                }
            )
        )
    return gifts


async def _post_gifts(
    ingestor: Ingestor, rng: random.Random, transfers: int, creators: int, now: datetime
) -> None:
    """About `transfers` transfers: each batch of GIFT_BATCH_SIZE gifts posts one more."""
    gift_count = max(1, transfers * GIFT_BATCH_SIZE // (GIFT_BATCH_SIZE + 1))
    posted = 0
    while posted < gift_count:
        chunk = min(GIFT_CHUNK_SIZE, gift_count - posted)
        gifts = _gifts(rng, chunk, creators, now)
        batches, _, _ = await prepare_batches(
            ingestor.ledger, gifts, ingestor.rate_cards, GIFT_BATCH_SIZE
        )
        await post_batches(ingestor.ledger, batches, GIFT_WRITERS)
        posted += chunk


def month_days_before(now: datetime) -> tuple[datetime, datetime] | None:
    """The days of `now`'s month before `now`'s day, UTC; None on the month's first day."""
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    month_start = today.replace(day=1)
    return None if today == month_start else (month_start, today)


_SPREAD_TRANSFERS = """
    UPDATE transfers t
    SET created_at = CAST(:start AS timestamptz)
        + (CAST(:end AS timestamptz) - CAST(:start AS timestamptz))
          * ((t.seq - b.first_seq)::float8 / (b.last_seq - b.first_seq + 1))
    FROM (SELECT min(seq) AS first_seq, max(seq) AS last_seq FROM transfers) b
"""

_SPREAD_KEYS = """
    UPDATE transfer_keys k SET created_at = t.created_at
    FROM transfers t WHERE t.id = k.id AND t.created_at <> k.created_at
"""


async def _spread_over_month(engine: AsyncEngine, now: datetime) -> None:
    """Every transfer so far moved evenly over the days of the month before today (see the
    module's docstring); then VACUUM, so that the pages read no dead rows."""
    days = month_days_before(now)
    if days is None:
        return
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(_SPREAD_TRANSFERS), {"start": days[0], "end": days[1]})
        await conn.execute(text(_SPREAD_KEYS))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM transfers, transfer_keys"))


# Cash-outs ----------------------------------------------------------------------------------


async def _available_diamonds(engine: AsyncEngine) -> list[tuple[str, int]]:
    """(creator, whole Diamonds available), most first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT creator_id, (credits_posted - debits_posted - debits_pending) / :milli"
                " AS diamonds FROM accounts WHERE kind = :kind AND asset = :asset"
                " ORDER BY diamonds DESC, creator_id"
            ),
            {
                "milli": MILLI_PER_DIAMOND,
                "kind": AccountKind.CREATOR_DIAMONDS_AVAILABLE.value,
                "asset": DIAMOND,
            },
        )
        return [(row.creator_id, int(row.diamonds)) for row in rows]


def _cashout_requests(
    rng: random.Random, available: list[tuple[str, int]], count: int, now: datetime
) -> list[dict[str, Any]]:
    """The top creators ask several times, others once (those with enough Diamonds); one in
    twenty asks for less than the minimum."""
    requests: list[dict[str, Any]] = []
    rich = [(creator, diamonds) for creator, diamonds in available if diamonds >= 4_000]
    for rank, (creator, diamonds) in enumerate(rich):
        asks = CASHOUTS_PER_TOP_CREATOR if rank < TOP_CREATOR_COUNT else 1
        for _ in range(asks):
            if len(requests) >= count:
                return requests
            ceiling = min(CASHOUT_DIAMONDS_MAX, diamonds // (2 * asks))
            small = rng.random() < 0.05
            amount = (
                REJECTED_CASHOUT_DIAMONDS
                if small
                else rng.randint(CASHOUT_DIAMONDS_MIN, max(CASHOUT_DIAMONDS_MIN, ceiling))
            )
            occurred_at = now - timedelta(seconds=rng.randint(0, 3_600))
            requests.append(
                {
                    **_event_base(rng, occurred_at),
                    "creator_id": creator,
                    "asset": DIAMOND,
                    "amount": amount,
                    "payout_currency": "USD",
                }
            )
    return requests


async def _statuses(engine: AsyncEngine, status: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT cashout_id FROM cashouts WHERE status = :status ORDER BY cashout_id"),
            {"status": status},
        )
        return [row.cashout_id for row in rows]


async def _submit(ingestor: Ingestor, cashout_ids: Sequence[str]) -> None:
    ledger = ingestor.ledger
    for start in range(0, len(cashout_ids), SUBMIT_BATCH_SIZE):
        chunk = cashout_ids[start : start + SUBMIT_BATCH_SIZE]
        async for tx in ledger.transactions():
            async with tx:
                await ingestor.desk.mark_submitted(tx, ledger, chunk)


async def _results(
    feed: _Feed, rng: random.Random, cashout_ids: Sequence[str], status: str, now: datetime
) -> None:
    values = []
    for cashout_id in cashout_ids:
        event: dict[str, Any] = {
            **_event_base(rng, now),
            "cashout_id": cashout_id,
            "status": status,
        }
        if status != "paid":
            event["failure_code"] = "account_closed" if status == "failed" else "returned_by_bank"
        values.append(_encoded(event, cashout_id))
    dead = await feed.send(topics.PAYOUTS_UPDATED, values)
    assert dead == 0, f"{dead} payout results were dead-lettered"


async def _cashouts(
    engine: AsyncEngine, ingestor: Ingestor, feed: _Feed, rng: random.Random, count: int
) -> None:
    now = datetime.now(UTC)
    requests = _cashout_requests(rng, await _available_diamonds(engine), count, now)
    dead = await feed.send(
        topics.CASHOUTS_REQUESTED, [_encoded(r, r["creator_id"]) for r in requests]
    )
    assert dead == 0, f"{dead} cash-out requests were dead-lettered"
    held = await _statuses(engine, "held")
    rng.shuffle(held)
    submitted = held[: int(len(held) * SUBMITTED_SHARE)]
    await _submit(ingestor, submitted)
    paid = submitted[: int(len(submitted) * PAID_SHARE)]
    failed = submitted[len(paid) : len(paid) + int(len(submitted) * FAILED_SHARE)]
    await _results(feed, rng, paid, "paid", now)
    await _results(feed, rng, failed, "failed", now)
    await _results(feed, rng, paid[: int(len(paid) * RETURNED_SHARE)], "returned", now)


# Dead letters and operator actions ----------------------------------------------------------


_BROKEN_TOPICS: Final = (
    topics.GIFTS_SENT,
    topics.TIPS_RECEIVED,
    topics.CASHOUTS_REQUESTED,
    topics.CREATORS_UPDATED,
)


async def _dead_letters(feed: _Feed, rng: random.Random, count: int, creators: int) -> None:
    """Records that cannot be applied: not JSON, or JSON that breaks the topic's schema."""
    by_topic: dict[str, list[tuple[bytes, bytes]]] = {topic: [] for topic in _BROKEN_TOPICS}
    now = datetime.now(UTC)
    for index in range(count):
        topic = rng.choice(_BROKEN_TOPICS)
        creator = creator_id_of(rng.randrange(creators))
        if index % 3 == 0:
            value = f"<h1>not json {index}</h1>".encode()
        else:
            value = json.dumps(
                {**_event_base(rng, now), "creator_id": creator, "coins": 0}
            ).encode()
        by_topic[topic].append((creator.encode(), value))
    recorded = 0
    for topic, values in by_topic.items():
        recorded += await feed.send(topic, values)
    assert recorded == count, f"{recorded} dead letters recorded, {count} sent"


async def _operator_actions(
    ledger: Ledger, settings: Settings, rng: random.Random, count: int, creators: int
) -> None:
    """About half proposals (by one operator), a quarter approvals (by another), a fifth
    freezes, the rest unfreezes of frozen creators."""
    desk = OperatorDesk(
        ledger,
        topic_prefix=settings.kafka_topic_prefix,
        database_role=settings.database_writer_role,
    )
    proposals = count // 2
    approvals = count // 4
    freezes = count // 5
    unfreezes = max(0, count - proposals - approvals - freezes)
    proposed_ids = []
    for _ in range(proposals):
        outcome = await desk.propose_adjustment(
            idempotency_key=f"bench-{uuid.UUID(int=rng.getrandbits(128), version=4).hex}",
            actor="bench-proposer",
            creator_id=creator_id_of(rng.randrange(creators)),
            asset=DIAMOND,
            amount_minor=rng.randint(1, 50_000),
            reason="goodwill credit after a missed gift",
            ticket=f"TICKET-{rng.randint(1, 99_999)}",
        )
        proposed_ids.append(outcome.adjustment.id)
    for adjustment_id in proposed_ids[:approvals]:
        await desk.approve_adjustment(
            adjustment_id,
            idempotency_key=f"bench-{uuid.UUID(int=rng.getrandbits(128), version=4).hex}",
            actor="bench-approver",
            reason="checked against the ticket",
        )
    frozen = rng.sample(range(creators), min(creators, freezes))
    for index, creator_index in enumerate(frozen):
        for is_frozen in (True, False) if index < unfreezes else (True,):
            await desk.set_frozen(
                creator_id_of(creator_index),
                frozen=is_frozen,
                idempotency_key=f"bench-{uuid.UUID(int=rng.getrandbits(128), version=4).hex}",
                actor="bench-operator",
                reason="fraud review" if is_frozen else "review cleared",
                ticket=None,
            )


async def _reconciliation(engine: AsyncEngine, rng: random.Random) -> int:
    """A bank file of the paid cash-outs' `paid` lines, one in twenty left out (breaks),
    reconciled through `reconcile`: the run's id."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.cashout_id, c.payout_amount, c.payout_currency,"
                " (t.at AT TIME ZONE 'UTC')::date AS day"
                " FROM cashouts c JOIN cashout_transitions t USING (cashout_id)"
                " WHERE t.status = 'paid' ORDER BY c.cashout_id"
            )
        )
        paid = list(rows)
    assert paid, "no cash-out was paid"
    day = paid[0].day
    lines = tuple(
        SettlementLine(
            provider_reference=f"bench-{hashlib.sha256(row.cashout_id.encode()).hexdigest()[:20]}",
            cashout_id=row.cashout_id,
            amount_minor=row.payout_amount,
            currency=row.payout_currency,
            status="paid",
            value_date=row.day,
            failure_code=None,
        )
        for row in paid
        if rng.random() >= RECONCILIATION_BREAK_SHARE
    )
    content = render_settlement(list(lines)).encode()
    settlement = SettlementFile(
        settlement_file_name(day), day, hashlib.sha256(content).digest(), lines
    )
    return (await reconcile(engine, settlement_set([settlement]))).reconciliation_id


# The whole fill -----------------------------------------------------------------------------


async def fill(engine: AsyncEngine, settings: Settings, sizes: FillSizes) -> Filled:
    """The ledger filled with `sizes`, then ANALYZE; the ids the pages will be asked about."""
    rng = random.Random(FILL_SEED)
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = build_ingestor(settings, engine, rate_cards)
    feed = _Feed(ingestor)
    now = datetime.now(UTC)
    await _profiles(feed, rng, sizes.creators, now)
    await _post_gifts(ingestor, rng, sizes.transfers, sizes.creators, now)
    await _spread_over_month(engine, now)
    await _cashouts(engine, ingestor, feed, rng, sizes.cashouts)
    await _dead_letters(feed, rng, sizes.dead_letters, sizes.creators)
    await _operator_actions(ingestor.ledger, settings, rng, sizes.operator_actions, sizes.creators)
    await _reconciliation(engine, rng)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))
    return await what_was_filled(engine)


async def what_was_filled(engine: AsyncEngine) -> Filled:
    """The ids the pages are asked about, and the counts, read from a filled database."""
    async with engine.connect() as conn:

        async def scalar(sql: str, **values: Any) -> Any:
            return (await conn.execute(text(sql), values)).scalar_one()

        creators = int(await scalar("SELECT count(*) FROM creators"))
        top_creator = await scalar(
            "SELECT a.creator_id FROM accounts a JOIN transfers t ON t.credit_account_id = a.id"
            " WHERE a.kind = :kind GROUP BY a.creator_id ORDER BY count(*) DESC LIMIT 1",
            kind=AccountKind.CREATOR_DIAMONDS_AVAILABLE.value,
        )
        cashout = (
            await conn.execute(
                text(
                    "SELECT cashout_id, creator_id FROM cashouts WHERE status = 'returned'"
                    " ORDER BY cashout_id LIMIT 1"
                )
            )
        ).one()
        letter = (
            await conn.execute(text("SELECT id, error FROM dead_letters ORDER BY id DESC LIMIT 1"))
        ).one()
        statuses = await conn.execute(
            text("SELECT status, count(*) AS n FROM cashouts GROUP BY status ORDER BY status")
        )
        return Filled(
            top_creator=str(top_creator),
            middle_creator=creator_id_of(creators // 2),
            cashout_id=str(cashout.cashout_id),
            cashout_creator=str(cashout.creator_id),
            dead_letter_id=int(letter.id),
            dead_letter_error=str(letter.error),
            reconciliation_id=int(await scalar("SELECT max(id) FROM reconciliations")),
            transfers=int(await scalar("SELECT count(*) FROM transfers")),
            cashouts_by_status={row.status: int(row.n) for row in statuses},
            dead_letters=int(await scalar("SELECT count(*) FROM dead_letters")),
            operator_actions=int(await scalar("SELECT count(*) FROM operator_actions")),
        )
