"""`storage.hashing.hash_strings` against the hash written out string by string."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from storage import hashing
from storage.hashing import HASHED_BYTES, hash_strings

M64 = (1 << 64) - 1
K1, K2, K3 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(h: int) -> int:
    h = ((h ^ (h >> 30)) * K2) & M64
    h = ((h ^ (h >> 27)) * K3) & M64
    return h ^ (h >> 31)


def reference(value: str | None) -> int:
    """The hash of one string: its byte length mixed, then each 8-byte little-endian word
    of its first HASHED_BYTES bytes (zero-padded) folded in; 0 for a missing value."""
    if value is None:
        return 0
    data = value.encode("utf-8")
    h = _mix((len(data) * K1 + K2) & M64)
    head = data[:HASHED_BYTES]
    head += b"\0" * (-len(head) % 8)
    for i in range(0, len(head), 8):
        h = (_mix(h ^ int.from_bytes(head[i: i + 8], "little")) + K1) & M64
    return h


def _random_strings(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
    lens = rng.integers(lo, hi + 1, n)
    return ["".join(chr(c) for c in rng.integers(97, 123, k)) for k in lens]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "BLOCK_ROWS", 64)  # many blocks, and blocks of mixed lengths


def test_hashes_match_the_reference_across_blocks(small_blocks: None) -> None:
    rng = np.random.default_rng(5)
    fixed = _random_strings(rng, 300, 32, 32)  # whole blocks of one length
    mixed = _random_strings(rng, 300, 0, 100) + [None, "é" * 40, "", "x" * HASHED_BYTES, "y" * 73]
    values = fixed + mixed
    want = np.array([reference(v) for v in values], dtype=np.uint64)
    for given in (pa.array(values), pa.array(values, pa.large_string()),
                  pa.chunked_array([pa.array(fixed), pa.array(mixed)]),
                  pd.Series(values, dtype="str"), pd.Series(values, dtype=object),
                  pa.array(values).dictionary_encode()):
        got = hash_strings(given)
        assert got.dtype == np.uint64
        np.testing.assert_array_equal(got, want)


def test_a_slice_hashes_as_its_own_values(small_blocks: None) -> None:
    rng = np.random.default_rng(6)
    values = _random_strings(rng, 500, 1, 90)
    got = hash_strings(pa.array(values).slice(77, 300))
    np.testing.assert_array_equal(got, np.array([reference(v) for v in values[77:377]], dtype=np.uint64))


def test_strings_longer_than_the_hashed_prefix_differ_by_length() -> None:
    a, b = "z" * HASHED_BYTES + "a", "z" * HASHED_BYTES + "ab"
    ha, hb = hash_strings(pa.array([a, b]))
    assert ha != hb  # the same hashed prefix, told apart by the length
    assert hash_strings(pa.array([], pa.string())).shape == (0,)
