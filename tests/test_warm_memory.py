"""The benchmark's memory warm-up touches what it says, in a child, and reads MemFree right."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import warm_memory


def test_free_bytes_reads_memfree_not_available(tmp_path: Path) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n")
    assert warm_memory.free_bytes(str(info)) == 1_000_000 * 1024
    assert warm_memory.free_bytes(str(tmp_path / "missing")) is None
    (tmp_path / "odd").write_text("MemTotal: 5 kB\n")
    assert warm_memory.free_bytes(str(tmp_path / "odd")) is None


# (the free memory is given, not read: on a machine whose page cache holds most of it, as
# during a test run beside big stores, MemFree alone would cap what is touched)
@pytest.mark.skipif(warm_memory.free_bytes() is None, reason="no /proc/meminfo on this machine")
def test_warm_touches_at_most_what_was_asked_in_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_memory, "free_bytes", lambda: warm_memory.RESERVE + (4 << 30))
    result = warm_memory.warm_free_memory(gib=0.5)
    assert result["touched_gib"] == 0.5
    assert result["seconds"] > 0
    assert result["first_gib_s"] is None  # less than a GiB: no per-GiB figure


@pytest.mark.skipif(warm_memory.free_bytes() is None, reason="no /proc/meminfo on this machine")
def test_warm_touches_the_free_memory_less_the_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_memory, "free_bytes", lambda: warm_memory.RESERVE + 3 * warm_memory.CHUNK + 4096)
    assert warm_memory.warm_free_memory()["touched_gib"] == 0.75  # three whole chunks


def test_nothing_touched_below_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_memory, "free_bytes", lambda: warm_memory.RESERVE + warm_memory.CHUNK - 1)
    assert warm_memory.warm_free_memory() == {"touched_gib": 0.0, "seconds": 0.0}
