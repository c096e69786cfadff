"""`fix_mmap_threshold`: after it, a large block freed and allocated again still gets an mmap of
its own (so freeing it gives the memory back), where glibc alone would serve the second one from
the heap. Each case runs in a fresh interpreter: the setting is for the whole process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.runtime.memory import MMAP_THRESHOLD_ENV, _glibc

BLOCK_BYTES = 1 << 20

# Prints whether the fix was applied, then by how much glibc's mmapped bytes grew when a 1 MiB
# block was allocated after an equal one had been freed.
PROBE = f"""
import ctypes, sys
from services.runtime.memory import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = fix_mmap_threshold() if sys.argv[1] == "fixed" else False
first = bytearray({BLOCK_BYTES})
del first
before = libc.mallinfo2().hblkhd
second = bytearray({BLOCK_BYTES})
print(applied, libc.mallinfo2().hblkhd - before)
"""

pytestmark = pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")


def mmapped_growth(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    environment = {key: value for key, value in os.environ.items() if key != MMAP_THRESHOLD_ENV} | (
        env or {}
    )
    output = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    ).stdout.split()
    return output[0] == "True", int(output[1])


def test_a_large_block_allocated_again_gets_its_own_mmap() -> None:
    assert mmapped_growth("plain") == (False, 0), "glibc raised its threshold on the free"
    applied, growth = mmapped_growth("fixed")
    assert applied
    assert growth >= BLOCK_BYTES


def test_the_environment_setting_wins() -> None:
    applied, growth = mmapped_growth("fixed", {MMAP_THRESHOLD_ENV: str(64 * 1024)})
    assert not applied
    assert growth >= BLOCK_BYTES  # glibc applied the environment's fixed threshold itself
