"""Transfer ids that sort by time.

Random (version 4) UUIDs land on random pages of the primary key indexes of `transfers` and
`transfer_keys`: once those indexes outgrow memory, and after every checkpoint (when a page's
first change writes the whole page to the WAL), each insert costs a page of its own. Ids that
begin with a timestamp land on the few right-most pages instead. This is the layout of UUID
version 7 (RFC 9562): 48 bits of Unix milliseconds, the version, then 74 bits chosen by the
caller, here random or derived from what the transfer records so that it stays idempotent.
"""

from __future__ import annotations

import uuid

UNIX_MS_MAX = 2**48 - 1
TAIL_BITS = 74
_TAIL_MASK = 2**TAIL_BITS - 1
_VERSION_7 = 7
_VARIANT_RFC_9562 = 0b10


def time_ordered_id(unix_ms: int, tail: int) -> uuid.UUID:
    """A version 7 UUID from a millisecond timestamp and the low 74 bits of `tail`."""
    if not 0 <= unix_ms <= UNIX_MS_MAX:
        raise ValueError(f"unix_ms {unix_ms} is outside 0..{UNIX_MS_MAX}")
    tail &= _TAIL_MASK
    rand_a = tail >> 62  # 12 bits
    rand_b = tail & (2**62 - 1)  # 62 bits
    value = (
        (unix_ms << 80) | (_VERSION_7 << 76) | (rand_a << 64) | (_VARIANT_RFC_9562 << 62) | rand_b
    )
    return uuid.UUID(int=value)
