"""Duplicates, event_id conflicts and bad records in the load-test stream
(`services.loadtest.generator`).

- Duplicates: a recent record again, byte for byte (counted as a duplicate of its topic).
- Conflicts: an `event_id` reused with another payload, on the same key (the first one wins; the
  other is dead-lettered).
- Bad records, each dead-lettered for the reason it names: malformed JSON, duplicate JSON keys,
  invalid UTF-8, schema violations, a reversal naming another creator's gift, a payout report for
  an unknown cash-out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas import topics
from services.loadtest.creator_profiles import CreatorProfiles
from services.loadtest.stream_context import Outgoing, StreamContext
from services.loadtest.stream_format import (
    CREATOR_MISMATCH,
    EVENT_ID_CONFLICT,
    INVALID_UTF8,
    MALFORMED_JSON,
    SCHEMA_VIOLATION,
    UNKNOWN_CASHOUT,
    compact,
)

BAD_KINDS = (
    "truncated_json",
    "duplicate_keys",
    "invalid_utf8",
    "negative_amount",
    "coins_as_text",
    "live_without_live_id",
    "unknown_currency",
    "fee_above_amount",
    "raw_account_number",
    "unknown_field",
    "reversal_of_other_creator",
    "payout_for_unknown_cashout",
)


@dataclass(frozen=True, slots=True)
class BadContext:
    key: str  # the creator id, also the Kafka key
    rank: int
    event_id: str
    occurred_at: str

    def common(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "occurred_at": self.occurred_at, "creator_id": self.key}


# (topic, key, value, the reason the consumer gives when it dead-letters it)
BadRecord = tuple[str, str, str | bytes, str]


class BadRecords:
    """Records the ledger must not apply: duplicates (counted) and dead letters (by reason)."""

    def __init__(self, stream: StreamContext, creators: CreatorProfiles) -> None:
        self.stream = stream
        self.creators = creators
        self.rng = stream.rng

    def duplicate(self) -> bool:
        recent_records = self.stream.recent_records
        if not recent_records:
            return False
        topic, key, value = recent_records[self.rng.randrange(len(recent_records))]
        self.stream.tally.duplicates[topic] += 1
        self.stream.send(Outgoing(topic, key, value))
        return True

    def conflict(self) -> bool:
        """An event_id reused with another payload, on the same key: the first one wins."""
        recent_events = self.stream.recent_events
        if not recent_events:
            return False
        topic, event = recent_events[self.rng.randrange(len(recent_events))]
        changed = dict(event)
        if topic == topics.GIFTS_SENT:
            changed["coins"] = event["coins"] + 1
        else:
            changed["amount"] = event["amount"] + 1
        self.stream.bad(topic, str(event["creator_id"]), compact(changed), EVENT_ID_CONFLICT)
        return True

    def bad_record(self) -> bool:
        """One record that must end in the dead-letter topic, for the reason it names."""
        stream = self.stream
        rank = stream.zipf_rank()
        context = BadContext(
            key=stream.creator_id(rank),
            rank=rank,
            event_id=stream.next_id("x"),
            occurred_at=stream.iso(stream.now_ms()),
        )
        made = BAD_RECORD_MAKERS[self.rng.choice(BAD_KINDS)](self, context)
        if made is None:
            return False
        topic, key, value, reason = made
        stream.bad(topic, key, value, reason)
        return True

    def bad_gift(self, context: BadContext) -> dict[str, Any]:
        return {
            "event_id": context.event_id,
            "occurred_at": context.occurred_at,
            "sender_id": "fan-1",
            "creator_id": context.key,
            "surface": "live",
            "live_id": f"{self.stream.ns}-live-bad",
            "gift_id": "rose",
            "coins": 1,
        }

    def truncated_json(self, context: BadContext) -> BadRecord:
        cut = self.rng.randint(5, 60)
        return (
            topics.GIFTS_SENT,
            context.key,
            compact(self.bad_gift(context))[:cut],
            MALFORMED_JSON,
        )

    def duplicate_keys(self, context: BadContext) -> BadRecord:
        event_id, when = context.event_id, context.occurred_at
        value = f'{{"event_id":"{event_id}","event_id":"{event_id}-2","occurred_at":"{when}"}}'
        return topics.TIPS_RECEIVED, context.key, value, MALFORMED_JSON

    def invalid_utf8(self, context: BadContext) -> BadRecord:
        value = f'{{"event_id":"{context.event_id}","gift_id":"'.encode() + b'\xff\xfe"}'
        return topics.GIFTS_SENT, context.key, value, INVALID_UTF8

    def negative_amount(self, context: BadContext) -> BadRecord:
        tip = {
            **context.common(),
            "sender_id": "fan-1",
            "amount": -500,
            "currency": "USD",
            "fan_fee": 0,
            "processor_fee": 0,
            "charge_id": "ch-bad",
        }
        return topics.TIPS_RECEIVED, context.key, compact(tip), SCHEMA_VIOLATION

    def coins_as_text(self, context: BadContext) -> BadRecord:
        gift = {**self.bad_gift(context), "coins": "5"}
        return topics.GIFTS_SENT, context.key, compact(gift), SCHEMA_VIOLATION

    def live_without_live_id(self, context: BadContext) -> BadRecord:
        gift = self.bad_gift(context)
        del gift["live_id"]
        return topics.GIFTS_SENT, context.key, compact(gift), SCHEMA_VIOLATION

    def unknown_currency(self, context: BadContext) -> BadRecord:
        reward = {**context.common(), "period": "2026-10", "amount": 100, "currency": "XXX"}
        return topics.FUND_REWARDED, context.key, compact(reward), SCHEMA_VIOLATION

    def fee_above_amount(self, context: BadContext) -> BadRecord:
        deal = {
            **context.common(),
            "brand_id": "brand-1",
            "deal_id": "deal-bad",
            "amount": 1_000,
            "currency": "USD",
            "platform_fee": 1_000,
        }
        return topics.MARKETPLACE_PAID, context.key, compact(deal), SCHEMA_VIOLATION

    def raw_account_number(self, context: BadContext) -> BadRecord:
        facts = self.creators.profile_facts(context.rank, "eligible") | {
            "payout_account_ref": "4111111111"
        }
        profile = {**context.common(), **facts}
        return topics.CREATORS_UPDATED, context.key, compact(profile), SCHEMA_VIOLATION

    def unknown_field(self, context: BadContext) -> BadRecord:
        gift = {**self.bad_gift(context), "tip": 1}
        return topics.GIFTS_SENT, context.key, compact(gift), SCHEMA_VIOLATION

    def reversal_of_other_creator(self, context: BadContext) -> BadRecord | None:
        recent_gifts = self.stream.recent_gifts
        if not recent_gifts:
            return None
        gift_event_id, owner, _ = recent_gifts[self.rng.randrange(len(recent_gifts))]
        other = self.stream.creator_id(owner % self.stream.creator_count + 1)
        reversal = {
            "event_id": context.event_id,
            "occurred_at": context.occurred_at,
            "creator_id": other,
            "gift_event_id": gift_event_id,
            "reason": "fraud",
        }
        return topics.GIFTS_REVERSED, other, compact(reversal), CREATOR_MISMATCH

    def payout_for_unknown_cashout(self, context: BadContext) -> BadRecord:
        report = {
            "event_id": context.event_id,
            "occurred_at": context.occurred_at,
            "cashout_id": f"{self.stream.ns}-no-such-cashout-{self.stream.serial}",
            "status": "paid",
        }
        return topics.PAYOUTS_UPDATED, context.key, compact(report), UNKNOWN_CASHOUT


BAD_RECORD_MAKERS: dict[str, Callable[[BadRecords, BadContext], BadRecord | None]] = {
    kind: getattr(BadRecords, kind) for kind in BAD_KINDS
}
