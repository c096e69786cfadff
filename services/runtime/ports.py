"""Loopback ports for servers started by the benchmarks and the tests: a free port to listen
on, and whether an HTTP server there answers yet.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Final

LOOPBACK_HOST: Final = "127.0.0.1"
ANSWER_TIMEOUT_S: Final = 1.0


def free_loopback_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago (the probe closes it again, so another
    process may take it before the caller binds it)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK_HOST, 0))
        return int(probe.getsockname()[1])


def http_answers(url: str) -> bool:
    """Whether a GET of `url` gets an answer below 500 within `ANSWER_TIMEOUT_S`."""
    try:
        with urllib.request.urlopen(url, timeout=ANSWER_TIMEOUT_S) as response:  # noqa: S310 (http://127.0.0.1)
            return int(response.status) < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except OSError:
        return False
