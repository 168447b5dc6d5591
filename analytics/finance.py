"""Money view: revenue and freight by month, category and state; how concentrated revenue
is across customers; orders where shipping costs a large part of the price.

Definitions (purchases on or before `as_of`, customers in the place):
- revenue = items_value + freight_value; freight share = freight / revenue;
- by category: item price + item freight of the items in that category;
- concentration: each customer's revenue to date; top p% share = revenue of the
  ceil(p × customers) biggest customers / all revenue; Gini over the same values
  (0 = everyone spends the same, → 1 = one customer has it all);
- freight-heavy order: items_value > 0 and freight_value / items_value > `heavy_ratio`
  (0.5 by default); by category it counts the heavy orders holding an item of the category.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, case, distinct, func, select

from analytics.filters import (
    FACTS_ALL_KEY,
    customer_totals,
    facts_meta,
    first_purchase_date,
    purchase_scope,
    read_frame,
    where_place,
)
from analytics.kpis import NO_CATEGORY
from analytics.periods import month_is_partial, month_key, month_range
from analytics.results import Result
from storage import schema
from storage.geography import ALL, Place

ORD, CUS, ITM = schema.orders, schema.customers, schema.order_items
TOP_SHARES = (0.01, 0.10, 0.20)
DEFAULT_HEAVY_RATIO = 0.5


@dataclass(frozen=True, eq=False)
class FinanceReport(Result):
    orders: int
    revenue: float
    items_value: float
    freight: float
    freight_share: float | None
    # month, orders, revenue, items_value, freight, freight_share, partial
    monthly: pd.DataFrame
    # category, orders, revenue, items_value, freight, freight_share, heavy_orders, heavy_share,
    # heavy_revenue (item price + freight of the category's items in heavy orders)
    by_category: pd.DataFrame
    # state, region, orders, revenue, items_value, freight, freight_share
    by_state: pd.DataFrame
    customers: int
    top_shares: dict[float, float | None]  # 0.01/0.10/0.20 -> share of revenue of the top customers
    gini: float | None
    heavy_ratio: float
    heavy_orders: int
    heavy_revenue: float
    heavy_order_share: float | None  # heavy orders / orders with items


def finance_report(
    engine: Engine, as_of: dt.date, place: Place = ALL, *, heavy_ratio: float = DEFAULT_HEAVY_RATIO
) -> FinanceReport:
    """Revenue, freight, customer concentration and freight-heavy orders for `place`."""
    scope = purchase_scope(as_of, place)
    heavy = and_(ORD.c.items_value > 0, ORD.c.freight_value > heavy_ratio * ORD.c.items_value)
    month = month_key(ORD.c.purchased_at)
    facts = facts_meta(engine, as_of)
    if facts and facts.get("heavy_ratio") != heavy_ratio:
        facts = None
    if facts:
        A = schema.agg_orders_monthly
        cells = read_frame(engine, where_place(select(
            A.c.month, A.c.state, A.c.region, A.c.orders, A.c.items_value, A.c.freight,
            A.c.with_items, A.c.heavy_orders, A.c.heavy_revenue,
        ), A, place))
    else:
        cells = _cells(engine, scope, heavy, month)
    cells = cells.astype({"items_value": float, "freight": float, "heavy_revenue": float})
    cells["revenue"] = cells["items_value"] + cells["freight"]

    data_start = first_purchase_date(engine)
    monthly = _money(cells, ["month"]).set_index("month")
    months = sorted(set(month_range(data_start, as_of) if data_start else []) | set(monthly.index))
    monthly = monthly.reindex(months).fillna(0).rename_axis("month").reset_index()
    monthly["orders"] = monthly["orders"].astype(int)
    monthly["freight_share"] = monthly["freight"] / monthly["revenue"].where(monthly["revenue"] > 0)
    monthly["partial"] = [month_is_partial(as_of, m, data_start) for m in monthly["month"]]
    by_state = _money(cells, ["state", "region"]).sort_values(
        ["revenue", "state"], ascending=[False, True], ignore_index=True
    )
    by_category = _category_facts(engine, place) if facts else _by_category(engine, scope, heavy)

    revenue = float(cells["revenue"].sum())
    freight = float(cells["freight"].sum())
    with_items = int(cells["with_items"].sum())
    heavy_orders = int(cells["heavy_orders"].sum())
    concentration = _concentration_facts(engine, place) if facts else None
    if concentration is None:
        values = _customer_revenue(engine, as_of, place)
        concentration = len(values), {p: top_share(values, p) for p in TOP_SHARES}, gini(values)
    customers, top_shares, gini_value = concentration
    return FinanceReport(
        as_of=as_of,
        place=place,
        orders=int(cells["orders"].sum()),
        revenue=revenue,
        items_value=float(cells["items_value"].sum()),
        freight=freight,
        freight_share=freight / revenue if revenue > 0 else None,
        monthly=monthly,
        by_category=by_category,
        by_state=by_state,
        customers=customers,
        top_shares=top_shares,
        gini=gini_value,
        heavy_ratio=heavy_ratio,
        heavy_orders=heavy_orders,
        heavy_revenue=float(cells["heavy_revenue"].sum()),
        heavy_order_share=heavy_orders / with_items if with_items else None,
    )


def _cells(engine: Engine, scope, heavy, month) -> pd.DataFrame:  # noqa: ANN001
    """Orders, money and freight-heavy counts per month and state, from the orders."""
    return read_frame(engine, (
        select(
            month.label("month"), CUS.c.state, CUS.c.region,
            func.count().label("orders"),
            func.sum(ORD.c.items_value).label("items_value"),
            func.sum(ORD.c.freight_value).label("freight"),
            func.sum(case((ORD.c.items_value > 0, 1), else_=0)).label("with_items"),
            func.sum(case((heavy, 1), else_=0)).label("heavy_orders"),
            func.sum(case((heavy, ORD.c.items_value + ORD.c.freight_value), else_=0.0)).label("heavy_revenue"),
        )
        .select_from(ORD.outerjoin(CUS, CUS.c.customer_id == ORD.c.customer_id))
        .where(scope)
        .group_by(month, CUS.c.state, CUS.c.region)
    ))


def top_share(values: np.ndarray, fraction: float) -> float | None:
    """Share of the total held by the ceil(fraction × n) largest values."""
    total = float(values.sum())
    if len(values) == 0 or total <= 0:
        return None
    k = math.ceil(fraction * len(values))
    return float(np.sort(values)[::-1][:k].sum() / total)


def gini(values: np.ndarray) -> float | None:
    """Gini coefficient of non-negative values (None when empty or all zero)."""
    x = np.sort(np.asarray(values, dtype=float))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return None
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def _money(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = cells.groupby(keys, as_index=False, dropna=False)[
        ["orders", "revenue", "items_value", "freight"]
    ].sum()
    g["freight_share"] = g["freight"] / g["revenue"].where(g["revenue"] > 0)
    g["orders"] = g["orders"].astype(int)
    return g


def _by_category(engine: Engine, scope, heavy) -> pd.DataFrame:  # noqa: ANN001
    category = func.coalesce(ITM.c.category, NO_CATEGORY)
    df = read_frame(engine, (
        select(
            category.label("category"),
            func.count(distinct(ITM.c.order_id)).label("orders"),
            func.sum(ITM.c.price).label("items_value"),
            func.sum(ITM.c.freight_value).label("freight"),
            func.count(distinct(case((heavy, ITM.c.order_id)))).label("heavy_orders"),
            func.sum(case((heavy, ITM.c.price + ITM.c.freight_value), else_=0.0)).label("heavy_revenue"),
        )
        .select_from(ITM.join(ORD, ORD.c.order_id == ITM.c.order_id))
        .where(scope)
        .group_by(category)
    ))
    return _category_table(df)


def _category_table(df: pd.DataFrame) -> pd.DataFrame:
    df = df.astype({"items_value": float, "freight": float, "heavy_revenue": float})
    df["revenue"] = df["items_value"] + df["freight"]
    df["freight_share"] = df["freight"] / df["revenue"].where(df["revenue"] > 0)
    df["heavy_share"] = df["heavy_orders"] / df["orders"].where(df["orders"] > 0)
    cols = ["category", "orders", "revenue", "items_value", "freight", "freight_share",
            "heavy_orders", "heavy_share", "heavy_revenue"]
    return df.sort_values(["revenue", "category"], ascending=[False, True], ignore_index=True)[cols]


def _customer_revenue(engine: Engine, as_of: dt.date, place: Place) -> np.ndarray:
    totals = customer_totals(engine, as_of, place, geography=False)
    with engine.connect() as conn:
        values = conn.execute(select(totals.c.revenue)).scalars().all()
    return np.asarray(values, dtype=float)


# --- the facts path (agg_*, written by the refresh) -------------------------------------



def _category_facts(engine: Engine, place: Place) -> pd.DataFrame:
    A = schema.agg_categories
    sums = [func.sum(A.c[c]).label(c) for c in ("orders", "items_value", "freight", "heavy_orders", "heavy_revenue")]
    df = read_frame(engine, where_place(select(A.c.category, *sums), A, place).group_by(A.c.category))
    return _category_table(df.astype({"orders": int, "heavy_orders": int}))


def _concentration_facts(engine: Engine, place: Place) -> tuple[int, dict, float | None] | None:
    """(customers, top shares, Gini) stored for `place`; None when the facts lack them."""
    C = schema.agg_concentration
    key = FACTS_ALL_KEY if place.is_all else place.value
    with engine.connect() as conn:
        row = conn.execute(select(C).where(C.c.place_kind == place.kind, C.c.place_value == key)).first()
    if row is None:  # no purchases in the place
        return 0, {p: None for p in TOP_SHARES}, None
    m = row._mapping
    if any(top_share_column(p) not in m for p in TOP_SHARES):
        return None
    return int(m["customers"]), {p: _opt(m[top_share_column(p)]) for p in TOP_SHARES}, _opt(m["gini"])


def top_share_column(fraction: float) -> str:
    """agg_concentration's column for a top-customers fraction (0.10 → top_share_10)."""
    return f"top_share_{round(fraction * 100):d}"


def _opt(value) -> float | None:  # noqa: ANN001
    return None if value is None else float(value)
