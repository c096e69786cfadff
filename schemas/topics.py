"""Kafka topic names from the contract. A deployment may put a prefix in front of every name."""

from __future__ import annotations

from typing import Literal, get_args

GIFTS_SENT = "gifts.sent"
GIFTS_REVERSED = "gifts.reversed"
TIPS_RECEIVED = "tips.received"
FUND_REWARDED = "fund.rewarded"
MARKETPLACE_PAID = "marketplace.paid"
CREATORS_UPDATED = "creators.updated"
CASHOUTS_REQUESTED = "cashouts.requested"
PAYOUTS_UPDATED = "payouts.updated"

PAYOUTS_REQUESTED = "payouts.requested"
CASHOUTS_UPDATED = "cashouts.updated"
OPERATOR_ACTIONS = "operator.actions"

CONSUMED_TOPICS: tuple[str, ...] = (
    GIFTS_SENT,
    GIFTS_REVERSED,
    TIPS_RECEIVED,
    FUND_REWARDED,
    MARKETPLACE_PAID,
    CREATORS_UPDATED,
    CASHOUTS_REQUESTED,
    PAYOUTS_UPDATED,
)
PRODUCED_TOPICS: tuple[str, ...] = (PAYOUTS_REQUESTED, CASHOUTS_UPDATED, OPERATOR_ACTIONS)

# CONSUMED_TOPICS as a type, for a parameter that names one of them (a Literal cannot be built
# from the constants above: the assert keeps the two in the same order with the same names).
ConsumedTopic = Literal[
    "gifts.sent",
    "gifts.reversed",
    "tips.received",
    "fund.rewarded",
    "marketplace.paid",
    "creators.updated",
    "cashouts.requested",
    "payouts.updated",
]
assert get_args(ConsumedTopic) == CONSUMED_TOPICS, "ConsumedTopic and CONSUMED_TOPICS disagree"

DEAD_LETTER_SUFFIX = ".dlq"


def dead_letter_topic(topic: str) -> str:
    return f"{topic}{DEAD_LETTER_SUFFIX}"


def prefixed(prefix: str, topic: str) -> str:
    return f"{prefix}{topic}"


def all_topics(prefix: str = "") -> list[str]:
    """Every topic giftledger reads or writes, dead-letter topics included, with the prefix."""
    names = [*CONSUMED_TOPICS, *PRODUCED_TOPICS]
    names += [dead_letter_topic(topic) for topic in CONSUMED_TOPICS]
    return [prefixed(prefix, name) for name in names]
