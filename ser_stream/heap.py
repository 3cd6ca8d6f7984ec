"""How a process's C heap treats large freed buffers (glibc's malloc; a no-op elsewhere).

numpy allocates its arrays with ``malloc``. glibc serves a large request with pages of its own
and returns them to the system when the array is freed, and gives back the top of its heap
once enough of it is free; a stage that allocates and frees the same few megabytes for every
window then faults the same pages in again each time. Two processes want opposite things:
the features and denoise stages reuse their buffers window after window (keep them), the VAD
opens and closes per-stream networks (hand them back).
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["KEEP_UP_TO_BYTES", "MAPPED_FROM_BYTES", "keep_freed_buffers", "map_large_buffers"]

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (glibc malloc.h)
_M_MMAP_THRESHOLD = -3

KEEP_UP_TO_BYTES = 32 * 1024 * 1024
"""Buffers up to this size come from the heap and stay there when freed (glibc's maximum)."""

MAPPED_FROM_BYTES = 512 * 1024
"""Allocations from this size get pages of their own in a VAD process."""


def _mallopt(*settings: tuple[int, int]) -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(bool(mallopt(parameter, value)) for parameter, value in settings)


@functools.cache
def keep_freed_buffers() -> bool:
    """Keep freed buffers of up to 32 MiB in the heap, for the next window to reuse.

    One 3 s window's transforms allocate and free about 5 MB of arrays; handed back each time,
    they cost some 1,100 page faults per window, half of the features' time. The heap then
    holds the largest window's working set (a few MB), which peak RSS counted anyway.
    Process-wide, so a stage's own process sets it (its warm-up), not every user of a core;
    returns whether it could (glibc only).
    """
    return _mallopt(
        (_M_MMAP_THRESHOLD, KEEP_UP_TO_BYTES), (_M_TRIM_THRESHOLD, 2 * KEEP_UP_TO_BYTES)
    )


@functools.cache
def map_large_buffers() -> bool:
    """Give buffers from 512 KiB pages of their own, returned to the system when freed.

    Silero networks' large buffers are 0.9-1.6 MB. Once one was freed, glibc raises its mmap
    threshold above that size and serves the next ones from its heap, whose free pages stay
    with the process (it returns only a heap's top), while new networks spread over pages old
    ones touched: 2,000 streams, 250 at a time, left the VAD at 1.5 GB after they ended (~6 MB
    per open stream, not 2.5). A fixed threshold (which also turns that rise off) keeps them
    mapped apart, so a freed network's memory goes back at once. 512 KiB leaves the VAD's own
    windows and noise (at most 3 s of float32, 192 KB) on the heap. Process-wide, so the VAD
    stage process sets it, not every user of the core; returns whether it could (glibc only).
    """
    return _mallopt((_M_MMAP_THRESHOLD, MAPPED_FROM_BYTES))
