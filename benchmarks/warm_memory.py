"""Touch the machine's free memory once before anything is timed.

    python -m benchmarks.warm_memory [--gib N]

A virtual machine's memory may be backed by its host lazily: the first time the guest
touches a page it has never used, the host has to find one for it. On the machines this
project is measured on, a fresh GiB of numpy ones took 2.2-2.3 s the first time after boot
and 0.11 s every time after, in any process (holding 8 GiB: 16.1 s, then 0.9 s). A server
that has been up a while has touched its memory long ago; a benchmark started on a freshly
booted machine would instead charge those seconds, as kernel time, to whichever stage first
uses that much memory, and the next run of the same stage would look several times faster.

Only free memory is touched (not the page cache, which was touched when it was filled and
holds the store the stages read), in a child process that hands it all back when it ends.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import time
from typing import Any

CHUNK = 256 << 20
RESERVE = 1536 << 20  # left untouched, for everything else running meanwhile
GIB = 1 << 30


def meminfo_bytes(field: str, meminfo: str = "/proc/meminfo") -> int | None:
    """A /proc/meminfo field ("MemTotal", "MemFree", ...) in bytes (None where it cannot be read)."""
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def free_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """MemFree in bytes (None where /proc/meminfo is not there to read)."""
    return meminfo_bytes("MemFree", meminfo)


def _touch(nbytes: int, out: Any) -> None:
    import numpy as np

    held = []
    per_gib: list[float] = []
    started = lap = time.perf_counter()
    for i in range(nbytes // CHUNK):
        held.append(np.ones(CHUNK, dtype=np.uint8))  # every page written once, then kept
        if (i + 1) * CHUNK % GIB == 0:
            now = time.perf_counter()
            per_gib.append(now - lap)
            lap = now
    out.put({"touched_gib": round(len(held) * CHUNK / GIB, 2), "seconds": round(time.perf_counter() - started, 2),
             "first_gib_s": round(per_gib[0], 3) if per_gib else None,
             "last_gib_s": round(per_gib[-1], 3) if per_gib else None})


def warm_free_memory(gib: float | None = None) -> dict[str, Any]:
    """Write every page of the free memory (less a reserve; at most `gib` GiB) once, in a
    child process; how much was touched and how long it took ("first_gib_s" against
    "last_gib_s" shows whether it was still cold). Nothing is touched where the free
    memory cannot be read."""
    free = free_bytes()
    if free is None:
        return {"touched_gib": 0.0, "seconds": 0.0, "skipped": "no /proc/meminfo"}
    nbytes = max(0, free - RESERVE)
    if gib is not None:
        nbytes = min(nbytes, int(gib * GIB))
    if nbytes < CHUNK:
        return {"touched_gib": 0.0, "seconds": 0.0}
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_touch, args=(nbytes, out), name="pulse-warm-memory")
    child.start()
    child.join()  # (the result is a few numbers: it fits the queue's pipe while the child exits)
    try:
        return out.get(timeout=5)
    except queue.Empty:
        return {"touched_gib": 0.0, "seconds": 0.0, "skipped": f"the child ended with code {child.exitcode}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=None, help="touch at most this much (default: all free memory)")
    args = parser.parse_args(argv)
    print(json.dumps(warm_free_memory(args.gib)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
