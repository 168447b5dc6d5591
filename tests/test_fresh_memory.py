"""The fresh-memory probe reads /proc/meminfo right and measures in a child process."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import fresh_memory
from benchmarks.suite import format_table


def test_meminfo_fields_are_read_in_bytes(tmp_path: Path) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n")
    assert fresh_memory.meminfo_bytes("MemFree", str(info)) == 1_000_000 * 1024
    assert fresh_memory.meminfo_bytes("MemTotal", str(info)) == 24_000_000 * 1024
    assert fresh_memory.meminfo_bytes("MemFree", str(tmp_path / "missing")) is None
    (tmp_path / "odd").write_text("MemTotal: 5 kB\n")
    assert fresh_memory.meminfo_bytes("MemFree", str(tmp_path / "odd")) is None


def test_the_probe_writes_what_it_was_asked_three_times_in_a_child() -> None:
    result = fresh_memory.fresh_memory_cost(gib=0.125, pause_s=0.0)
    assert result["gib"] == 0.125 and result["pause_s"] == 0.0
    for key in ("first_s_per_gib", "again_s_per_gib", "after_pause_s_per_gib"):
        # writing a GiB of ones takes some time, and far less than a minute on any machine
        assert 0 < result[key] < 60, (key, result)


def test_the_probe_never_writes_less_than_one_chunk() -> None:
    result = fresh_memory.fresh_memory_cost(gib=0.0, pause_s=0.0)
    assert result["gib"] == pytest.approx(fresh_memory.CHUNK / fresh_memory.GIB)


def test_the_table_names_the_fresh_memory_cost_when_measured() -> None:
    report = {"customers": 10, "orders": 20, "store": "sqlite", "as_of": "2018-08-31", "date": "d",
              "machine": {"cpus": 2, "memory_gb": 23.5,
                          "fresh_memory": {"gib": 1.0, "pause_s": 10.0, "first_s_per_gib": 2.25,
                                           "again_s_per_gib": 0.13, "after_pause_s_per_gib": 2.1}},
              "stages": {}}
    assert "fresh memory: 2.25 s/GiB, 0.13 written again at once, 2.10 after 10 s" in format_table(report)
    report["machine"]["fresh_memory"] = None
    assert "fresh memory" not in format_table(report)
