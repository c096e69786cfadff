"""Valid contract events as dicts, with fresh ids, for tests to publish or alter."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any


def _base() -> dict[str, Any]:
    return {"event_id": f"evt-{uuid.uuid4().hex}", "occurred_at": datetime.now(UTC).isoformat()}


def gift(
    creator_id: str, coins: int = 10, count: int = 1, surface: str = "video"
) -> dict[str, Any]:
    place = {"video_id": "v-1"} if surface == "video" else {"live_id": "live-1"}
    return {
        **_base(),
        "sender_id": "fan-1",
        "creator_id": creator_id,
        "surface": surface,
        **place,
        "gift_id": "rose",
        "coins": coins,
        "count": count,
    }


def reversal(creator_id: str, gift_event_id: str, reason: str = "chargeback") -> dict[str, Any]:
    return {**_base(), "creator_id": creator_id, "gift_event_id": gift_event_id, "reason": reason}


def tip(
    creator_id: str, amount: int = 500, fan_fee: int = 25, processor_fee: int = 30
) -> dict[str, Any]:
    return {
        **_base(),
        "sender_id": "fan-2",
        "creator_id": creator_id,
        "amount": amount,
        "currency": "USD",
        "fan_fee": fan_fee,
        "processor_fee": processor_fee,
        "charge_id": f"ch-{uuid.uuid4().hex[:8]}",
    }


def fund_reward(creator_id: str, amount: int = 2_500) -> dict[str, Any]:
    return {
        **_base(),
        "creator_id": creator_id,
        "period": "2026-10",
        "amount": amount,
        "currency": "EUR",
    }


def marketplace_payment(creator_id: str, amount: int = 10_000, fee: int = 2_000) -> dict[str, Any]:
    return {
        **_base(),
        "creator_id": creator_id,
        "brand_id": "brand-1",
        "deal_id": f"deal-{uuid.uuid4().hex[:6]}",
        "amount": amount,
        "currency": "GBP",
        "platform_fee": fee,
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def creator_update(creator_id: str, followers: int = 25_000, country: str = "US") -> dict[str, Any]:
    return {
        **_base(),
        "creator_id": creator_id,
        "birth_date": "1999-04-02",
        "country": country,
        "followers": followers,
        "video_views_30d": 50_000,
        "posts_30d": 12,
        "in_good_standing": True,
        "identity_verified": True,
        "payout_account_ref": "pa_demo_1",
    }


def cashout_request(
    creator_id: str, diamonds: int = 2_000, currency: str = "USD", asset: str = "DIAMOND"
) -> dict[str, Any]:
    return {
        **_base(),
        "creator_id": creator_id,
        "asset": asset,
        "amount": diamonds,
        "payout_currency": currency,
    }


def payout_update(cashout_id: str, status: str, failure_code: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {**_base(), "cashout_id": cashout_id, "status": status}
    if failure_code is not None:
        event["failure_code"] = failure_code
    return event
