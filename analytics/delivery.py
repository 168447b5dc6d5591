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
from sqlalchemy import Engine, String, and_, case, cast, func, select

from analytics.filters import (
    FACTS_ALL_KEY,
    facts_meta,
    place_column,
    purchase_scope,
    read_frame,
    require,
)
from analytics.groups import DenseGroups, group_order, run_bounds
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
    facts = facts_meta(engine, as_of)
    if facts and facts.get("freight_bands") == bands:
        report = _from_facts(engine, as_of, place, min_orders, top_n)
        if report is not None:
            return report
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
    orders = prepare_orders(read_frame(engine, stmt))
    df = orders[orders["days"].notna()]
    reviews = _reviews(engine, as_of, df)
    review_figures = {
        "review_on_time": reviews[True][0], "review_late": reviews[False][0],
        "reviews_on_time": reviews[True][1], "reviews_late": reviews[False][1],
    }
    return _report(
        as_of, place, min_orders, top_n,
        counts=(len(df), len(orders) - len(df), int(df["on_time"].notna().sum())),
        overall=order_stats(df),
        by_state=grouped_stats(df, ["state", "region"]),
        by_region=grouped_stats(df, ["region"]),
        freight_bands=freight_bands(df, bands),
        reviews=review_figures,
        repeat_after_first=_repeat_after_first(orders),
    )


def _report(
    as_of: dt.date, place: Place, min_orders: int, top_n: int, *, counts: tuple[int, int, int],
    overall: dict, by_state: pd.DataFrame, by_region: pd.DataFrame, freight_bands: pd.DataFrame,
    reviews: dict, repeat_after_first: pd.DataFrame,
) -> DeliveryReport:
    """The report from its parts (both the raw-table path and the facts path end here)."""
    delivered, not_delivered, with_estimate = counts
    best_s, worst_s = _best_worst(by_state, "state", min_orders, top_n)
    best_r, worst_r = _best_worst(by_region, "region", min_orders, top_n)
    return DeliveryReport(
        as_of=as_of,
        place=place,
        delivered_orders=delivered,
        not_delivered=not_delivered,
        orders_with_estimate=with_estimate,
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
        freight_bands=freight_bands,
        **reviews,
        repeat_after_first=repeat_after_first,
    )


def prepare_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """Float days / days_late (NaN: undelivered or no estimate) and the on_time flag."""
    orders["days"] = orders["days"].astype(float)
    orders["days_late"] = orders["days_late"].astype(float)
    orders["on_time"] = (orders["days_late"] <= 0).where(orders["days_late"].notna())
    return orders


def _none(x: float) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def order_stats(df: pd.DataFrame) -> dict[str, float | None]:
    on_time = df["on_time"]
    present = on_time.notna().to_numpy()
    return _order_stats(df["days"].to_numpy(dtype=float), on_time.to_numpy()[present].astype(bool),
                        df["days_late"].to_numpy(dtype=float))


def _order_stats(days: np.ndarray, on_time: np.ndarray, days_late: np.ndarray) -> dict[str, float | None]:
    """`order_stats` of float days and days late (NaN: missing) and the on-time flags known,
    with numpy on the arrays: the same floats as pandas' skipna mean, median and quantile
    (grouped_stats calls it once per group, where a frame per group cost most of its time)."""
    known = days[~np.isnan(days)]
    late = days_late[days_late > 0]
    share = on_time.mean() if len(on_time) else np.nan
    return {
        "orders": len(days),
        "mean_days": _none(_mean(days)),
        "median_days": _none(np.median(known)) if len(known) else None,
        # (pandas asks np.percentile for 100 * q: 90.00000000000001)
        "p90_days": _none(np.percentile(known, np.array([0.9]) * 100.0)[0]) if len(known) else None,
        "on_time_share": _none(share),
        "late_share": _none(1 - share),
        "mean_days_late": _none(_mean(late)),
    }


def _mean(values: np.ndarray) -> float:
    """pandas' skipna mean: the sum with NaN as 0, over the values present."""
    present = ~np.isnan(values)
    count = int(present.sum())
    return float(np.where(present, values, 0.0).sum() / count) if count else np.nan


def grouped_stats(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`order_stats` of each group of `keys` (missing keys a group of their own), most orders first."""
    # The rows are put in group order once (stable: each group's rows keep their order, so
    # its figures are the same floats as from a frame of its own) and each group's stats
    # read slices of three arrays: a frame per group was most of the time at 1M orders.
    number, names = _group_numbers(df, keys)
    order = group_order(number, len(names))
    days = df["days"].to_numpy(dtype=float)[order]
    days_late = df["days_late"].to_numpy(dtype=float)[order]
    on_time = df["on_time"].to_numpy()[order]
    known = pd.notna(on_time)
    rows = []
    for key, (lo, hi) in zip(names, run_bounds(number[order]), strict=True):
        flags = on_time[lo:hi][known[lo:hi]].astype(bool)
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                     **_order_stats(days[lo:hi], flags, days_late[lo:hi])})
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


FREIGHT_BAND_COLUMNS = ["band", "freight_min", "freight_max", "orders", "mean_freight", "on_time_share",
                        "mean_days"]


def freight_bands(df: pd.DataFrame, bands: int) -> pd.DataFrame:
    """Orders in `bands` freight quantile bands (pd.qcut's, duplicate edges dropped; one band
    when every order pays the same freight): each band's freight range, orders, mean
    freight, on-time share (of the orders with an estimate) and mean delivery days."""
    if df.empty:
        return pd.DataFrame(columns=FREIGHT_BAND_COLUMNS)
    freight = df["freight"].to_numpy(dtype=float)
    band = np.zeros(len(df), dtype=np.int64)
    if df["freight"].nunique() > 1:
        known = ~np.isnan(freight)  # (an order without freight falls in no band)
        band[known] = quantile_bands(freight[known], bands)
    else:  # a single freight value makes a single band
        known = np.ones(len(df), dtype=bool)
    return _band_table(band[known] + 1, bands + 1, freight[known], df["on_time"].to_numpy(dtype=float)[known],
                       df["days"].to_numpy(dtype=float)[known])


def freight_bands_by(df: pd.DataFrame, key: str, bands: int) -> list[tuple[object, pd.DataFrame]]:
    """(key value, its `freight_bands`) of each group of rows with the same `key` value, in
    sorted key order (a categorical key: its categories' order, unobserved ones left out;
    rows with a missing key too). Each group's bands are cut at its own quantiles, as
    `freight_bands` cuts them, and every group's bands are counted at once. Freight must
    have no missing values (the store's has none)."""
    keys = pd.Categorical(df[key])
    group = keys.codes.astype(np.int64)
    freight = df["freight"].to_numpy(dtype=float)
    if np.isnan(freight).any():
        raise ValueError("freight bands need the freight of every order")
    order = group_order(group, len(keys.categories))
    # each group's freight gathered once, its rows side by side (in their order): the groups'
    # slices are views, and their bands go back to the rows with one scatter
    grouped, grouped_by = freight[order], group[order]
    grouped_band = np.zeros(len(df), dtype=np.int64)
    for start, end in run_bounds(grouped_by):
        values = grouped[start:end]
        if grouped_by[start] >= 0 and values.min() != values.max():
            grouped_band[start:end] = quantile_bands(values, bands)
    band = np.empty(len(df), dtype=np.int64)
    band[order] = grouped_band
    known = group >= 0
    cell = group[known] * (bands + 1) + band[known] + 1  # one number per (group, band)
    out = _band_table(cell, len(keys.categories) * (bands + 1), freight[known],
                      df["on_time"].to_numpy(dtype=float)[known], df["days"].to_numpy(dtype=float)[known])
    owner, out["band"] = np.divmod(out["band"].to_numpy(), bands + 1)  # each row's group, ascending
    return [(keys.categories[owner[lo]], out.iloc[lo:hi].reset_index(drop=True)) for lo, hi in run_bounds(owner)]


def quantile_bands(values: np.ndarray, bands: int) -> np.ndarray:
    """`pd.qcut(values, bands, labels=False, duplicates="drop")` of values without NaN that
    are not all equal: the same edges (np.percentile, as pandas' quantiles take them) and
    intervals (right-closed, the first one closed on both sides), without pandas' index
    and categorical machinery around them."""
    edges = np.unique(np.percentile(values, np.linspace(0, 1, bands + 1) * 100.0))
    ids = np.searchsorted(edges, values, side="left")
    ids[values == edges[0]] = 1
    return ids - 1


def _band_table(cell: np.ndarray, cells: int, freight: np.ndarray, on_time: np.ndarray,
                days: np.ndarray) -> pd.DataFrame:
    """The `FREIGHT_BAND_COLUMNS` of each cell number (0 <= cell < `cells`) that has rows, in
    cell order (column "band": the cell): counted by `DenseGroups`, where a pandas group-by
    hashed every row; missing on-time flags (on_time as 1.0 / 0.0 / NaN) and days are left
    out of their means."""
    groups = DenseGroups([cell], [cells])
    seen, size = groups.observed, groups.size()

    def mean(values: np.ndarray) -> np.ndarray:
        missing = np.isnan(values)
        count = groups.count(~missing) if missing.any() else size  # (freight and days have none)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, groups.sum(values) / np.maximum(count, 1), np.nan)

    low, high = np.full(cells, np.nan), np.full(cells, np.nan)
    np.fmin.at(low, cell, freight)  # (fmin and fmax skip NaN, as pandas' min and max do)
    np.fmax.at(high, cell, freight)
    out = pd.DataFrame({"band": seen, "freight_min": low[seen], "freight_max": high[seen], "orders": size,
                        "mean_freight": mean(freight), "on_time_share": mean(on_time), "mean_days": mean(days)})
    return out[FREIGHT_BAND_COLUMNS]


def _group_numbers(df: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, list]:
    """(each row's group number, the groups' keys): the groups and their order of
    `df.groupby(keys, dropna=False, sort=True, observed=True)`. Categorical keys are numbered
    from their codes (no hashing, no sort); other keys by pandas."""
    if not all(isinstance(df[k].dtype, pd.CategoricalDtype) for k in keys):
        groups = df.groupby(keys, dropna=False, sort=True, observed=True)
        return groups.ngroup().to_numpy(), list(groups.size().index)
    cats = [df[k].cat.categories for k in keys]
    sizes = [len(c) + 1 for c in cats]  # each key's categories, then missing (sorted last)
    combined = np.zeros(len(df), dtype=np.int64)
    for k, size in zip(keys, sizes, strict=True):
        code = df[k].cat.codes.to_numpy().astype(np.int64)
        combined = combined * size + np.where(code < 0, size - 1, code)
    space = int(np.prod(sizes))
    seen = np.flatnonzero(np.bincount(combined, minlength=space))
    rank = np.full(space, -1, dtype=np.int64)
    rank[seen] = np.arange(len(seen))
    parts = np.unravel_index(seen, sizes)  # per key, the category of each group seen
    columns = [[c[i] if i < len(c) else np.nan for i in at.tolist()] for c, at in zip(cats, parts, strict=True)]
    names = list(zip(*columns, strict=True)) if len(keys) > 1 else columns[0]
    return rank[combined], names


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


# --- the facts path (agg_delivery*, written by the refresh) ----------------------------


def _from_facts(
    engine: Engine, as_of: dt.date, place: Place, min_orders: int, top_n: int
) -> DeliveryReport | None:
    """The report from the refresh's facts; None when they cannot answer for `place`."""
    stats = read_frame(engine, select(schema.agg_delivery_stats))
    for col in ("state", "region"):  # missing keys group as NaN, as pandas groups them
        stats[col] = stats[col].astype(object).where(stats[col].notna(), np.nan)
    level = stats["level"]
    groups = stats[level == "group"]
    if place.is_all:
        overall = stats[level == "all"]
        by_state, by_region = groups, stats[level == "region"]
    elif place.kind == "region":
        overall = stats[(level == "region") & (stats["region"] == place.value)]
        by_state, by_region = groups[groups["region"] == place.value], overall
    else:
        overall = stats[(level == "state") & (stats["state"] == place.value)]
        by_state = groups[groups["state"] == place.value]
        if len(by_state) > 1:  # one state in several regions: regroup from the orders
            return None
        by_region = by_state
    if len(overall):
        row = overall.iloc[0]
        summary = {c: (int(row[c]) if c == "orders" else _none(row[c])) for c in STATS}
    else:
        summary = order_stats(pd.DataFrame({c: pd.Series(dtype=float) for c in ("days", "on_time", "days_late")}))

    col = place_column(place, schema.agg_delivery)
    sums = schema.agg_delivery.c
    stmt = select(*(func.coalesce(func.sum(c), 0) for c in list(sums)[2:]))
    if col is not None:
        stmt = stmt.where(col == place.value)
    with engine.connect() as conn:
        totals = dict(zip([c.name for c in list(sums)[2:]], conn.execute(stmt).one(), strict=True))
    t = {k: (float(v) if "score" in k else int(v)) for k, v in totals.items()}

    B = schema.agg_freight_bands
    band_cols = ["band", "freight_min", "freight_max", "orders", "mean_freight", "on_time_share", "mean_days"]
    bands = read_frame(engine, select(*(B.c[c] for c in band_cols)).where(
        B.c.place_kind == place.kind, B.c.place_value == (FACTS_ALL_KEY if place.is_all else place.value)
    ).order_by(B.c.band))
    if bands.empty:
        bands = pd.DataFrame(columns=band_cols)

    repeat = pd.DataFrame([
        {"first_order": label, "customers": n, "purchased_again": k,
         "repeat_rate": k / n if n else np.nan}
        for label, n, k in (("on time", t["first_on_time"], t["first_on_time_again"]),
                            ("late", t["first_late"], t["first_late_again"]))
    ])
    return _report(
        as_of, place, min_orders, top_n,
        counts=(t["delivered"], t["purchases"] - t["delivered"], t["with_estimate"]),
        overall=summary,
        by_state=_stat_rows(by_state, ["state", "region"]),
        by_region=_stat_rows(by_region, ["region"]),
        freight_bands=bands,
        reviews={
            "review_on_time": t["review_score_on_time"] / t["reviews_on_time"] if t["reviews_on_time"] else None,
            "review_late": t["review_score_late"] / t["reviews_late"] if t["reviews_late"] else None,
            "reviews_on_time": t["reviews_on_time"], "reviews_late": t["reviews_late"],
        },
        repeat_after_first=repeat,
    )


def _stat_rows(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Stored per-group stats shaped and sorted like `grouped_stats`."""
    out = pd.DataFrame(rows[keys + STATS].to_dict("records"), columns=keys + STATS)
    out["orders"] = out["orders"].astype(int)
    return out.sort_values(["orders", keys[0]], ascending=[False, True], ignore_index=True)
