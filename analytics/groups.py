"""Grouping rows by integer codes without hashing: the runs of equal values of a sorted
array, and the rows put in group order by a stable sort."""

from __future__ import annotations

import numpy as np


def run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts (in a sorted array: each distinct value's first row)."""
    if not len(values):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def run_bounds(values: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of equal values."""
    starts = run_starts(values).tolist()
    return list(zip(starts, [*starts[1:], len(values)], strict=True)) if starts else []


def group_order(number: np.ndarray, groups: int) -> np.ndarray:
    """Row order by group number (-1 to `groups` - 1), each group's rows in their order."""
    if groups < np.iinfo(np.int16).max:
        number = number.astype(np.int16)  # numpy's stable sort of 16-bit numbers is a radix sort
    return np.argsort(number, kind="stable")
