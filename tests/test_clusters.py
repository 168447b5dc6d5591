"""Behaviour clusters, value tiers and the segment exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics import clusters as cl
from analytics.clusters import TIERS, cluster_customers, value_tiers
from analytics.rfm import rfm_scores
from analytics.segments_export import PROFILE_COLUMNS, write_segment_exports


def groups(seed: int = 0, sizes: tuple[int, ...] = (300, 200, 100)) -> pd.DataFrame:
    """Three clearly different kinds of customer (lapsed one-timers, recent regulars, whales)."""
    rng = np.random.default_rng(seed)
    kinds = [  # recency, orders, revenue, installments, categories, review, late share
        (400, 1, 60, 1, 1, 4.5, 0.0),
        (20, 4, 400, 3, 2, 4.8, 0.0),
        (90, 10, 5000, 8, 4, 3.0, 0.5),
    ]
    frames = []
    for g, (size, (rec, orders, rev, inst, cats, review, late)) in enumerate(zip(sizes, kinds, strict=True)):
        frames.append(pd.DataFrame({
            "recency_days": np.maximum(0, rng.normal(rec, rec * 0.1, size)).round().astype(int),
            "orders": np.maximum(1, rng.normal(orders, orders * 0.1, size).round()).astype(int),
            "revenue": np.maximum(1, rng.normal(rev, rev * 0.1, size)),
            "avg_installments": np.maximum(1, rng.normal(inst, 0.3, size)),
            "categories": np.full(size, cats),
            "avg_review": np.clip(rng.normal(review, 0.2, size), 1, 5),
            "late_share": np.clip(rng.normal(late, 0.05, size), 0, 1) if late else np.zeros(size),
            "top_category": rng.choice(["toys", "books", "garden"], size),
            "group": g,
        }))
    f = pd.concat(frames, ignore_index=True)
    f.insert(0, "customer_id", [f"c{i:04d}" for i in range(len(f))])
    f["state"], f["region"] = "SP", "Sudeste"
    return f


def test_three_groups_are_found_named_and_profiled() -> None:
    f = groups()
    r = cluster_customers(f, seed=42)
    assert r.k == 3
    assert r.selection["k"].tolist() == list(range(2, 11))
    assert r.selection["silhouette"].idxmax() == 1  # k = 3
    assert r.selection["silhouette"].between(-1, 1).all() and (r.selection["davies_bouldin"] > 0).all()
    assert r.knee_k in range(2, 11)
    # each true group is exactly one cluster
    merged = f.merge(r.assignments, on="customer_id")
    assert merged.groupby("group")["cluster"].nunique().eq(1).all()
    assert merged.groupby("cluster")["group"].nunique().eq(1).all()
    # clusters are numbered by mean spend: 0 = the whales
    whales = merged.loc[merged["group"] == 2, "cluster"].iloc[0]
    assert whales == 0
    p = r.profiles.set_index("cluster")
    assert p["customers"].sum() == len(f) and p["share"].sum() == pytest.approx(1.0)
    assert p["revenue_share"].sum() == pytest.approx(1.0)
    assert p.loc[0, "customers"] == 100 and p.loc[0, "frequency"] > 8
    assert p["name"].is_unique
    assert p.loc[0, "name"].startswith("High value, frequent")
    lapsed = merged.loc[merged["group"] == 0, "cluster"].iloc[0]
    assert p.loc[lapsed, "name"].startswith("Low value, one-time, lapsed")
    assert set(p["top_categories"].str.split(" ").str[0]) <= {"toys", "books", "garden"}
    assert len(r.projection) == len(f) and np.isfinite(r.projection[["x", "y"]]).all().all()
    assert sum(r.explained_variance) > 0.5


def test_deterministic_for_a_seed_and_any_row_order() -> None:
    f = groups(seed=1)
    a = cluster_customers(f, seed=7)
    b = cluster_customers(f.sample(frac=1, random_state=5), seed=7)
    pd.testing.assert_frame_equal(a.assignments, b.assignments)
    pd.testing.assert_frame_equal(a.selection, b.selection)
    assert a.profiles["name"].tolist() == b.profiles["name"].tolist()


@pytest.mark.parametrize("k", [2, 5, 10])
def test_given_k(k: int) -> None:
    r = cluster_customers(groups(), seed=3, k=k)
    assert r.k == k
    assert r.assignments["cluster"].nunique() == k
    assert r.profiles["name"].is_unique and len(r.profiles) == k
    assert r.profiles["name"].str.len().le(64).all()


def test_minibatch_for_large_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cl, "MINIBATCH_ABOVE", 100)
    f = groups()
    r = cluster_customers(f, seed=42)
    assert r.minibatch and r.k == 3
    again = cluster_customers(f, seed=42)
    pd.testing.assert_frame_equal(r.assignments, again.assignments)


def test_missing_behaviour_columns_are_left_out() -> None:
    f = groups()
    f[["avg_installments", "avg_review", "late_share"]] = np.nan  # e.g. UCI Online Retail
    f["categories"] = 0
    r = cluster_customers(f, seed=42)
    assert r.features_used == ("recency_days", "orders", "revenue")
    assert 2 <= r.k <= 10


def test_tiny_bases_get_one_cluster() -> None:
    one = groups(sizes=(1, 0, 0))
    r = cluster_customers(one)
    assert r.k == 1 and r.assignments["cluster"].tolist() == [0]
    assert r.selection.empty and r.knee_k is None
    assert len(r.profiles) == 1 and r.profiles["share"].iloc[0] == 1.0
    two = cluster_customers(groups(sizes=(1, 1, 0)))
    assert two.k == 1 and len(two.projection) == 2
    empty = cluster_customers(groups(sizes=(0, 0, 0)))
    assert empty.k == 1 and empty.assignments.empty and empty.profiles.empty


def test_value_tiers_by_hand() -> None:
    # four clear levels per dimension; customer i is at level i on R, F and M
    f = pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(8)],
        "recency_days": [900, 900, 300, 300, 60, 60, 2, 2],
        "orders": [1, 1, 3, 3, 10, 10, 40, 40],
        "revenue": [5.0, 5.0, 80.0, 80.0, 900.0, 900.0, 20000.0, 20000.0],
    })
    t = value_tiers(f).set_index("customer_id")
    assert t["r_level"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert t["f_level"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert t["m_level"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert t["value_score"].tolist() == [0, 0, 3, 3, 6, 6, 9, 9]
    assert t["tier"].tolist() == ["Low", "Low", "Mid", "Mid", "High", "High", "High", "High"]
    # the tier cut points: 0–2 Low, 3–4 Mid, 5+ High
    assert TIERS == (("Low", 0), ("Mid", 3), ("High", 5))
    mixed = f.assign(orders=1, revenue=5.0)  # only recency varies: at most 3 points
    assert value_tiers(mixed)["tier"].tolist() == ["Low"] * 6 + ["Mid"] * 2


def test_exports(tmp_path: Path) -> None:
    f = groups()
    scores = rfm_scores(f)
    r = cluster_customers(f, seed=42)
    paths = write_segment_exports(tmp_path / "out", scores, r, f)
    assert [p.name for p in paths] == ["cluster_profiles.csv", "cluster_summary.csv"]
    per_customer = pd.read_csv(paths[0])
    assert list(per_customer.columns) == list(PROFILE_COLUMNS)
    assert len(per_customer) == len(f) and per_customer["customer_id"].is_unique
    assert per_customer["segment"].notna().all() and per_customer["tier"].isin(["Low", "Mid", "High"]).all()
    summary = pd.read_csv(paths[1])
    assert len(summary) == r.k
    assert {"customers", "share", "recency", "frequency", "monetary", "revenue_share",
            "top_categories", "avg_installments"} <= set(summary.columns)
    assert summary["customers"].sum() == len(f)


@pytest.mark.parametrize("n", [300, 6_000])
def test_select_k_silhouette_is_sklearns_subsampled_silhouette(n: int) -> None:
    """k selection computes the silhouette from one distance matrix for every k; each value
    equals sklearn's silhouette_score on the same subsample (sample_size, random_state)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(c, 0.6, size=(n // 3, 3)) for c in (0.0, 4.0, 9.0)])
    got = cl._select_k(x, [2, 3, 4], seed=11)
    for k, sil in zip(got["k"], got["silhouette"], strict=True):
        labels = KMeans(n_clusters=k, random_state=11, n_init=1).fit(x).labels_
        want = silhouette_score(x, labels, sample_size=min(len(x), cl.SILHOUETTE_SAMPLE), random_state=11)
        assert sil == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert int(got.loc[got["silhouette"].idxmax(), "k"]) == 3


def test_silhouettes_of_match_sklearns_precomputed_silhouette() -> None:
    """Each labelling's score equals sklearn's silhouette_score on the same distances,
    with labels that are not 0..k-1, a cluster of one point, and clusters of one
    labelling absent from another; one cluster is refused as sklearn refuses it."""
    from sklearn.metrics import pairwise_distances, silhouette_score

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(c, 1.0, size=(70, 4)) for c in (0.0, 3.0, 7.0)])
    d = pairwise_distances(x)
    labelings = [
        np.repeat([0, 1, 2], 70),
        np.repeat([9, 4, 7], 70),  # arbitrary label values
        np.r_[np.zeros(209, dtype=int), [5]],  # a singleton cluster scores 0
        rng.integers(0, 6, size=210),  # noise: a negative score
    ]
    got = cl.silhouettes_of(d, labelings)
    for sil, labels in zip(got, labelings, strict=True):
        assert sil == pytest.approx(silhouette_score(d, labels, metric="precomputed"), rel=1e-12, abs=1e-14)
    assert got[0] > 0.5 and got[3] < 0.05
    with pytest.raises(ValueError):
        cl.silhouettes_of(d, [np.zeros(210, dtype=int)])


def test_distinct_rows_counts_exactly_up_to_the_cap() -> None:
    rows = np.repeat(np.arange(5.0)[:, None], 3, axis=1)
    assert cl.distinct_rows(rows, at_most=11) == 5
    assert cl.distinct_rows(np.vstack([rows, rows + 1e-12]), at_most=11) == 5  # rounded to 9 decimals
    assert cl.distinct_rows(np.empty((0, 3)), at_most=11) == 0
    many = np.random.default_rng(0).normal(size=(50_000, 3))
    assert cl.distinct_rows(many, at_most=11) == 11
    # a prefix of one repeated row: the rows after it are counted too
    late = np.vstack([np.zeros((20_000, 3)), np.arange(30.0).reshape(10, 3)])
    assert cl.distinct_rows(late, at_most=11) == 11
    assert cl.distinct_rows(late[:20_004], at_most=11) == 5


@pytest.mark.parametrize("n", [1_000_000, 1_001, 1_000, 8, 1])
def test_median_imputer_is_sklearns_median_simple_imputer(n: int) -> None:
    """The same statistics and output as SimpleImputer(strategy="median"), for odd and even
    counts of values, ties and one row; a column without any value is refused (SimpleImputer
    would drop it and change the matrix's shape)."""
    from sklearn.impute import SimpleImputer

    rng = np.random.default_rng(n)
    x = np.log1p(rng.gamma(2.0, 10.0, (n, 5)))
    x[:, 1] = np.round(x[:, 1], 1)  # ties
    x[rng.random((n, 5)) < 0.3] = np.nan
    x[0] = 1.5  # every column has a value
    sk = SimpleImputer(strategy="median").fit(x)
    ours = cl.MedianImputer().fit(x)
    np.testing.assert_array_equal(ours.statistics_, sk.statistics_)
    np.testing.assert_array_equal(ours.transform(x), sk.transform(x))
    other = x[::-1] * 1.1  # fitted statistics applied to other rows
    np.testing.assert_array_equal(ours.transform(other), sk.transform(other))
    x[:, 3] = np.nan
    with pytest.raises(ValueError, match="a value in every column"):
        cl.MedianImputer().fit(x)
