"""Acquisition cohorts and their retention.

Definitions (purchases on or before `as_of`, customers in the place):
- a customer's cohort is the month (or Monday-based week) of the first purchase;
- period k of a cohort is the k-th calendar month/week after the cohort's own;
- retention[c, k] = customers of cohort c with a purchase in period c+k / cohort size, so
  k = 0 is 1.0 by construction; periods after the one holding `as_of` are NaN (not yet
  seen), and the period holding `as_of` is marked incomplete when `as_of` is not its
  last day;
- average Mk retention = Σ active in k / Σ cohort size over the cohorts whose period k
  has ended on or before `as_of` (weighted by cohort size);
- cohort revenue = revenue of all purchases of the cohort's customers to date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Select, func, select

from analytics.dataset import Dataset
from analytics.filters import facts_meta, purchase_scope, read_frame, where_place
from analytics.periods import (
    EPOCH_MONDAY,
    month_index,
    period_end,
    period_index,
    period_label,
    week_index,
)
from analytics.results import Result
from storage import schema
from storage.geography import ALL, Place

ORD = schema.orders
PERIODS = ("month", "week")


@dataclass(frozen=True, eq=False)
class CohortRetention(Result):
    period: str  # "month" or "week"
    max_periods: int
    # index: cohort label ('2017-01' or the week's Monday '2017-01-02'); columns k = 0..max_periods
    retention: pd.DataFrame  # share of the cohort active in period k (NaN = not yet reached)
    active: pd.DataFrame  # customers active in period k (NaN = not yet reached)
    incomplete: pd.DataFrame  # True where period k is the partial period holding as_of
    revenue_matrix: pd.DataFrame  # revenue of the cohort's purchases in period k
    # cohort, size, revenue, revenue_per_customer, periods_complete
    cohorts: pd.DataFrame
    average: dict[int, float | None]  # k -> size-weighted retention over complete cohorts (k=1..3)
    average_cohorts: dict[int, int]  # k -> how many cohorts that average covers
    current_period: str  # label of the period holding as_of
    current_period_partial: bool


def cohort_retention(
    engine: Engine,
    as_of: dt.date,
    place: Place = ALL,
    *,
    period: str = "month",
    max_periods: int = 12,
    averages: tuple[int, ...] = (1, 2, 3),
    dataset: Dataset | None = None,
) -> CohortRetention:
    """Retention matrix of first-purchase cohorts for `place` as of `as_of`.

    Reads the refresh's facts when they are for `as_of`; else computes from `dataset` (the
    store already read, see `analytics.dataset`) when given, else queries the orders.
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}, not {period!r}")
    if dataset is not None:
        keep = None if place.is_all else (
            (dataset.state if place.kind == "state" else dataset.region) == place.value)
        cells = cohort_cells(dataset, as_of, period, keep)
        return _retention(cells, as_of, place, period, max_periods, averages)
    if facts_meta(engine, as_of) is not None:  # the refresh's agg_cohorts
        A = schema.agg_cohorts
        stmt = where_place(select(
            A.c.cohort, A.c.k, func.sum(A.c.active).label("active"), func.sum(A.c.revenue).label("revenue"),
        ).where(A.c.period == period), A, place).group_by(A.c.cohort, A.c.k)
    else:
        stmt = _cells_query(as_of, place, period)
    cells = read_frame(engine, stmt)
    return _retention(cells, as_of, place, period, max_periods, averages)


def period_indices(us: np.ndarray, period: str) -> np.ndarray:
    """Month index (year*12 + month-1) or week index of µs timestamps, as `periods` in SQL."""
    if period == "month":
        return us.view("datetime64[us]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
    days = np.floor_divide(us, 86_400_000_000) - (EPOCH_MONDAY - dt.date(1970, 1, 1)).days
    return np.sign(days) * (np.abs(days) // 7)  # truncated toward zero, as the SQL does


def cohort_cells(data: Dataset, as_of: dt.date, period: str, customers: np.ndarray | None = None,
                 group: np.ndarray | None = None) -> pd.DataFrame:
    """cohort, k, active customers and revenue per cell from an already read `Dataset`.

    `customers`: mask per customer code of who counts (None: everyone). `group`: an
    integer per customer code; when given the cells are split by it (column `group`).
    """
    scope = data.in_scope(as_of)
    if customers is not None:
        scope &= customers[data.cust]
    c = data.cust[scope]
    p = period_indices(data.purchased[scope], period)
    revenue = data.items_value[scope] + data.freight_value[scope]
    if not len(c):
        return pd.DataFrame({"cohort": [], "k": [], "active": [], "revenue": []})
    # rows are sorted by customer and time: the first row of a customer holds the cohort,
    # and a (customer, period) pair starts wherever the customer or the period changes
    first = np.r_[True, c[1:] != c[:-1]]
    starts = np.flatnonzero(first)
    cohort = np.repeat(p[starts], np.diff(np.r_[starts, len(c)]))
    new_pair = first | np.r_[False, p[1:] != p[:-1]]
    k = p - cohort
    g = group[c] if group is not None else np.zeros(len(c), dtype=np.int64)
    n_k, n_g, c0 = int(k.max()) + 1, int(g.max()) + 1, int(cohort.min())
    cell = ((cohort - c0) * n_k + k) * n_g + g
    size = (int(cohort.max()) - c0 + 1) * n_k * n_g
    active = np.bincount(cell[new_pair], minlength=size)
    total = np.bincount(cell, weights=revenue, minlength=size)
    hit = np.flatnonzero(active)
    rest, gg = np.divmod(hit, n_g)
    cc, kk = np.divmod(rest, n_k)
    cells = pd.DataFrame({"cohort": cc + c0, "k": kk, "active": active[hit], "revenue": total[hit]})
    if group is not None:
        cells["group"] = gg
    return cells


def _cells_query(as_of: dt.date, place: Place, period: str) -> Select:
    """cohort, k, active customers and revenue per cell, from the orders."""
    bucket = month_index if period == "month" else week_index
    p = bucket(ORD.c.purchased_at)
    activity = (
        select(
            ORD.c.customer_id,
            p.label("p"),
            func.sum(ORD.c.items_value + ORD.c.freight_value).label("revenue"),
        )
        .where(purchase_scope(as_of, place))
        .group_by(ORD.c.customer_id, p)
        .subquery("activity")
    )
    first = (
        select(activity.c.customer_id, func.min(activity.c.p).label("c"))
        .group_by(activity.c.customer_id)
        .subquery("first")
    )
    k = (activity.c.p - first.c.c).label("k")
    return (
        select(
            first.c.c.label("cohort"),
            k,
            func.count().label("active"),
            func.sum(activity.c.revenue).label("revenue"),
        )
        .select_from(activity.join(first, first.c.customer_id == activity.c.customer_id))
        .group_by(first.c.c, k)
    )


def _retention(
    cells: pd.DataFrame, as_of: dt.date, place: Place, period: str, max_periods: int,
    averages: tuple[int, ...],
) -> CohortRetention:

    now = period_index(period, as_of)
    now_partial = period_end(period, now) > as_of
    cohort_ids = sorted(int(c) for c in cells["cohort"].unique()) if len(cells) else []
    labels = [period_label(period, c) for c in cohort_ids]
    ks = list(range(max_periods + 1))
    active = _matrix(cells, "active", cohort_ids, ks)
    revenue_matrix = _matrix(cells, "revenue", cohort_ids, ks)
    size = active[0] if len(cohort_ids) else pd.Series(dtype=float)
    # Cells in periods after the one holding as_of have not happened yet.
    reached = pd.DataFrame(
        [[c + kk <= now for kk in ks] for c in cohort_ids], index=cohort_ids, columns=ks, dtype=bool
    )
    active = active.where(reached)
    revenue_matrix = revenue_matrix.where(reached)
    retention = active.div(size, axis=0)
    incomplete = pd.DataFrame(
        [[now_partial and c + kk == now for kk in ks] for c in cohort_ids],
        index=cohort_ids, columns=ks, dtype=bool,
    )

    complete_until = now - 1 if now_partial else now  # last period that has ended
    average, average_n = {}, {}
    for kk in averages:
        ok = [c for c in cohort_ids if c + kk <= complete_until]
        denom = float(size.loc[ok].sum()) if ok else 0.0
        average[kk] = float(_full_active(cells, ok, kk) / denom) if denom else None
        average_n[kk] = len(ok)

    totals = cells.groupby("cohort")["revenue"].sum() if len(cells) else pd.Series(dtype=float)
    cohorts = pd.DataFrame({
        "cohort": labels,
        "size": size.astype(int).to_numpy() if len(cohort_ids) else np.array([], dtype=int),
        "revenue": totals.reindex(cohort_ids).to_numpy(dtype=float),
        "periods_complete": [max(complete_until - c, -1) + 1 for c in cohort_ids],
    })
    cohorts["revenue_per_customer"] = cohorts["revenue"] / cohorts["size"].where(cohorts["size"] > 0)
    cohorts = cohorts[["cohort", "size", "revenue", "revenue_per_customer", "periods_complete"]]

    for df in (retention, active, incomplete, revenue_matrix):
        df.index = pd.Index(labels, name="cohort")
        df.columns = pd.Index(ks, name="k")
    return CohortRetention(
        as_of=as_of,
        place=place,
        period=period,
        max_periods=max_periods,
        retention=retention,
        active=active,
        incomplete=incomplete,
        revenue_matrix=revenue_matrix,
        cohorts=cohorts,
        average=average,
        average_cohorts=average_n,
        current_period=period_label(period, now),
        current_period_partial=now_partial,
    )


def _matrix(cells: pd.DataFrame, value: str, cohorts: list[int], ks: list[int]) -> pd.DataFrame:
    if cells.empty:
        return pd.DataFrame(index=cohorts, columns=ks, dtype=float)
    wide = cells.pivot(index="cohort", columns="k", values=value)
    return wide.reindex(index=cohorts, columns=ks).fillna(0.0).astype(float)


def _full_active(cells: pd.DataFrame, cohorts: list[int], k: int) -> float:
    """Active customers in period k over `cohorts` (k may exceed max_periods)."""
    sel = cells[(cells["k"] == k) & cells["cohort"].isin(cohorts)]
    return float(sel["active"].sum())
