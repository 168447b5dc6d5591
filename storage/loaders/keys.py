"""Compact in-memory key sets for streaming loads: 64-bit hashes of string ids in a hash table.

A load that streams files in chunks still needs to know, for every row, whether its
id was seen before (duplicates) and where a referenced id lives (joins). Python sets
of strings cost about 100 bytes per id; here an id costs about 20 bytes (its hash and an
int32 value in a hash table at most 70 % full), and hashing, lookups and inserts are
vectorised numpy.

The hash is 64 bits: two distinct ids share one with probability about n²/2⁶⁵
(3 in a million for 10 million ids), which is accepted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from storage.hashing import combine, hash_strings

__all__ = ["KeyIndex", "combine", "hash_strings"]

_SPREAD = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / the golden ratio, odd


class KeyIndex:
    """A growing map from 64-bit key hashes to int32 values (e.g. a row's place).

    An open-addressing hash table with linear probing, each operation vectorised over a
    chunk's keys: a lookup or insert touches one or two slots per key, where a sorted
    array costs a binary search per lookup and a copy of the whole array per insert (at
    10 million keys, 0.09 s to look up and 0.14 s to insert 100,000 keys, for every chunk
    of a load). The table is kept at most `MAX_LOAD` full: 12 to 24 bytes per key, 8 to 16
    for a set made with `values=False` (a set of keys seen, whose values are never read)."""

    MAX_LOAD = 0.7

    def __init__(self, values: bool = True) -> None:
        self._slots = np.zeros(1 << 10, dtype=np.uint64)  # 0 marks an empty slot
        self._vals = np.zeros(1 << 10, dtype=np.int32) if values else None
        self._n = 0
        self._zero: int | None = None  # the value of key 0 (a missing id's hash), kept apart

    def __len__(self) -> int:
        return self._n

    def _home(self, keys: np.ndarray) -> np.ndarray:
        # Fibonacci hashing: the product's top bits depend on every bit of the key, so keys
        # that are not well mixed (small integers, say) still spread over the table
        bits = len(self._slots).bit_length() - 1
        return ((keys * _SPREAD) >> np.uint64(64 - bits)).astype(np.int64)

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each key's slot, and whether the key is there (key 0 is never: see `_zero`)."""
        keys = np.asarray(keys, dtype=np.uint64)
        pos = self._home(keys)
        found = np.zeros(len(keys), dtype=bool)
        mask = len(self._slots) - 1
        todo = np.flatnonzero(keys)
        while len(todo):
            p = pos[todo]
            held = self._slots[p]
            hit = held == keys[todo]
            found[todo[hit]] = True
            on = ~hit & (held != 0)  # another key sits there: probe the next slot
            todo = todo[on]
            pos[todo] = (p[on] + 1) & mask
        return pos, found

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = self._find(keys)[1]
        if self._zero is not None:
            found |= np.asarray(keys) == 0
        return found

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key, -1 when absent."""
        if self._vals is None:
            raise TypeError("a KeyIndex made with values=False holds no values")
        pos, found = self._find(keys)
        out = np.where(found, self._vals[pos], -1).astype(np.int64)
        if self._zero is not None:
            out[np.asarray(keys) == 0] = self._zero
        return out

    def add(self, keys: np.ndarray, vals: np.ndarray) -> None:
        """Add keys (distinct, none already present) with their values."""
        keys = np.asarray(keys, dtype=np.uint64)
        vals = np.asarray(vals, dtype=np.int32)
        zero = keys == 0
        if zero.any():
            self._zero = int(vals[zero][0])
            self._n += 1
            keys, vals = keys[~zero], vals[~zero]
        need = self._n + len(keys)
        if need > self.MAX_LOAD * len(self._slots):
            self._grow(need)
        self._place(keys, vals)
        self._n += len(keys)

    def _grow(self, need: int) -> None:
        size = len(self._slots)
        while need > self.MAX_LOAD * size:
            size *= 2
        held = np.flatnonzero(self._slots)
        keys = self._slots[held]
        vals = self._vals[held] if self._vals is not None else None
        self._slots = np.zeros(size, dtype=np.uint64)
        if vals is not None:
            self._vals = np.zeros(size, dtype=np.int32)
        self._place(keys, vals)

    def _place(self, keys: np.ndarray, vals: np.ndarray | None) -> None:
        pos = self._home(keys)
        mask = len(self._slots) - 1
        todo = np.arange(len(keys))
        while len(todo):
            p = pos[todo]
            free = np.flatnonzero(self._slots[p] == 0)
            # keys claiming one free slot all write it; the one whose write stayed has it
            self._slots[p[free]] = keys[todo[free]]
            won = free[self._slots[p[free]] == keys[todo[free]]]
            if self._vals is not None:
                self._vals[p[won]] = vals[todo[won]]
            left = np.ones(len(todo), dtype=bool)
            left[won] = False
            todo = todo[left]
            pos[todo] = (p[left] + 1) & mask

    def first_time(self, keys: np.ndarray) -> np.ndarray:
        """True for keys neither seen before nor repeated earlier in `keys` (the first wins)."""
        return ~(pd.Series(keys).duplicated(keep="first").to_numpy() | self.contains(keys))
