"""Pseudonymising recorded records (`giftledger record --pseudonymise SALT`).

Every id field of the contract's events (`ID_FIELDS`) and the record's key are replaced by
`p-` and the first 32 hex digits of HMAC-SHA256(SALT, id): 34 visible ASCII characters, inside
the contract's id pattern and length (`schemas.events.Identifier`, and `AccountRef`: not all
digits). `gift_id` names a gift of the catalogue, not a person or a payment, and is kept. One
function for every field, so what lines up in the original lines up in the copy: a gift's
`event_id` and its reversal's `gift_event_id`, a cash-out request's `event_id` and the
`cashout_id` of its reports, the key and the `creator_id`, a duplicate and its original, two
payloads reusing one `event_id`.

What is left as it is, byte for byte: a record of a consumed topic that the consumers would
refuse as it stands (`services.ingestion.records.parse_record`: not JSON, not UTF-8, a key given
twice, an invalid field, an id with a line break or of digits only ...), so the copy is refused
for the same reason and never applied where the original was not; and, in the other topics'
records, anything that is not a JSON object and id fields that are not a valid id to begin with.
Other fields (amounts, dates, gifts, countries, periods) are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

import jiter

from schemas.events import CONSUMED_EVENT_MODELS, ID_LENGTH_MAX, VISIBLE_ASCII_PATTERN
from services.ingestion.records import DeadLetter, InputRecord, parse_record

PSEUDONYM_PREFIX = "p-"
DIGEST_HEX_LENGTH = 32
SALT_LENGTH_MIN = 8
SALT_LENGTH_MAX = 1024
ID_FIELDS: tuple[str, ...] = (
    "event_id",
    "creator_id",
    "sender_id",
    "gift_event_id",
    "cashout_id",
    "video_id",
    "live_id",
    "charge_id",
    "brand_id",
    "deal_id",
    "payout_account_ref",
)

_VISIBLE_ASCII = re.compile(VISIBLE_ASCII_PATTERN)


class Pseudonymiser:
    """Maps ids to pseudonyms with one salt; the same id always gets the same pseudonym."""

    def __init__(self, salt: str) -> None:
        if not SALT_LENGTH_MIN <= len(salt) <= SALT_LENGTH_MAX:
            raise ValueError(
                f"the salt must be {SALT_LENGTH_MIN} to {SALT_LENGTH_MAX} characters long"
            )
        self._key = salt.encode("utf-8")

    def pseudonym(self, identifier: str) -> str:
        digest = hmac.new(self._key, identifier.encode("utf-8"), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:DIGEST_HEX_LENGTH]

    def key(self, key: bytes | None) -> bytes | None:
        """The record's key (a creator id) mapped like `creator_id`; other keys as they are."""
        if key is None:
            return None
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return key
        return self.pseudonym(text).encode("utf-8") if _is_identifier(text) else key

    def value(self, value: bytes, topic: str | None = None) -> bytes:
        """The record's bytes with every id field replaced; the bytes unchanged when they are
        not a JSON object with distinct keys, or when the consumers of `topic` (a consumed
        topic, without the deployment's prefix) would refuse them as they stand."""
        if topic in CONSUMED_EVENT_MODELS:
            verdict = parse_record(topic, InputRecord(topic, 0, 0, None, value))
            if isinstance(verdict, DeadLetter):
                return value
        try:
            document = jiter.from_json(value, catch_duplicate_keys=True)
        except ValueError:  # not JSON, not UTF-8, a key given twice, nested too deep
            return value
        if not isinstance(document, dict):
            return value
        changed = self._replace_ids(document)
        if not changed:
            return value
        try:
            return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError):  # a lone surrogate, JSON nested too deep
            return value

    def _replace_ids(self, document: dict[str, Any]) -> bool:
        changed = False
        for name in ID_FIELDS:
            identifier = document.get(name)
            if isinstance(identifier, str) and _is_identifier(identifier):
                document[name] = self.pseudonym(identifier)
                changed = True
        return changed


def _is_identifier(text: str) -> bool:
    return 1 <= len(text) <= ID_LENGTH_MAX and _VISIBLE_ASCII.fullmatch(text) is not None
