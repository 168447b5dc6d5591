"""The refresh's malloc settings: big blocks from the heap inside, glibc's defaults after."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from bot import memory

glibc_only = pytest.mark.skipif(memory._glibc() is None, reason="glibc's malloc only")
BIG = 96 << 20  # far above glibc's mmap threshold (at most 32 MiB)


def _in_heap(address: int) -> bool:
    """Whether `address` lies in the process's [heap] mapping (brk), not a mapping of its own."""
    with open("/proc/self/maps") as fh:
        for line in fh:
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if lo <= address < hi:
                    return True
    return False


@glibc_only
def test_big_blocks_come_from_the_heap_inside_and_from_mmap_after() -> None:
    before = np.ones(BIG, dtype=np.uint8)
    assert not _in_heap(before.ctypes.data)  # glibc's default: a mapping of its own
    del before
    with memory.refresh_malloc() as applied:
        inside = np.ones(BIG, dtype=np.uint8)
        assert applied is True
        assert _in_heap(inside.ctypes.data)
        del inside
        again = np.ones(BIG, dtype=np.uint8)  # the freed block is there for the next one
        assert _in_heap(again.ctypes.data)
        del again
    after = np.ones(BIG, dtype=np.uint8)
    assert not _in_heap(after.ctypes.data)  # the defaults are back


def test_elsewhere_the_block_runs_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("", ""))
    with memory.refresh_malloc() as applied:
        ran = True
    assert ran and applied is False


@glibc_only
def test_the_defaults_come_back_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), memory.refresh_malloc():
        raise RuntimeError("refresh failed")
    after = np.ones(BIG, dtype=np.uint8)
    assert not _in_heap(after.ctypes.data)
