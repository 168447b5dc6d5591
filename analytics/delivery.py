"""Delivery times, the delivery promise (SLA), and what lateness costs.

Definitions (purchases placed on or before `as_of`, customers in the place):
- a *delivered* order has `delivered_at` on or before `as_of` (its status is not looked at);
- delivery days = delivered_at − purchased_at in fractional days;
- *on time* (SLA met) ⇔ delivered_at.date() <= estimated_delivery_at.date(): delivery on
  the promised day counts as on time. SLA compliance = on-time orders / delivered orders
  with an estimate; late share = 1 − compliance; days late = delivered date − estimated
  date in whole calendar days, averaged over late orders;
- best/worst states and regions rank groups with at least `min_orders` delivered orders by
  on-time share (then by median delivery days);
- freight bands are quantile bands (quintiles by default) of the order's freight value;
- review link: mean score of reviews (created on or before `as_of`) of on-time vs late
  orders, each review counting once;
- repeat link: customers are split by whether their first purchase was delivered late or
  on time; "purchased again" = has a second purchase on or before `as_of`, whenever it was
  placed. Customers whose first order is undelivered or has no estimate are left out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, String, and_, case, cast, select

from analytics.filters import purchase_scope, read_frame, require
from analytics.periods import day_number, elapsed_days, end_of_day
from analytics.results import Result
from storage import schema
from storage.geography import ALL, Place

ORD, CUS, REV = schema.orders, schema.customers, schema.reviews
STATS = [
    "orders", "mean_days", "median_days", "p90_days", "on_time_share", "late_share",
    "mean_days_late",
]


@dataclass(frozen=True, eq=False)
class DeliveryReport(Result):
    delivered_orders: int
    not_delivered: int  # purchases in scope with no delivery on or before as_of
    orders_with_estimate: int
    mean_days: float | None
    median_days: float | None
    p90_days: float | None
    on_time_share: float | None  # SLA compliance
    late_share: float | None
    mean_days_late: float | None
    min_orders: int
    by_state: pd.DataFrame  # state, region + STATS columns; sorted by orders
    by_region: pd.DataFrame  # region + STATS columns
    best_states: list[str]
    worst_states: list[str]
    best_regions: list[str]
    worst_regions: list[str]
    # band, freight_min, freight_max, orders, mean_freight, on_time_share, mean_days
    freight_bands: pd.DataFrame
    review_on_time: float | None
    review_late: float | None
    reviews_on_time: int
    reviews_late: int
    # first_order ("on time"/"late"), customers, purchased_again, repeat_rate
    repeat_after_first: pd.DataFrame


def delivery_report(
    engine: Engine,
    as_of: dt.date,
    place: Place = ALL,
    *,
    min_orders: int = 30,
    top_n: int = 3,
    bands: int = 5,
) -> DeliveryReport:
    """Delivery speed, SLA compliance and the effect of lateness for `place` as of `as_of`."""
    require(
        engine,
        select(ORD.c.order_id).where(
            ORD.c.delivered_at.is_not(None), ORD.c.estimated_delivery_at.is_not(None)
        ),
        "delivery dates",
    )
    end = end_of_day(as_of)
    is_delivered = and_(ORD.c.delivered_at.is_not(None), ORD.c.delivered_at < end)
    late_days = day_number(ORD.c.delivered_at) - day_number(ORD.c.estimated_delivery_at)
    # One narrow read of every purchase in scope; delivery fields are NULL when not delivered.
    stmt = (
        select(
            ORD.c.order_id,
            ORD.c.customer_id,
            cast(ORD.c.purchased_at, String).label("ts"),  # sorts like the timestamp
            CUS.c.state,
            CUS.c.region,
            case((is_delivered, elapsed_days(ORD.c.delivered_at, ORD.c.purchased_at))).label("days"),
            case((is_delivered, late_days)).label("days_late"),
            ORD.c.freight_value.label("freight"),
        )
        .select_from(ORD.outerjoin(CUS, CUS.c.customer_id == ORD.c.customer_id))
        .where(purchase_scope(as_of, place))
    )
    orders = read_frame(engine, stmt)
    orders["days"] = orders["days"].astype(float)
    orders["days_late"] = orders["days_late"].astype(float)  # NaN: undelivered or no estimate
    orders["on_time"] = (orders["days_late"] <= 0).where(orders["days_late"].notna())
    df = orders[orders["days"].notna()]
    reviews = _reviews(engine, as_of, df)
    overall = _stats(df)
    by_state = _grouped(df, ["state", "region"])
    by_region = _grouped(df, ["region"])
    best_s, worst_s = _best_worst(by_state, "state", min_orders, top_n)
    best_r, worst_r = _best_worst(by_region, "region", min_orders, top_n)
    return DeliveryReport(
        as_of=as_of,
        place=place,
        delivered_orders=len(df),
        not_delivered=len(orders) - len(df),
        orders_with_estimate=int(df["on_time"].notna().sum()),
        mean_days=overall["mean_days"],
        median_days=overall["median_days"],
        p90_days=overall["p90_days"],
        on_time_share=overall["on_time_share"],
        late_share=overall["late_share"],
        mean_days_late=overall["mean_days_late"],
        min_orders=min_orders,
        by_state=by_state,
        by_region=by_region,
        best_states=best_s,
        worst_states=worst_s,
        best_regions=best_r,
        worst_regions=worst_r,
        freight_bands=_freight_bands(df, bands),
        review_on_time=reviews[True][0],
        review_late=reviews[False][0],
        reviews_on_time=reviews[True][1],
        reviews_late=reviews[False][1],
        repeat_after_first=_repeat_after_first(orders),
    )


def _none(x: float) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _stats(df: pd.DataFrame) -> dict[str, float | None]:
    days, on_time = df["days"], df["on_time"].dropna().astype(bool)
    late = df.loc[df["days_late"] > 0, "days_late"]
    share = on_time.mean() if len(on_time) else np.nan
    return {
        "orders": len(df),
        "mean_days": _none(days.mean()),
        "median_days": _none(days.median()),
        "p90_days": _none(days.quantile(0.9)) if len(days) else None,
        "on_time_share": _none(share),
        "late_share": _none(1 - share),
        "mean_days_late": _none(late.mean()),
    }


def _grouped(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    rows = [
        {**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), **_stats(g)}
        for key, g in df.groupby(keys, dropna=False, sort=True)
    ]
    out = pd.DataFrame(rows, columns=keys + STATS)
    out["orders"] = out["orders"].astype(int)
    return out.sort_values(["orders", keys[0]], ascending=[False, True], ignore_index=True)


def _best_worst(groups: pd.DataFrame, key: str, min_orders: int, top_n: int) -> tuple[list, list]:
    ok = groups[(groups["orders"] >= min_orders) & groups["on_time_share"].notna()]
    ranked = ok.sort_values(
        ["on_time_share", "median_days", key], ascending=[False, True, True], ignore_index=True
    )
    n = min(top_n, len(ranked) // 2)
    return list(ranked[key].head(n)), list(ranked[key].iloc[::-1].head(n))


def _freight_bands(df: pd.DataFrame, bands: int) -> pd.DataFrame:
    cols = ["band", "freight_min", "freight_max", "orders", "mean_freight", "on_time_share", "mean_days"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    if df["freight"].nunique() > 1:
        codes = pd.qcut(df["freight"], q=bands, labels=False, duplicates="drop")
    else:  # a single freight value makes a single band
        codes = pd.Series(0, index=df.index)
    g = df.assign(band=codes.astype(int) + 1).groupby("band")
    out = pd.DataFrame({
        "freight_min": g["freight"].min(),
        "freight_max": g["freight"].max(),
        "orders": g.size(),
        "mean_freight": g["freight"].mean(),
        "on_time_share": g["on_time"].apply(lambda s: s.dropna().astype(bool).mean()),
        "mean_days": g["days"].mean(),
    }).reset_index()
    return out[cols]


def _reviews(engine: Engine, as_of: dt.date, delivered: pd.DataFrame) -> dict:
    """{on_time: (mean score or None, reviews)} for delivered orders with an estimate."""
    stmt = select(REV.c.order_id, REV.c.score).where(
        (REV.c.created_at < end_of_day(as_of)) | REV.c.created_at.is_(None)
    )
    reviews = read_frame(engine, stmt)
    rated = reviews.merge(delivered.loc[delivered["on_time"].notna(), ["order_id", "on_time"]])
    out = {}
    for flag in (True, False):
        scores = rated.loc[rated["on_time"].astype(bool) == flag, "score"]
        out[flag] = (_none(scores.mean()), len(scores))
    return out


def _repeat_after_first(orders: pd.DataFrame) -> pd.DataFrame:
    ranked = orders.sort_values(["customer_id", "ts", "order_id"])
    first = ranked.drop_duplicates("customer_id").set_index("customer_id")["on_time"]
    again = ranked.groupby("customer_id").size().reindex(first.index) >= 2
    known = first.notna()
    rows = []
    for label, on_time in (("on time", True), ("late", False)):
        sel = known & (first == on_time)
        n, k = int(sel.sum()), int((sel & again).sum())
        rows.append({"first_order": label, "customers": n, "purchased_again": k,
                     "repeat_rate": k / n if n else np.nan})
    return pd.DataFrame(rows)
