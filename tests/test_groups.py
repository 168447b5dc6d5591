"""Runs of equal values and rows in group order (analytics.groups)."""

from __future__ import annotations

import numpy as np

from analytics.groups import group_order, run_bounds, run_starts


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
