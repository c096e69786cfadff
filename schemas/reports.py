"""The vocabulary of the finance reports, shared by the API's queries and its parameters."""

from __future__ import annotations

from typing import Final, Literal, get_args

# How `GET /v1/reports/gifts` groups gifts: by surface, creator, gift or UTC day.
GiftGrouping = Literal["surface", "creator", "gift", "day"]
GIFT_GROUPINGS: Final[tuple[GiftGrouping, ...]] = get_args(GiftGrouping)
