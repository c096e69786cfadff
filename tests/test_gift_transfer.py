"""What one gift posts: the transfer the ingestion builds for it, field by field."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from ledger import chart
from ledger.chain import metadata_json
from ledger.ids import TRANSFER_ID_NAMESPACE
from schemas import topics
from schemas.events import GiftSent
from services.ingestion.event_transfers import (
    gift_metadata_text,
    gift_transfer,
    gift_transfer_id,
)
from services.rates.rate_cards import BEGINNING_OF_TIME, RateCard

CARD = RateCard(3, BEGINNING_OF_TIME, 500, 200)

visible_ascii = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=24
)


@st.composite
def gifts(draw: st.DrawFn) -> GiftSent:
    surface = draw(st.sampled_from(["video", "live"]))
    place = {f"{surface}_id": draw(visible_ascii)}
    return GiftSent.model_validate(
        {
            "event_id": draw(visible_ascii),
            "occurred_at": datetime(2026, 11, 3, 18, 25, tzinfo=UTC),
            "sender_id": draw(visible_ascii),
            "creator_id": draw(visible_ascii),
            "surface": surface,
            **place,
            "gift_id": draw(visible_ascii),
            "coins": draw(st.integers(1, 100_000)),
            "count": draw(st.integers(1, 10_000)),
        }
    )


def details(gift: GiftSent) -> dict[str, object]:
    place = {"video_id": gift.video_id} if gift.surface == "video" else {"live_id": gift.live_id}
    return {
        "surface": gift.surface,
        "gift_id": gift.gift_id,
        "sender_id": gift.sender_id,
        "coins": gift.coins * gift.count,
        "count": gift.count,
        **place,
    }


@given(gift=gifts())
def test_the_metadata_text_is_what_the_chain_encoder_writes(gift: GiftSent) -> None:
    text = gift_metadata_text(gift)
    assert text == metadata_json(details(gift))
    assert json.loads(text) == details(gift)


@given(gift=gifts())
def test_a_gift_credits_its_creator_the_rate_cards_share_under_a_time_ordered_id(
    gift: GiftSent,
) -> None:
    card = CARD
    transfer = gift_transfer(gift, card)
    assert transfer.milli_diamonds == gift.coins * gift.count * card.milli_diamonds_per_coin
    assert transfer.rate_card_version == card.version
    assert transfer.creator_account == chart.creator_diamonds_available(gift.creator_id)
    assert transfer.transfer_id == gift_transfer_id(gift.event_id, gift.occurred_at)
    # The layout, derived here on its own: the gift's Unix milliseconds, version 7, then the
    # first 74 bits of the SHA-1 of the namespace and the leg's name, the variant between.
    name = f"{topics.GIFTS_SENT}\x1f{gift.event_id}\x1fdiamonds".encode()
    digest = hashlib.sha1(TRANSFER_ID_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    tail = int.from_bytes(digest[:10]) >> 6
    unix_ms = int((gift.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)
    expected = (unix_ms << 80) | (7 << 76) | ((tail >> 62) << 64) | (0b10 << 62) | (tail % 2**62)
    assert transfer.transfer_id.int == expected
