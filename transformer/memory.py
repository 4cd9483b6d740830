"""Large buffers handed back to the system as soon as they are freed.

glibc's malloc serves a block over M_MMAP_THRESHOLD with a mapping of its own, unmapped when the
block is freed. But the threshold is dynamic: each time such a block is freed it rises to that
block's size (up to 32 MiB), so after the first uploads a 31 MB upload, its decoded pixels and
its answer come from the heap arenas, where they fragment and stay until the arena's top is
free. A fixed threshold (setting it turns the rise off) keeps every buffer over 1 MiB a mapping
of its own. Measured in-process (12 threads each joining a 31 MB upload from 64 KB pieces, three
bursts): peak RSS 760 MiB with the dynamic threshold, 404 MiB with it fixed. The environment
variable does the same for processes started later (KServe's --workers).
"""

from __future__ import annotations

import ctypes
import logging
import os

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD = 1024 * 1024

log = logging.getLogger(__name__)


def hand_back_large_buffers(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes, here and in child processes; False
    where the C library has no mallopt (not glibc)."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(threshold))
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    done = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    if not done:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) failed: freed uploads may stay held", threshold)
    return done
