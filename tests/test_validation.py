"""Parsing raw CSV values: Arrow's fast cast and the Python path agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from storage.validation import parse_integers, parse_numbers

RAW = ["1.5", "", None, " 2 ", "1_0", "x", "inf", "-inf", "NaN", "1e3", "+2", ".5", "5.", "-0", "١٢"]


@pytest.mark.parametrize("values", [RAW, ["1.5", None, "3", "-7.25", "1e-3"]], ids=["tricky", "plain"])
def test_arrow_strings_parse_as_python_strings(values: list[str | None]) -> None:
    """Arrow strings go through Arrow's cast while every value is plain, else the slower
    path; either way the numbers and the unparseable mask are what object strings give."""
    arrow = pd.Series(values, dtype="str", index=np.arange(len(values)) + 10)
    plain = pd.Series(values, dtype=object, index=arrow.index)
    for parse in (parse_numbers, parse_integers):
        (num_a, bad_a), (num_p, bad_p) = parse(arrow), parse(plain)
        pd.testing.assert_series_equal(num_a, num_p)
        pd.testing.assert_series_equal(bad_a, bad_p)
    num, bad = parse_numbers(arrow)
    if values is RAW:  # what a load quarantines as "not a number"
        assert [v for v, b in zip(values, bad, strict=True) if b] == ["1_0", "x", "inf", "-inf", "NaN", "١٢"]
        assert num.iloc[[0, 3, 9, 10, 11, 12]].tolist() == [1.5, 2.0, 1000.0, 2.0, 0.5, 5.0]
    else:
        assert not bad.any() and num.iloc[[0, 2, 3]].tolist() == [1.5, 3.0, -7.25]


def test_an_odd_number_is_not_a_number_whatever_its_neighbours() -> None:
    """"1_0" (which Python's float reads as 10) is refused in a chunk of plain numbers as in
    a chunk with other bad values: its fate does not depend on the rows beside it."""
    for values in (["1.5", "1_0", "2"], ["1.5", "1_0", "x"]):
        num, bad = parse_numbers(pd.Series(values, dtype="str"))
        assert bool(bad.iloc[1]) and np.isnan(num.iloc[1]) and num.iloc[0] == 1.5
