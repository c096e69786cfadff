"""The soak benchmark (`bench/soak.py`) when it does not run to its end, at the smallest scale
(a few seconds at 200 records a second, the test session's broker): a consumer process that dies
stops it at once, and it still prints the end state and the counts as of the stop, marked
STOPPED, and exits 1; SIGTERM stops it with exit 143, after its consumer processes and its
embedded PostgreSQL are gone."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

from bench.soak import EXIT_TERMINATED
from tests.test_soak_smoke import start_soak

SOAK_TIMEOUT_S = 240.0
LINE_WAIT_S = 180.0
GONE_WAIT_S = 10.0
GONE_POLL_S = 0.1
CONSUMERS = re.compile(r"^consumers: pids (\d+), (\d+);")
SOCKET = re.compile(r"socket in (\S+?)\);")


async def read_until(process: asyncio.subprocess.Process, pattern: str, lines: list[str]) -> str:
    """Lines of the soak's output (kept in `lines`) up to the first that starts with
    `pattern`."""
    assert process.stdout is not None

    async def reading() -> str:
        while True:
            raw = await process.stdout.readline()  # type: ignore[union-attr]
            assert raw, "\n".join(lines)
            line = raw.decode().rstrip("\n")
            lines.append(line)
            if line.startswith(pattern):
                return line

    return await asyncio.wait_for(reading(), LINE_WAIT_S)


def exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def postmaster_of(socket_directory: str) -> int:
    """The pid of the PostgreSQL server that keeps its socket (and data) in that directory."""
    pid_file = Path(socket_directory) / "postmaster.pid"
    return int(pid_file.read_text().splitlines()[0])


async def still_running(pids: list[int]) -> list[int]:
    """Those of `pids` still running after at most GONE_WAIT_S."""
    for _ in range(round(GONE_WAIT_S / GONE_POLL_S)):
        if not [pid for pid in pids if exists(pid)]:
            break
        await asyncio.sleep(GONE_POLL_S)
    return [pid for pid in pids if exists(pid)]


def directory_exists(path: str) -> bool:
    return Path(path).exists()


async def test_a_consumer_that_dies_stops_the_soak_with_its_end_state_and_counts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    process = await start_soak(kafka_bootstrap, tmp_path, "0.5")
    lines: list[str] = []
    try:
        found = CONSUMERS.match(await read_until(process, "consumers: pids", lines))
        assert found is not None, lines
        await read_until(process, "minute  1", lines)
        os.kill(int(found.group(2)), signal.SIGKILL)
        output, _ = await asyncio.wait_for(process.communicate(), SOAK_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines += output.decode().splitlines()
    text = "\n".join(lines)
    assert process.returncode == 1, text
    stopped = [line for line in lines if line.startswith("soak STOPPED: consumer-1")]
    assert len(stopped) == 1, text
    at_s = float(re.findall(r"^  after ([\d.]+) s of 30 s$", text, re.MULTILINE)[0])
    assert at_s < 20.0, text  # at once, not at the end of the soak's 30 s
    assert any(line.startswith("end state AS OF THE STOP, against the ") for line in lines), text
    assert any(line.startswith("end state: ") for line in lines), text
    for count in ("applied: ", "duplicates: ", "dead letters: ", "lost: ", "doubled: "):
        assert any(line.startswith(count) for line in lines), (count, text)
    assert lines[-1].startswith("soak STOPPED: the figures above are as of the stop"), text
    assert not await still_running([int(found.group(1)), int(found.group(2))]), text


async def test_sigterm_stops_the_soak_and_every_process_it_started(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    process = await start_soak(kafka_bootstrap, tmp_path, "1")
    lines: list[str] = []
    try:
        socket = SOCKET.search(await read_until(process, "database: ", lines))
        assert socket is not None, lines
        postmaster = postmaster_of(socket.group(1))
        found = CONSUMERS.match(await read_until(process, "consumers: pids", lines))
        assert found is not None, lines
        await read_until(process, "minute  1", lines)
        children = [int(found.group(1)), int(found.group(2)), postmaster]
        assert all(exists(pid) for pid in children), lines
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), SOAK_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines += output.decode().splitlines()
    text = "\n".join(lines)
    assert process.returncode == EXIT_TERMINATED, text
    assert lines[-1].startswith("soak terminated (SIGTERM)"), text
    assert not await still_running(children), text
    assert not directory_exists(socket.group(1)), text
