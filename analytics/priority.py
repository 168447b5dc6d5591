"""CPU priority of the calling thread, for work that should give way to other work."""

from __future__ import annotations

import contextlib
import os

LOWEST = 19  # the highest niceness, the lowest priority


def niceness() -> int:
    """This thread's niceness (0 where there are no priorities)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


def lower_priority(level: int) -> None:
    """Run this thread at niceness `level` (capped at `LOWEST`) unless it already runs
    lower. Linux keeps a niceness per thread, inherited by the threads and processes it
    starts; elsewhere it is the process's. Where there are no priorities, or lowering is
    refused, nothing changes."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, min(LOWEST, max(level, niceness())))
