"""What memory the machine has not handed out lately costs to touch: a figure of the machine.

    python -m benchmarks.fresh_memory [--gib 1] [--pause 10]

On the virtual machines this project is measured on (Firecracker, virtio-balloon with free
page reporting), memory a process frees goes back to the host within seconds, and the next
page the guest touches there has to be backed by the host again: a GiB of numpy ones took
2.2-2.5 s to write, against 0.13 s when written again at once (the pages not yet given
back), and 1.6-2.4 s again after a pause of 3 to 8 s. So every process pays about 2.2 s of
kernel time per GiB of its peak memory, however often it runs: a 10M-order refresh that
peaks at 9-10 GiB spends some 20 s of its CPU there. (An earlier suite touched the free
memory once before timing anything, on the belief that the host backs a page only the first
time after boot; that did not last past the next few seconds, so it was dropped.)

`fresh_memory_cost` measures it in a child process, so the suite can record it beside its
figures (JSON "machine"."fresh_memory").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import time
from typing import Any

CHUNK = 64 << 20
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


def _seconds_per_gib(nbytes: int) -> float:
    """Seconds per GiB to write `nbytes` of new arrays (freed again before returning)."""
    import numpy as np

    started = time.perf_counter()
    held = [np.ones(CHUNK, dtype=np.uint8) for _ in range(max(1, nbytes // CHUNK))]
    seconds = time.perf_counter() - started
    touched = len(held) * CHUNK
    del held  # (64 MiB arrays are mapped apart: freeing them hands the pages back to the kernel)
    return seconds * GIB / touched


def _probe(nbytes: int, pause_s: float, out: Any) -> None:
    first = _seconds_per_gib(nbytes)
    again = _seconds_per_gib(nbytes)
    time.sleep(pause_s)
    later = _seconds_per_gib(nbytes)
    out.put({"first_s_per_gib": round(first, 3), "again_s_per_gib": round(again, 3),
             "after_pause_s_per_gib": round(later, 3)})


def fresh_memory_cost(gib: float = 1.0, pause_s: float = 10.0) -> dict[str, Any]:
    """In a child process: seconds per GiB to write `gib` GiB of new arrays, then again at
    once, then again after `pause_s` seconds (the memory freed in between)."""
    nbytes = max(CHUNK, int(gib * GIB))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_probe, args=(nbytes, pause_s, out), name="pulse-fresh-memory")
    child.start()
    child.join()  # (the result is a few numbers: it fits the queue's pipe while the child exits)
    try:
        result = out.get(timeout=5)
    except queue.Empty:
        return {"skipped": f"the child ended with code {child.exitcode}"}
    return {"gib": round(nbytes / GIB, 4), "pause_s": pause_s, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fresh_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="how much to write each time (default 1)")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds before the last write (default 10)")
    args = parser.parse_args(argv)
    print(json.dumps(fresh_memory_cost(args.gib, args.pause)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
