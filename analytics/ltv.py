"""Historical lifetime value by geography.

Definitions (purchases on or before `as_of`):
- a customer's historical LTV = revenue of all their purchases to date;
- per state/region: customers, orders, revenue, average LTV = revenue / customers,
  repeat rate = customers with ≥ 2 purchases / customers;
- groups with fewer than `min_customers` customers are shown but not classified
  ("too few customers") and take no part in the thresholds or the outlier test;
- quadrant thresholds are the medians, over the classified groups, of customers (volume)
  and of average LTV; a value equal to the median counts as high;
- outlier: |z| > 2 for average LTV, z computed over the classified groups with the
  population standard deviation (needs at least 3 classified groups).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, case, func, select

from analytics.filters import customer_facts, customer_totals, features_ready, read_frame
from analytics.results import Result
from storage.geography import ALL, Place

LEVELS = ("state", "region")
TOO_FEW = "too few customers"
QUADRANTS = {
    (True, True): "high volume / high LTV",
    (True, False): "high volume / low LTV",
    (False, True): "low volume / high LTV",
    (False, False): "early-stage",
}
OUTLIER_Z = 2.0


@dataclass(frozen=True, eq=False)
class LtvByGeography(Result):
    level: str
    min_customers: int
    customers: int
    revenue: float
    average_ltv: float | None
    # group, customers, orders, revenue, revenue_share, average_ltv, repeat_rate,
    # orders_per_customer, quadrant, z_score, outlier; sorted by revenue
    groups: pd.DataFrame
    volume_threshold: float | None  # median customers over classified groups
    ltv_threshold: float | None  # median average LTV over classified groups


GROUP_COLUMNS = ["group", "customers", "orders", "revenue", "repeaters"]


def _groups_from_facts(engine: Engine, as_of: dt.date, place: Place, level: str) -> pd.DataFrame | None:
    """Customers, orders, revenue and repeaters per group from `agg_customers`, when the
    stored features (which it sums) are as of `as_of`; else None."""
    facts = customer_facts(engine, place) if features_ready(engine, as_of) else None
    if facts is None:
        return None
    buyers = facts[facts["buyers"] > 0]
    sums = buyers.groupby(buyers[level], dropna=False)[["buyers", "orders", "revenue", "repeaters"]].sum()
    return sums.rename(columns={"buyers": "customers"}).rename_axis("group").reset_index()[GROUP_COLUMNS]


def _groups_from_store(engine: Engine, as_of: dt.date, place: Place, level: str) -> pd.DataFrame:
    """The same per group, from the customers' totals (features or orders)."""
    totals = customer_totals(engine, as_of, place)
    group = totals.c[level]
    stmt = select(
        group.label("group"),
        func.count().label("customers"),
        func.sum(totals.c.orders).label("orders"),
        func.sum(totals.c.revenue).label("revenue"),
        func.sum(case((totals.c.orders >= 2, 1), else_=0)).label("repeaters"),
    ).group_by(group)
    return read_frame(engine, stmt)


def ltv_by_geography(
    engine: Engine,
    as_of: dt.date,
    place: Place = ALL,
    *,
    level: str = "state",
    min_customers: int = 30,
) -> LtvByGeography:
    """Customers, revenue, average LTV and repeat rate per state or region, classified."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    df = _groups_from_facts(engine, as_of, place, level)
    if df is None:
        df = _groups_from_store(engine, as_of, place, level)
    df["group"] = df["group"].fillna("(unknown)")
    df = df.astype({"customers": int, "orders": int, "revenue": float, "repeaters": int})
    customers, revenue = int(df["customers"].sum()), float(df["revenue"].sum())
    df["revenue_share"] = df["revenue"] / revenue if revenue > 0 else np.nan
    df["average_ltv"] = df["revenue"] / df["customers"]
    df["repeat_rate"] = df["repeaters"] / df["customers"]
    df["orders_per_customer"] = df["orders"] / df["customers"]

    big = df["customers"] >= min_customers
    vol_t = float(df.loc[big, "customers"].median()) if big.any() else None
    ltv_t = float(df.loc[big, "average_ltv"].median()) if big.any() else None
    df["quadrant"] = TOO_FEW
    if big.any():
        df.loc[big, "quadrant"] = [
            QUADRANTS[(c >= vol_t, v >= ltv_t)]
            for c, v in zip(df.loc[big, "customers"], df.loc[big, "average_ltv"], strict=True)
        ]
    df["z_score"] = np.nan
    if big.sum() >= 3:
        values = df.loc[big, "average_ltv"]
        std = values.std(ddof=0)
        if std > 0:
            df.loc[big, "z_score"] = (values - values.mean()) / std
    df["outlier"] = df["z_score"].abs() > OUTLIER_Z
    df = df.sort_values(["revenue", "group"], ascending=[False, True], ignore_index=True)
    return LtvByGeography(
        as_of=as_of,
        place=place,
        level=level,
        min_customers=min_customers,
        customers=customers,
        revenue=revenue,
        average_ltv=revenue / customers if customers else None,
        groups=df[[
            "group", "customers", "orders", "revenue", "revenue_share", "average_ltv",
            "repeat_rate", "orders_per_customer", "quadrant", "z_score", "outlier",
        ]],
        volume_threshold=vol_t,
        ltv_threshold=ltv_t,
    )
