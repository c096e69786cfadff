"""Pseudonymising recorded records (`giftledger record --pseudonymise SALT`).

Every id field of the contract's events (`ID_FIELDS`) and the record's key are replaced by
`p-` and the first 32 hex digits of HMAC-SHA256(SALT, id): 34 visible ASCII characters, inside
the contract's id pattern and length (`schemas.events.Identifier`, and `AccountRef`: not all
digits). `gift_id` names a gift of the catalogue, not a person or a payment, and is kept. One
function for every field, so what lines up in the original lines up in the copy: a gift's
`event_id` and its reversal's `gift_event_id`, a cash-out request's `event_id` and the
`cashout_id` of its reports, the key and the `creator_id`, a duplicate and its original, two
payloads reusing one `event_id`.

A record keeps what the consumers make of it (`services.ingestion.records.parse_record`): the
rewrite keeps a key given twice twice, a lone surrogate's escape as an escape, and an id that is
not a valid id (empty, too long, a line break) as it is; an account reference of digits only (a
raw account number, refused) becomes digits of the same length, still refused, never the number;
and should a copy be judged otherwise all the same, the record is kept as it came. What is not a
JSON object (not JSON, not UTF-8) is kept as it is. Other fields (amounts, dates, gifts,
countries, periods) are kept.

Header values are replaced too (`headers`): upstream producers set headers giftledger does not
define (a trace id, a user's id or name: anything), and a re-drive adds the operator's request
key, free text. Each value becomes `p-` and 32 hex digits of HMAC-SHA256(SALT, its bytes): for a
value that is an id, its pseudonym, so a header naming a creator or an event lines up with the
payload. The consumers judge no header, so nothing is judged otherwise. Header names are kept, and
a null value stays null.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from schemas.events import CONSUMED_EVENT_MODELS, ID_LENGTH_MAX, VISIBLE_ASCII_PATTERN
from services.ingestion.records import DeadLetter, Header, InputRecord, parse_record

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

ACCOUNT_REF_FIELD = "payout_account_ref"
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
        return self._pseudonym_of(identifier.encode("utf-8"))

    def _pseudonym_of(self, data: bytes) -> str:
        digest = hmac.new(self._key, data, hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:DIGEST_HEX_LENGTH]

    def headers(self, headers: tuple[Header, ...]) -> tuple[Header, ...]:
        """Every header value replaced by the pseudonym of its bytes (an id's pseudonym, for a
        value that is an id); names, and null values, as they are."""
        return tuple(
            (name, None if value is None else self._pseudonym_of(value).encode("ascii"))
            for name, value in headers
        )

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
        not a JSON object, or when the consumers of `topic` (a consumed topic, without the
        deployment's prefix) would judge the copy otherwise than the original."""
        try:
            document = json.loads(value.decode("utf-8"), object_pairs_hook=_Pairs)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
            return value
        if not isinstance(document, _Pairs) or not self._replace_ids(document):
            return value
        try:
            copy = _dumps(document).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which only an escape can write
            copy = _dumps(document, ascii_only=True).encode("utf-8")
        except RecursionError:
            return value
        if topic in CONSUMED_EVENT_MODELS and _verdict(topic, copy) != _verdict(topic, value):
            return value
        return copy

    def _replace_ids(self, document: _Pairs) -> bool:
        changed = False
        for position, (name, identifier) in enumerate(document):
            if name not in ID_FIELDS or not isinstance(identifier, str):
                continue
            if name == ACCOUNT_REF_FIELD and identifier.isascii() and identifier.isdigit():
                # A raw account number: refused as one, so its copy is digits too.
                document[position] = (name, self._digits(identifier))
                changed = True
            elif _is_identifier(identifier):
                document[position] = (name, self.pseudonym(identifier))
                changed = True
        return changed

    def _digits(self, number: str) -> str:
        digest = hmac.new(self._key, number.encode("utf-8"), hashlib.sha256).digest()
        digits = "".join(str(byte % 10) for byte in digest * (len(number) // len(digest) + 1))
        return digits[: len(number)]


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in order, a key given twice kept twice."""


def _dumps(value: Any, *, ascii_only: bool = False) -> str:
    """JSON text of a value read with `_Pairs` for objects, their pairs as they were."""
    if isinstance(value, _Pairs):
        members = (
            f"{json.dumps(name, ensure_ascii=ascii_only)}:{_dumps(item, ascii_only=ascii_only)}"
            for name, item in value
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps(item, ascii_only=ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def _verdict(topic: str, value: bytes) -> str:
    outcome = parse_record(topic, InputRecord(topic, 0, 0, None, value))
    return outcome.error if isinstance(outcome, DeadLetter) else "parsed"


def _is_identifier(text: str) -> bool:
    return 1 <= len(text) <= ID_LENGTH_MAX and _VISIBLE_ASCII.fullmatch(text) is not None
