"""Answer facts: the small aggregates the reports read instead of the order history.

`build_facts` runs inside the refresh's write transaction. It takes the store as read once
by the refresh (`analytics.dataset.Dataset`: orders, items, payments, reviews and the
customers' geography, integer-coded), groups the purchases on or before `as_of` with
pandas on integer and categorical keys (ids and places as strings only in the small
results) and replaces the `agg_*` tables (storage/schema.py). Meta "facts" records the
as-of date and the parameters the facts were built with; a report uses the facts only
when that as-of equals the one it is asked for (`analytics.filters.facts_meta`),
otherwise it runs its own queries over the raw tables. `agg_customers` is the exception:
it is grouped from the features and scores already written in the same transaction
(`write_customer_facts`), so it always matches them whatever the as-of.

Figures are computed with the same rules (and, where it matters, the same pandas
functions) as the reports' raw-table path, so both paths give the same answers (delivery
days come from the same timestamps in numpy, equal to the SQL's to rounding); tests/test_facts.py checks that on hand-made stores and the full Olist.
Counts of distinct customers or orders are stored per (state, region) and added up
across states: a customer lives in one state and an order has one customer. Medians,
quantile bands and concentration do not add up, so they are stored per place.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, Engine, Integer, Select, case, func, select

from analytics import delivery as dlv
from analytics.cohorts import cohort_cells
from analytics.dataset import DAY_US, NAT, Dataset, codes_in, day_of, read_dataset, to_micros
from analytics.filters import CUSTOMER_FACTS_META, FACTS_ALL_KEY, FACTS_META
from analytics.finance import DEFAULT_HEAVY_RATIO, TOP_SHARES, gini, top_share, top_share_column
from analytics.groups import DenseGroups
from analytics.joins import join_by_customer
from analytics.kpis import NO_CATEGORY
from analytics.payments import MISMATCH_ABS, MISMATCH_REL, NO_SEGMENT
from analytics.periods import end_of_day
from analytics.weekly import WEEKLY_FACTS, weekly_facts
from storage import schema
from storage.loaders.bulk import BulkWriter
from storage.store import set_meta

ORD, CUS, ITM, PAY, REV, SCO = (
    schema.orders, schema.customers, schema.order_items, schema.payments, schema.reviews,
    schema.customer_scores,
)
GEO = ["state", "region"]
FREIGHT_BANDS = 5  # delivery_report's default


@dataclass(frozen=True)
class ComputedFacts:
    """The `agg_*` tables' rows (by table name) and the weekly KPIs for one as-of date,
    ready to be written; `seconds` it took to compute them."""

    as_of: dt.date
    frames: dict[str, pd.DataFrame]
    weekly: dict[str, dict[str, list]]
    seconds: float


def compute_all_facts(data: Dataset, as_of: dt.date, segments: pd.DataFrame, *,
                      beside: bool = False) -> ComputedFacts:
    """Every fact `build_facts` writes, from the dataset alone (no store): the refresh runs
    it on a thread beside its clusters and scorers. `segments`: customer_id and segment.
    `beside`: the delivery facts (about half the work) are computed on a thread of their
    own (it inherits the caller's CPU priority) while this one computes the rest: at the
    end of the refresh's write the facts may be all that is left to do, on two cores."""
    started = time.perf_counter()
    frames = _frames(data, as_of, segments, beside)
    return ComputedFacts(as_of, frames, weekly_facts(data, as_of), time.perf_counter() - started)


def build_facts(engine: Engine, as_of: dt.date, conn: Connection | None = None, *,
                dataset: Dataset | None = None, segments: pd.DataFrame | None = None,
                computed: ComputedFacts | None = None,
                customers: pd.DataFrame | None = None) -> dict[str, int]:
    """Rebuild the `agg_*` tables for `as_of` and record it in meta "facts".

    Runs in `conn`'s transaction when given (the refresh's, so the facts appear together
    with the features and scores they match), else in a transaction of its own. `dataset`:
    the store already read (`analytics.dataset`); `segments`: customer_id and segment of
    the scores being written (else read from `customer_scores`); `computed`: the facts
    already computed (`compute_all_facts`), only written here; `customers`: the rows of
    `agg_customers` already computed (`customer_facts_frame`). Returns the rows written
    per table.
    """
    started = time.perf_counter()
    if computed is None and dataset is None:  # read before the write transaction starts
        dataset = read_dataset(engine, full=False)
    if conn is None:
        with engine.begin() as own:
            return build_facts(engine, as_of, own, dataset=dataset, segments=segments, computed=computed,
                               customers=customers)
    if computed is None:
        if segments is None:
            segments = _read(conn, select(SCO.c.customer_id, SCO.c.segment))
        computed = compute_all_facts(dataset, as_of, segments)
    elif computed.as_of != as_of:
        raise ValueError(f"facts computed for {computed.as_of}, asked to write them for {as_of}")
    for table in schema.FACT_TABLES:
        conn.execute(table.delete())
    writer = BulkWriter(conn)
    counts = {}
    with writer.overlapped():  # SQLite inserts one batch while the next one's rows are made
        for table in schema.FACT_TABLES:
            frame = computed.frames[table.name]
            counts[table.name] = writer.insert(table, frame) if len(frame) else 0
    counts[schema.agg_customers.name] = write_customer_facts(conn, customers)  # after features and scores
    set_meta(conn, FACTS_META, {
        "as_of": as_of.isoformat(), WEEKLY_FACTS: computed.weekly, "heavy_ratio": DEFAULT_HEAVY_RATIO,
        "freight_bands": FREIGHT_BANDS, "top_shares": list(TOP_SHARES),
        "built_at": dt.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(computed.seconds + time.perf_counter() - started, 3), "rows": counts,
    })
    return counts


def _frames(data: Dataset, as_of: dt.date, segments: pd.DataFrame, beside: bool = False) -> dict[str, pd.DataFrame]:
    orders = _purchases(data, as_of)
    if orders.empty:  # nothing bought by as_of: every table is empty
        return {t.name: _conform(pd.DataFrame(), t) for t in schema.FACT_TABLES}
    created = data.review_created
    recent = (created == NAT) | (created < to_micros(end_of_day(as_of)))
    reviews = pd.DataFrame({"order_id": data.review_ord[recent], "score": data.review_score[recent]})
    seg_code = codes_in(pa.array(segments["customer_id"].astype(object).to_numpy(), pa.string()),
                        data.customer_ids)
    # the segment as a categorical (names sorted, NO_SEGMENT among them): joined to ten million
    # payments as codes and grouped without hashing a string per row (as strings, pandas'
    # Arrow-backed ones, the join and the grouping took 2 s of the facts' CPU at 10M orders)
    names = segments["segment"].astype(object).to_numpy()
    categories = sorted({n for n in pd.unique(names) if isinstance(n, str)} | {NO_SEGMENT})
    segments = pd.DataFrame({"customer_id": seg_code,
                             "segment": pd.Categorical(names, categories=pd.Index(categories, dtype=object))})
    segments = segments[segments["customer_id"] >= 0]
    with ThreadPoolExecutor(1, thread_name_prefix="pulse-facts") if beside else nullcontext() as pool:
        delivery = pool.submit(_delivery, orders, reviews) if pool is not None else None
        out = {
            "agg_orders_monthly": _monthly(orders, reviews),
            "agg_weekday_hour": _weekday_hour(orders),
            "agg_categories": _categories(data, orders),
            "agg_cohorts": _cohorts(data, as_of),
            **_payments(data, orders, segments),
            "agg_concentration": _concentration(data, orders),
            **(delivery.result() if delivery is not None else _delivery(orders, reviews)),
        }
    return {t.name: _conform(out[t.name], t) for t in schema.FACT_TABLES}


def write_customer_facts(conn: Connection, rows: pd.DataFrame | None = None) -> int:
    """Replace `agg_customers` with the stored features joined to the scores, grouped by
    place, RFM segment, churn source and risk band (in the caller's transaction, after both
    are written); its rows. `rows`: the same already computed (`customer_facts_frame`, by
    the refresh from the frames it writes), else one `INSERT … SELECT` groups the stored
    rows. The at-risk figures (`analytics.risk.at_risk`), LTV by geography and predicted
    CLV of any place add up from it."""
    A, F = schema.agg_customers, schema.customer_features
    conn.execute(A.delete())
    if rows is not None:
        if len(rows):
            BulkWriter(conn).insert(A, rows)
    else:
        keys = [F.c.state, F.c.region, SCO.c.segment, SCO.c.churn_source, SCO.c.risk_band]
        grouped = (
            select(*keys, func.count(), func.count(case((F.c.orders > 0, 1))),
                   func.coalesce(func.sum(F.c.orders), 0), func.count(case((F.c.orders >= 2, 1))),
                   func.sum(F.c.revenue), func.sum(SCO.c.value_at_risk), func.sum(SCO.c.clv),
                   func.count(SCO.c.clv))
            .select_from(SCO).join(F, SCO.c.customer_id == F.c.customer_id).group_by(*keys)
        )
        conn.execute(A.insert().from_select(CUSTOMER_FACT_COLUMNS, grouped))
    count = int(conn.execute(select(func.count()).select_from(A)).scalar())
    set_meta(conn, CUSTOMER_FACTS_META, {"rows": count})
    return count


CUSTOMER_FACT_KEYS = ["state", "region", "segment", "churn_source", "risk_band"]
CUSTOMER_FACT_COLUMNS = [c.name for c in schema.agg_customers.columns]


def customer_facts_frame(features: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """`agg_customers`' rows from features and scores frames (customer_id; state, region,
    orders, revenue; segment and the scorers' columns, missing ones taken as NULL): the
    groups and sums of `write_customer_facts`' query, in memory. The refresh has both
    frames before it writes them, and the join in SQL costs 5 s at a million customers."""
    wanted = ["customer_id", "segment", "churn_source", "risk_band", "value_at_risk", "clv"]
    joined = join_by_customer(scores.reindex(columns=wanted),
                              features[["customer_id", "state", "region", "orders", "revenue"]], how="inner")
    orders = joined["orders"].to_numpy()
    joined = joined.assign(customers=1, buyers=(orders > 0).astype(np.int64),
                           repeaters=(orders >= 2).astype(np.int64),
                           clv_customers=joined["clv"].notna().astype(np.int64))
    groups = joined.groupby(CUSTOMER_FACT_KEYS, dropna=False, sort=False)
    out = groups[["customers", "buyers", "orders", "repeaters", "clv_customers"]].sum()
    for col in ("revenue", "value_at_risk", "clv"):  # NULL when no customer of the group has one
        out[col] = groups[col].sum(min_count=1)
    out = out.reset_index()[CUSTOMER_FACT_COLUMNS]
    keys = out[CUSTOMER_FACT_KEYS].astype(object)
    out[CUSTOMER_FACT_KEYS] = keys.where(keys.notna(), None)
    return out


# --- reading ------------------------------------------------------------------------


def _read(conn: Connection, stmt: Select) -> pd.DataFrame:
    result = conn.execute(stmt)
    return pd.DataFrame(result.cursor.fetchall(), columns=list(result.keys()))


def _purchases(data: Dataset, as_of: dt.date) -> pd.DataFrame:
    """Every purchase in scope with the fields all facts need, integer-coded: `order_id` is
    the order's row in `data` and `customer_id` the customer's code, both of which sort like
    the ids they stand for (`_ids` turns them back). Delivery columns follow delivery_report:
    days = delivered − purchased in days, days_late = whole calendar days past the estimate,
    both only for orders delivered by the as-of date."""
    rows = np.flatnonzero(data.in_scope(as_of))
    cust = data.cust[rows]
    bought, delivered, estimated = data.purchased[rows], data.delivered[rows], data.estimated[rows]
    is_delivered = (delivered != NAT) & (delivered < to_micros(end_of_day(as_of)))
    with_estimate = is_delivered & (estimated != NAT)
    days = np.where(is_delivered, (delivered - bought) / DAY_US, np.nan)
    days_late = np.where(with_estimate, (day_of(delivered) - day_of(estimated)).astype(float), np.nan)
    items, freight = data.items_value[rows], data.freight_value[rows]
    # rows are sorted by customer, time, order_id: the n-th purchase of the customer (as kpis ranks them)
    first = np.r_[True, cust[1:] != cust[:-1]] if len(cust) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    rn = np.arange(len(cust)) - np.repeat(starts, np.diff(np.r_[starts, len(cust)])) + 1
    return pd.DataFrame({
        "order_id": rows, "customer_id": cust, "ts": bought,  # µs: sorts like the timestamp
        # the place as categoricals only (`gs`, `gr`): the names per customer are in `data`
        # (two columns of ten million names: 0.6-0.9 s of the facts' time at 10M orders)
        "items_value": items, "freight_value": freight, "days": days, "days_late": days_late,
        "purchased_at": bought.view("datetime64[us]"), "revenue": items + freight,
        "heavy": (items > 0) & (freight > DEFAULT_HEAVY_RATIO * items), "rn": rn,
        "gs": _geo_keys(data.state, cust), "gr": _geo_keys(data.region, cust),
    })


def _join_on_codes(frame: pd.DataFrame, other: pd.DataFrame, key: str, cols: list[str]) -> pd.DataFrame:
    """`frame.merge(other[[key, *cols]], on=key)` (inner, `frame`'s row order) where `key`
    holds codes (a dataset row or customer code; negative ones match nothing) and is
    unique in `other`: array lookups instead of hashing (pandas' merges took a fifth of
    the facts' time at 10M orders)."""
    keys, known = frame[key].to_numpy(dtype=np.int64), other[key].to_numpy(dtype=np.int64)
    known_at = np.flatnonzero(known >= 0)
    size = int(max(keys.max(initial=-1), known.max(initial=-1))) + 1
    at = np.full(size + 1, -1, dtype=np.int64)  # the last slot answers the negative keys
    at[known[known_at]] = known_at
    pos = at[keys if keys.min(initial=0) >= 0 else np.where(keys >= 0, keys, size)]
    keep = pos >= 0
    rows = None if keep.all() else np.flatnonzero(keep)
    pos = pos[keep]

    def column(values: pd.Series, at: np.ndarray | None) -> pd.Series:
        # dtype given: pandas would otherwise turn object columns of names into its string
        # dtype, string by string (most of the join's time at a million rows)
        return pd.Series(values.array if at is None else values.array.take(at), dtype=values.dtype, copy=False)

    columns = {c: column(frame[c], rows) for c in frame.columns}
    columns.update({c: column(other[c], pos) for c in cols})
    return pd.DataFrame(columns, copy=False)


def _geo_keys(per_customer: np.ndarray, cust: np.ndarray) -> pd.Categorical:
    """The customers' state or region per row as a categorical ("\\0" for missing): the
    group-bys of every fact key on it, and categorical keys group far faster than strings."""
    codes, names = pd.factorize(pd.Series(per_customer, dtype=object))  # -1 for missing
    codes = np.where(codes < 0, len(names), codes)
    categories = pd.Index([*names, "\0"], dtype=object)  # (np.append would strip the NUL)
    return pd.Categorical.from_codes(codes[cust], categories=categories)


def _ids(values: pa.Array, codes: pd.Series) -> np.ndarray:
    return values.take(pa.array(codes.to_numpy(dtype=np.int64))).to_numpy(zero_copy_only=False).astype(object)


def _month_keys(ts: pd.Series) -> pd.Categorical:
    """'YYYY-MM' of each timestamp, as a categorical of the months in order (formatted once
    per distinct month; grouped without hashing a string per row)."""
    stamps = ts.to_numpy().astype("datetime64[us]")
    day = stamps.view(np.int64) // DAY_US
    first = int(day.min()) if len(day) else 0
    days = int(day.max()) - first + 1 if len(day) else 0
    if np.isnat(stamps).any() or days > 1 << 20:
        uniq, inverse = np.unique(stamps.astype("datetime64[M]"), return_inverse=True)
    else:  # a few years of days: each day's month looked up and counted, nothing sorted (np.unique
        # of ten million months took 0.9 s, their conversion from microseconds 0.3 s more)
        month_of_day = np.arange(first, first + days).astype("datetime64[D]").astype("datetime64[M]").view(np.int64)
        number = month_of_day[day - first]
        lo = int(month_of_day[0]) if days else 0
        seen = np.bincount(number - lo, minlength=int(month_of_day[-1]) - lo + 1 if days else 0) > 0
        uniq = (np.flatnonzero(seen) + lo).astype("datetime64[M]")
        inverse = (np.cumsum(seen) - 1)[number - lo]
    names = pd.Index(np.datetime_as_string(uniq, unit="M").astype(object), dtype=object)
    return pd.Categorical.from_codes(inverse.ravel(), categories=names)


def _geo(frame: pd.DataFrame) -> list:
    """Group keys for state and region that keep missing values as their own group."""
    if "gs" in frame:  # the categorical keys of `_purchases`
        return [frame["gs"].rename("state"), frame["gr"].rename("region")]
    return [frame["state"].fillna("\0"), frame["region"].fillna("\0")]


def _unkey(frame: pd.DataFrame, cols: tuple[str, ...] = ("state", "region")) -> pd.DataFrame:
    for col in cols:
        values = frame[col].astype(object)
        frame[col] = values.where(values != "\0", None)
    return frame


# --- overview and finance -------------------------------------------------------------


def _monthly(orders: pd.DataFrame, reviews: pd.DataFrame) -> pd.DataFrame:
    revenue, rn = orders["revenue"].to_numpy(dtype=float), orders["rn"].to_numpy()
    items, heavy = orders["items_value"].to_numpy(dtype=float), orders["heavy"].to_numpy(dtype=bool)
    # reviews per order and their score sum, by dataset row (order_id), in the reviews' order
    rows = reviews["order_id"].to_numpy(dtype=np.int64)
    at = orders["order_id"].to_numpy(dtype=np.int64)
    size = int(max(rows.max(initial=-1), at.max(initial=-1))) + 1
    scores = reviews["score"].to_numpy(dtype=float)
    # (month first: a customer's purchases, in time order, then come in group order)
    groups, keys = _groups({"month": _month_keys(orders["purchased_at"]), **_geo_columns(orders)})
    g = pd.DataFrame({
        **keys, "orders": groups.size(), "revenue": groups.sum(revenue), "items_value": groups.sum(items),
        "freight": groups.sum(orders["freight_value"].to_numpy(dtype=float)),
        "with_items": groups.count(items > 0), "heavy_orders": groups.count(heavy),
        "heavy_revenue": groups.sum(np.where(heavy, revenue, 0.0)),
        "active_customers": groups.nunique(orders["customer_id"].to_numpy()),
        "new_customers": groups.count(rn == 1), "new_revenue": groups.sum(np.where(rn == 1, revenue, 0.0)),
        "repeaters": groups.count(rn == 2),
        "reviews": groups.sum(np.bincount(rows, minlength=size)[at]),
        "review_score": groups.sum(np.bincount(rows, weights=scores, minlength=size)[at]),
    })
    return _unkey(g.assign(month=g["month"].astype(str)))


def _weekday_hour(orders: pd.DataFrame) -> pd.DataFrame:
    ts = orders["ts"].to_numpy(dtype=np.int64)  # µs since 1970-01-01, a Thursday
    day, time_of_day = np.divmod(ts, DAY_US)
    groups, keys = _groups({
        **_geo_columns(orders),
        "weekday": pd.Categorical.from_codes((day + 3) % 7, categories=range(7)),  # Monday 0
        "hour": pd.Categorical.from_codes(time_of_day // (DAY_US // 24), categories=range(24)),
    })
    g = pd.DataFrame({**keys, "orders": groups.size(), "revenue": groups.sum(orders["revenue"].to_numpy(dtype=float))})
    return _unkey(g.astype({"weekday": np.int64, "hour": np.int64}))


def _geo_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """`_geo`'s keys by the names of the columns they become."""
    return {key.name: key for key in _geo(frame)}


def _groups(keys: dict[str, pd.Series | pd.Categorical]) -> tuple[DenseGroups, dict[str, pd.Series]]:
    """The rows grouped by `keys` (categoricals, or values without missing ones) as pandas'
    `groupby(keys)` groups them, and each key's value per group, by the key's name."""
    codes, labels = [], []
    for values in keys.values():
        if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
            cat = values.array if isinstance(values, pd.Series) else values
            code, names = cat.codes, cat.categories
        else:
            code, names = pd.factorize(values, sort=True)
        if len(code) and code.min() < 0:
            raise ValueError("a group key has missing values")
        codes.append(np.asarray(code, dtype=np.int64))
        numeric = pd.api.types.is_numeric_dtype(names.dtype)
        labels.append(np.asarray(names) if numeric else np.asarray(names, dtype=object))
    groups = DenseGroups(codes, [len(n) for n in labels])
    # (names stay objects: pandas would make them its string dtype)
    return groups, {name: pd.Series(lab[code], dtype=lab.dtype)
                    for name, lab, code in zip(keys, labels, groups.keys(), strict=True)}


def _categories(data: Dataset, orders: pd.DataFrame) -> pd.DataFrame:
    names = np.append(data.category_names, NO_CATEGORY)  # code -1 (no category) picks the last
    items = pd.DataFrame({
        "order_id": data.item_ord, "category": _names_key(names, data.item_category),
        "price": data.item_price, "freight_value": data.item_freight,
    })
    items = _join_on_codes(items, orders, "order_id", ["gs", "gr", "heavy"])
    items["price"] = items["price"].astype(float)
    items["freight_value"] = items["freight_value"].astype(float)
    items["revenue"] = items["price"] + items["freight_value"]
    # an order counts once per category (state and region are the order's): the distinct
    # orders of a group are the sum of "first line of its order in this category"
    first = _first_of_pairs(items["order_id"].to_numpy(), items["category"].cat.codes.to_numpy())
    items["heavy_revenue"] = items["revenue"].where(items["heavy"], 0.0)
    groups, keys = _groups({**_geo_columns(items), "category": items["category"]})
    return _unkey(pd.DataFrame({
        **keys, "orders": groups.count(first), "revenue": groups.sum(items["revenue"]),
        "items_value": groups.sum(items["price"]), "freight": groups.sum(items["freight_value"]),
        "heavy_orders": groups.count(first & items["heavy"].to_numpy(dtype=bool)),
        "heavy_revenue": groups.sum(items["heavy_revenue"]),
    }))


def _first_of_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True on the first row of each distinct (a, b) pair; `a` and `b` non-negative integer
    codes. Only rows whose `a` repeats can repeat a pair (most orders have one line), so
    only those are sorted."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    first = np.ones(len(a), dtype=bool)
    if not len(a):
        return first
    shared = np.flatnonzero(np.bincount(a)[a] > 1)
    if len(shared):
        key = a[shared] * (int(b.max()) + 1) + b[shared]
        order = np.argsort(key, kind="stable")
        ranked = key[order]
        first[shared[order[1:][ranked[1:] == ranked[:-1]]]] = False
    return first


def _names_key(names: np.ndarray, codes: np.ndarray) -> pd.Categorical:
    """`names[codes]` as a categorical of the names sorted: grouped with sort=True its
    groups come in the order of the object column's, without hashing a string per row."""
    distinct, rank = np.unique(names.astype(str), return_inverse=True)  # (a name may repeat)
    return pd.Categorical.from_codes(rank.reshape(-1)[codes], categories=pd.Index(distinct.astype(object)))


# --- cohorts --------------------------------------------------------------------------


def _cohorts(data: Dataset, as_of: dt.date) -> pd.DataFrame:
    # (state, region) of each customer as one code (missing values get a code of their own)
    s_code, s_names = pd.factorize(pd.Series(data.state, dtype=object))
    r_code, r_names = pd.factorize(pd.Series(data.region, dtype=object))
    states = np.array([*s_names, None], dtype=object)
    regions = np.array([*r_names, None], dtype=object)
    s_code = np.where(s_code < 0, len(s_names), s_code)
    r_code = np.where(r_code < 0, len(r_names), r_code)
    group = s_code * len(regions) + r_code
    out = []
    for period in ("month", "week"):
        cells = cohort_cells(data, as_of, period, group=group.astype(np.int64))
        if len(cells):
            s_of, r_of = np.divmod(cells.pop("group").to_numpy(), len(regions))
            cells = cells.assign(state=states[s_of], region=regions[r_of])
        out.append(cells.assign(period=period))
    return pd.concat(out, ignore_index=True)


# --- delivery -------------------------------------------------------------------------


def _delivery(orders: pd.DataFrame, reviews: pd.DataFrame) -> dict[str, pd.DataFrame]:
    o = orders[["order_id", "customer_id", "ts", "gs", "gr", "days", "days_late", "freight_value"]].rename(
        columns={"freight_value": "freight"})
    # the same figures as from the raw tables (`dlv.prepare_orders`), in a form that groups
    # fast at millions of orders: on_time as 1.0 / 0.0 / NaN (not objects: made as floats, not
    # converted from a column of objects), state and region as categoricals whose groups come
    # in the object columns' order (sorted, missing last)
    late = o["days_late"].to_numpy(dtype=float)
    o = o.assign(on_time=np.where(np.isnan(late), np.nan, (late <= 0).astype(float)),
                 state=_sorted_keys(o["gs"]), region=_sorted_keys(o["gr"]))
    delivered = o[o["days"].notna()]

    stats = [pd.DataFrame([{"level": "all", **dlv.order_stats(delivered)}])]
    by_pair = dlv.grouped_stats(delivered, ["state", "region"])
    # each state in one region (as the store's geography makes them): a state's orders are
    # its pair's, in the same order, and so are its figures and its place in the sort
    by_state = (by_pair.drop(columns="region") if not by_pair["state"].duplicated().any()
                else dlv.grouped_stats(delivered, ["state"]))
    for level, g in (("group", by_pair), ("region", dlv.grouped_stats(delivered, ["region"])),
                     ("state", by_state[by_state["state"].notna()])):
        stats.append(g.assign(level=level))
    stats = pd.concat(stats, ignore_index=True)
    for col in ("state", "region"):
        if col not in stats:
            stats[col] = None
        stats[col] = stats[col].astype(object).where(stats[col].notna(), None)

    bands = []
    for kind, value, b in _freight_bands_of_places(delivered[["state", "region", "freight", "on_time", "days"]]):
        if len(b):
            bands.append(b.assign(place_kind=kind, place_value=value))
    bands = pd.concat(bands, ignore_index=True) if bands else pd.DataFrame()

    groups, keys = _groups(_geo_columns(o))
    has_days = o["days"].notna().to_numpy()
    per_geo = {**keys, "purchases": groups.size(), "delivered": groups.count(has_days),
               "with_estimate": groups.count(has_days & o["on_time"].notna().to_numpy())}
    rated = _join_on_codes(reviews, delivered[delivered["on_time"].notna()], "order_id",
                           ["on_time", "state", "region", "gs", "gr"])
    # `_purchases` rows come sorted by customer, time and order (order_id = row number)
    ranked = o if o["order_id"].is_monotonic_increasing else o.sort_values(["customer_id", "ts", "order_id"])
    first = ranked.drop_duplicates("customer_id").set_index("customer_id")
    first = first.assign(again=ranked.groupby("customer_id").size().reindex(first.index) >= 2)
    first = first[first["on_time"].notna()]
    per_geo.update(_on_time_vs_late(groups, rated, "score", size="reviews_{}", total="review_score_{}"))
    per_geo.update(_on_time_vs_late(groups, first, "again", size="first_{}", total="first_{}_again"))
    per_geo = _unkey(pd.DataFrame(per_geo))
    return {"agg_delivery": per_geo, "agg_delivery_stats": stats, "agg_freight_bands": bands}


def _on_time_vs_late(groups: DenseGroups, frame: pd.DataFrame, value: str, *, size: str,
                     total: str) -> dict[str, np.ndarray]:
    """Per place of `groups` (the purchases' state and region), the rows of `frame` and the
    sum of their `value`, among the orders on time and among the late ones: columns `size`
    and `total`, formatted with "on_time" and "late" (`frame["on_time"]` must have no
    missing values; its `gs` and `gr` keys are the purchases')."""
    on_time = frame["on_time"].to_numpy(dtype=bool)
    codes = [frame["gs"].cat.codes.to_numpy(), frame["gr"].cat.codes.to_numpy()]
    values = frame[value].to_numpy(dtype=float)
    out = {}
    for flag, name in ((True, "on_time"), (False, "late")):
        rows = on_time == flag
        at = [c[rows] for c in codes]
        out[size.format(name)] = groups.of_other_rows(at)
        out[total.format(name)] = groups.of_other_rows(at, values[rows])
    return out


def _places(frame: pd.DataFrame):  # noqa: ANN202 - yields (kind, value, rows)
    """("all", "*", every row), then each region's and each state's rows."""
    yield "all", FACTS_ALL_KEY, frame
    for kind in ("region", "state"):
        for value, rows in frame.groupby(kind, sort=True, observed=True):
            yield kind, value, rows


def _freight_bands_of_places(frame: pd.DataFrame) -> list[tuple[str, object, pd.DataFrame]]:
    """(kind, value, freight bands) of "all" (every row), then of each region and each state."""
    out = [("all", FACTS_ALL_KEY, dlv.freight_bands(frame, FREIGHT_BANDS))]
    for kind in ("region", "state"):
        out += [(kind, value, b) for value, b in dlv.freight_bands_by(frame, kind, FREIGHT_BANDS)]
    return out


def _sorted_keys(keys: pd.Series) -> pd.Categorical:
    """A `_geo_keys` column ("\0" for missing) as a categorical of the names, sorted, with
    missing values as NaN: grouped with sort=True and dropna=False its groups and keys are
    those of the object column of names (missing last), but without hashing a string per row."""
    cats = keys.cat.categories
    names = sorted(c for c in cats if c != "\0")
    at = {name: i for i, name in enumerate(names)}
    recode = np.array([at.get(c, -1) for c in cats], dtype=np.int64)
    return pd.Categorical.from_codes(recode[keys.cat.codes.to_numpy()], categories=pd.Index(names, dtype=object))


# --- payments -------------------------------------------------------------------------


def _payments(data: Dataset, orders: pd.DataFrame, scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    methods = np.append(data.method_names, "(unknown)")  # code -1 (no method) picks the last
    pay = pd.DataFrame({"order_id": data.pay_ord, "method": _names_key(methods, data.pay_method),
                        "installments": data.pay_installments, "value": data.pay_value})
    # paid per order (order_id: the order's row in `data`), NaN for an order without payments
    known = data.pay_ord >= 0
    ords, values = data.pay_ord[known], data.pay_value[known].astype(float)
    values = np.where(np.isnan(values), 0.0, values)  # as pandas' sum skips NaN
    n_orders = len(data.cust)
    paid_per_order = np.where(np.bincount(ords, minlength=n_orders) > 0,
                              np.bincount(ords, weights=values, minlength=n_orders), np.nan)
    pay = _join_on_codes(pay, orders, "order_id", ["customer_id", "gs", "gr"])
    inst = pd.to_numeric(pay["installments"]).astype(float)

    value = pay["value"].to_numpy(dtype=float)
    groups, keys = _groups({**_geo_columns(pay), "method": pay["method"],
                            "installments": inst.fillna(-1.0).to_numpy()})
    cells = _unkey(pd.DataFrame({**keys, "payments": groups.size(), "value": groups.sum(value)}))
    cells["installments"] = cells["installments"].where(cells["installments"] != -1.0)

    seg = _join_on_codes(pay.assign(
        inst=inst, inst_n=inst.notna(), multi=pay["value"].where(inst > 1, 0.0),
    ), scores, "customer_id", ["segment"])
    groups, keys = _groups({**_geo_columns(seg), "segment": seg["segment"].fillna(NO_SEGMENT)})
    segments = _unkey(pd.DataFrame({
        **keys, "customers": groups.nunique(seg["customer_id"].to_numpy()), "payments": groups.size(),
        "value": groups.sum(seg["value"].to_numpy(dtype=float)), "installments_sum": groups.sum(seg["inst"]),
        "installments_n": groups.count(seg["inst_n"]), "multi": groups.sum(seg["multi"]),
    }))

    o = orders[["order_id", "customer_id", "purchased_at", "gs", "gr", "revenue"]].rename(
        columns={"revenue": "order_value"}
    )
    o["paid"] = paid_per_order[o["order_id"].to_numpy()]
    o["difference"] = o["paid"] - o["order_value"]
    o["gap"] = o["difference"].abs()
    o["mismatch"] = (o["gap"] > MISMATCH_ABS) & (o["gap"] > MISMATCH_REL * o["order_value"].abs())
    o["mismatch_value"] = o["gap"].where(o["mismatch"], 0.0)
    groups, keys = _groups(_geo_columns(o))
    per_geo = _unkey(pd.DataFrame({
        **keys, "paid_orders": groups.count(o["paid"].notna()), "unpaid_orders": groups.count(o["paid"].isna()),
        "mismatched_orders": groups.count(o["mismatch"]), "mismatch_value": groups.sum(o["mismatch_value"]),
    }))
    mismatches = o[o["mismatch"]].drop(columns=["mismatch", "mismatch_value"])
    cust = mismatches["customer_id"].to_numpy(dtype=np.int64)
    mismatches = mismatches.assign(  # the ids and places behind the codes
        order_id=_ids(data.order_id, mismatches["order_id"]),
        customer_id=_ids(data.customer_ids, mismatches["customer_id"]),
        state=pd.Series(data.state[cust], index=mismatches.index, dtype=object),
        region=pd.Series(data.region[cust], index=mismatches.index, dtype=object),
    )
    return {
        "agg_payments": cells, "agg_payment_segments": segments,
        "agg_payment_orders": per_geo, "agg_payment_mismatches": mismatches,
    }


# --- concentration ----------------------------------------------------------------------


def _concentration(data: Dataset, orders: pd.DataFrame) -> pd.DataFrame:
    revenue = orders.groupby("customer_id")["revenue"].sum()  # (customer codes)
    codes = revenue.index.to_numpy(dtype=np.int64)
    per_customer = pd.DataFrame({"revenue": revenue.to_numpy(),
                                 "state": pd.Series(data.state[codes], dtype=object),
                                 "region": pd.Series(data.region[codes], dtype=object)})
    rows = []
    for kind, value, group in _places(per_customer):
        values = group["revenue"].to_numpy(dtype=float)
        row: dict[str, Any] = {"place_kind": kind, "place_value": value, "customers": len(values),
                               "gini": gini(values)}
        for p in TOP_SHARES:
            row[top_share_column(p)] = top_share(values, p)
        rows.append(row)
    return pd.DataFrame(rows)


def _conform(frame: pd.DataFrame, table) -> pd.DataFrame:  # noqa: ANN001 - Table
    """The table's columns in order (missing ones as None), integers as integers."""
    cols = [c.name for c in table.columns]
    out = frame.reindex(columns=cols).copy() if len(frame) else pd.DataFrame(columns=cols)
    for c in table.columns:
        if c.name in ("state", "region") or not len(out):
            continue
        if isinstance(c.type, Integer) and out[c.name].notna().all():
            out[c.name] = out[c.name].astype(np.int64)
    return out
