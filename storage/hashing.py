"""64-bit hashes of strings, vectorised (numpy over Arrow's buffers).

Used where millions of string ids must be matched: the streaming loads' key sets
(`storage.loaders.keys`) and the columnar reads' key lookups (`analytics.columnar_worker`).
Imports only numpy and pyarrow, so the reader processes that use it start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd

_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_K3 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)

# loads quarantine longer ids ("value too long"); a read's lookup checks each hash match
# against the text, so hashing a prefix is enough for both
HASHED_BYTES = 72


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit flips about half the output bits."""
    h = (h ^ (h >> _S30)) * _K2
    h = (h ^ (h >> _S27)) * _K3
    return h ^ (h >> _S31)


def _large_strings(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values.array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


def hash_strings(values: pd.Series | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 hash per string (of its UTF-8 bytes and length); 0 for missing values."""
    arr = _large_strings(values)
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    starts = offsets[:-1]
    lens = offsets[1:] - starts
    h = _mix(lens.astype(np.uint64) * _K1 + _K2)
    clipped = np.minimum(lens, HASHED_BYTES)
    if lens.min() == lens.max() <= HASHED_BYTES:  # typical fixed-size ids: no copy
        _hash_rows(h, data[starts[0]: starts[0] + n * int(lens[0])].reshape(n, int(lens[0])))
        return _nulls(arr, h)
    for width in np.unique(clipped):  # a few distinct lengths: one gather per length
        rows = np.nonzero(clipped == width)[0]
        if width:
            sub = h[rows]
            _hash_rows(sub, data[starts[rows][:, None] + np.arange(width)[None, :]])
            h[rows] = sub
    return _nulls(arr, h)


def _hash_rows(h: np.ndarray, mat: np.ndarray) -> None:
    """Fold the rows of a (n, width) byte matrix into `h`, in place."""
    width = mat.shape[1]
    if width % 8:
        mat = np.pad(mat, ((0, 0), (0, 8 - width % 8)))
    w = np.ascontiguousarray(mat).view("<u8")
    for j in range(w.shape[1]):
        h[:] = _mix(h ^ w[:, j]) + _K1


def _nulls(arr: pa.Array, h: np.ndarray) -> np.ndarray:
    if arr.null_count:
        h[arr.is_null().to_numpy(zero_copy_only=False)] = 0
    return h


def combine(h: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The hash of a pair of keys (`other`: another hash, or whole numbers as floats)."""
    if other.dtype.kind == "f":
        other = np.nan_to_num(other, nan=-1.0).astype(np.int64).view(np.uint64)
    return _mix(h * _K3 + _mix(other.astype(np.uint64) + _K1))
