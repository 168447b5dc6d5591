"""Answer facts: the small aggregates the reports read instead of the order history.

`build_facts` runs inside the refresh's write transaction. It reads the purchases on or
before `as_of` once (narrow columns, joined to the customer's state and region), plus
items, payments, reviews and the fresh `customer_scores`, groups them with pandas and
replaces the `agg_*` tables (storage/schema.py). Meta "facts" records the as-of date and
the parameters the facts were built with; a report uses the facts only when that as-of
equals the one it is asked for (`analytics.filters.facts_meta`), otherwise it runs its
own queries over the raw tables.

Figures are computed with the same rules (and, where it matters, the same SQL
expressions and pandas functions) as the reports' raw-table path, so both paths give the
same answers; tests/test_facts.py checks that on hand-made stores and the full Olist.
Counts of distinct customers or orders are stored per (state, region) and added up
across states: a customer lives in one state and an order has one customer. Medians,
quantile bands and concentration do not add up, so they are stored per place.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Integer, Select, String, and_, case, cast, func, select

from analytics import delivery as dlv
from analytics.filters import FACTS_ALL_KEY, FACTS_META, purchase_scope
from analytics.finance import DEFAULT_HEAVY_RATIO, TOP_SHARES, gini, top_share, top_share_column
from analytics.kpis import NO_CATEGORY
from analytics.payments import MISMATCH_ABS, MISMATCH_REL
from analytics.periods import EPOCH_MONDAY, day_number, elapsed_days, end_of_day
from storage import schema
from storage.geography import ALL
from storage.loaders.bulk import BulkWriter
from storage.store import set_meta

ORD, CUS, ITM, PAY, REV, SCO = (
    schema.orders, schema.customers, schema.order_items, schema.payments, schema.reviews,
    schema.customer_scores,
)
GEO = ["state", "region"]
FREIGHT_BANDS = 5  # delivery_report's default


def build_facts(engine: Engine, as_of: dt.date, conn: Connection | None = None) -> dict[str, int]:
    """Rebuild the `agg_*` tables for `as_of` and record it in meta "facts".

    Runs in `conn`'s transaction when given (the refresh's, so the facts appear together
    with the features and scores they match), else in a transaction of its own. Returns
    the rows written per table.
    """
    if conn is None:
        with engine.begin() as own:
            return build_facts(engine, as_of, own)
    started = time.perf_counter()
    frames = compute_facts(conn, as_of)
    writer = BulkWriter(conn)
    counts = {}
    for table in schema.FACT_TABLES:
        conn.execute(table.delete())
        frame = frames[table.name]
        counts[table.name] = writer.insert(table, frame) if len(frame) else 0
    set_meta(conn, FACTS_META, {
        "as_of": as_of.isoformat(), "heavy_ratio": DEFAULT_HEAVY_RATIO,
        "freight_bands": FREIGHT_BANDS, "top_shares": list(TOP_SHARES),
        "built_at": dt.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3), "rows": counts,
    })
    return counts


def compute_facts(conn: Connection, as_of: dt.date) -> dict[str, pd.DataFrame]:
    """The `agg_*` tables' rows for `as_of`, as DataFrames keyed by table name."""
    orders = _purchases(conn, as_of)
    if orders.empty:  # nothing bought by as_of: every table is empty
        return {t.name: _conform(pd.DataFrame(), t) for t in schema.FACT_TABLES}
    reviews = _read(conn, select(REV.c.order_id, REV.c.score).where(
        (REV.c.created_at < end_of_day(as_of)) | REV.c.created_at.is_(None)
    ))
    out = {
        "agg_orders_monthly": _monthly(orders, reviews),
        "agg_weekday_hour": _weekday_hour(orders),
        "agg_categories": _categories(conn, orders),
        "agg_cohorts": _cohorts(orders),
        **_delivery(orders, reviews),
        **_payments(conn, orders),
        "agg_concentration": _concentration(orders),
    }
    return {t.name: _conform(out[t.name], t) for t in schema.FACT_TABLES}


# --- reading ------------------------------------------------------------------------


def _read(conn: Connection, stmt: Select) -> pd.DataFrame:
    result = conn.execute(stmt)
    return pd.DataFrame(result.cursor.fetchall(), columns=list(result.keys()))


def _purchases(conn: Connection, as_of: dt.date) -> pd.DataFrame:
    """Every purchase in scope with the fields all facts need (delivery columns as
    delivery_report computes them in SQL, so both paths see the same numbers)."""
    end = end_of_day(as_of)
    is_delivered = and_(ORD.c.delivered_at.is_not(None), ORD.c.delivered_at < end)
    late_days = day_number(ORD.c.delivered_at) - day_number(ORD.c.estimated_delivery_at)
    stmt = (
        select(
            ORD.c.order_id, ORD.c.customer_id,
            cast(ORD.c.purchased_at, String).label("ts"),  # sorts like the timestamp
            CUS.c.state, CUS.c.region,
            ORD.c.items_value, ORD.c.freight_value,
            case((is_delivered, elapsed_days(ORD.c.delivered_at, ORD.c.purchased_at))).label("days"),
            case((is_delivered, late_days)).label("days_late"),
        )
        .select_from(ORD.outerjoin(CUS, CUS.c.customer_id == ORD.c.customer_id))
        .where(purchase_scope(as_of, ALL))
    )
    df = _read(conn, stmt)
    for col in ("items_value", "freight_value", "days", "days_late"):
        df[col] = df[col].astype(float)
    df["purchased_at"] = pd.to_datetime(df["ts"], format="ISO8601")
    df["revenue"] = df["items_value"] + df["freight_value"]
    items, freight = df["items_value"], df["freight_value"]
    df["heavy"] = (items > 0) & (freight > DEFAULT_HEAVY_RATIO * items)
    # n-th purchase of the customer (ties on time broken by order_id), as kpis ranks them
    df = df.sort_values(["customer_id", "purchased_at", "order_id"], ignore_index=True)
    df["rn"] = df.groupby("customer_id", sort=False).cumcount() + 1
    return df


def _geo(frame: pd.DataFrame) -> list:
    """Group keys for state and region that keep missing values as their own group."""
    return [frame["state"].fillna("\0"), frame["region"].fillna("\0")]


def _unkey(frame: pd.DataFrame, cols: tuple[str, ...] = ("state", "region")) -> pd.DataFrame:
    for col in cols:
        frame[col] = frame[col].where(frame[col] != "\0", None)
    return frame


# --- overview and finance -------------------------------------------------------------


def _monthly(orders: pd.DataFrame, reviews: pd.DataFrame) -> pd.DataFrame:
    o = orders.assign(
        month=orders["purchased_at"].dt.strftime("%Y-%m"),
        with_items=orders["items_value"] > 0,
        heavy_revenue=orders["revenue"].where(orders["heavy"], 0.0),
        new_customers=orders["rn"] == 1,
        new_revenue=orders["revenue"].where(orders["rn"] == 1, 0.0),
        repeaters=orders["rn"] == 2,
    )
    rv = reviews.merge(o[["order_id"]], on="order_id")
    per_order = rv.groupby("order_id").agg(reviews=("score", "size"), review_score=("score", "sum"))
    o = o.join(per_order, on="order_id")
    o["reviews"] = o["reviews"].fillna(0)
    o["review_score"] = o["review_score"].fillna(0.0)
    keys = [o["month"], *_geo(o)]
    g = o.groupby(keys).agg(
        orders=("order_id", "size"), revenue=("revenue", "sum"), items_value=("items_value", "sum"),
        freight=("freight_value", "sum"), with_items=("with_items", "sum"),
        heavy_orders=("heavy", "sum"), heavy_revenue=("heavy_revenue", "sum"),
        active_customers=("customer_id", "nunique"), new_customers=("new_customers", "sum"),
        new_revenue=("new_revenue", "sum"), repeaters=("repeaters", "sum"),
        reviews=("reviews", "sum"), review_score=("review_score", "sum"),
    )
    return _unkey(g.rename_axis(["month", "state", "region"]).reset_index())


def _weekday_hour(orders: pd.DataFrame) -> pd.DataFrame:
    ts = orders["purchased_at"]
    g = orders.groupby([*_geo(orders), ts.dt.day_of_week.rename("weekday"), ts.dt.hour.rename("hour")]).agg(
        orders=("order_id", "size"), revenue=("revenue", "sum"),
    )
    return _unkey(g.rename_axis(["state", "region", "weekday", "hour"]).reset_index())


def _categories(conn: Connection, orders: pd.DataFrame) -> pd.DataFrame:
    items = _read(conn, select(
        ITM.c.order_id, func.coalesce(ITM.c.category, NO_CATEGORY).label("category"),
        ITM.c.price, ITM.c.freight_value,
    ))
    items = items.merge(orders[["order_id", "state", "region", "heavy"]], on="order_id")
    items["price"] = items["price"].astype(float)
    items["freight_value"] = items["freight_value"].astype(float)
    items["revenue"] = items["price"] + items["freight_value"]
    items["heavy_order"] = items["order_id"].where(items["heavy"])
    items["heavy_revenue"] = items["revenue"].where(items["heavy"], 0.0)
    g = items.groupby([*_geo(items), items["category"]]).agg(
        orders=("order_id", "nunique"), revenue=("revenue", "sum"), items_value=("price", "sum"),
        freight=("freight_value", "sum"), heavy_orders=("heavy_order", "nunique"),
        heavy_revenue=("heavy_revenue", "sum"),
    )
    return _unkey(g.rename_axis(["state", "region", "category"]).reset_index())


# --- cohorts --------------------------------------------------------------------------


def _cohorts(orders: pd.DataFrame) -> pd.DataFrame:
    ts = orders["purchased_at"]
    days = (ts.dt.normalize() - pd.Timestamp(EPOCH_MONDAY)).dt.days.to_numpy()
    periods = {
        "month": (ts.dt.year * 12 + ts.dt.month - 1).to_numpy(),
        # whole weeks since EPOCH_MONDAY, truncated toward zero as the SQL does
        "week": np.sign(days) * (np.abs(days) // 7),
    }
    out = []
    for period, p in periods.items():
        o = orders[["customer_id", "state", "region", "revenue"]].assign(p=p)
        activity = o.groupby(["customer_id", "p"], as_index=False).agg(
            revenue=("revenue", "sum"), state=("state", "first"), region=("region", "first"),
        )
        activity["cohort"] = activity.groupby("customer_id")["p"].transform("min")
        activity["k"] = activity["p"] - activity["cohort"]
        g = activity.groupby([activity["cohort"], activity["k"], *_geo(activity)]).agg(
            active=("customer_id", "size"), revenue=("revenue", "sum"),
        )
        g = g.rename_axis(["cohort", "k", "state", "region"]).reset_index()
        out.append(_unkey(g).assign(period=period))
    return pd.concat(out, ignore_index=True)


# --- delivery -------------------------------------------------------------------------


def _delivery(orders: pd.DataFrame, reviews: pd.DataFrame) -> dict[str, pd.DataFrame]:
    o = dlv.prepare_orders(orders[["order_id", "customer_id", "ts", "state", "region", "days",
                                   "days_late", "freight_value"]].rename(columns={"freight_value": "freight"}))
    delivered = o[o["days"].notna()]

    stats = [pd.DataFrame([{"level": "all", **dlv.order_stats(delivered)}])]
    for level, keys in (("group", ["state", "region"]), ("region", ["region"]), ("state", ["state"])):
        g = dlv.grouped_stats(delivered, keys)
        if level == "state":
            g = g[g["state"].notna()]
        stats.append(g.assign(level=level))
    stats = pd.concat(stats, ignore_index=True)
    for col in ("state", "region"):
        if col not in stats:
            stats[col] = None
        stats[col] = stats[col].astype(object).where(stats[col].notna(), None)

    bands = []
    for kind, value, rows in _places(delivered):
        b = dlv.freight_bands(rows, FREIGHT_BANDS)
        if len(b):
            bands.append(b.assign(place_kind=kind, place_value=value))
    bands = pd.concat(bands, ignore_index=True) if bands else pd.DataFrame()

    counts = o.assign(
        delivered=o["days"].notna(), with_estimate=o["days"].notna() & o["on_time"].notna(),
    )
    per_geo = counts.groupby(_geo(counts)).agg(
        purchases=("order_id", "size"), delivered=("delivered", "sum"),
        with_estimate=("with_estimate", "sum"),
    )
    rated = reviews.merge(delivered.loc[delivered["on_time"].notna(), ["order_id", "on_time", "state", "region"]])
    rated["on_time"] = rated["on_time"].astype(bool)
    for flag, name in ((True, "on_time"), (False, "late")):
        r = rated[rated["on_time"] == flag]
        g = r.groupby(_geo(r))["score"].agg(["size", "sum"])
        per_geo[f"reviews_{name}"] = g["size"]
        per_geo[f"review_score_{name}"] = g["sum"]

    ranked = o.sort_values(["customer_id", "ts", "order_id"])
    first = ranked.drop_duplicates("customer_id").set_index("customer_id")
    first = first.assign(again=ranked.groupby("customer_id").size().reindex(first.index) >= 2)
    first = first[first["on_time"].notna()]
    first["on_time"] = first["on_time"].astype(bool)
    for flag, name in ((True, "on_time"), (False, "late")):
        f = first[first["on_time"] == flag]
        g = f.groupby(_geo(f))["again"].agg(["size", "sum"])
        per_geo[f"first_{name}"] = g["size"]
        per_geo[f"first_{name}_again"] = g["sum"]
    per_geo = _unkey(per_geo.fillna(0).rename_axis(["state", "region"]).reset_index())
    return {"agg_delivery": per_geo, "agg_delivery_stats": stats, "agg_freight_bands": bands}


def _places(frame: pd.DataFrame):  # noqa: ANN202 - yields (kind, value, rows)
    """("all", "*", every row), then each region's and each state's rows."""
    yield "all", FACTS_ALL_KEY, frame
    for kind in ("region", "state"):
        for value, rows in frame.groupby(kind, sort=True):
            yield kind, value, rows


# --- payments -------------------------------------------------------------------------


def _payments(conn: Connection, orders: pd.DataFrame) -> dict[str, pd.DataFrame]:
    pay = _read(conn, select(
        PAY.c.order_id, func.coalesce(PAY.c.method, "(unknown)").label("method"),
        PAY.c.installments, PAY.c.value,
    ))
    pay["value"] = pay["value"].astype(float)
    paid_per_order = pay.groupby("order_id")["value"].sum()
    pay = pay.merge(orders[["order_id", "customer_id", "state", "region"]], on="order_id")
    inst = pd.to_numeric(pay["installments"]).astype(float)

    keys = [*_geo(pay), pay["method"], inst.fillna(-1.0).rename("installments")]
    cells = pay.groupby(keys).agg(payments=("order_id", "size"), value=("value", "sum"))
    cells = _unkey(cells.rename_axis(["state", "region", "method", "installments"]).reset_index())
    cells["installments"] = cells["installments"].where(cells["installments"] != -1.0)

    scores = _read(conn, select(SCO.c.customer_id, SCO.c.segment))
    seg = pay.assign(
        inst=inst, inst_n=inst.notna(), multi=pay["value"].where(inst > 1, 0.0),
    ).merge(scores, on="customer_id")
    seg["segment"] = seg["segment"].fillna("(none)")
    segments = seg.groupby([*_geo(seg), seg["segment"]]).agg(
        customers=("customer_id", "nunique"), payments=("order_id", "size"),
        value=("value", "sum"), installments_sum=("inst", "sum"),
        installments_n=("inst_n", "sum"), multi=("multi", "sum"),
    )
    segments = _unkey(segments.rename_axis(["state", "region", "segment"]).reset_index())

    o = orders[["order_id", "customer_id", "purchased_at", "state", "region", "revenue"]].rename(
        columns={"revenue": "order_value"}
    )
    o["paid"] = o["order_id"].map(paid_per_order)
    o["difference"] = o["paid"] - o["order_value"]
    o["gap"] = o["difference"].abs()
    o["mismatch"] = (o["gap"] > MISMATCH_ABS) & (o["gap"] > MISMATCH_REL * o["order_value"].abs())
    o["mismatch_value"] = o["gap"].where(o["mismatch"], 0.0)
    per_geo = o.assign(paid_orders=o["paid"].notna(), unpaid_orders=o["paid"].isna()).groupby(_geo(o)).agg(
        paid_orders=("paid_orders", "sum"), unpaid_orders=("unpaid_orders", "sum"),
        mismatched_orders=("mismatch", "sum"), mismatch_value=("mismatch_value", "sum"),
    )
    per_geo = _unkey(per_geo.rename_axis(["state", "region"]).reset_index())
    mismatches = o[o["mismatch"]].drop(columns=["mismatch", "mismatch_value"])
    return {
        "agg_payments": cells, "agg_payment_segments": segments,
        "agg_payment_orders": per_geo, "agg_payment_mismatches": mismatches,
    }


# --- concentration ----------------------------------------------------------------------


def _concentration(orders: pd.DataFrame) -> pd.DataFrame:
    per_customer = orders.groupby("customer_id").agg(
        revenue=("revenue", "sum"), state=("state", "first"), region=("region", "first"),
    )
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
