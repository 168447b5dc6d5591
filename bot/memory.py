"""glibc's malloc told to keep freed memory for reuse while a refresh runs.

A refresh at ten million orders makes and drops numpy arrays of tens to hundreds of MB by
the thousand, on three threads at once. glibc gives every block above its mmap threshold
fresh pages of its own (mmap), which the kernel zeroes on first touch, and hands them back
on free (munmap): the 10M nightly refresh spent 36-42 s of CPU in the kernel, and perf put
15 % of a whole refresh's samples in zeroing pages. With big blocks taken from the heap and
freed memory kept there for the next ones (`refresh_malloc`), the same refresh took 59.1,
60.7 and 64.8 s against 65.4, 66.2 and 63.8 s in alternate runs, with peak RSS 10.2-10.8
GiB against 8.9-9.1 GiB (README, Performance). On the virtual machines measured, memory
handed back goes to the host within seconds, and each GiB touched again costs about 2.2 s
of kernel time (`benchmarks.fresh_memory`): memory kept in the heap is paid for once.
Afterwards glibc's defaults are put back and the memory kept is handed back to the system
(`malloc_trim`).

That keeps only the blocks of threads that share the main thread's heap. glibc gives other
threads arenas of their own, made of heaps of at most 64 MiB, and maps any bigger block of
such a thread fresh whatever the settings (and unmaps it on free): the facts, clusters and
migration threads of a 10M nightly refresh mapped and unmapped 22 GiB that way, 80 MB at a
time. So the processes that run refreshes (`pulse`, the bot's refresh process, the
benchmark's stages) cap glibc at one arena first thing (`one_arena`). The nightly refresh
then used 77-83 s of CPU against 85-92 s (system time 26-27 s against 29-34 s). glibc's
per-thread caches still serve small blocks without taking the arena's lock.

Only where the C library is glibc; elsewhere the block runs as it is.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# what the refresh runs with: no block from mmap, freed memory trimmed only above 2 GiB
# (mallopt's int caps it), the heap grown 256 MiB at a time
REFRESH_SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 256 << 20}
# glibc's documented defaults (mallopt(3)), put back afterwards
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024, M_TOP_PAD: 128 * 1024}


def _glibc() -> Any | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _apply(libc: Any, settings: dict[int, int]) -> bool:
    return all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in settings.items())


def one_arena() -> bool:
    """Cap glibc's malloc at one arena, the main thread's, for this process; whether it did.

    Call it first thing in a process, before any thread starts: glibc fixes the cap when a
    thread first needs an arena and keeps it for the process's life, and threads that
    already have arenas keep them (importing pyarrow starts two threads)."""
    libc = _glibc()
    return libc is not None and _apply(libc, {M_ARENA_MAX: 1})


@contextmanager
def refresh_malloc() -> Iterator[bool]:
    """Run the block with glibc's malloc keeping freed memory for reuse (`REFRESH_SETTINGS`);
    yields whether it does. Then glibc's defaults are put back and the kept memory trimmed."""
    libc = _glibc()
    applied = libc is not None and _apply(libc, REFRESH_SETTINGS)
    try:
        yield applied
    finally:
        if libc is not None:
            _apply(libc, GLIBC_DEFAULTS)
            libc.malloc_trim(ctypes.c_size_t(0))
