"""The process heap: give memory that was freed back to the system.

glibc keeps freed heap memory in its arenas, where long-lived allocations around it pin it: after many
allocate-and-free cycles (programming a layer part by part; a benchmark's repeated forwards) the resident set
stays far above the live memory. ``malloc_trim(0)`` returns what can be returned.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def return_freed_memory() -> bool:
    """Return freed heap memory to the system (glibc's ``malloc_trim(0)``); False where that is not available,
    so that the resident set does not measure live memory."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
