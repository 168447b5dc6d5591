"""Behaviour clusters (K-Means) and value tiers (per-dimension 1-D K-Means).

Behaviour clusters
- Features: recency_days, orders, revenue, avg_installments, category concentration
  (1 / distinct categories), avg_review, late_share — each kept only when the data has
  it (some non-missing values that are not all equal; UCI Online Retail has no
  instalments, reviews or deliveries). Missing values get the feature's median, then
  log1p and standardisation: Pipeline(log1p, median imputer, StandardScaler, KMeans).
- k from 2–10 by the best silhouette (ties: smaller k). Each k is fitted on a
  deterministic subsample of `SELECTION_SAMPLE` customers (one k-means++ start each);
  silhouette is computed on
  `SILHOUETTE_SAMPLE` of them, Davies-Bouldin on the subsample, and inertia feeds the
  elbow, whose knee (largest gap below the chord of the normalised curve) is reported
  next to the silhouette choice. The chosen k is then fitted on everyone (MiniBatchKMeans
  above `MINIBATCH_ABOVE` customers).
- Clusters are numbered by mean spend, highest first, and named from how they differ
  from the whole base: value (mean spend ≥ 1.5× the base's → "High value", ≤ 2/3 →
  "Low value", else "Mid value"), frequency ("one-time" when most bought once, "frequent"
  at ≥ 1.5× the base's mean orders, else "repeat"), recency ("recent" / "lapsed" at
  ≤ 2/3 / ≥ 1.5× the base's mean days since the last purchase), plus the most distinct
  other trait (|z| ≥ 1 of the standardised centroid, e.g. "late deliveries"); names that
  still clash get their next trait (|z| ≥ 0.5), then "#2", "#3".
- A 2-D PCA projection of the standardised features gives scatter coordinates.

Value tiers (the classic RFM + K-Means recipe): 1-D K-Means with up to `TIER_LEVELS` (4)
clusters on each of recency (days), frequency (orders) and monetary (revenue), all
log1p-scaled so a few very large values do not get clusters of their own. Each dimension's
clusters are numbered 0–3 so that higher is better (fewer days, more orders, more spend);
the three numbers are summed into `value_score` (0–9): 0–2 → "Low", 3–4 → "Mid", 5+ → "High".

Everything is deterministic for a given seed (rows are sorted by customer_id first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import davies_bouldin_score, pairwise_distances
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from analytics.joins import join_by_customer

K_RANGE = range(2, 11)
SELECTION_SAMPLE = 10_000
SILHOUETTE_SAMPLE = 4_000
MINIBATCH_ABOVE = 200_000
TIER_LEVELS = 4
TIER_FIT_SAMPLE = 100_000
TIERS = (("Low", 0), ("Mid", 3), ("High", 5))  # tier, lowest value_score
N_INIT = 4
MAX_NAME = 64  # customer_scores.cluster_name

# name, source column(s); category concentration is derived from `categories`
BEHAVIOUR = ("recency_days", "orders", "revenue", "avg_installments",
             "category_concentration", "avg_review", "late_share")
TRAITS = {  # feature -> (label when high, label when low)
    "avg_installments": ("many instalments", "few instalments"),
    "category_concentration": ("single-category", "multi-category"),
    "avg_review": ("happy reviewers", "unhappy reviewers"),
    "late_share": ("late deliveries", "on-time deliveries"),
}


@dataclass(frozen=True, eq=False)
class ClusterResult:
    """Behaviour clusters and value tiers of a customer base."""

    k: int  # clusters fitted (chosen by silhouette unless given)
    knee_k: int | None  # the elbow's knee, for comparison
    seed: int
    features_used: tuple[str, ...]
    # k, inertia, silhouette, davies_bouldin (on the selection subsample)
    selection: pd.DataFrame
    # customer_id, cluster, cluster_name, r_level, f_level, m_level, value_score, tier
    assignments: pd.DataFrame
    # cluster, name, customers, share, recency, frequency, monetary, revenue_share,
    # repeat_share, avg_installments, avg_review, late_share, top_categories
    profiles: pd.DataFrame
    projection: pd.DataFrame  # customer_id, x, y, cluster
    explained_variance: tuple[float, float]
    sample_size: int  # customers in the k-selection subsample
    minibatch: bool


def behaviour_matrix(features: pd.DataFrame) -> pd.DataFrame:
    """The behaviour features the data has (raw values; NaN where missing)."""
    cats = features["categories"].astype(float)
    frame = pd.DataFrame({
        "recency_days": features["recency_days"].astype(float),
        "orders": features["orders"].astype(float),
        "revenue": features["revenue"].astype(float).clip(lower=0),
        "avg_installments": features["avg_installments"].astype(float),
        "category_concentration": (1.0 / cats).where(cats > 0),
        "avg_review": features["avg_review"].astype(float),
        "late_share": features["late_share"].astype(float),
    }, index=features.index)
    usable = [c for c in BEHAVIOUR if frame[c].notna().any() and frame[c].nunique() > 1]
    # R, F and M stay even when constant so that a tiny base still has a matrix
    keep = [c for c in BEHAVIOUR if c in usable or c in ("recency_days", "orders", "revenue")]
    return frame[keep]


class MedianImputer(TransformerMixin, BaseEstimator):
    """Missing values (NaN) replaced by their column's median: the statistics and output of
    scikit-learn's SimpleImputer(strategy="median") for columns that have values (the
    behaviour matrix keeps only those), from np.nanmedian. SimpleImputer takes the median
    of a masked array, which sorts it whole: 0.76 s against 0.14 s for a million customers
    (1.5 s of a 10M-order refresh's clustering, under load)."""

    def fit(self, X: np.ndarray, y: object = None) -> MedianImputer:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not len(X) or np.isnan(X).all(axis=0).any():
            raise ValueError("median imputation needs rows, and a value in every column")
        self.statistics_ = np.nanmedian(X, axis=0)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return np.where(np.isnan(X), self.statistics_, X)


def preprocessor() -> Pipeline:
    """log1p, median imputation, standardisation."""
    return Pipeline([
        ("log", FunctionTransformer(np.log1p)),
        ("impute", MedianImputer()),
        ("scale", StandardScaler()),
    ])


def make_pipeline(k: int, seed: int, minibatch: bool = False) -> Pipeline:
    """The whole model: `preprocessor()` then (MiniBatch)KMeans with k clusters."""
    model = (MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
             if minibatch else KMeans(n_clusters=k, random_state=seed, n_init=N_INIT))
    return Pipeline([*preprocessor().steps, ("kmeans", model)])


def cluster_customers(features: pd.DataFrame, seed: int = 42, k: int | None = None,
                      threads: int | None = 1) -> ClusterResult:
    """Behaviour clusters (k by silhouette over 2–10 unless given) and value tiers.

    `threads` caps the native (OpenMP/BLAS) threads of the fits; None leaves the library
    default. One thread is the default because K-Means on a handful of features gains
    little from more, and spin-waiting OpenMP threads on a busy machine (the bot, a load)
    made clustering Olist take 3x the CPU time and 3-4x the wall time.
    """
    with threadpool_limits(limits=threads):
        return _cluster_customers(features, seed, k)


def _cluster_customers(features: pd.DataFrame, seed: int, k: int | None) -> ClusterResult:
    features = features.sort_values("customer_id", kind="stable").reset_index(drop=True)
    x = behaviour_matrix(features)
    n = len(features)
    minibatch = n > MINIBATCH_ABOVE
    scaled = preprocessor().fit_transform(x.to_numpy()) if n else np.empty((0, x.shape[1]))
    distinct = distinct_rows(scaled, at_most=max(K_RANGE) + 1)

    selection = pd.DataFrame(columns=["k", "inertia", "silhouette", "davies_bouldin"])
    sample_size = 0
    knee = None
    if distinct < 3:  # nothing to separate: one cluster
        labels = np.zeros(n, dtype=np.int64)
        k = 1
    else:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, SELECTION_SAMPLE), replace=False))
        sample_size = len(sample)
        ks = [c for c in K_RANGE if c < min(distinct, sample_size)]
        selection = _select_k(scaled[sample], ks, seed)
        knee = _knee(selection["k"].to_numpy(), selection["inertia"].to_numpy())
        if k is None:
            best = selection["silhouette"].max()
            k = int(selection.loc[selection["silhouette"] >= best - 1e-12, "k"].min())
        # the pipeline's KMeans step on the already preprocessed matrix
        labels = make_pipeline(k, seed, minibatch)[-1].fit_predict(scaled)

    labels = _renumber_by(labels, features["revenue"].to_numpy(dtype=float))
    names = _names(features, scaled, list(x.columns), labels)
    profiles = _profiles(features, labels, names)
    projection, explained = _projection(features["customer_id"], scaled, labels, seed)
    tiers = value_tiers(features, seed)
    assignments = pd.DataFrame({
        "customer_id": features["customer_id"].to_numpy(),
        "cluster": labels,
        "cluster_name": pd.Series(labels, dtype=np.int64).map(names).astype(object),
    }).pipe(join_by_customer, tiers)
    return ClusterResult(
        k=int(k), knee_k=knee, seed=seed, features_used=tuple(x.columns), selection=selection,
        assignments=assignments, profiles=profiles, projection=projection,
        explained_variance=explained, sample_size=sample_size, minibatch=minibatch,
    )


def distinct_rows(x: np.ndarray, at_most: int) -> int:
    """How many distinct rows `x` has (rounded to 9 decimals), or `at_most` when it has at
    least that many: k selection only asks whether there are more points than clusters."""
    def count(rows: np.ndarray) -> int:  # by hashing (np.unique(axis=0) sorts rows, slow at millions)
        return int((~pd.DataFrame(rows.round(9)).duplicated()).sum())

    # a prefix first, which at a million customers already has enough (hashing them all took 2 s)
    seen = count(x[:10_000])
    if seen < at_most and len(x) > 10_000:
        seen = count(x)
    return min(seen, at_most)


def value_tiers(features: pd.DataFrame, seed: int = 42) -> pd.DataFrame:
    """customer_id, r_level, f_level, m_level (0 = worst), value_score and tier."""
    out = pd.DataFrame({"customer_id": features["customer_id"].to_numpy()})
    for name, column, higher_is_better in (("r_level", "recency_days", False),
                                           ("f_level", "orders", True),
                                           ("m_level", "revenue", True)):
        values = np.log1p(features[column].to_numpy(dtype=float).clip(min=0))
        out[name] = _levels_1d(values if higher_is_better else -values, seed)
    out["value_score"] = out["r_level"] + out["f_level"] + out["m_level"]
    bounds = [lo for _, lo in TIERS]
    names = np.asarray([t for t, _ in TIERS], dtype=object)
    out["tier"] = names[np.searchsorted(bounds, out["value_score"].to_numpy(), side="right") - 1]
    return out


def _levels_1d(values: np.ndarray, seed: int) -> np.ndarray:
    """1-D K-Means levels 0..k-1 ordered by centre (higher value, higher level)."""
    distinct = np.unique(values)
    k = min(TIER_LEVELS, len(distinct))
    if k < 2:
        return np.zeros(len(values), dtype=np.int64)
    fit_on = values
    if len(distinct) > TIER_FIT_SAMPLE:
        fit_on = np.random.default_rng(seed).choice(values, TIER_FIT_SAMPLE, replace=False)
    # distinct values weighted by their counts: the same objective, far fewer points
    points, counts = np.unique(fit_on, return_counts=True)
    k = min(k, len(points))
    model = KMeans(n_clusters=k, random_state=seed, n_init=N_INIT)
    model.fit(points.reshape(-1, 1), sample_weight=counts)
    order = np.argsort(np.argsort(model.cluster_centers_.ravel()))
    return order[model.predict(values.reshape(-1, 1))].astype(np.int64)


def _select_k(x: np.ndarray, ks: list[int], seed: int) -> pd.DataFrame:
    # the subsample silhouette_score(sample_size=…, random_state=seed) draws, the same for
    # every k: its distance matrix is computed once instead of once per k
    pick = check_random_state(seed).permutation(len(x))[:min(len(x), SILHOUETTE_SAMPLE)]
    fits = []
    for k in ks:
        model = KMeans(n_clusters=k, random_state=seed, n_init=1).fit(x)
        fits.append((k, float(model.inertia_), model.labels_, float(davies_bouldin_score(x, model.labels_))))
    silhouettes = silhouettes_of(pairwise_distances(x[pick]), [labels[pick] for _, _, labels, _ in fits])
    rows = [(k, inertia, sil, db) for (k, inertia, _, db), sil in zip(fits, silhouettes, strict=True)]
    return pd.DataFrame(rows, columns=["k", "inertia", "silhouette", "davies_bouldin"])


def silhouettes_of(distances: np.ndarray, labelings: list[np.ndarray]) -> list[float]:
    """Mean silhouette coefficient of each labelling of the points whose pairwise distances
    are `distances`: what sklearn's silhouette_score(distances, labels, metric="precomputed")
    gives (a cluster of one point scores 0; ValueError unless 2 <= clusters < points).

    sklearn sums each point's distances per cluster with a bincount per point, in a Python
    loop (4,000 per labelling here, most of the k selection's time); here every labelling's
    sums come from one matrix product with their one-hot cluster indicators."""
    n = len(distances)
    codes, sizes = [], []
    for labels in labelings:
        _, code = np.unique(labels, return_inverse=True)
        size = np.bincount(code)
        if not 1 < len(size) < n:
            raise ValueError(f"a silhouette needs 2 to {n - 1} clusters; got {len(size)}")
        codes.append(code.ravel())
        sizes.append(size)
    starts = np.cumsum([0, *[len(s) for s in sizes]])
    indicators = np.zeros((n, starts[-1]))
    rows = np.arange(n)
    for code, start in zip(codes, starts[:-1], strict=True):
        indicators[rows, start + code] = 1.0
    sums = distances @ indicators  # point × (labelling, cluster): sum of distances to its members
    out = []
    for code, size, start in zip(codes, sizes, starts[:-1], strict=True):
        per_cluster = sums[:, start:start + len(size)]
        own = per_cluster[rows, code]
        with np.errstate(divide="ignore", invalid="ignore"):
            intra = own / (size[code] - 1)
            others = per_cluster / size
            others[rows, code] = np.inf
            inter = others.min(axis=1)
            sil = (inter - intra) / np.maximum(intra, inter)
        out.append(float(np.mean(np.nan_to_num(sil))))
    return out


def _knee(ks: np.ndarray, inertia: np.ndarray) -> int | None:
    """The elbow: the k farthest below the chord of the min-max normalised inertia curve."""
    if len(ks) < 3 or inertia.max() == inertia.min():
        return None
    x = (ks - ks.min()) / (ks.max() - ks.min())
    y = (inertia - inertia.min()) / (inertia.max() - inertia.min())
    return int(ks[np.argmax((1 - x) - y)])


def _renumber_by(labels: np.ndarray, revenue: np.ndarray) -> np.ndarray:
    """Cluster numbers 0.. by mean revenue, highest first (stable across runs)."""
    if not len(labels):
        return labels.astype(np.int64)
    means = pd.Series(revenue).groupby(labels).mean()
    order = means.sort_values(ascending=False, kind="stable").index.to_numpy()
    new_number = np.zeros(labels.max() + 1, dtype=np.int64)
    new_number[order] = np.arange(len(order))
    return new_number[labels]


def _names(features: pd.DataFrame, scaled: np.ndarray, columns: list[str],
           labels: np.ndarray) -> dict[int, str]:
    if not len(labels):
        return {}
    base_spend = features["revenue"].mean()
    base_orders = features["orders"].mean()
    base_recency = features["recency_days"].mean()
    grouped = features.groupby(labels)
    spend, orders = grouped["revenue"].mean(), grouped["orders"].mean()
    recency = grouped["recency_days"].mean()
    repeat = grouped["orders"].apply(lambda s: float((s >= 2).mean()))
    centroids = pd.DataFrame(scaled, columns=columns).groupby(labels).mean()

    names: dict[int, list[str]] = {}
    extras: dict[int, list[tuple[float, str]]] = {}  # (|z|, label), most distinct first
    for c in sorted(set(labels.tolist())):
        value = ("High value" if spend[c] >= 1.5 * base_spend
                 else "Low value" if spend[c] <= base_spend / 1.5 else "Mid value")
        freq = ("one-time" if repeat[c] < 0.5
                else "frequent" if orders[c] >= 1.5 * base_orders else "repeat")
        parts = [value, freq]
        if base_recency > 0 and recency[c] <= base_recency / 1.5:
            parts.append("recent")
        elif recency[c] >= 1.5 * base_recency:
            parts.append("lapsed")
        extras[c] = sorted(
            ((abs(centroids.loc[c, f]), TRAITS[f][0 if centroids.loc[c, f] > 0 else 1])
             for f in TRAITS if f in centroids.columns), reverse=True)
        if extras[c] and extras[c][0][0] >= 1:
            parts.append(extras[c].pop(0)[1])
        names[c] = parts
    # clashing names: add each one's next most distinct trait (|z| >= 0.5), then a number
    joined = {c: ", ".join(p) for c, p in names.items()}
    for c in names:
        if list(joined.values()).count(joined[c]) > 1 and extras[c] and extras[c][0][0] >= 0.5:
            names[c].append(extras[c][0][1])
    result: dict[int, str] = {}
    seen: dict[str, int] = {}
    for c in sorted(names):
        name = ", ".join(names[c])[:MAX_NAME]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            suffix = f" #{seen[name]}"
            name = name[:MAX_NAME - len(suffix)] + suffix
        result[c] = name
    return result


def _profiles(features: pd.DataFrame, labels: np.ndarray, names: dict[int, str]) -> pd.DataFrame:
    columns = ["cluster", "name", "customers", "share", "recency", "frequency", "monetary",
               "revenue_share", "repeat_share", "avg_installments", "avg_review", "late_share",
               "top_categories"]
    if not len(labels):
        return pd.DataFrame(columns=columns)
    frame = features.assign(cluster=labels, repeat=(features["orders"] >= 2).astype(float))
    grouped = frame.groupby("cluster")
    prof = grouped.agg(
        customers=("customer_id", "size"), recency=("recency_days", "mean"),
        frequency=("orders", "mean"), monetary=("revenue", "mean"), revenue=("revenue", "sum"),
        repeat_share=("repeat", "mean"), avg_installments=("avg_installments", "mean"),
        avg_review=("avg_review", "mean"), late_share=("late_share", "mean"),
    )
    total_revenue = frame["revenue"].sum()
    prof["share"] = prof["customers"] / len(frame)
    prof["revenue_share"] = prof["revenue"] / total_revenue if total_revenue else 0.0
    prof["top_categories"] = _top_categories(frame)
    prof["name"] = [names[c] for c in prof.index]
    return prof.rename_axis("cluster").reset_index()[columns]


def _top_categories(frame: pd.DataFrame, top: int = 3) -> pd.Series:
    """'cat (share%), …' of each cluster's customers' top categories."""
    counts = (frame.dropna(subset=["top_category"])
              .groupby(["cluster", "top_category"]).size().rename("n").reset_index())
    sizes = frame.groupby("cluster").size()
    counts = counts.sort_values(["cluster", "n", "top_category"], ascending=[True, False, True])
    counts = counts.groupby("cluster").head(top)
    text = counts.assign(t=counts["top_category"] + " ("
                         + (100 * counts["n"] / counts["cluster"].map(sizes)).round().astype(int).astype(str)
                         + "%)")
    return text.groupby("cluster")["t"].agg(", ".join).reindex(sizes.index).fillna("")


def _projection(customer_ids: pd.Series, scaled: np.ndarray, labels: np.ndarray,
                seed: int) -> tuple[pd.DataFrame, tuple[float, float]]:
    n, dims = scaled.shape
    if n < 2 or dims < 2:
        coords = np.zeros((n, 2))
        explained = (0.0, 0.0)
    else:
        pca = PCA(n_components=2, random_state=seed)
        coords = pca.fit_transform(scaled)
        explained = tuple(float(v) for v in pca.explained_variance_ratio_)
    frame = pd.DataFrame({"customer_id": customer_ids.to_numpy(), "x": coords[:, 0],
                          "y": coords[:, 1], "cluster": labels})
    return frame, explained
