"""The soak's consumer processes are stopped however the block that runs them ends: real child
processes (a sleeping Python in place of `giftledger run`), stopped on an error, on a
cancellation, and killed when they ignore SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from bench.soak_consumers import ConsumerProcesses

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
DEAF_SLEEPER = [
    sys.executable,
    "-c",
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('deaf', flush=True)\n"
    "time.sleep(600)",
]
CHILDREN = 3
STOP_TIMEOUT_S = 1.0
READY_WAIT_S = 10.0


def exists(pid: int) -> bool:
    """The process is there and not a zombie (a reaped child is gone from /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class SoakBodyError(RuntimeError):
    """What the soak's body raised."""


async def test_an_error_in_the_block_stops_every_child(tmp_path: Path) -> None:
    pids: list[int] = []
    consumers = ConsumerProcesses(dict(os.environ), tmp_path, CHILDREN, command=SLEEPER)

    async def soak_like() -> None:
        async with consumers:
            await consumers.start_all()
            pids.extend(child.pid for child in consumers.running())
            assert all(exists(pid) for pid in pids)
            raise SoakBodyError

    with pytest.raises(SoakBodyError):
        await soak_like()
    assert len(pids) == CHILDREN
    assert not [pid for pid in pids if exists(pid)]
    assert all(child.process.returncode is not None for child in consumers.running())


async def test_a_cancelled_task_stops_every_child(tmp_path: Path) -> None:
    started = asyncio.Event()
    pids: list[int] = []

    async def soak_like() -> None:
        async with ConsumerProcesses(
            dict(os.environ), tmp_path, CHILDREN, command=SLEEPER
        ) as consumers:
            await consumers.start_all()
            pids.extend(child.pid for child in consumers.running())
            started.set()
            await asyncio.sleep(600)

    task = asyncio.create_task(soak_like())
    await asyncio.wait_for(started.wait(), READY_WAIT_S)
    assert all(exists(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(pids) == CHILDREN
    assert not [pid for pid in pids if exists(pid)]


async def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    async with ConsumerProcesses(
        dict(os.environ), tmp_path, 1, command=DEAF_SLEEPER, stop_timeout_s=STOP_TIMEOUT_S
    ) as consumers:
        child = await consumers.start(0)
        log = child.log_path
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WAIT_S
        while b"deaf" not in log.read_bytes():  # its SIGTERM handler is in place
            assert loop.time() < deadline, log.read_text()
            await asyncio.sleep(0.05)
    assert child.process.returncode == -9
    assert not exists(child.pid)
