"""How the soak (`bench/soak.py`) waits for segments to settle: one reading a poll says both
whether it is done and whether anything moved (each reading is a count in the database the soak
measures), the wait sleeps nine times as long as a reading took, a reading that stays put stops
the wait after the stall bound, and a failed soak stops it at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.soak import SoakError, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

POLL_S = 0.01


class Counter:
    """A reading that grows by one each time it is read, up to `stop`."""

    def __init__(self, stop: int) -> None:
        self.reads = 0
        self.stop = stop

    async def read(self) -> int:
        self.reads += 1
        return min(self.reads, self.stop)


async def test_each_poll_reads_once() -> None:
    counter = Counter(stop=10)

    settled = await wait_for(counter.read, lambda n: n >= 5, stall_s=1.0, poll_s=POLL_S)

    assert settled
    assert counter.reads == 5


async def test_the_wait_sleeps_nine_times_as_long_as_a_reading_took() -> None:
    read_s = 0.05
    counter = Counter(stop=10)

    async def slow_read() -> int:
        await asyncio.sleep(read_s)
        return await counter.read()

    started = time.monotonic()
    settled = await wait_for(slow_read, lambda n: n >= 3, stall_s=5.0, poll_s=POLL_S)

    assert settled
    # three readings and two sleeps of at least nine readings each: 0.15 + 0.9 s, not 0.17
    assert time.monotonic() - started >= 3 * read_s + 2 * 9 * read_s


async def test_a_reading_that_stays_put_ends_the_wait_after_the_stall_bound() -> None:
    counter = Counter(stop=3)

    settled = await wait_for(counter.read, lambda n: n >= 5, stall_s=0.1, poll_s=POLL_S)

    assert not settled
    assert counter.reads > 3  # it kept reading through the stall bound


async def test_a_failed_soak_stops_the_wait() -> None:
    counter = Counter(stop=100)

    def check() -> None:
        if counter.reads >= 2:
            raise SoakError("a consumer died")

    with pytest.raises(SoakError, match="a consumer died"):
        await wait_for(counter.read, lambda n: n >= 50, stall_s=1.0, poll_s=POLL_S, check=check)
    assert counter.reads == 2
