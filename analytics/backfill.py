"""Past weekly segment snapshots, computed from the order history.

A fresh install with years of orders has one snapshot (the refresh's), so there is no
migration to show. `backfill_snapshots` computes, for each week end
``as_of - 7·k`` (k = 0 … weeks), what the refresh would have written on that day:

    purchases on or before the day → recency_days, orders, revenue per customer
    (the definitions of `analytics.features`) → `analytics.rfm.rfm_scores` → segment

and writes those rows to `segment_snapshots` (segment, lifetime revenue, state, region).
Only the three RFM inputs are needed, so the purchases are read once and each week is a
prefix of them (no full feature build per week). State and region come from the
`customers` table, as in the refresh.

Idempotent: each date's rows are replaced in one transaction, and the same store gives
the same rows, so running it twice changes nothing. `skip_existing=True` leaves dates
that already have a snapshot alone (faster re-runs).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, String, select, type_coerce

from analytics.filters import is_purchase
from analytics.migration import forget_cells, snapshot_dates
from analytics.periods import end_of_day
from analytics.rfm import rfm_scores
from storage import schema
from storage.loaders.bulk import BulkWriter

ORD, CUS, SNAP = schema.orders, schema.customers, schema.segment_snapshots
MAX_WEEKS = 520


@dataclass(frozen=True)
class BackfillReport:
    """What a backfill wrote: one entry per week end."""

    as_of: dt.date
    dates: tuple[dt.date, ...]  # every week end considered, oldest first
    written: dict[dt.date, int]  # date -> snapshot rows written
    skipped: tuple[dt.date, ...]  # dates left alone (skip_existing, or no purchases yet)
    seconds: float

    def summary_lines(self) -> list[str]:
        rows = sum(self.written.values())
        lines = [f"backfill: {len(self.written)} weekly snapshots written "
                 f"({rows:,} customer rows) from {self.dates[0]} to {self.dates[-1]} "
                 f"in {self.seconds:.1f} s"]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} date(s): "
                         + ", ".join(d.isoformat() for d in self.skipped[:8])
                         + (" …" if len(self.skipped) > 8 else ""))
        return lines


def week_ends(as_of: dt.date, weeks: int) -> list[dt.date]:
    """as_of - 7·k for k = weeks … 0 (oldest first)."""
    if not 0 <= weeks <= MAX_WEEKS:
        raise ValueError(f"weeks must be from 0 to {MAX_WEEKS}")
    return [as_of - dt.timedelta(weeks=k) for k in range(weeks, -1, -1)]


def read_purchases(engine: Engine, until: dt.date) -> pd.DataFrame:
    """customer_id, purchased_at, revenue of every purchase on or before `until`, by time."""
    stmt = select(
        ORD.c.customer_id,
        type_coerce(ORD.c.purchased_at, String).label("purchased_at"),
        (ORD.c.items_value + ORD.c.freight_value).label("revenue"),
    ).where(is_purchase(), ORD.c.purchased_at < end_of_day(until))
    with engine.connect() as conn:
        result = conn.execute(stmt)
        frame = pd.DataFrame(result.cursor.fetchall(), columns=list(result.keys()))
    if frame.empty:
        return pd.DataFrame({"customer_id": pd.Series(dtype=object),
                             "purchased_at": pd.Series(dtype="datetime64[ns]"),
                             "revenue": pd.Series(dtype=float)})
    frame["purchased_at"] = pd.to_datetime(frame["purchased_at"], format="ISO8601")
    frame["revenue"] = frame["revenue"].astype(float)
    return frame.sort_values("purchased_at", kind="stable", ignore_index=True)


class PurchaseHistory:
    """Purchases read once and integer-coded, so each week's snapshot is a prefix of them."""

    def __init__(self, purchases: pd.DataFrame, geo: pd.DataFrame):
        """`purchases` as from `read_purchases` (sorted by time); `geo`: customer_id, state, region."""
        codes, ids = pd.factorize(purchases["customer_id"], sort=True)
        self.ids = np.asarray(ids, dtype=object)
        self.codes = codes.astype(np.int64)
        self.times = purchases["purchased_at"].to_numpy(dtype="datetime64[ns]")
        self.days = self.times.astype("datetime64[D]").astype(np.int64)
        self.revenue = purchases["revenue"].to_numpy(dtype=float)
        g = geo.drop_duplicates("customer_id").set_index("customer_id").reindex(self.ids)
        self.state = g["state"].to_numpy(dtype=object)
        self.region = g["region"].to_numpy(dtype=object)

    def snapshot(self, day: dt.date) -> pd.DataFrame:
        """The snapshot of `day`: customer_id, segment, revenue, state, region (by customer_id)."""
        cut = int(np.searchsorted(self.times, np.datetime64(end_of_day(day)), side="left"))
        n = len(self.ids)
        codes = self.codes[:cut]
        orders = np.bincount(codes, minlength=n)
        seen = orders > 0
        if not seen.any():
            return pd.DataFrame(columns=["customer_id", "segment", "revenue", "state", "region"])
        revenue = np.bincount(codes, weights=self.revenue[:cut], minlength=n)
        last = np.full(n, np.iinfo(np.int64).min)
        np.maximum.at(last, codes, self.days[:cut])
        today = (day - dt.date(1970, 1, 1)).days
        features = pd.DataFrame({
            "customer_id": self.ids[seen],
            "orders": orders[seen].astype(np.int64),
            "revenue": revenue[seen],
            "recency_days": (today - last[seen]).astype(np.int64),
        })
        scores = rfm_scores(features)
        return pd.DataFrame({
            "customer_id": features["customer_id"].to_numpy(),
            "segment": scores["segment"].to_numpy(),
            "revenue": features["revenue"].to_numpy(),
            "state": self.state[seen],
            "region": self.region[seen],
        })


def read_history(engine: Engine, until: dt.date) -> PurchaseHistory:
    """The purchases on or before `until` and every customer's state and region."""
    purchases = read_purchases(engine, until)
    with engine.connect() as conn:
        result = conn.execute(select(CUS.c.customer_id, CUS.c.state, CUS.c.region))
        geo = pd.DataFrame(result.fetchall(), columns=["customer_id", "state", "region"])
    return PurchaseHistory(purchases, geo)


def backfill_snapshots(
    engine: Engine,
    as_of: dt.date,
    weeks: int = 26,
    *,
    skip_existing: bool = False,
    progress: Callable[[dt.date, int], None] | None = None,
) -> BackfillReport:
    """Write the weekly snapshots of the `weeks` weeks before `as_of` (and of `as_of`)."""
    started = time.perf_counter()
    dates = week_ends(as_of, weeks)
    existing: set[dt.date] = set()
    if skip_existing:
        existing = set(snapshot_dates(engine)) & set(dates)
    todo = [d for d in dates if d not in existing]
    written: dict[dt.date, int] = {}
    skipped = [d for d in dates if d in existing]
    if todo:
        history = read_history(engine, max(todo))
        frames = {}
        for day in todo:
            snap = history.snapshot(day)
            if snap.empty:
                skipped.append(day)
                continue
            frames[day] = snap
        with engine.begin() as conn:
            forget_cells(conn, frames)  # the migrations stored for these dates no longer hold
            writer = BulkWriter(conn)
            for day, snap in frames.items():
                conn.execute(SNAP.delete().where(SNAP.c.snapshot_date == day))
                writer.insert(SNAP, snap.assign(snapshot_date=day.isoformat()))
                written[day] = len(snap)
                if progress is not None:
                    progress(day, len(snap))
    return BackfillReport(as_of=as_of, dates=tuple(dates), written=written,
                          skipped=tuple(sorted(skipped)), seconds=time.perf_counter() - started)
