"""Segment answers from the precomputed tables: RFM segments, clusters and value tiers.

Reads `customer_scores` and `customer_features` (written by `pulse refresh`) and the
clustering summary kept in `meta`; never rescans orders.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from analytics.errors import NotAvailable
from analytics.filters import read_frame
from analytics.results import Result
from analytics.rfm import rfm_segments
from storage import schema
from storage.geography import ALL, Place
from storage.store import get_meta

F, S = schema.customer_features, schema.customer_scores


def scored_customers(engine: Engine, place: Place = ALL) -> pd.DataFrame:
    """One row per scored customer in `place`: RFM inputs, scores, segment, cluster, tier."""
    stmt = select(
        S.c.customer_id, S.c.segment, S.c.r_score, S.c.f_score, S.c.m_score, S.c.cluster,
        S.c.cluster_name, S.c.tier, F.c.recency_days.label("recency"),
        F.c.orders.label("frequency"), F.c.revenue.label("monetary"), F.c.state, F.c.region,
        S.c.as_of,
    ).join(F, F.c.customer_id == S.c.customer_id)
    if not place.is_all:
        stmt = stmt.where(F.c[place.kind] == place.value)
    return read_frame(engine, stmt)


@dataclass(frozen=True, eq=False)
class SegmentReport(Result):
    customers: int
    revenue: float
    segments: pd.DataFrame  # rfm_segments columns
    fallbacks: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class ClusterReport(Result):
    customers: int
    k: int
    knee_k: int | None
    features_used: tuple[str, ...]
    selection: pd.DataFrame  # k, inertia, silhouette, davies_bouldin
    # cluster, name, customers, share, revenue, revenue_share, recency, frequency, monetary
    clusters: pd.DataFrame
    profiles: pd.DataFrame  # whole-base profiles from the refresh
    projection: pd.DataFrame  # x, y, cluster, name (sample)
    tiers: pd.DataFrame  # tier, customers, share, revenue, revenue_share


def _require_scores(frame: pd.DataFrame, engine: Engine) -> None:
    if frame.empty and get_meta(engine, "refreshed_at") is None:
        raise NotAvailable("No scores yet: run `pulse refresh` (it runs after every load).")


def segment_report(engine: Engine, as_of: dt.date, place: Place = ALL) -> SegmentReport:
    """Customers, revenue and mean R/F/M per RFM segment in `place` (scores of the last refresh)."""
    scored = scored_customers(engine, place)
    _require_scores(scored, engine)
    summary = rfm_segments(scored, include_empty=True)
    refresh = get_meta(engine, "refresh", {}) or {}
    return SegmentReport(
        as_of=as_of, place=place, customers=len(scored),
        revenue=float(scored["monetary"].sum()) if len(scored) else 0.0,
        segments=summary, fallbacks=tuple(refresh.get("fallbacks", ())),
    )


def cluster_report(engine: Engine, as_of: dt.date, place: Place = ALL) -> ClusterReport:
    """Behaviour clusters and value tiers of the customers in `place` (last refresh)."""
    scored = scored_customers(engine, place)
    _require_scores(scored, engine)
    meta: dict[str, Any] = get_meta(engine, "clusters") or {}
    if not meta:
        raise NotAvailable("No clusters yet: run `pulse refresh`.")
    total_revenue = float(scored["monetary"].sum()) or 1.0
    by_cluster = scored.groupby(["cluster", "cluster_name"], dropna=True).agg(
        customers=("customer_id", "size"), revenue=("monetary", "sum"),
        recency=("recency", "mean"), frequency=("frequency", "mean"), monetary=("monetary", "mean"),
    ).reset_index().rename(columns={"cluster_name": "name"})
    by_cluster["share"] = by_cluster["customers"] / max(len(scored), 1)
    by_cluster["revenue_share"] = by_cluster["revenue"] / total_revenue
    tiers = scored.groupby("tier").agg(customers=("customer_id", "size"),
                                       revenue=("monetary", "sum")).reindex(["High", "Mid", "Low"])
    tiers = tiers.dropna(how="all").fillna(0).reset_index()
    tiers["share"] = tiers["customers"] / max(len(scored), 1)
    tiers["revenue_share"] = tiers["revenue"] / total_revenue
    profiles = pd.DataFrame(meta.get("profiles", []))
    projection = pd.DataFrame(meta.get("projection", []))
    if len(projection) and len(profiles):
        names = profiles.set_index("cluster")["name"]
        projection["name"] = projection["cluster"].map(names)
    return ClusterReport(
        as_of=as_of, place=place, customers=len(scored), k=int(meta.get("k", 0)),
        knee_k=meta.get("knee_k"), features_used=tuple(meta.get("features_used", ())),
        selection=pd.DataFrame(meta.get("selection", [])), clusters=by_cluster,
        profiles=profiles, projection=projection, tiers=tiers,
    )
