"""Runs of equal values and rows in group order (analytics.groups)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics import groups as grouping
from analytics.groups import (
    group_order,
    non_decreasing,
    run_bounds,
    run_starts,
    sorted_keys,
    stable_order,
)


def test_runs_of_a_sorted_array_and_of_nothing() -> None:
    values = np.array([3, 3, 5, 7, 7, 7])
    assert run_starts(values).tolist() == [0, 2, 3]
    assert run_bounds(values) == [(0, 2), (2, 3), (3, 6)]
    assert run_starts(np.array([], dtype=np.int64)).tolist() == [] and run_bounds(np.array([])) == []


def test_group_order_is_stable_for_few_and_many_groups() -> None:
    rng = np.random.default_rng(4)
    for groups in (5, 40_000):  # 16-bit numbers (a radix sort), and wider ones
        number = rng.integers(-1, groups, size=20_000)
        order = group_order(number, groups)
        assert np.array_equal(number[order], np.sort(number))
        assert np.array_equal(order, np.argsort(number, kind="stable"))  # each group's rows in their order


def test_stable_order_is_a_stable_argsort_or_none_when_in_order() -> None:
    rng = np.random.default_rng(5)
    for values in (rng.integers(0, 50, 10_000),  # many ties: equal values keep their rows' order
                   rng.integers(0, 2**40, 5_000),  # too wide to pack with the rows: argsort
                   np.array([3, 1]), np.array([-2, 5, -7]),
                   np.r_[np.arange(10_000) // 3, rng.integers(0, 3_000, 50)]):  # in order but for a tail
        order = stable_order(values)
        assert order is not None and np.array_equal(order, np.argsort(values, kind="stable"))
    for values in (np.sort(rng.integers(0, 50, 1_000)), np.array([], dtype=np.int64), np.array([4])):
        assert stable_order(values) is None and non_decreasing(values)
    assert not non_decreasing(np.array([1, 0]))


@pytest.mark.parametrize("nearly_sorted", [True, False])
def test_sorted_keys_sort_in_either_mode(nearly_sorted: bool) -> None:
    rng = np.random.default_rng(6)
    # (customer, value) keys grouped by customer, each customer's values in any order
    keys = np.repeat(np.arange(2_000), 6) * 100 + rng.integers(0, 100, 12_000)
    assert np.array_equal(sorted_keys(keys, nearly_sorted=nearly_sorted), np.sort(keys))
    shuffled = rng.permutation(keys)  # the mode is a hint: any order is still sorted
    assert np.array_equal(sorted_keys(shuffled, nearly_sorted=nearly_sorted), np.sort(keys))


@pytest.mark.parametrize("sorted_rows", [True, False], ids=["runs", "any-order"])
@pytest.mark.parametrize("max_cells", [grouping.DENSE_MAX_CELLS, 10], ids=["bincount", "unique"])
def test_dense_groups_aggregate_as_pandas_groups(sorted_rows: bool, max_cells: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizes, sums (NaN skipped), counts and distinct ids per group, and the groups' keys
    in order, are those of pandas' group-by of categorical keys; ids counted from their
    runs (rows in id order) and by sorting pairs (any order) alike."""
    monkeypatch.setattr(grouping, "DENSE_MAX_CELLS", max_cells)
    rng = np.random.default_rng(11)
    n = 5_000
    frame = pd.DataFrame({
        "a": pd.Categorical.from_codes(rng.integers(0, 4, n), categories=["w", "x", "y", "z"]),
        "b": pd.Categorical.from_codes(rng.integers(0, 7, n), categories=list("abcdefg")),
        "id": rng.integers(0, 300, n), "v": rng.normal(size=n), "flag": rng.random(n) < 0.3,
    })
    frame.loc[rng.random(n) < 0.1, "v"] = np.nan
    if sorted_rows:  # by id, each id's rows in group order (as purchases by customer and month)
        frame = frame.sort_values(["id", "a", "b"], ignore_index=True)
    dense = grouping.DenseGroups([frame["a"].cat.codes.to_numpy(), frame["b"].cat.codes.to_numpy()], [4, 7])
    expected = frame.groupby(["a", "b"]).agg(size=("v", "size"), total=("v", "sum"), flags=("flag", "sum"),
                                             ids=("id", "nunique"))
    a_code, b_code = dense.keys()
    assert len(dense) == len(expected)
    assert list(zip(a_code.tolist(), b_code.tolist(), strict=True)) == [
        (frame["a"].cat.categories.get_loc(a), frame["b"].cat.categories.get_loc(b)) for a, b in expected.index]
    assert dense.size().tolist() == expected["size"].tolist()
    np.testing.assert_allclose(dense.sum(frame["v"].to_numpy()), expected["total"].to_numpy(), rtol=1e-12)
    whole = frame["v"].fillna(0.5)  # without a missing value (summed as they are, not copied)
    np.testing.assert_allclose(dense.sum(whole.to_numpy()),
                               whole.groupby([frame["a"], frame["b"]], observed=True).sum()
                               .reindex(expected.index).to_numpy(), rtol=1e-12)
    assert dense.count(frame["flag"].to_numpy()).tolist() == expected["flags"].tolist()
    assert dense.nunique(frame["id"].to_numpy()).tolist() == expected["ids"].tolist()
    # another frame's rows counted and summed in these groups: absent groups get zero, and
    # rows of a group these do not have are left out
    other = frame.sample(frac=0.4, random_state=2)
    other = other[~((other["a"] == "w") & (other["b"] == "a"))]
    codes = [other["a"].cat.codes.to_numpy(), other["b"].cat.codes.to_numpy()]
    seen = other.groupby(["a", "b"]).agg(size=("v", "size"), total=("v", "sum")).reindex(expected.index, fill_value=0)
    assert dense.of_other_rows(codes).tolist() == seen["size"].tolist()
    np.testing.assert_allclose(dense.of_other_rows(codes, other["v"].to_numpy()), seen["total"].to_numpy(), rtol=1e-12)
    few = grouping.DenseGroups([np.array([0, 3, 3]), np.array([0, 6, 6])], [4, 7])  # groups (0, 0), (3, 6)
    assert few.of_other_rows([np.array([3, 1, 0, 3]), np.array([6, 1, 0, 6])]).tolist() == [1, 2]  # (1, 1) left out


@pytest.mark.parametrize("max_cells", [grouping.DENSE_MAX_CELLS, 10], ids=["bincount", "unique"])
def test_distinct_ids_whose_rows_fall_in_one_group_each(max_cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids whose every row is in one group (customers grouped by their own place and
    segment), in any row order, are counted by each id's group; one id in two groups, or
    ids too sparse for an array over them, take the sort and count the same."""
    monkeypatch.setattr(grouping, "DENSE_MAX_CELLS", max_cells)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 2_000, 30_000)
    a_of, b_of = rng.integers(0, 5, 2_000), rng.integers(0, 6, 2_000)  # each id's own group
    a, b = a_of[ids], b_of[ids]
    expected = pd.DataFrame({"a": a, "b": b, "id": ids}).groupby(["a", "b"])["id"].nunique()
    sort_calls = []
    real_unique = np.unique
    monkeypatch.setattr(grouping.np, "unique", lambda *x, **k: sort_calls.append(1) or real_unique(*x, **k))
    dense = grouping.DenseGroups([a, b], [5, 6])
    before = len(sort_calls)
    assert dense.nunique(ids).tolist() == expected.tolist()
    assert len(sort_calls) == before  # no sort of (group, id) pairs
    b2 = b.copy()
    b2[np.flatnonzero(ids == ids[0])[-1]] = (b_of[ids[0]] + 1) % 6  # one row of one id elsewhere
    mixed = pd.DataFrame({"a": a, "b": b2, "id": ids}).groupby(["a", "b"])["id"].nunique()
    assert grouping.DenseGroups([a, b2], [5, 6]).nunique(ids).tolist() == mixed.tolist()
    sparse = ids * 1_000  # ids far apart: the pairs are sorted
    assert dense.nunique(sparse).tolist() == expected.tolist()
