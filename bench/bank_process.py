"""The simulated bank in a process of its own, for the cash-out benchmark.

In production the bank is not in giftledger's process: `giftledger run` consumes, applies and
relays, and the bank answers from elsewhere. Run inside the benchmark's process, the bank's
Python (reading `payouts.requested`, answering on `payouts.updated`) shares one event loop with
the consumers and the relay it answers, and its CPU a cash-out, the same in both modes, is
charged to the path being measured. Here it runs `services.payout_rail.simulated_rail` in a
spawned process with its own event loop; the parent reads its counts from shared memory
(`BankProcess.assigned_partition_count`, `reports_sent`), its CPU from /proc by its pid, and its
library log records at WARNING and above (written to a file of its own) as a count.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import os
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path

from bench.log_tally import LogTally
from services.payout_rail.rail import RailSettings, simulated_rail
from services.runtime.collector import settle_collector

# The slots of the bank's shared array of doubles.
ASSIGNED, REPORTS_SENT, WARNINGS_LOGGED, STARTED = range(4)
SLOT_COUNT = 4
SLOT_REFRESH_S = 0.05
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BankOptions:
    """What the bank process gives `simulated_rail` (`bench.cashout_bench.bank_options`)."""

    bootstrap_servers: str
    topic_prefix: str
    consumer_group: str
    session_timeout_ms: int
    fetch_wait_ms_max: int
    in_flight_max: int
    seed: int
    paid_delay_ms: int


@dataclass(frozen=True, slots=True)
class BankProcess:
    process: multiprocessing.process.BaseProcess
    slots: SynchronizedArray[float]
    stop_event: multiprocessing.synchronize.Event

    @classmethod
    def start(cls, options: BankOptions) -> BankProcess:
        context = multiprocessing.get_context("spawn")
        slots = context.Array("d", SLOT_COUNT)
        stop_event = context.Event()
        process = context.Process(
            target=_bank_main,
            args=(options, slots, stop_event),
            name="simulated-bank",
            daemon=True,
        )
        process.start()
        return cls(process, slots, stop_event)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def assigned_partition_count(self) -> int:
        self.check_alive()
        return round(self.slots[ASSIGNED])

    @property
    def reports_sent(self) -> int:
        return round(self.slots[REPORTS_SENT])

    @property
    def warnings_logged(self) -> int:
        return round(self.slots[WARNINGS_LOGGED])

    def check_alive(self) -> None:
        if self.process.exitcode is not None:
            raise AssertionError(f"the bank's process exited with {self.process.exitcode}")

    async def wait_started(self) -> None:
        """Until the bank's consumer and producer have started (its group may form later)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.slots[STARTED]:
            self.check_alive()
            assert time.monotonic() < deadline, f"the bank did not start in {START_TIMEOUT_S} s"
            await asyncio.sleep(SLOT_REFRESH_S)

    async def stop(self) -> None:
        """Stop the bank cleanly (its last counts are in the slots afterwards); kill it if it
        does not stop within `STOP_TIMEOUT_S`."""
        self.stop_event.set()
        await asyncio.to_thread(self.process.join, STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            raise AssertionError(f"the bank's process did not stop within {STOP_TIMEOUT_S} s")


def _bank_main(
    options: BankOptions,
    slots: SynchronizedArray[float],
    stop: multiprocessing.synchronize.Event,
) -> None:
    tally = LogTally(Path(tempfile.gettempdir()) / f"cashout_bench-bank-{os.getpid()}.log")
    tally.install()
    asyncio.run(_serve(options, slots, stop, tally))


async def _serve(
    options: BankOptions,
    slots: SynchronizedArray[float],
    stop: multiprocessing.synchronize.Event,
    tally: LogTally,
) -> None:
    rail = simulated_rail(
        RailSettings(
            seed=options.seed,
            paid_delay_ms=options.paid_delay_ms,
            failure_rate=0.0,
            return_rate=0.0,
        ),
        options.bootstrap_servers,
        topic_prefix=options.topic_prefix,
        consumer_group=options.consumer_group,
        session_timeout_ms=options.session_timeout_ms,
        fetch_wait_ms_max=options.fetch_wait_ms_max,
        in_flight_max=options.in_flight_max,
    )

    def note() -> None:
        slots[ASSIGNED] = rail.assigned_partition_count()
        slots[REPORTS_SENT] = rail.reports_sent
        slots[WARNINGS_LOGGED] = sum(tally.counts.values())

    await rail.start()
    settle_collector()  # as `giftledger run --payout-rail` does once its rail has started
    slots[STARTED] = time.time()
    try:
        while not stop.is_set():
            note()
            await asyncio.sleep(SLOT_REFRESH_S)
    finally:
        await rail.stop()
        note()
