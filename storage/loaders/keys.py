"""Compact in-memory key sets for streaming loads: 64-bit hashes of string ids in sorted arrays.

A load that streams files in chunks still needs to know, for every row, whether its
id was seen before (duplicates) and where a referenced id lives (joins). Python sets
of strings cost about 100 bytes per id; here an id costs 12 bytes (its hash and an
int32 value), and hashing, lookups and inserts are vectorised numpy.

The hash is 64 bits: two distinct ids share one with probability about n²/2⁶⁵
(3 in a million for 10 million ids), which is accepted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from storage.hashing import combine, hash_strings

__all__ = ["KeyIndex", "combine", "hash_strings"]


class KeyIndex:
    """A growing set of key hashes, each with an int32 value (e.g. a row's place)."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.vals = np.empty(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.keys)

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(self.keys):
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        order = np.argsort(keys)  # sorted needles walk the big array in order: far fewer cache misses
        pos = np.empty(len(keys), dtype=np.int64)
        pos[order] = np.searchsorted(self.keys, keys[order])
        np.minimum(pos, len(self.keys) - 1, out=pos)
        return pos, self.keys[pos] == keys

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return self._find(keys)[1]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key, -1 when absent."""
        pos, hit = self._find(keys)
        if not len(self.keys):
            return np.full(len(keys), -1, dtype=np.int64)
        return np.where(hit, self.vals[pos], -1)

    def add(self, keys: np.ndarray, vals: np.ndarray) -> None:
        """Add keys (distinct, none already present) with their values."""
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        k, v = keys[order], np.asarray(vals, dtype=np.int32)[order]
        at = np.searchsorted(self.keys, k)
        self.keys = np.insert(self.keys, at, k)
        self.vals = np.insert(self.vals, at, v)

    def first_time(self, keys: np.ndarray) -> np.ndarray:
        """True for keys neither seen before nor repeated earlier in `keys` (the first wins)."""
        return ~(pd.Series(keys).duplicated(keep="first").to_numpy() | self.contains(keys))
