"""Running per-key state across the chunks of one file, in sorted numpy arrays.

A load reads a file in chunks, but an order's rows may fall in two chunks and an
exact duplicate may repeat a row of an earlier chunk. The ledger remembers, per
64-bit key hash, a few numbers (line count, first timestamp, ...) so each chunk can
be processed as if the whole file had been seen. Memory is about 8 bytes per key plus
the fields; lookups are binary searches over a handful of sorted levels that are
merged as they grow (amortised O(n log n) for the whole file).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def hash_keys(*columns: pd.Series | pd.DataFrame) -> np.ndarray:
    """A uint64 hash per row of one or more columns or a frame (missing values hash consistently)."""
    if len(columns) == 1:
        return pd.util.hash_pandas_object(columns[0], index=False).to_numpy()
    frame = pd.concat(list(columns), axis=1, ignore_index=True)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


@dataclass
class Found:
    """Where each looked-up key lives: level (-1 when absent) and position in it."""

    level: np.ndarray
    pos: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return self.level >= 0


class KeyLedger:
    """uint64 key -> fields (each a numpy dtype with a default for absent keys)."""

    def __init__(self, **fields: tuple[type | str, object]):
        self.fields = {name: (np.dtype(dtype), default) for name, (dtype, default) in fields.items()}
        self.levels: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(level["key"]) for level in self.levels)

    def find(self, keys: np.ndarray) -> Found:
        level = np.full(len(keys), -1, dtype=np.int16)
        pos = np.zeros(len(keys), dtype=np.int64)
        for li, lv in enumerate(self.levels):
            stored = lv["key"]
            idx = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
            hit = (stored[idx] == keys) & (level < 0)
            level[hit] = li
            pos[hit] = idx[hit]
        return Found(level, pos)

    def get(self, found: Found, name: str) -> np.ndarray:
        dtype, default = self.fields[name]
        out = np.full(len(found.level), default, dtype=dtype)
        for li, lv in enumerate(self.levels):
            m = found.level == li
            if m.any():
                out[m] = lv[name][found.pos[m]]
        return out

    def put(self, keys: np.ndarray, found: Found, **values: np.ndarray) -> None:
        """Set fields of `keys` (unique; `found` = find(keys)), adding the absent ones."""
        for li, lv in enumerate(self.levels):
            m = found.level == li
            if m.any():
                for name, vals in values.items():
                    lv[name][found.pos[m]] = vals[m]
        new = ~found.present
        if not new.any():
            return
        order = np.argsort(keys[new], kind="stable")
        level = {"key": keys[new][order]}
        for name, (dtype, default) in self.fields.items():
            vals = values.get(name)
            col = np.full(int(new.sum()), default, dtype=dtype) if vals is None else vals[new].astype(dtype)
            level[name] = col[order]
        self.levels.append(level)
        self._compact()

    def _compact(self) -> None:
        while len(self.levels) >= 2 and len(self.levels[-2]["key"]) <= 2 * len(self.levels[-1]["key"]):
            b = self.levels.pop()
            a = self.levels.pop()
            keys = np.concatenate([a["key"], b["key"]])
            order = np.argsort(keys, kind="stable")
            self.levels.append({name: np.concatenate([a[name], b[name]])[order] for name in a})


class RowSet:
    """Which row hashes were seen before (for exact-duplicate detection across chunks)."""

    def __init__(self) -> None:
        self.ledger = KeyLedger()

    def seen_before(self, hashes: np.ndarray) -> np.ndarray:
        """True for rows equal to an earlier row (in an earlier chunk or earlier in this one)."""
        within = pd.Series(hashes).duplicated().to_numpy()
        found = self.ledger.find(hashes)
        fresh = ~within & ~found.present
        if fresh.any():
            keys = hashes[fresh]
            self.ledger.put(keys, Found(np.full(len(keys), -1, dtype=np.int16), np.zeros(len(keys), np.int64)))
        return within | found.present
