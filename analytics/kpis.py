"""The overview: headline KPIs, the monthly trend, where and what people buy.

Definitions (all over purchases on or before `as_of`, customers in the place):
- revenue of an order = items_value + freight_value; average order value = revenue / orders.
- repeat-purchase rate = customers with ≥ 2 purchases / customers with ≥ 1.
- a customer's *first* purchase is the earliest (ties broken by order_id); its revenue is
  "new" revenue, all later purchases are "returning" revenue. A customer is *new* in the
  month of the first purchase, so new ⊆ active and new/active ≤ 1.
- average review = mean score of the reviews (created on or before as_of) of those purchases.
- a month is partial when as_of is before its last day or the data starts after its first
  day; partial months carry no month-over-month change and no seasonality weight.
- seasonality index of a calendar month = mean revenue of its complete months / mean of
  those twelve (or fewer) calendar-month means; only meaningful with ≥ 2 years of data.
- category revenue = Σ item price + item freight; `categories_for_80pct` = fewest
  categories (largest first) whose revenue reaches 80% of category revenue.
- category lift in a group = (orders with the category / order-category pairs in the
  group) ÷ (the same share over the whole store); kept when the group has at least
  `min_category_orders` orders with the category. Groups are regions, or states when
  the place is a region or state.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Select, case, distinct, func, select

from analytics.filters import (
    facts_meta,
    first_purchase_date,
    purchase_scope,
    read_frame,
    where_place,
)
from analytics.periods import (
    WEEKDAYS,
    end_of_day,
    hour_of,
    month_is_partial,
    month_key,
    month_range,
    weekday,
)
from analytics.results import Result
from storage import schema
from storage.geography import ALL, Place

ORD, CUS, ITM, REV = schema.orders, schema.customers, schema.order_items, schema.reviews
AGG_MONTHLY, AGG_CATEGORIES, AGG_WEEKDAY_HOUR = (
    schema.agg_orders_monthly, schema.agg_categories, schema.agg_weekday_hour,
)
NO_CATEGORY = "(no category)"


@dataclass(frozen=True, eq=False)
class Overview(Result):
    customers: int
    orders: int
    revenue: float
    average_order_value: float | None
    repeat_customers: int
    repeat_rate: float | None
    new_revenue: float
    returning_revenue: float
    average_review: float | None  # None when there are no reviews in scope
    reviews: int
    data_start: dt.date | None  # first order date in the store (any place)
    # month ('YYYY-MM'), revenue, orders, active_customers, new_customers, new_ratio,
    # new_revenue, returning_revenue, partial, mom_change (NaN when undefined)
    monthly: pd.DataFrame
    last_complete_month: str | None
    mom_change: float | None  # of the last complete month vs the month before
    # month_of_year (1-12), months (complete months used), mean_revenue, index
    seasonality: pd.DataFrame
    by_state: pd.DataFrame  # state, region, customers, orders, revenue, share
    by_region: pd.DataFrame  # region, customers, orders, revenue, share
    top5_state_share: float | None
    # category, orders, revenue, share, cumulative_share; top N then one "other" row
    by_category: pd.DataFrame
    categories: int
    categories_for_80pct: int
    weekday_hour: pd.DataFrame  # revenue; index Mon..Sun, columns hours 0..23
    lift_level: str  # "region" or "state"
    category_lift: pd.DataFrame  # group, category, orders, share, overall_share, lift


def overview(
    engine: Engine,
    as_of: dt.date,
    place: Place = ALL,
    *,
    top_categories: int = 10,
    min_category_orders: int = 30,
) -> Overview:
    """Headline KPIs, monthly trend, geography, categories and timing for `place` as of `as_of`."""
    data_start = first_purchase_date(engine)
    facts = facts_meta(engine, as_of) is not None  # read the refresh's agg_* tables
    monthly = _monthly(engine, as_of, place, data_start, facts)
    totals = monthly[["revenue", "orders", "new_customers", "new_revenue", "repeaters"]].sum()
    customers, orders = int(totals["new_customers"]), int(totals["orders"])
    revenue, repeaters = float(totals["revenue"]), int(totals["repeaters"])
    monthly = monthly.drop(columns="repeaters")
    avg_review, n_reviews = _reviews(engine, as_of, place, facts)
    by_state, by_region = _geography(engine, as_of, place, facts)
    lift_level = "region" if place.is_all else "state"
    groups = _category_groups(engine, as_of, place, lift_level, facts)
    by_category, n_categories, n_80 = _categories(groups, top_categories)
    complete = monthly[~monthly["partial"]]
    last_complete = complete["month"].iloc[-1] if len(complete) else None
    last_mom = complete["mom_change"].iloc[-1] if len(complete) else np.nan
    return Overview(
        as_of=as_of,
        place=place,
        customers=customers,
        orders=orders,
        revenue=revenue,
        average_order_value=revenue / orders if orders else None,
        repeat_customers=repeaters,
        repeat_rate=repeaters / customers if customers else None,
        new_revenue=float(totals["new_revenue"]),
        returning_revenue=revenue - float(totals["new_revenue"]),
        average_review=avg_review,
        reviews=n_reviews,
        data_start=data_start,
        monthly=monthly,
        last_complete_month=last_complete,
        mom_change=None if pd.isna(last_mom) else float(last_mom),
        seasonality=_seasonality(monthly),
        by_state=by_state,
        by_region=by_region,
        top5_state_share=(
            float(by_state["revenue"].head(5).sum() / revenue) if revenue > 0 else None
        ),
        by_category=by_category,
        categories=n_categories,
        categories_for_80pct=n_80,
        weekday_hour=_weekday_hour(engine, as_of, place, facts),
        lift_level=lift_level,
        category_lift=_category_lift(engine, as_of, place, groups, min_category_orders, facts),
    )


def _monthly(
    engine: Engine, as_of: dt.date, place: Place, data_start: dt.date | None, facts: bool
) -> pd.DataFrame:
    if facts:
        M = AGG_MONTHLY
        stmt = where_place(select(
            M.c.month, *(func.sum(M.c[c]).label(c) for c in (
                "revenue", "orders", "active_customers", "new_customers", "new_revenue", "repeaters"))
        ), M, place).group_by(M.c.month)
    else:
        stmt = _monthly_query(as_of, place)
    found = read_frame(engine, stmt).set_index("month")
    months = month_range(data_start, as_of) if data_start else []
    months = sorted(set(months) | set(found.index))
    df = found.reindex(months).fillna(0).rename_axis("month").reset_index()
    for col in ("orders", "active_customers", "new_customers", "repeaters"):
        df[col] = df[col].astype(int)
    for col in ("revenue", "new_revenue"):
        df[col] = df[col].astype(float)
    df["returning_revenue"] = df["revenue"] - df["new_revenue"]
    df["new_ratio"] = df["new_customers"] / df["active_customers"].where(df["active_customers"] > 0)
    df["partial"] = np.array([month_is_partial(as_of, m, data_start) for m in df["month"]], dtype=bool)
    prev = df["revenue"].shift(1)
    prev_ok = ~df["partial"].shift(1, fill_value=True) & (prev > 0)
    df["mom_change"] = (df["revenue"] / prev - 1).where(~df["partial"] & prev_ok)
    return df[
        ["month", "revenue", "orders", "active_customers", "new_customers", "new_ratio",
         "new_revenue", "returning_revenue", "partial", "mom_change", "repeaters"]
    ]


def _monthly_query(as_of: dt.date, place: Place) -> Select:
    revenue = ORD.c.items_value + ORD.c.freight_value
    rank = func.row_number().over(
        partition_by=ORD.c.customer_id, order_by=(ORD.c.purchased_at, ORD.c.order_id)
    )
    ranked = (
        select(
            ORD.c.customer_id,
            month_key(ORD.c.purchased_at).label("month"),
            revenue.label("revenue"),
            rank.label("rn"),
        )
        .where(purchase_scope(as_of, place))
        .subquery("ranked")
    )
    r = ranked.c
    return select(
        r.month,
        func.sum(r.revenue).label("revenue"),
        func.count().label("orders"),
        func.count(distinct(r.customer_id)).label("active_customers"),
        func.sum(case((r.rn == 1, 1), else_=0)).label("new_customers"),
        func.sum(case((r.rn == 1, r.revenue), else_=0.0)).label("new_revenue"),
        func.sum(case((r.rn == 2, 1), else_=0)).label("repeaters"),
    ).group_by(r.month)


def _seasonality(monthly: pd.DataFrame) -> pd.DataFrame:
    complete = monthly[~monthly["partial"]]
    moy = complete["month"].str.slice(5, 7).astype(int)
    g = complete.groupby(moy)["revenue"].agg(["size", "mean"])
    g.index.name = "month_of_year"
    g = g.rename(columns={"size": "months", "mean": "mean_revenue"}).reset_index()
    base = g["mean_revenue"].mean()
    g["index"] = g["mean_revenue"] / base if len(g) and base > 0 else np.nan
    return g


def _reviews(engine: Engine, as_of: dt.date, place: Place, facts: bool) -> tuple[float | None, int]:
    if facts:
        M = AGG_MONTHLY
        stmt = where_place(select(func.sum(M.c.review_score), func.coalesce(func.sum(M.c.reviews), 0)), M, place)
        with engine.connect() as conn:
            total, n = conn.execute(stmt).one()
        return (float(total) / n if n else None), int(n)
    stmt = (
        select(func.avg(REV.c.score), func.count())
        .select_from(REV.join(ORD, ORD.c.order_id == REV.c.order_id))
        .where(purchase_scope(as_of, place))
        .where((REV.c.created_at < end_of_day(as_of)) | REV.c.created_at.is_(None))
    )
    with engine.connect() as conn:
        avg, n = conn.execute(stmt).one()
    return (float(avg) if avg is not None else None), int(n)


def _geography(
    engine: Engine, as_of: dt.date, place: Place, facts: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    revenue = func.sum(ORD.c.items_value + ORD.c.freight_value)
    base = ORD.outerjoin(CUS, CUS.c.customer_id == ORD.c.customer_id)
    M = AGG_MONTHLY
    # Every customer has one first purchase: Σ new customers counts each customer once.
    stmt = where_place(select(
        M.c.state, M.c.region, func.sum(M.c.new_customers).label("customers"),
        func.sum(M.c.orders).label("orders"), func.sum(M.c.revenue).label("revenue"),
    ), M, place).group_by(M.c.state, M.c.region) if facts else (
        select(
            CUS.c.state, CUS.c.region,
            func.count(distinct(ORD.c.customer_id)).label("customers"),
            func.count().label("orders"),
            revenue.label("revenue"),
        )
        .select_from(base)
        .where(purchase_scope(as_of, place))
        .group_by(CUS.c.state, CUS.c.region)
    )
    by_state = read_frame(engine, stmt)
    # A person's state is fixed, so customers add up across states of a region.
    by_region = by_state.groupby("region", dropna=False, as_index=False)[
        ["customers", "orders", "revenue"]
    ].sum()
    out = []
    for df in (by_state, by_region):
        df = df.sort_values(["revenue", df.columns[0]], ascending=[False, True], ignore_index=True)
        total = df["revenue"].sum()
        df["share"] = df["revenue"] / total if total > 0 else np.nan
        out.append(df)
    return out[0], out[1]


def _category_groups(engine: Engine, as_of: dt.date, place: Place, level: str, facts: bool) -> pd.DataFrame:
    """group, category, orders, revenue: one pass serves both the category table and the lift."""
    if facts:
        A = AGG_CATEGORIES
        return read_frame(engine, where_place(select(
            A.c[level].label("group"), A.c.category,
            func.sum(A.c.orders).label("orders"), func.sum(A.c.revenue).label("revenue"),
        ), A, place).group_by(A.c[level], A.c.category))
    category = func.coalesce(ITM.c.category, NO_CATEGORY)
    group = CUS.c[level]
    joined = ITM.join(ORD, ORD.c.order_id == ITM.c.order_id).outerjoin(CUS, CUS.c.customer_id == ORD.c.customer_id)
    stmt = (
        select(
            group.label("group"),
            category.label("category"),
            func.count(distinct(ITM.c.order_id)).label("orders"),
            func.sum(ITM.c.price + ITM.c.freight_value).label("revenue"),
        )
        .select_from(joined)
        .where(purchase_scope(as_of, place))
        .group_by(group, category)
    )
    return read_frame(engine, stmt)


def _categories(groups: pd.DataFrame, top: int) -> tuple[pd.DataFrame, int, int]:
    # Each order has one customer, hence one group: order counts add up across groups.
    df = groups.groupby("category", as_index=False)[["orders", "revenue"]].sum()
    empty = pd.DataFrame(columns=["category", "orders", "revenue", "share", "cumulative_share"])
    if df.empty or (df["category"] == NO_CATEGORY).all():  # no category data (e.g. UCI)
        return empty, 0, 0
    df = df.sort_values(["revenue", "category"], ascending=[False, True], ignore_index=True)
    total = df["revenue"].sum()
    df["share"] = df["revenue"] / total if total > 0 else np.nan
    df["cumulative_share"] = df["share"].cumsum()
    n80 = min(int((df["cumulative_share"] < 0.8 - 1e-12).sum() + 1), len(df)) if total > 0 else 0
    head, rest = df.head(top), df.iloc[top:]
    if len(rest):
        other = pd.DataFrame([{
            "category": f"other ({len(rest)} categories)",
            "orders": int(rest["orders"].sum()),  # an order may count in several rows
            "revenue": rest["revenue"].sum(),
            "share": rest["share"].sum(),
            "cumulative_share": 1.0,
        }])
        head = pd.concat([head, other], ignore_index=True)
    return head, len(df), n80


def _weekday_hour(engine: Engine, as_of: dt.date, place: Place, facts: bool) -> pd.DataFrame:
    wd, hr = weekday(ORD.c.purchased_at), hour_of(ORD.c.purchased_at)
    W = AGG_WEEKDAY_HOUR
    stmt = where_place(select(
        W.c.weekday, W.c.hour, func.sum(W.c.revenue).label("revenue"),
    ), W, place).group_by(W.c.weekday, W.c.hour) if facts else (
        select(
            wd.label("weekday"), hr.label("hour"),
            func.sum(ORD.c.items_value + ORD.c.freight_value).label("revenue"),
        )
        .where(purchase_scope(as_of, place))
        .group_by(wd, hr)
    )
    df = read_frame(engine, stmt)
    matrix = (
        df.pivot(index="weekday", columns="hour", values="revenue")
        .reindex(index=range(7), columns=range(24))
        .fillna(0.0)
        .astype(float)
    )
    matrix.index = pd.Index(WEEKDAYS, name="weekday")
    matrix.columns.name = "hour"
    return matrix


def _category_lift(
    engine: Engine, as_of: dt.date, place: Place, groups: pd.DataFrame, min_orders: int, facts: bool
) -> pd.DataFrame:
    cols = ["group", "category", "orders", "share", "overall_share", "lift"]
    known = groups[groups["category"] != NO_CATEGORY]
    if place.is_all:
        base = known.groupby("category", as_index=False)["orders"].sum()
    elif facts:  # the baseline is always the whole store
        A = AGG_CATEGORIES
        base = read_frame(engine, select(A.c.category, func.sum(A.c.orders).label("orders"))
                          .where(A.c.category != NO_CATEGORY).group_by(A.c.category))
    else:
        stmt = (
            select(ITM.c.category, func.count(distinct(ORD.c.order_id)).label("orders"))
            .select_from(ITM.join(ORD, ORD.c.order_id == ITM.c.order_id))
            .where(purchase_scope(as_of, ALL), ITM.c.category.is_not(None))
            .group_by(ITM.c.category)
        )
        base = read_frame(engine, stmt)
    df = known[known["group"].notna()][["group", "category", "orders"]].copy()
    if df.empty or base.empty:
        return pd.DataFrame(columns=cols)
    df["share"] = df["orders"] / df.groupby("group")["orders"].transform("sum")
    base["overall_share"] = base["orders"] / base["orders"].sum()
    df = df.merge(base[["category", "overall_share"]], on="category")
    df["lift"] = df["share"] / df["overall_share"]
    df = df[df["orders"] >= min_orders]
    return df.sort_values(
        ["group", "lift", "category"], ascending=[True, False, True], ignore_index=True
    )[cols]
