"""Log lines say when, in UTC with milliseconds, then the level, the logger and the message;
a record is one line, its traceback's lines indented under it; the soak counts a process's lines
by that level."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.soak_consumers import ConsumerProcesses
from services.cli import _log_handler

# 2026-12-04 14:11:48.315 UTC
CREATED_S = 1_796_393_508.315


def _record(level: int, message: str) -> logging.LogRecord:
    record = logging.LogRecord("services.app.consumer", level, __file__, 1, message, None, None)
    record.created = CREATED_S
    record.msecs = 315.0
    return record


def test_a_line_starts_with_its_utc_time_in_milliseconds_then_the_level() -> None:
    line = _log_handler().format(_record(logging.WARNING, "outbox not published"))
    assert datetime.fromtimestamp(CREATED_S, UTC).isoformat(timespec="milliseconds") == (
        "2026-12-04T14:11:48.315+00:00"
    )
    assert line == "2026-12-04T14:11:48.315Z WARNING services.app.consumer: outbox not published"


def test_a_message_with_line_breaks_is_still_one_line() -> None:
    # As SQLAlchemy's messages are: the statement and a link on lines of their own.
    message = "(asyncpg.Error) bigint out of range\r\n[SQL: SELECT 1]\n(Background on this error)"
    line = _log_handler().format(_record(logging.WARNING, message))
    assert line == (
        "2026-12-04T14:11:48.315Z WARNING services.app.consumer: (asyncpg.Error) bigint out of"
        " range\\r\\n[SQL: SELECT 1]\\n(Background on this error)"
    )


def test_a_traceback_follows_its_record_with_every_line_indented() -> None:
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        record = _record(logging.ERROR, "GET /v1/trial-balance failed")
        record.exc_info = sys.exc_info()
    lines = _log_handler().format(record).split("\n")
    assert lines[0] == (
        "2026-12-04T14:11:48.315Z ERROR services.app.consumer: GET /v1/trial-balance failed"
    )
    assert lines[1] == "    Traceback (most recent call last):"
    assert lines[-2:] == ["    ValueError: first", "    second"]
    assert all(line.startswith("    ") for line in lines[1:])


def test_the_soak_counts_lines_by_their_level_not_by_what_they_say(tmp_path: Path) -> None:
    handler = _log_handler()
    lines = [
        handler.format(_record(logging.WARNING, "one")),
        handler.format(_record(logging.ERROR, "WARNING in the message is not a warning")),
        "WARNING at the start of a traceback line is not a log line",
        handler.format(_record(logging.WARNING, "two")),
    ]
    (tmp_path / "consumer-0.log").write_text("\n".join(lines) + "\n")
    processes = ConsumerProcesses({}, tmp_path, 1, command=["true"])
    assert processes.log_lines("WARNING") == 2
    assert processes.log_lines("ERROR") == 1
    asyncio.run(processes.stop_all())
