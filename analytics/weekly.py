"""The weekly digest's figures: KPIs of the week and of the last four weeks, and the churn
risk summary with its week-over-week history.

KPI definitions (purchases, customers in the place):
- the *week* is the 7 days ending on the as-of date (both included); the *previous week*
  the 7 days before it. Week-over-week change = week / previous week - 1.
- the *month* is the 28 days ending on the as-of date (four whole weeks, so every weekday
  counts equally); the *previous month* the 28 days before it. Month-over-month change =
  month / previous month - 1.
- revenue = Σ items_value + freight_value; orders = purchases; customers = distinct
  customers with a purchase in the window; new customers = customers whose first purchase
  ever falls in the window; average order value = revenue / orders.
- a change is None when the earlier value is 0 or undefined.

Risk summary: the figures `/churn-risk` shows (`analytics.risk.at_risk`) — customers at
risk (risk band "high"), value at risk (Σ value_at_risk of those customers), and both per
state (per RFM segment when the place is one state), largest value first.
Scores hold only the latest refresh, so the figures of earlier weeks are kept in `meta`
(`record_risk`) and read back with `risk_history_value`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, and_, func, select

from analytics.dataset import Dataset, day_of
from analytics.filters import facts_meta, in_place, is_purchase
from analytics.periods import end_of_day
from analytics.results import Result
from storage import schema
from storage.geography import ALL, Place
from storage.store import get_meta, set_meta

ORD = schema.orders
METRICS = ("revenue", "orders", "customers", "new_customers", "average_order_value")
WEEKLY_FACTS = "weekly"  # key in meta "facts": `weekly_facts` for its as-of date
HISTORY_DAYS = 120  # entries older than this are dropped from the risk history


@dataclass(frozen=True)
class Window:
    """Days `start` to `end`, both included."""

    start: dt.date
    end: dt.date

    @property
    def label(self) -> str:
        return f"{self.start:%b %d} – {self.end:%b %d}"


@dataclass(frozen=True, eq=False)
class WeeklyKpis(Result):
    week: Window
    previous_week: Window
    month: Window  # 28 days
    previous_month: Window
    # index: METRICS; columns: week, previous_week, wow, month, previous_month, mom
    table: pd.DataFrame

    def value(self, metric: str, column: str = "week") -> float | None:
        v = self.table.loc[metric, column]
        return None if pd.isna(v) else float(v)


WINDOWS = ("week", "previous_week", "month", "previous_month")  # the names of `windows`


def windows(as_of: dt.date) -> tuple[Window, Window, Window, Window]:
    """(week, previous week, month, previous month) ending on `as_of`."""
    day = dt.timedelta(days=1)
    week = Window(as_of - 6 * day, as_of)
    prev_week = Window(as_of - 13 * day, as_of - 7 * day)
    month = Window(as_of - 27 * day, as_of)
    prev_month = Window(as_of - 55 * day, as_of - 28 * day)
    return week, prev_week, month, prev_month


def weekly_kpis(engine: Engine, as_of: dt.date, place: Place = ALL) -> WeeklyKpis:
    """KPIs of the week and the 28 days ending on `as_of`, with their changes (from the
    refresh's answer facts when they were built for `as_of`, else from the orders)."""
    week, prev_week, month, prev_month = spans = windows(as_of)
    named = tuple(zip(WINDOWS, spans, strict=True))
    stored = (facts_meta(engine, as_of) or {}).get(WEEKLY_FACTS)
    if stored is not None:
        per_window = stored.get(place_key(place), {})
        figures = {name: _metrics(*per_window.get(name, (0, 0.0, 0, 0))) for name, _ in named}
    else:
        with engine.connect() as conn:
            figures = {name: _window_figures(conn, w, place) for name, w in named}
    table = pd.DataFrame(figures).reindex(list(METRICS))
    table["wow"] = _change(table["week"], table["previous_week"])
    table["mom"] = _change(table["month"], table["previous_month"])
    table = table[["week", "previous_week", "wow", "month", "previous_month", "mom"]]
    table.index.name = "metric"
    return WeeklyKpis(as_of=as_of, place=place, week=week, previous_week=prev_week,
                      month=month, previous_month=prev_month, table=table)


def _window_figures(conn: Connection, w: Window, place: Place) -> dict[str, float]:
    """The METRICS of the purchases in window `w`, aggregated by the store: the window is a
    range of the purchase-time index, and a new customer is one with a purchase in the
    window and none before it (their first purchase ever falls in it), checked on the
    (customer, time) index — no read of the orders and no grouping of every customer."""
    start, stop = dt.datetime.combine(w.start, dt.time.min), end_of_day(w.end)
    where = [is_purchase(), ORD.c.purchased_at >= start, ORD.c.purchased_at < stop]
    if not place.is_all:
        where.append(in_place(place, ORD.c.customer_id))
    n, revenue, customers = conn.execute(select(
        func.count(), func.sum(ORD.c.items_value + ORD.c.freight_value),
        func.count(func.distinct(ORD.c.customer_id)),
    ).where(and_(*where))).one()
    earlier = ORD.alias("earlier")
    before = (select(earlier.c.order_id)
              .where(earlier.c.customer_id == ORD.c.customer_id, is_purchase(earlier),
                     earlier.c.purchased_at < start)
              .exists())
    new = conn.execute(select(func.count(func.distinct(ORD.c.customer_id)))
                       .where(and_(*where), ~before)).scalar()
    return _metrics(n or 0, revenue or 0.0, customers or 0, new or 0)


def _metrics(orders: int, revenue: float, customers: int, new: int) -> dict[str, float]:
    n, revenue = int(orders), float(revenue)
    return {
        "revenue": revenue,
        "orders": float(n),
        "customers": float(customers),
        "new_customers": float(new),
        "average_order_value": revenue / n if n else np.nan,
    }


def place_key(place: Place) -> str:
    """How a place is named in the weekly facts: "all", "state:SP", "region:sudeste"."""
    return "all" if place.is_all else f"{place.kind}:{place.value}"


def weekly_facts(data: Dataset, as_of: dt.date) -> dict[str, dict[str, list]]:
    """The weekly KPIs' sums for every place at once, from the refresh's dataset: per
    place_key and window name, [orders, revenue, customers, new customers]. Same
    definitions as `_window_figures` (the facts test compares the two)."""
    buy = data.purchase
    cust, day = data.cust[buy], day_of(data.purchased[buy])
    revenue = (data.items_value + data.freight_value)[buy]
    n = data.n_customers
    first_day = np.full(n, np.iinfo(np.int64).max)
    # rows are sorted by customer and time: a customer's first row is their first purchase
    starts = np.r_[True, cust[1:] != cust[:-1]] if len(cust) else np.zeros(0, dtype=bool)
    first_day[cust[starts]] = day[starts]
    groups = {"state": pd.factorize(pd.Series(data.state, dtype=object)),
              "region": pd.factorize(pd.Series(data.region, dtype=object))}
    out: dict[str, dict[str, list]] = {}
    epoch = dt.date(1970, 1, 1)
    for name, w in zip(WINDOWS, windows(as_of), strict=True):
        lo, hi = (w.start - epoch).days, (w.end - epoch).days
        rows = (day >= lo) & (day <= hi)
        active = np.bincount(cust[rows], minlength=n) > 0
        new = (first_day >= lo) & (first_day <= hi)
        out.setdefault("all", {})[name] = [int(rows.sum()), float(revenue[rows].sum()),
                                           int(active.sum()), int(new.sum())]
        for kind, (code, names) in groups.items():  # code: per customer, -1 when unknown
            k = len(names)
            row_code = code[cust[rows]]
            known = row_code >= 0
            orders = np.bincount(row_code[known], minlength=k)
            money = np.bincount(row_code[known], weights=revenue[rows][known], minlength=k)
            buyers = np.bincount(code[active & (code >= 0)], minlength=k)
            fresh = np.bincount(code[new & (code >= 0)], minlength=k)
            for i, value in enumerate(names):
                out.setdefault(f"{kind}:{value}", {})[name] = [int(orders[i]), float(money[i]),
                                                               int(buyers[i]), int(fresh[i])]
    return out


def _change(now: pd.Series, before: pd.Series) -> pd.Series:
    ok = before.notna() & (before > 0) & now.notna()
    return (now / before.where(ok) - 1).where(ok)


# --- churn risk ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RiskSummary(Result):
    """`as_of` is the scores' as-of date."""

    customers: int  # scored customers in the place
    at_risk: int
    revenue_at_risk: float  # Σ value_at_risk of the customers at risk
    by_group: pd.DataFrame  # group, at_risk, value_at_risk (largest value first)
    group_level: str  # "state" (everybody or a region) or "segment" (one state)


def risk_summary(engine: Engine, place: Place = ALL) -> RiskSummary:
    """Customers and value at risk from the last refresh's scores, as `/churn-risk` counts
    them (`analytics.risk.at_risk`: risk band "high"). NotAvailable before churn scores exist."""
    from analytics.risk import RiskFilter, at_risk

    r = at_risk(engine, RiskFilter(place=place), top=0)
    return RiskSummary(as_of=r.as_of, place=place, customers=r.customers, at_risk=r.at_risk,
                       revenue_at_risk=r.value_at_risk, by_group=r.by_group,
                       group_level=r.group_level)


def _history_key(place: Place) -> str:
    return f"risk_history:{place.kind}:{place.value or ''}"


def record_risk(engine: Engine, summary: RiskSummary) -> None:
    """Keep `summary`'s headline figures under its as-of date (for next week's change)."""
    key = _history_key(summary.place)
    history = dict(get_meta(engine, key, {}) or {})
    history[summary.as_of.isoformat()] = {"at_risk": summary.at_risk,
                                          "revenue_at_risk": summary.revenue_at_risk}
    oldest = (summary.as_of - dt.timedelta(days=HISTORY_DAYS)).isoformat()
    history = {d: v for d, v in sorted(history.items()) if d >= oldest}
    with engine.begin() as conn:
        set_meta(conn, key, history)


def risk_history_value(engine: Engine, place: Place, day: dt.date,
                       tolerance_days: int = 2) -> tuple[dt.date, dict[str, float]] | None:
    """The recorded risk figures nearest to `day` (within `tolerance_days`), or None."""
    history = get_meta(engine, _history_key(place), {}) or {}
    best: tuple[int, dt.date, dict[str, float]] | None = None
    for text, values in history.items():
        d = dt.date.fromisoformat(text)
        gap = abs((d - day).days)
        if gap <= tolerance_days and (best is None or gap < best[0]):
            best = (gap, d, values)
    return None if best is None else (best[1], best[2])
