"""Load-test tools beside `generate`, `replay` and `loadtest`: `record` (live topics into a stream
file). `loadtest compare` is a form of `loadtest` (`services.loadtest.run`)."""

from __future__ import annotations

from services.commands.common import Command
from services.loadtest import record

COMMANDS: list[Command] = [
    Command(
        "record",
        "record live topics into a stream file that replay and loadtest read",
        record.add_record_arguments,
        record.record_command,
    ),
]
