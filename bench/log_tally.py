"""Keeping the libraries' log records off a benchmark's console: counted, and written to a file."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

QUIET_LOGGERS = ("aiokafka", "faststream", "faststream.access.kafka")


class LogTally(logging.Filter):
    """Keeps the libraries' log records off the console: counts them by level and logger, and
    writes them to a file. FastStream's broker logger prints to stdout itself and resets its level
    when a broker starts, hence a filter on that logger as well as on the root handler."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.counts: Counter[tuple[str, str]] = Counter()
        self._file = logging.FileHandler(path)
        self._file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.counts[record.levelname, record.name] += 1
            self._file.handle(record)
        return False

    def install(self) -> None:
        root_handler = logging.NullHandler()
        root_handler.addFilter(self)
        logging.basicConfig(level=logging.WARNING, handlers=[root_handler], force=True)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("faststream.access.kafka").addFilter(self)
