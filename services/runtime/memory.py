"""Keeping the C allocator from holding freed memory in a long-running process.

glibc's malloc serves a block of 128 KiB or more with an mmap of its own, handed back to the
system when it is freed. But the first time such a block is freed, malloc raises that threshold
to the block's size (up to 32 MiB), and from then on blocks of that size come from the heap. The
consumers' large blocks are Kafka fetch responses and their copies (up to
CONSUMER_PARTITION_FETCH_MAX_BYTES a partition, CONSUMER_FETCH_MAX_BYTES a fetch), allocated and
freed many times a second between small blocks that live on; in the heap they leave free holes
that malloc can neither reuse for everything nor give back. Under a steady stream of 500 records/s
a `giftledger run` process's free heap grew by about 1.9 MiB a minute that way, and stopped
growing with the threshold fixed at 128 KiB (`fix_mmap_threshold`, which also turns the raising
off). Each large block then costs an mmap and a munmap: a few hundred a second at most.

MALLOC_MMAP_THRESHOLD_ in the environment (glibc's own setting) wins: with it set, nothing is
changed here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 128 * 1024
M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has `mallopt` and `gnu_get_libc_version`), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(library, "mallopt") or not hasattr(library, "gnu_get_libc_version"):
        return None
    return library


def fix_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every block of `threshold_bytes` or more with an mmap of its own from now on, and
    never raise that threshold. True when done; False where the C library is not glibc, or
    MALLOC_MMAP_THRESHOLD_ is set (then glibc applied it already)."""
    if os.environ.get(MMAP_THRESHOLD_ENV):
        return False
    library = _glibc()
    if library is None:
        return False
    library.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    library.mallopt.restype = ctypes.c_int
    done = bool(library.mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    if not done:
        logger.warning("malloc's mmap threshold could not be set to %d bytes", threshold_bytes)
    return done
