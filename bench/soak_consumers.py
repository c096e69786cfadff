"""The soak's consumers: `giftledger run` child processes sharing one consumer group per topic.

Process 0 also runs the simulated bank (`giftledger run --payout-rail`); the others run the
consumers alone, so that one of them can be killed with SIGKILL and started again without taking
the bank with it. Each process serves its Prometheus metrics on a loopback port of its own: the
soak reads their counts from there (`read_counts`, the last reading of a killed process is kept)
and their resident memory from /proc (`rss_bytes`). Output goes to `<log_dir>/<name>.log`.

The processes run in sessions of their own, so a Ctrl-C at the terminal reaches the soak alone;
`async with ConsumerProcesses(...)` stops every one of them however the block ends (an error,
a cancellation, SIGINT or SIGTERM to the soak).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from bench.consumer_workers import rss_bytes_of
from bench.process_cpu import cpu_seconds_of
from schemas import topics
from services.payout_rail.rail import GROUP_SUFFIX

LOOPBACK_HOST = "127.0.0.1"
STOP_TIMEOUT_S = 60.0
KILL_WAIT_S = 10.0
METRICS_READ_TIMEOUT_S = 2.0
GROUPS_POLL_S = 0.5
GROUP_STABLE = "Stable"
# The counters of services.runtime.metrics the soak adds up over every process's lifetime.
COUNTED = (
    "giftledger_events_consumed_total",
    "giftledger_events_applied_total",
    "giftledger_events_duplicate_total",
    "giftledger_events_dead_lettered_total",
)


def giftledger_command() -> list[str]:
    """The `giftledger` console script beside this interpreter, else its module."""
    script = Path(sys.executable).with_name("giftledger")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "services.cli"]


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_HOST, 0))
        return cast(int, probe.getsockname()[1])


def read_metric_counts(port: int) -> dict[str, float]:
    """The COUNTED counters of one process, summed over their labels (blocking)."""
    url = f"http://{LOOPBACK_HOST}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=METRICS_READ_TIMEOUT_S) as response:
        body = response.read().decode("utf-8")
    counts = dict.fromkeys(COUNTED, 0.0)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in counts:
                counts[sample.name] += sample.value
    return counts


class ConsumerDiedError(RuntimeError):
    """A consumer process exited that the soak did not stop."""


@dataclass
class ConsumerProcess:
    """One `giftledger run` child: its name, process, metrics port and log file."""

    name: str
    process: asyncio.subprocess.Process
    metrics_port: int
    log_path: Path
    counts: dict[str, float] = field(default_factory=dict)  # the last reading of its metrics
    cpu_s: float = 0.0  # the last reading of its CPU time

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None


class ConsumerProcesses:
    """`count` children with the same environment: one consumer group per topic between them.
    `command` replaces `giftledger` (the arguments `run` and `--payout-rail` still follow it)."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        count: int,
        *,
        command: Sequence[str] | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        assert count >= 1, count
        self.env = env
        self.log_dir = log_dir
        self.count = count
        self.command = list(command) if command is not None else giftledger_command()
        self.stop_timeout_s = stop_timeout_s
        self.slots: list[ConsumerProcess | None] = [None] * count
        self.retired: list[ConsumerProcess] = []  # killed processes, with their last counts
        self.starts = Counter[int]()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop_all()

    async def start_all(self) -> None:
        for index in range(self.count):
            await self.start(index)

    async def start(self, index: int) -> ConsumerProcess:
        assert self.slots[index] is None, index
        self.starts[index] += 1
        name = (
            f"consumer-{index}"
            if self.starts[index] == 1
            else f"consumer-{index}.{self.starts[index]}"
        )
        port = free_loopback_port()
        log_path = self.log_dir / f"{name}.log"
        arguments = ["run", "--payout-rail"] if index == 0 else ["run"]
        env = {**self.env, "METRICS_PORT": str(port), "METRICS_HOST": LOOPBACK_HOST}
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                *arguments,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        child = ConsumerProcess(name, process, port, log_path)
        self.slots[index] = child
        return child

    def running(self) -> list[ConsumerProcess]:
        return [child for child in self.slots if child is not None]

    def check_alive(self) -> None:
        """Raise `ConsumerDiedError` when a process the soak did not kill has exited."""
        for child in self.running():
            if not child.running:
                raise ConsumerDiedError(
                    f"{child.name} (pid {child.pid}) exited with {child.process.returncode}; "
                    f"see {child.log_path}"
                )

    async def kill(self, index: int) -> ConsumerProcess:
        """SIGKILL (kill -9) the process in slot `index` and wait for it to be gone."""
        child = self.slots[index]
        assert child is not None, index
        self.slots[index] = None  # first, so that check_alive() does not take it for a crash
        self.retired.append(child)
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.process.wait(), KILL_WAIT_S)
        return child

    def rss_bytes(self) -> int:
        """Resident memory of the running processes, summed (VmRSS from /proc)."""
        return sum(rss_bytes_of(child.pid) for child in self.running() if child.running)

    def cpu_seconds(self) -> float:
        """CPU time used by every process that ran, killed ones included (up to their last
        reading)."""
        for child in self.running():
            if child.running:
                child.cpu_s = max(child.cpu_s, cpu_seconds_of(child.pid))
        return sum(child.cpu_s for child in [*self.retired, *self.running()])

    def rss_bytes_of_slot(self, index: int) -> int:
        child = self.slots[index]
        return 0 if child is None or not child.running else rss_bytes_of(child.pid)

    async def read_counts(self) -> None:
        """Read every running process's counters; one that does not answer keeps its last."""
        for child in self.running():
            with contextlib.suppress(OSError, ValueError):
                child.counts = await asyncio.to_thread(read_metric_counts, child.metrics_port)

    def counted(self, name: str) -> int:
        """A COUNTED counter summed over every process that ran, killed ones included."""
        children = [*self.retired, *self.running()]
        return round(sum(child.counts.get(name, 0.0) for child in children))

    def log_lines(self, level: str) -> int:
        """Log lines of every process's output at `level` (WARNING, ERROR): lines whose second
        word is the level, after the time (`services.cli.LOG_FORMAT`)."""
        total = 0
        wanted = level.encode()
        for path in sorted(self.log_dir.glob("consumer-*.log")):
            with path.open("rb") as log:
                total += sum(1 for line in log if line.split(b" ", 2)[1:2] == [wanted])
        return total

    async def stop_all(self) -> None:
        """SIGTERM every running process (a clean stop), SIGKILL what is left after
        `stop_timeout_s`. Safe to call twice; the slots keep the stopped processes."""
        children = [child for child in self.running() if child.running]
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.process.wait(), self.stop_timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await asyncio.wait_for(child.process.wait(), KILL_WAIT_S)


def group_ids(consumer_group: str) -> dict[str, str]:
    """Each consumer group of a deployment, by the topic it reads (contract names)."""
    groups = {topic: f"{consumer_group}.{topic}" for topic in topics.CONSUMED_TOPICS}
    groups[topics.PAYOUTS_REQUESTED] = f"{consumer_group}{GROUP_SUFFIX}"
    return groups


async def wait_for_groups(
    bootstrap_servers: str, consumer_group: str, consumer_count: int, timeout_s: float
) -> bool:
    """True once every consumer group is stable with all its members (`consumer_count` for the
    consumed topics, one for the bank); False after `timeout_s`."""
    wanted = {
        group: 1 if topic == topics.PAYOUTS_REQUESTED else consumer_count
        for topic, group in group_ids(consumer_group).items()
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if await _groups_stable(admin, wanted):
                return True
            await asyncio.sleep(GROUPS_POLL_S)
        return False
    finally:
        await admin.close()


async def _groups_stable(admin: Any, wanted: dict[str, int]) -> bool:
    """Each group described on its own: the embedded broker closes the connection on some
    requests for several groups while they rebalance (the next poll asks again)."""
    for group, members in wanted.items():
        try:
            responses = await admin.describe_consumer_groups([group])
        except KafkaError:
            return False
        # Each group: (error_code, group_id, state, protocol_type, protocol, members, ...).
        described = [item for response in responses for item in response.groups]
        if [(item[2], len(item[5])) for item in described] != [(GROUP_STABLE, members)]:
            return False
    return True
