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
    out = np.array(h, dtype=np.uint64)
    _mix_into(out, np.empty_like(out))
    return out


# rows hashed at a time: the block's hashes and scratch (512 KiB each) stay in the CPU
# caches through the dozen passes a word takes, and no array of the whole column is made
BLOCK_ROWS = 1 << 16


def _mix_into(h: np.ndarray, tmp: np.ndarray) -> None:
    """`_mix` in place (`tmp`: scratch of h's size), making no new arrays."""
    for shift, factor in ((_S30, _K2), (_S27, _K3)):
        np.right_shift(h, shift, out=tmp)
        np.bitwise_xor(h, tmp, out=h)
        np.multiply(h, factor, out=h)
    np.right_shift(h, _S31, out=tmp)
    np.bitwise_xor(h, tmp, out=h)


def _strings(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    """One string or large_string Array of the values (other types, dictionaries too, cast)."""
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values.array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())
    return arr


def hash_strings(values: pd.Series | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 hash per string (of its UTF-8 bytes and length); 0 for missing values.

    Computed over Arrow's buffers block by block (`BLOCK_ROWS`), in place."""
    arr = _strings(values)
    n = len(arr)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    _, off_buf, data_buf = arr.buffers()
    width = 8 if pa.types.is_large_string(arr.type) else 4
    offsets = np.frombuffer(off_buf, dtype=np.int64 if width == 8 else np.int32, count=n + 1,
                            offset=arr.offset * width)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    tmp = np.empty(min(n, BLOCK_ROWS), dtype=np.uint64)
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        _hash_block(out[lo:hi], tmp[: hi - lo], offsets[lo: hi + 1].astype(np.int64), data)
    return _nulls(arr, out)


def _hash_block(h: np.ndarray, tmp: np.ndarray, offsets: np.ndarray, data: np.ndarray) -> None:
    """Hash the strings between consecutive `offsets` of `data` into `h`."""
    starts = offsets[:-1]
    lens = offsets[1:] - starts
    np.multiply(lens.view(np.uint64), _K1, out=h)
    np.add(h, _K2, out=h)
    _mix_into(h, tmp)
    first, last = int(lens.min()), int(lens.max())
    if first == last <= HASHED_BYTES:  # typical fixed-size ids: the block's bytes as they lie
        if first:
            _hash_rows(h, tmp, data[starts[0]: starts[0] + len(h) * first].reshape(len(h), first))
        return
    clipped = np.minimum(lens, HASHED_BYTES)
    for width in np.unique(clipped):  # a few distinct lengths: one gather per length
        if not width:
            continue
        rows = np.flatnonzero(clipped == width)
        sub = h[rows]
        _hash_rows(sub, np.empty_like(sub), data[starts[rows][:, None] + np.arange(width)[None, :]])
        h[rows] = sub


def _hash_rows(h: np.ndarray, tmp: np.ndarray, mat: np.ndarray) -> None:
    """Fold the rows of a (n, width) byte matrix into `h`, in place, 8 bytes at a time."""
    width = mat.shape[1]
    if width % 8:
        mat = np.pad(mat, ((0, 0), (0, 8 - width % 8)))
    w = np.ascontiguousarray(mat).view("<u8")
    for j in range(w.shape[1]):
        np.bitwise_xor(h, w[:, j], out=h)
        _mix_into(h, tmp)
        np.add(h, _K1, out=h)


def _nulls(arr: pa.Array, h: np.ndarray) -> np.ndarray:
    if arr.null_count:
        h[arr.is_null().to_numpy(zero_copy_only=False)] = 0
    return h


def combine(h: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The hash of a pair of keys (`other`: another hash, or whole numbers as floats)."""
    if other.dtype.kind == "f":
        other = np.nan_to_num(other, nan=-1.0).astype(np.int64).view(np.uint64)
    return _mix(h * _K3 + _mix(other.astype(np.uint64) + _K1))
