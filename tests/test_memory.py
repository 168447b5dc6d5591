"""The refresh's malloc settings: big blocks from the heap inside, glibc's defaults after.

Where a block comes from depends on what the process allocated and freed before (a refresh
run by an earlier test leaves free chunks in the heap that later blocks reuse), so the
checks run in a fresh interpreter of their own."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bot import memory

ROOT = Path(__file__).resolve().parents[1]
glibc_only = pytest.mark.skipif(memory._glibc() is None, reason="glibc's malloc only")

IN_HEAP = r'''
def in_heap(array):
    """Whether the array's data lies in the [heap] mapping (brk), not a mapping of its own."""
    address = array.ctypes.data
    with open("/proc/self/maps") as fh:
        for line in fh:
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if lo <= address < hi:
                    return True
    return False
'''

CHECKS = r'''
import json
import numpy as np
from bot import memory

BIG = 96 << 20  # far above glibc's mmap threshold (at most 32 MiB)
''' + IN_HEAP + r'''


seen = {}
block = np.ones(BIG, dtype=np.uint8)
seen["before"] = in_heap(block)
del block
with memory.refresh_malloc() as applied:
    seen["applied"] = applied
    block = np.ones(BIG, dtype=np.uint8)
    seen["inside"] = in_heap(block)
    del block
    block = np.ones(BIG, dtype=np.uint8)
    seen["inside_again"] = in_heap(block)
    del block
block = np.ones(BIG, dtype=np.uint8)
seen["after"] = in_heap(block)
del block
try:
    with memory.refresh_malloc():
        raise RuntimeError("refresh failed")
except RuntimeError:
    pass
block = np.ones(BIG, dtype=np.uint8)
seen["after_failure"] = in_heap(block)
print(json.dumps(seen))
'''


@glibc_only
def test_big_blocks_come_from_the_heap_inside_and_from_mmap_after() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECKS], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["before"] is False  # glibc's default: a mapping of its own
    assert seen["applied"] is True
    assert seen["inside"] is True and seen["inside_again"] is True
    assert seen["after"] is False  # the defaults are back, the kept memory trimmed
    assert seen["after_failure"] is False


def test_elsewhere_the_block_runs_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("", ""))
    with memory.refresh_malloc() as applied:
        ran = True
    assert ran and applied is False


THREADS = r'''
import json
import sys
import threading

from bot import memory

mode = sys.argv[1]
seen = {"capped": memory.one_arena()} if mode == "one_arena" else {}
import numpy as np

BIG = 96 << 20  # above the 64 MiB heap of a thread's own arena
''' + IN_HEAP + r'''


def threads_in_heap():
    import pyarrow  # noqa: F401 - starts threads of its own (an arena), as in the refresh's processes

    found = []

    def work():
        block = np.ones(BIG, dtype=np.uint8)
        found.append(in_heap(block))

    with memory.refresh_malloc():
        workers = [threading.Thread(target=work) for _ in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    return found


if mode == "pulse":
    from bot import cli

    cli.cli = lambda prog_name: seen.update(threads=threads_in_heap())  # in place of the commands
    cli.main()
else:
    seen["threads"] = threads_in_heap()
print(json.dumps(seen))
'''


def _threads_seen(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", THREADS, mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_one_arena_puts_the_big_blocks_of_threads_in_the_heap_too() -> None:
    seen = _threads_seen("one_arena")
    assert seen["capped"] is True
    assert seen["threads"] == [True] * 4


@glibc_only
def test_without_one_arena_threads_map_their_big_blocks() -> None:
    # the case one_arena is for: each thread's arena maps a block above 64 MiB of its own
    assert _threads_seen("none")["threads"] == [False] * 4


@glibc_only
def test_the_pulse_entry_point_caps_the_arenas_before_its_command_runs() -> None:
    assert _threads_seen("pulse")["threads"] == [True] * 4
