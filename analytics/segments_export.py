"""CSV exports of the segmentation: who is in which segment, cluster and tier."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analytics.clusters import ClusterResult

PROFILE_COLUMNS = ("customer_id", "state", "region", "segment", "r_score", "f_score", "m_score",
                   "cluster", "cluster_name", "tier", "value_score", "orders", "revenue",
                   "recency_days")


def write_segment_exports(
    out_dir: str | Path, scores: pd.DataFrame, clusters: ClusterResult, features: pd.DataFrame
) -> list[Path]:
    """Write `cluster_profiles.csv` (one row per customer: RFM segment, cluster, tier) and
    `cluster_summary.csv` (one row per cluster: size, share, mean R/F/M, revenue share,
    top categories, instalments) to `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_customer = (
        scores[["customer_id", "segment", "r_score", "f_score", "m_score"]]
        .merge(clusters.assignments[["customer_id", "cluster", "cluster_name", "tier", "value_score"]],
               on="customer_id", how="left")
        .merge(features[["customer_id", "state", "region", "orders", "revenue", "recency_days"]],
               on="customer_id", how="left")
        .sort_values("customer_id")
    )
    profiles_path = out / "cluster_profiles.csv"
    per_customer[list(PROFILE_COLUMNS)].to_csv(profiles_path, index=False)
    summary_path = out / "cluster_summary.csv"
    clusters.profiles.to_csv(summary_path, index=False, float_format="%.6g")
    return [profiles_path, summary_path]
