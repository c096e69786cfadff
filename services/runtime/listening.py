"""Listening sockets claimed when a process starts, before its consumers: a port that is taken
or a host that does not resolve stops `giftledger run` at once, naming the variables to change,
instead of a process that runs without its API or a traceback at its stop."""

from __future__ import annotations

import os
import socket

LISTEN_BACKLOG = 2048


class ListenError(OSError):
    """An address could not be listened on; the message names the settings that chose it."""


def listening_socket(host: str, port: int, variables: str) -> socket.socket:
    """A socket listening on host:port; `ListenError` naming `variables` (as "API_HOST and
    API_PORT") when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as error:
        raise ListenError(cannot_listen(host, port, variables, error)) from error


def cannot_listen(host: str, port: int, variables: str, error: OSError) -> str:
    # A refused bind says it twice in its strerror; a name that does not resolve has a
    # negative errno (its own code) and says it once.
    reason = os.strerror(error.errno) if error.errno and error.errno > 0 else str(error.strerror)
    return f"cannot listen on {host}:{port} ({variables}): {reason}"
