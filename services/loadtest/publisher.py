"""The load test's publisher, in a process of its own: it replays a range of the stream file
(`services.loadtest.replay`) while the consumers run in the load test's process, so the two do
not share an event loop or a core's worth of Python.

The load test (`services.loadtest.pipeline`) starts `python -m services.loadtest.publisher` for
each phase it publishes and reads its standard output, one JSON document a line:

- `{"published": N, "first_send_wall_s": T}` every `PROGRESS_INTERVAL_S` while it publishes (N
  records handed to the producer so far; T the wall-clock time of the first send, or null);
- `{"done": true, ...}` once every record is acknowledged: the replay's figures and the
  process's CPU time. The sampled send times (`services.loadtest.measurements.SendTimes`) are
  in the file given as `--send-times-file` by then.

The parent keeps `SendTimes.published` up to date from the progress lines (the load test samples
it), merges the sampled send times when the process ends, and notes the phase's timing in
`SendTimes.publishes`. A publisher that says nothing for `SILENCE_S_MAX` is killed; one that
exits without its `done` line fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from services.loadtest.measurements import PublishTiming, SendTimes
from services.loadtest.replay import REPLAY_MODES, ReplayMode, StreamRecord, replay

PROGRESS_INTERVAL_S = 0.1
SILENCE_S_MAX = 60.0
STOP_WAIT_S = 10.0
OUTPUT_LINE_BYTES_MAX = 1024 * 1024


class PublisherError(RuntimeError):
    """The publisher process failed, or went silent for too long."""


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """One range of the stream to publish from a publisher process."""

    stream: Path
    bootstrap_servers: str
    topic_prefix: str
    mode: ReplayMode
    speed: float
    rate_per_s: int | None
    start: int
    stop: int | None  # None: to the end of the stream
    checkpoint_file: Path
    send_times_file: Path

    def arguments(self) -> list[str]:
        arguments = [
            "--stream",
            str(self.stream),
            "--bootstrap-servers",
            self.bootstrap_servers,
            "--topic-prefix",
            self.topic_prefix,
            "--mode",
            self.mode,
            "--speed",
            repr(self.speed),
            "--start",
            str(self.start),
            "--checkpoint-file",
            str(self.checkpoint_file),
            "--send-times-file",
            str(self.send_times_file),
        ]
        if self.rate_per_s is not None:
            arguments += ["--rate", str(self.rate_per_s)]
        if self.stop is not None:
            arguments += ["--stop", str(self.stop)]
        return arguments


# The parent's side ---------------------------------------------------------------------------


def _monotonic_of_wall(wall_s: float) -> float:
    """A wall-clock moment on this process's monotonic clock."""
    return time.monotonic() - (time.time() - wall_s)


async def publish_from_process(request: PublishRequest, send_times: SendTimes) -> PublishTiming:
    """Publish `request`'s range from a publisher process, keeping `send_times.published` up to
    date while it runs; then merge its sampled send times and note its timing in
    `send_times.publishes`. Raises `PublisherError` when the process fails or goes silent."""
    published_before = send_times.published
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.loadtest.publisher",
        *request.arguments(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        limit=OUTPUT_LINE_BYTES_MAX,
    )
    assert process.stdout is not None
    first_send_t: float | None = None
    done: dict[str, Any] | None = None
    try:
        while True:
            try:
                line = await asyncio.wait_for(process.stdout.readline(), SILENCE_S_MAX)
            except TimeoutError:
                raise PublisherError(
                    f"the publisher process said nothing for {SILENCE_S_MAX:g} s"
                ) from None
            if not line:
                break
            message = json.loads(line)
            if message.get("done"):
                done = message
                done["done_t"] = time.monotonic()
            send_times.published = published_before + int(message["published"])
            first_send_wall_s = message.get("first_send_wall_s")
            if first_send_t is None and first_send_wall_s is not None:
                first_send_t = _monotonic_of_wall(float(first_send_wall_s))
        exit_code = await asyncio.wait_for(process.wait(), STOP_WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if exit_code != 0 or done is None:
        raise PublisherError(f"the publisher process exited with {exit_code} before it was done")
    rows = await asyncio.to_thread(request.send_times_file.read_text, encoding="utf-8")
    send_times.merge(json.loads(rows))
    timing = PublishTiming(
        records=int(done["published"]),
        first_send_t=done["done_t"] if first_send_t is None else first_send_t,
        done_t=done["done_t"],
        elapsed_s=float(done["elapsed_s"]),
        cpu_s=float(done["cpu_s"]),
    )
    send_times.publishes.append(timing)
    return timing


# The publisher process -----------------------------------------------------------------------


class _Progress:
    """What the publisher process reports: the records handed to the producer (sampling their
    send times on the way) and when the first one went."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.send_times = SendTimes()
        self.first_send_wall_s: float | None = None

    def on_send(self, record: StreamRecord) -> None:
        if self.first_send_wall_s is None:
            self.first_send_wall_s = time.time()
        self.send_times(record)

    def write(self, **fields: Any) -> None:
        document = {
            "published": self.send_times.published,
            "first_send_wall_s": self.first_send_wall_s,
            **fields,
        }
        self.out.write(json.dumps(document) + "\n")
        self.out.flush()

    async def report_forever(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(PROGRESS_INTERVAL_S)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _publish(arguments: argparse.Namespace, out: TextIO) -> None:
    progress = _Progress(out)
    reporter = asyncio.create_task(progress.report_forever(), name="publisher-progress")
    try:
        report = await replay(
            arguments.stream,
            arguments.bootstrap_servers,
            topic_prefix=arguments.topic_prefix,
            mode=arguments.mode,
            speed=arguments.speed,
            rate_per_s=arguments.rate,
            resume_from=arguments.start,
            stop_at=arguments.stop,
            on_send=progress.on_send,
            checkpoint_file=arguments.checkpoint_file,
        )
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    times = [[topic, event_id, at] for (topic, event_id), at in progress.send_times.times.items()]
    await asyncio.to_thread(arguments.send_times_file.write_text, json.dumps(times), "utf-8")
    progress.write(
        done=True,
        acknowledged=report.records_acknowledged,
        elapsed_s=report.elapsed_s,
        cpu_s=_cpu_s(),
        behind_schedule_ms_max=report.behind_schedule_ms_max,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.loadtest.publisher",
        description="publish a range of a load-test stream, reporting progress on stdout",
    )
    parser.add_argument("--stream", type=Path, required=True)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--mode", choices=REPLAY_MODES, required=True)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--rate", type=int, default=None)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int, default=None)
    parser.add_argument("--checkpoint-file", type=Path, required=True)
    parser.add_argument("--send-times-file", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    asyncio.run(_publish(arguments, sys.stdout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
