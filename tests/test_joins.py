"""join_by_customer gives pandas' merge on customer_id, by position when it can."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.joins import join_by_customer, same_customers


def frames(n: int = 1_000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i:05d}" for i in rng.permutation(n)], dtype=object)
    left = pd.DataFrame({"customer_id": ids, "segment": rng.choice(["a", "b", None], n),
                         "r": rng.integers(1, 6, n)}, index=np.arange(n) * 3)  # an index of its own
    right = pd.DataFrame({"customer_id": ids.copy(), "p": rng.random(n),
                          "band": pd.Series(rng.choice(["high", "low"], n), dtype=object)})
    return left, right


@pytest.mark.parametrize("how", ["left", "inner"])
@pytest.mark.parametrize("ids", ["objects", "strings", "objects and strings", "strings and objects"])
def test_aligned_frames_are_put_side_by_side_as_merge_joins_them(how: str, ids: str) -> None:
    left, right = frames()
    if ids.startswith("strings"):
        left = left.assign(customer_id=left["customer_id"].astype("str"))
    if ids.endswith("strings"):
        right = right.assign(customer_id=right["customer_id"].astype("str"))
    assert same_customers(left, right)
    pd.testing.assert_frame_equal(join_by_customer(left, right, how), left.merge(right, on="customer_id", how=how))


@pytest.mark.parametrize("change", ["order", "length", "ids", "numbers", "shared column"])
def test_other_frames_are_merged(change: str) -> None:
    left, right = frames()
    if change == "order":
        right = right.iloc[::-1]
    elif change == "length":
        right = right.iloc[:-10]
    elif change == "ids":
        right = right.assign(customer_id=right["customer_id"].where(right.index != 5, "someone else"))
    elif change == "numbers":
        left = left.assign(customer_id=np.arange(len(left)))
        right = right.assign(customer_id=np.arange(len(right)).astype(float))
    else:
        right = right.assign(r=1.5)
    expected = left.merge(right, on="customer_id", how="left")
    if change != "shared column":
        assert not same_customers(left, right)
    pd.testing.assert_frame_equal(join_by_customer(left, right), expected)
