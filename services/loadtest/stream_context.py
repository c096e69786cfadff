"""What the parts of one generator run share (`services.loadtest.generator`): the seeded random
source, the recorded clock and the ids, the records being written or held back (out of order),
the bounded rings of recent records, and the running tally of what every record becomes.

Memory is bounded whatever the stream's length: records are written as they are made; what is
kept is per creator (balances; creators are capped by `creator_count`), plus bounded rings of
recent records (for duplicates, conflicts and reversals) and of held-back records.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from services.loadtest.stream_format import (
    CREATOR_COUNT_MAX,
    CREATOR_COUNT_MIN,
    STREAM_START,
    StreamShape,
    StreamWriter,
    compact,
)

# Bounds: what a generator keeps in memory does not grow with the stream's length.
EVENTS_PER_CREATOR = 40
RECENT_RECORDS_MAX = 512
RECENT_GIFTS_MAX = 4_096
HELD_BACK_RECORDS_MAX = 400

ZIPF_EXPONENT = 1.1


def creator_count_for(events: int, shape: StreamShape) -> int:
    """The creators of a stream of `events` records: the shape's, or one per
    `EVENTS_PER_CREATOR` records within the bounds."""
    return shape.creator_count or min(
        max(events // EVENTS_PER_CREATOR, CREATOR_COUNT_MIN), CREATOR_COUNT_MAX
    )


@dataclass(slots=True)
class Outgoing:
    """A record made but maybe held back; `on_sent` runs when it is written."""

    topic: str
    key: str
    value: str | bytes
    replayable: bool = False  # a duplicate may copy it
    conflictable: dict[str, Any] | None = None  # an event_id conflict may reuse its event
    gift: tuple[str, int, int] | None = None  # (event_id, creator rank, milli-diamonds)


@dataclass
class Tally:
    """What the records made so far become, and the balances they leave (per creator rank)."""

    diamonds: dict[int, int] = field(default_factory=dict)  # milli-diamonds
    wallets: dict[tuple[int, str], int] = field(default_factory=dict)  # (rank, currency): minor
    records_by_topic: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)
    cashouts: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)


class StreamContext:
    """One run's random source, clock, ids and emission; the parts of the generator that make
    records share it (and its `tally`)."""

    def __init__(
        self,
        writer: StreamWriter,
        *,
        events: int,
        seed: int,
        namespace: str,
        shape: StreamShape,
        cashout_count: int,
    ) -> None:
        self.writer = writer
        self.events = events
        self.seed = seed
        self.ns = namespace
        self.shape = shape
        self.rng = random.Random(seed)
        self.creator_count = creator_count_for(events, shape)
        weights = (1 / rank**ZIPF_EXPONENT for rank in range(1, self.creator_count + 1))
        self.zipf_cumulative = list(itertools.accumulate(weights))
        self.serial = 0
        self.clock_ms = 0.0
        self.rate_factor = 1.0  # a scenario's burst runs the clock faster
        self.day_texts: dict[int, str] = {}
        self.cashout_count = cashout_count
        self.main_target = events - cashout_count
        self.reserved = 0  # records of the main phase a scenario has promised to write later
        # Held back records: (release at record count, sequence, record).
        self.held_back: list[tuple[int, int, Outgoing]] = []
        self.held_sequence = 0
        self.recent_records: deque[tuple[str, str, str]] = deque(maxlen=RECENT_RECORDS_MAX)
        self.recent_events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=RECENT_RECORDS_MAX)
        self.recent_gifts: list[tuple[str, int, int]] = []
        self.tally = Tally()

    # Ids, names, time.

    def next_id(self, kind: str) -> str:
        self.serial += 1
        return f"{self.ns}-{kind}{self.serial}"

    def creator_id(self, rank: int) -> str:
        return f"{self.ns}-c{rank}"

    def iso(self, ms: int) -> str:
        """RFC 3339 in UTC, to the millisecond, `ms` after the stream's start (a midnight)."""
        day, rest = divmod(ms, 86_400_000)
        day_text = self.day_texts.get(day)
        if day_text is None:
            day_text = (STREAM_START.date() + timedelta(days=day)).isoformat()
            if len(self.day_texts) < 4_096:
                self.day_texts[day] = day_text
        seconds, milli = divmod(rest, 1_000)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        return f"{day_text}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"

    def now_ms(self) -> int:
        return int(self.clock_ms)

    def advance(self, speedup: float = 1.0) -> None:
        rate_per_ms = self.shape.events_per_s * self.rate_factor * speedup / 1000.0
        self.clock_ms += self.rng.expovariate(rate_per_ms)

    def zipf_rank(self) -> int:
        point = self.rng.random() * self.zipf_cumulative[-1]
        return min(bisect.bisect_left(self.zipf_cumulative, point) + 1, self.creator_count)

    def room(self, records: int) -> bool:
        written_or_due = self.writer.count + len(self.held_back) + self.reserved
        return self.main_target - written_or_due >= records

    # Emitting.

    def send(self, record: Outgoing) -> None:
        self.writer.write(record.topic, record.key, self.now_ms(), record.value)
        self.tally.records_by_topic[record.topic] += 1
        if record.replayable:
            assert isinstance(record.value, str)
            self.recent_records.append((record.topic, record.key, record.value))
        if record.conflictable is not None:
            self.recent_events.append((record.topic, record.conflictable))
        if record.gift is not None:
            self._remember_gift(record.gift)

    def _remember_gift(self, gift: tuple[str, int, int]) -> None:
        if len(self.recent_gifts) < RECENT_GIFTS_MAX:
            self.recent_gifts.append(gift)
        else:
            self.recent_gifts[self.rng.randrange(RECENT_GIFTS_MAX)] = gift

    def hold_back(self, record: Outgoing, records: int) -> None:
        release = self.writer.count + records
        self.held_sequence += 1
        heapq.heappush(self.held_back, (release, self.held_sequence, record))

    def dispatch(self, record: Outgoing) -> None:
        """Send now, or (out of order) hold back for a while."""
        if (
            self.rng.random() < self.shape.out_of_order_rate
            and len(self.held_back) < HELD_BACK_RECORDS_MAX
        ):
            self.hold_back(record, self.rng.randint(5, HELD_BACK_RECORDS_MAX))
            self.tally.totals["out_of_order"] += 1
        else:
            self.send(record)

    def release_due(self) -> None:
        while self.held_back and self.held_back[0][0] <= self.writer.count:
            self.send(heapq.heappop(self.held_back)[2])

    def release_all(self) -> None:
        while self.held_back:
            self.send(heapq.heappop(self.held_back)[2])

    def applied_event(self, topic: str, event: dict[str, Any], **options: Any) -> Outgoing:
        self.tally.applied[topic] += 1
        return Outgoing(topic, str(event["creator_id"]), compact(event), **options)

    def bad(self, topic: str, key: str, value: str | bytes, reason: str) -> None:
        self.tally.dead_letters[(topic, reason)] += 1
        self.send(Outgoing(topic, key, value))
