"""RFM scores and segments: ties, fallbacks, the R×F map, summaries, and real Olist counts
checked against an independent plain-pandas implementation on the raw CSVs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analytics_data import loaded_store, olist_purchases

from analytics.asof import resolve_as_of
from analytics.features import build_features
from analytics.rfm import (
    SCORE_COLUMNS,
    SEGMENT_NAMES,
    rfm_scores,
    rfm_segments,
    segment_of,
    segment_summary,
)
from storage.geography import ALL, Place


def feats(recency, orders, revenue, ids=None, states=None) -> pd.DataFrame:  # noqa: ANN001
    n = len(recency)
    return pd.DataFrame({
        "customer_id": ids or [f"c{i}" for i in range(n)],
        "recency_days": recency, "orders": orders, "revenue": revenue,
        "state": states or ["SP"] * n, "region": ["Sudeste"] * n,
    })


def by_id(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.set_index("customer_id").sort_index()


def test_quintiles_keep_ties_together_whatever_the_order() -> None:
    revenue = [10, 10, 10, 20, 20, 30, 40, 50, 60, 70]
    f = feats(list(range(10)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], revenue)
    s = rfm_scores(f)
    assert list(s.columns) == list(SCORE_COLUMNS)
    # b = customers with strictly less spend; score = 1 + floor(5 b / 10)
    assert s["m_score"].tolist() == [1, 1, 1, 2, 2, 3, 4, 4, 5, 5]
    assert s.attrs["fallbacks"] == []
    # shuffled rows and different ids for the same values: the same scores per value
    shuffled = f.sample(frac=1, random_state=3).reset_index(drop=True)
    shuffled["customer_id"] = [f"z{9 - i}" for i in range(10)]
    t = rfm_scores(shuffled)
    assert t.groupby("monetary")["m_score"].nunique().eq(1).all()
    assert dict(zip(t["monetary"], t["m_score"], strict=True)) == dict(zip(s["monetary"], s["m_score"], strict=True))


def test_recent_customers_score_higher_r() -> None:
    s = by_id(rfm_scores(feats([0, 5, 10, 20, 40, 80, 160, 320, 640, 900], [1] * 10, [5.0] * 10)))
    # b = customers with strictly MORE days since their last purchase
    assert s["r_score"].tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


def test_degenerate_frequency_falls_back_to_fixed_thresholds() -> None:
    orders = [1] * 8 + [2, 5]  # quintiles would only give 1 and 5
    s = rfm_scores(feats(list(range(10)), orders, list(range(10, 110, 10))))
    assert s["f_score"].tolist() == [1] * 8 + [3, 5]
    assert len(s.attrs["fallbacks"]) == 1
    assert s.attrs["fallbacks"][0].startswith("F: 80% of customers")
    three = rfm_scores(feats([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1] * 7 + [3, 4, 9], [1.0] * 10))
    assert three["f_score"].tolist() == [1] * 7 + [4, 5, 5]


def test_recency_fallback_thresholds() -> None:
    s = rfm_scores(feats([0, 30, 31, 90, 100, 180, 365, 366, 400, 400],
                         [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], list(range(10))))
    # quintiles work here (all five values); a base of three does not
    assert s["r_score"].nunique() == 5
    small = rfm_scores(feats([0, 100, 400], [1, 1, 1], [1.0, 2.0, 3.0]))
    assert small["r_score"].tolist() == [5, 3, 1]  # ≤30 → 5, ≤180 → 3, >365 → 1
    edges = rfm_scores(feats([30, 90, 180, 365], [1] * 4, [1.0] * 4))
    assert edges["r_score"].tolist() == [5, 4, 3, 2]


def test_one_customer_base() -> None:
    s = rfm_scores(feats([12], [1], [99.0]))
    assert s[["r_score", "f_score", "m_score", "segment"]].iloc[0].tolist() == [5, 1, 3, "New"]
    assert [note[0] for note in s.attrs["fallbacks"]] == ["R", "F", "M"]
    summary = rfm_segments(s)
    assert summary.set_index("segment").loc["New", "customers"] == 1
    assert summary["share"].sum() == pytest.approx(1.0)


def test_everyone_equal_scores_in_the_middle_for_m() -> None:
    s = rfm_scores(feats([10] * 6, [2] * 6, [50.0] * 6))
    assert set(s["m_score"]) == {3}
    assert set(s["r_score"]) == {5}  # ≤ 30 days
    assert set(s["f_score"]) == {3}  # 2 orders
    assert set(s["segment"]) == {"Potential Loyalist"}


@pytest.mark.parametrize(("r", "f", "segment"), [
    (5, 5, "Champions"), (5, 4, "Champions"), (4, 5, "Loyal"), (3, 4, "Loyal"),
    (5, 2, "Potential Loyalist"), (4, 3, "Potential Loyalist"), (5, 1, "New"), (4, 1, "Promising"),
    (3, 3, "Need Attention"), (3, 2, "About to Sleep"), (3, 1, "About to Sleep"),
    (2, 3, "At Risk"), (1, 4, "At Risk"), (2, 5, "Can't Lose Them"), (1, 5, "Can't Lose Them"),
    (2, 2, "Hibernating"), (1, 2, "Hibernating"), (2, 1, "Hibernating"), (1, 1, "Lost"),
])
def test_segment_map(r: int, f: int, segment: str) -> None:
    assert segment_of(r, f) == segment


def test_segment_map_covers_every_cell_and_uses_every_segment() -> None:
    cells = [segment_of(r, f) for r in range(1, 6) for f in range(1, 6)]
    assert len(cells) == 25 and set(cells) == set(SEGMENT_NAMES)
    assert len(SEGMENT_NAMES) == 11


def test_segment_summary_by_hand() -> None:
    # R: five distinct recencies → quintiles 5, 4, 3, 2, 1. F: only 1 and 4 orders, so
    # quintiles give just {1, 4} → fixed thresholds: 4 orders → 5, 1 → 1
    f = feats([1, 2, 200, 300, 500], [4, 1, 4, 1, 1], [100.0, 50.0, 30.0, 15.0, 5.0],
              states=["SP", "SP", "RJ", "RJ", "RJ"])
    s = rfm_scores(f)
    assert s["r_score"].tolist() == [5, 4, 3, 2, 1]
    assert s["f_score"].tolist() == [5, 1, 5, 1, 1]
    assert s["segment"].tolist() == ["Champions", "Promising", "Loyal", "Hibernating", "Lost"]
    summary = rfm_segments(s).set_index("segment")
    assert list(summary.index) == list(SEGMENT_NAMES)
    assert summary.loc["Champions", "customers"] == 1
    assert summary.loc["Champions", "revenue_share"] == pytest.approx(0.5)
    assert summary.loc["Lost", "share"] == pytest.approx(0.2)
    assert summary.loc["New", "customers"] == 0 and summary.loc["New", "revenue"] == 0
    assert summary["action"].str.len().gt(10).all()

    geo = s.merge(f[["customer_id", "state", "region"]], on="customer_id")
    rj = segment_summary(geo, Place("state", "RJ", "RJ"), include_empty=False).set_index("segment")
    assert rj["customers"].to_dict() == {"Loyal": 1, "Hibernating": 1, "Lost": 1}
    assert rj.loc["Loyal", "revenue_share"] == pytest.approx(30 / 50)
    assert rj.loc["Lost", "share"] == pytest.approx(1 / 3)
    nobody = segment_summary(geo, Place("state", "AC", "Acre (AC)"))
    assert nobody["customers"].sum() == 0 and nobody["share"].sum() == 0
    assert len(segment_summary(geo, ALL, include_empty=False)) == 5


def test_empty_base() -> None:
    s = rfm_scores(feats([], [], []))
    assert s.empty and list(s.columns) == list(SCORE_COLUMNS)
    summary = rfm_segments(s)
    assert summary["customers"].sum() == 0 and len(summary) == 11


# --- real data ---------------------------------------------------------------------------


def independent_segments(purchases: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """R, F and the segment per person, re-derived from the documented rules."""
    g = purchases.groupby("person")
    recency = (as_of - g["order_purchase_timestamp"].max().dt.normalize()).dt.days.to_numpy()
    frequency = g["order_id"].nunique().to_numpy()
    n = len(recency)
    ordered = np.sort(recency)
    worse = n - np.searchsorted(ordered, recency, side="right")  # strictly more days
    r = np.minimum(1 + (5 * worse) // n, 5)
    assert (frequency == 1).mean() > 0.9  # quintiles degenerate: fixed F thresholds apply
    f = np.select([frequency == 1, frequency == 2, frequency == 3], [1, 3, 4], 5)
    grid = {
        "Champions": {(5, 4), (5, 5)}, "Loyal": {(3, 4), (3, 5), (4, 4), (4, 5)},
        "Potential Loyalist": {(4, 2), (4, 3), (5, 2), (5, 3)}, "New": {(5, 1)},
        "Promising": {(4, 1)}, "Need Attention": {(3, 3)}, "About to Sleep": {(3, 1), (3, 2)},
        "At Risk": {(1, 3), (1, 4), (2, 3), (2, 4)}, "Can't Lose Them": {(1, 5), (2, 5)},
        "Hibernating": {(1, 2), (2, 1), (2, 2)}, "Lost": {(1, 1)},
    }
    cell = {c: name for name, cells in grid.items() for c in cells}
    return pd.Series([cell[(a, b)] for a, b in zip(r, f, strict=True)], index=g.size().index)


@pytest.mark.realdata
def test_olist_segment_counts_match_an_independent_implementation(tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = loaded_store(tmp_path_factory, "olist", "olist")
    as_of = resolve_as_of(engine).date
    assert as_of == pd.Timestamp("2018-08-29").date()
    scores = rfm_scores(build_features(engine, as_of))
    expected = independent_segments(olist_purchases(), pd.Timestamp(as_of))

    assert len(scores) == len(expected) == 94_990
    got = scores["segment"].value_counts()
    want = expected.value_counts()
    for segment in ("Champions", "At Risk", "New"):
        assert got[segment] == want[segment], segment
    assert got.sort_index().to_dict() == want.sort_index().to_dict()
    # and person by person
    mine = scores.set_index("customer_id")["segment"].sort_index()
    assert (mine == expected.sort_index()).all()
    assert any(note.startswith("F: 97%") for note in scores.attrs["fallbacks"])
