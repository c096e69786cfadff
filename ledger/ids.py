"""Transfer ids: derived from what a transfer records (`transfer_id`), sorting by time
(`time_ordered_id`), or both (`timed_transfer_id`).

A derived id is the same on every delivery of the event it comes from, so the ledger's
idempotency makes a redelivery a no-op and a reversal finds its gift's transfer without a lookup.

Random (version 4) UUIDs land on random pages of the primary key indexes of `transfers` and
`transfer_keys`: once those indexes outgrow memory, and after every checkpoint (when a page's
first change writes the whole page to the WAL), each insert costs a page of its own. Ids that
begin with a timestamp land on the few right-most pages instead. This is the layout of UUID
version 7 (RFC 9562): 48 bits of Unix milliseconds, the version, then 74 bits chosen by the
caller, here random or derived from what the transfer records so that it stays idempotent.

`timed_transfer_id` is that for an event's leg: the event's `occurred_at` in milliseconds, then
74 bits of the SHA-1 that `transfer_id` hashes. The same event gives the same id on every
delivery, and a stream of events, roughly in the order they occurred, inserts near the right
edge of those indexes however large they grow.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from asyncpg.pgproto import pgproto

UNIX_MS_MAX = 2**48 - 1
TAIL_BITS = 74
_TAIL_MASK = 2**TAIL_BITS - 1
_VERSION_7 = 7
_VARIANT_RFC_9562 = 0b10

TRANSFER_ID_NAMESPACE = uuid.UUID("0b7f8a52-3c1e-4f7e-9a55-2d6c1e4b9f10")
_NAMESPACE_BYTES = TRANSFER_ID_NAMESPACE.bytes
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_DIGEST_TAIL_SHIFT = 80 - TAIL_BITS  # the tail is the top 74 bits of the digest's first 10 bytes


def _leg_name(topic: str, event_id: str, leg: str) -> bytes:
    return f"{topic}\x1f{event_id}\x1f{leg}".encode()


def transfer_id(topic: str, event_id: str, leg: str) -> uuid.UUID:
    """The stable id of one leg of one event (`topic`, `event_id`, `leg`): the same on every
    delivery and every consumer.

    It is `uuid.uuid5(TRANSFER_ID_NAMESPACE, name)`, spelled out with the namespace's bytes
    computed once, since every gift needs one (a test holds the two equal). The value is
    asyncpg's `uuid.UUID` subclass, written in C: built, printed for the hash chain and sent to
    the database several times faster than the standard class."""
    name = _leg_name(topic, event_id, leg)
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    fast_uuid: uuid.UUID = pgproto.UUID(bytes(digest))
    return fast_uuid


def time_ordered_id(unix_ms: int, tail: int) -> uuid.UUID:
    """A version 7 UUID from a millisecond timestamp and the low 74 bits of `tail`."""
    return uuid.UUID(int=_version_7_value(unix_ms, tail))


def timed_transfer_id(topic: str, event_id: str, leg: str, occurred_at: datetime) -> uuid.UUID:
    """The stable, time-ordered id of one leg of one event: a version 7 UUID whose timestamp is
    `occurred_at` in Unix milliseconds (rounded down) and whose 74 other bits are the first 74
    bits of the SHA-1 of what `transfer_id` hashes (`TRANSFER_ID_NAMESPACE`, then topic,
    event_id and leg).

    The same (topic, event_id, leg, occurred_at) gives the same id on every delivery and every
    consumer; ids of events that occurred in a later millisecond sort after. `occurred_at` must
    be timezone-aware. Like `transfer_id`, the value is asyncpg's `uuid.UUID` subclass."""
    digest = hashlib.sha1(
        _NAMESPACE_BYTES + _leg_name(topic, event_id, leg), usedforsecurity=False
    ).digest()
    tail = int.from_bytes(digest[:10]) >> _DIGEST_TAIL_SHIFT
    value = _version_7_value(unix_ms_of(occurred_at), tail)
    fast_uuid: uuid.UUID = pgproto.UUID(value.to_bytes(16))
    return fast_uuid


def unix_ms_of(moment: datetime) -> int:
    """Milliseconds since the Unix epoch of a timezone-aware `moment`, rounded down."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no timezone")
    return (moment - _UNIX_EPOCH) // _ONE_MS


def _version_7_value(unix_ms: int, tail: int) -> int:
    """The 128 bits of a version 7 UUID: `unix_ms`, the version, the low 74 bits of `tail` with
    the RFC 9562 variant between their first 12 bits and the last 62."""
    if not 0 <= unix_ms <= UNIX_MS_MAX:
        raise ValueError(f"unix_ms {unix_ms} is outside 0..{UNIX_MS_MAX}")
    tail &= _TAIL_MASK
    rand_a = tail >> 62  # 12 bits
    rand_b = tail & (2**62 - 1)  # 62 bits
    return (
        (unix_ms << 80) | (_VERSION_7 << 76) | (rand_a << 64) | (_VARIANT_RFC_9562 << 62) | rand_b
    )
