"""Grouping rows by integer codes without hashing: the runs of equal values of a sorted
array, the rows put in group order by a stable sort, and rows counted and summed per
combination of several small codes (`DenseGroups`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts (in a sorted array: each distinct value's first row)."""
    if not len(values):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def non_decreasing(values: np.ndarray) -> bool:
    """Whether `values` are in ascending order (equal neighbours allowed)."""
    return len(values) < 2 or bool((values[1:] >= values[:-1]).all())


def stable_order(values: np.ndarray) -> np.ndarray | None:
    """The rows of non-negative integer `values` in ascending order, equal values in their
    order (a stable argsort); None when they are in that order already. Values and rows
    are packed into one 64-bit word when they fit, and sorted as such (at ten million
    rows, numpy's sort of words takes about half the time of its stable argsort). Values in
    order but for a few rows (a sorted part and a few appended) are left to the stable
    argsort, a timsort, which merges such runs in a fraction of either's time."""
    n = len(values)
    descents = int(np.count_nonzero(values[1:] < values[:-1])) if n > 1 else 0
    if not descents:
        return None
    value_bits, row_bits = int(values.max()).bit_length(), (n - 1).bit_length()
    if descents * 64 < n or values.min() < 0 or value_bits + row_bits > 63:
        return np.argsort(values, kind="stable")
    key = values.astype(np.int64) << np.int64(row_bits)
    key |= np.arange(n, dtype=np.int64)
    key.sort()
    key &= np.int64((1 << row_bits) - 1)
    return key


def sorted_keys(keys: np.ndarray, *, nearly_sorted: bool) -> np.ndarray:
    """`keys` sorted. `nearly_sorted`: they come in long ascending runs (e.g. grouped by
    customer, in customer order), which numpy's stable sort (a timsort for 64-bit words)
    merges in a fraction of its quicksort's time (ten million keys: 0.12 s against 1.1 s)."""
    return np.sort(keys, kind="stable" if nearly_sorted else None)


def run_bounds(values: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of equal values."""
    starts = run_starts(values).tolist()
    return list(zip(starts, [*starts[1:], len(values)], strict=True)) if starts else []


def group_order(number: np.ndarray, groups: int) -> np.ndarray:
    """Row order by group number (-1 to `groups` - 1), each group's rows in their order."""
    if groups < np.iinfo(np.int16).max:
        number = number.astype(np.int16)  # numpy's stable sort of 16-bit numbers is a radix sort
    return np.argsort(number, kind="stable")


# product spaces up to this many cells are counted with np.bincount; larger ones are
# numbered by np.unique (a sort) instead
DENSE_MAX_CELLS = 1 << 24


class DenseGroups:
    """Rows grouped by several small integer codes at once (each 0 <= code < its size).

    Each row's group is one number in the product of the codes' ranges, so sizes, sums
    and counts are np.bincount calls: no hashing and no sort of the rows (a pandas
    group-by of ten million rows on four keys hashes them all and takes seconds). The
    groups are those with rows, in the order of their codes, as pandas lists the groups
    of categorical keys."""

    def __init__(self, codes: Sequence[np.ndarray], sizes: Sequence[int]):
        self.sizes = tuple(int(s) for s in sizes)
        number = self._numbers(codes)
        cells = math.prod(self.sizes)
        if cells <= DENSE_MAX_CELLS:
            self.observed = np.flatnonzero(np.bincount(number, minlength=cells))
            self._number, self._cells = number, cells
        else:
            self.observed, self._number = np.unique(number, return_inverse=True)
            self._cells = len(self.observed)

    def _numbers(self, codes: Sequence[np.ndarray]) -> np.ndarray:
        number = np.zeros(len(codes[0]) if len(codes) else 0, dtype=np.int64)
        for code, size in zip(codes, self.sizes, strict=True):
            number *= size  # (in place: no temporary of ten million numbers per key)
            number += code
        return number

    def of_other_rows(self, codes: Sequence[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
        """Rows of another frame counted (with `weights`: their sum, NaN skipped) in these
        groups: `codes` are its keys' codes, in the same order and ranges as these groups'
        keys; rows of a group not among these are left out."""
        number = self._numbers(codes)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            weights = np.where(np.isnan(weights), 0.0, weights)
        if self._cells != len(self.observed):  # dense numbers: the groups' cells picked out
            return np.bincount(number, weights=weights, minlength=self._cells)[self.observed]
        at = np.minimum(np.searchsorted(self.observed, number), max(len(self.observed) - 1, 0))
        known = self.observed[at] == number if len(self.observed) else np.zeros(len(number), dtype=bool)
        return np.bincount(at[known], weights=None if weights is None else weights[known],
                           minlength=len(self.observed))

    def _tally(self, number: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        counted = np.bincount(number, weights=weights, minlength=self._cells)
        if self._cells == len(self.observed):  # numbered by np.unique: one count per group
            return counted
        return counted[self.observed]

    def __len__(self) -> int:
        return len(self.observed)

    def keys(self) -> tuple[np.ndarray, ...]:
        """Each key's code per group."""
        return np.unravel_index(self.observed, self.sizes) if len(self.sizes) else ()

    def size(self) -> np.ndarray:
        """Rows per group."""
        return self._tally(self._number)

    def count(self, mask: np.ndarray) -> np.ndarray:
        """Rows per group where `mask` holds (pandas' sum of a boolean column)."""
        return self._tally(self._number[np.asarray(mask, dtype=bool)])

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The sum of `values` per group, missing values (NaN) skipped."""
        values = np.asarray(values, dtype=np.float64)
        missing = np.isnan(values)
        # (a copy with zeros only where a value is missing: most columns have none)
        return self._tally(self._number, np.where(missing, 0.0, values) if missing.any() else values)

    def nunique(self, ids: np.ndarray) -> np.ndarray:
        """Distinct `ids` (non-negative integers) per group. Rows in order of id, each id's
        rows in group order (as purchases sorted by customer and time are, grouped by
        month) are counted from their runs; rows whose id falls in one group only (groups
        of the customer's place and segment, say) by each id's group; other rows by a sort
        of (group, id) pairs."""
        ids = np.asarray(ids, dtype=np.int64)
        number = self._number
        if not len(ids):
            return self._tally(number)
        same_id = ids[1:] == ids[:-1]
        if bool(np.all((ids[1:] > ids[:-1]) | (same_id & (number[1:] >= number[:-1])))):
            first = np.r_[True, ~same_id | (number[1:] != number[:-1])]
            return self._tally(number[first])
        span = int(ids.max()) + 1
        if span <= 4 * len(ids):  # (ids dense enough for an array over them)
            group_of = np.full(span, -1, dtype=np.int64)
            group_of[ids] = number
            if np.array_equal(group_of[ids], number):  # each id's rows in one group
                return self._tally(group_of[group_of >= 0])
        pairs = np.unique(number * span + ids)
        return self._tally(pairs // span)
