"""The as-of date every analysis runs at, and how it was chosen.

Modes:
- ``fixed``: a date given by the caller (settings ``as_of = "YYYY-MM-DD"``).
- ``today``: the data is current — its latest order is at most `CURRENT_WITHIN_DAYS`
  days before today (or the store is empty) — so the analyses run as of today.
- ``auto``: the data is historical; as-of is the *last day of normal order volume*.

The auto rule (not fooled by a sparse tail). Volume is orders placed per calendar day,
any status (a canceled order still shows the shop was taking orders that day).

1. The *typical day* before a day T is the median of the 12 consecutive 7-day order
   totals ending the day before T, divided by 7. Weekly totals make the baseline immune
   to weekday patterns and closed days; the median ignores one-off peaks and dips.
2. The *sparse tail* starts at the earliest T such that **every** day from T to the end
   of the data has fewer than `SPARSE_DAY_FRACTION` (1/30) of a typical day's orders,
   or fewer than `SPARSE_DAY_FLOOR` (2) orders when a typical day has 10 or more (so a
   10% sample of Olist, ~21 orders a day, sees its tail of single orders too).
3. A run longer than `MAX_TAIL_DAYS` (12 weeks) is the business's real volume, not an
   incomplete extract, and is not a tail; nor is a run with fewer than 4 weeks of data
   before it. Shops with under ~10 orders a day only get a tail of empty days.
4. As-of = the day before the tail, else the day of the latest order.

On Olist (about 1,500 orders a week in mid-2018) a typical day has ~214 orders, so the
bar is ~7 orders: 2018-08-29 has 14 and is the last day over it; every later day has at
most 4 (25 orders from 2018-08-30 to 2018-10-17), hence as-of 2018-08-29 with a factor
of ~2 of margin on both sides. The UCI Online Retail data keeps normal volume to its last
day (2011-12-09), so as-of is that day, and December 2011 is a partial month.

A month is *partial* when the as-of date falls before its last day or the data starts
after its first day (`analytics.periods.month_is_partial`); charts mark partial months
and month-over-month comparisons leave them out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, func, select

from analytics.periods import end_of_day, month_is_partial
from storage import schema
from storage.store import current_watermark, get_meta

ORD = schema.orders

CURRENT_WITHIN_DAYS = 7
BASELINE_WEEKS = 12
MIN_BASELINE_WEEKS = 4
SPARSE_DAY_FRACTION = 1 / 30
SPARSE_DAY_FLOOR = 2.0
MAX_TAIL_DAYS = 7 * BASELINE_WEEKS
MODES = ("auto", "fixed", "today")


@dataclass(frozen=True)
class AsOf:
    """The as-of date and why it was chosen (see the module docstring for the rule)."""

    date: dt.date
    mode: str  # "auto" | "fixed" | "today"
    reason: str  # one sentence for users
    data_start: dt.date | None  # day of the earliest order in the store
    data_end: dt.date | None  # day of the latest order in the store
    tail_start: dt.date | None  # first day after as-of that holds orders left out
    tail_orders: int  # orders placed after the as-of date (left out of the analyses)
    partial_last_month: bool  # the as-of month is not complete

    def is_partial_month(self, month: str | dt.date) -> bool:
        """Whether `month` ('YYYY-MM' or any day in it) is only partly covered."""
        return month_is_partial(self.date, month, self.data_start)

    @property
    def last_complete_month(self) -> dt.date:
        """First day of the last month fully covered up to the as-of date."""
        first = self.date.replace(day=1)
        if not self.partial_last_month:
            return first
        return (first - dt.timedelta(days=1)).replace(day=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings), e.g. for the `meta` table."""
        return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AsOf:
        dates = ("date", "data_start", "data_end", "tail_start")
        return cls(**{
            k: (dt.date.fromisoformat(v) if k in dates and v else v) for k, v in data.items()
        })


def is_partial_month(as_of: AsOf, month: str | dt.date) -> bool:
    """Whether `month` is only partly covered by the data at `as_of` (charts mark it)."""
    return as_of.is_partial_month(month)


def resolve_as_of(
    engine: Engine, fixed: dt.date | None = None, today: dt.date | None = None
) -> AsOf:
    """The as-of date: `fixed` when given, today for current data, else the auto rule."""
    today = today or dt.date.today()
    with engine.connect() as conn:
        first, last = purchase_time_range(conn)
    data_start, data_end = _as_date(first), _as_date(last)

    if fixed is not None:
        tail = _orders_after(engine, fixed) if data_end and data_end > fixed else 0
        left_out = f"; {tail:,} later orders are left out" if tail else ""
        return _make(fixed, "fixed", f"as-of date fixed at {fixed}{left_out}",
                     data_start, data_end, fixed + dt.timedelta(days=1) if tail else None, tail)
    if data_end is None:
        return _make(today, "today", "the store has no orders yet, so the date is today",
                     None, None, None, 0)
    if data_end >= today - dt.timedelta(days=CURRENT_WITHIN_DAYS):
        reason = f"the data is current (latest order {data_end}), so the date is today"
        return _make(today, "today", reason, data_start, data_end, None, 0)

    since = max(data_start, data_end - dt.timedelta(days=MAX_TAIL_DAYS + 7 * BASELINE_WEEKS))
    counts = _daily_counts(engine, since, data_end)
    tail_start = sparse_tail_start(counts)
    if tail_start is None:
        return _make(data_end, "auto", f"the data ends on {data_end} (day of the latest order)",
                     data_start, data_end, None, 0)
    as_of = tail_start - dt.timedelta(days=1)
    tail = int(counts[counts.index >= tail_start].sum())
    reason = (f"last day of normal order volume; {tail_start} → {data_end} has only {tail:,} "
              f"orders (incomplete tail, left out)")
    return _make(as_of, "auto", reason, data_start, data_end, tail_start, tail)


def purchase_time_range(conn: Connection) -> tuple[Any, Any]:
    """The earliest and latest `orders.purchased_at` as the driver returns them (None, None
    without orders)."""
    # a min() and a max() in one SELECT make SQLite scan the whole index (0.5 s at a million
    # orders); each in a subquery of its own is read from one end of the index
    first = select(func.min(ORD.c.purchased_at)).scalar_subquery()
    last = select(func.max(ORD.c.purchased_at)).scalar_subquery()
    return tuple(conn.execute(select(first, last)).one())


def sparse_tail_start(counts: pd.Series) -> dt.date | None:
    """First day of the sparse tail of daily order counts, or None (rule: module docstring).

    `counts` holds one value per calendar day, in order (index: the dates).
    """
    values = counts.to_numpy(dtype=float)
    n = len(values)
    if n < 2:
        return None
    weekly = np.convolve(values, np.ones(7))[:n]  # order total of the 7 days ending each day
    weekly[:6] = np.nan  # windows reaching before the first day
    suffix_max = np.maximum.accumulate(values[::-1])[::-1]
    first = max(n - MAX_TAIL_DAYS, 1)
    for t in range(first, n):  # the earliest T wins: the longest sparse run
        ends = np.arange(t - 1, max(t - 1 - 7 * BASELINE_WEEKS, -1), -7)
        windows = weekly[ends]
        windows = windows[~np.isnan(windows)]
        if len(windows) < MIN_BASELINE_WEEKS:
            continue
        typical = np.median(windows) / 7
        # A day with one order is sparse beside a typical day of ten or more: without the
        # floor a small store (or a sample of a big one) never sees its tail.
        bar = max(SPARSE_DAY_FRACTION * typical, min(SPARSE_DAY_FLOOR, typical / 5))
        if suffix_max[t] < bar:
            if t == first and values[t - 1] < bar:
                return None  # the sparse run is longer than MAX_TAIL_DAYS: real volume
            return counts.index[t]
    return None


def stored_as_of(engine: Engine) -> AsOf | None:
    """The as-of of the last refresh (from `meta`), or None before the first refresh."""
    data = get_meta(engine, "as_of")
    return AsOf.from_dict(data) if data else None


def current_as_of(engine: Engine, fixed: dt.date | None = None,
                  today: dt.date | None = None) -> AsOf:
    """`resolve_as_of`'s answer, taken from the last refresh when it still holds: no load
    has finished since that refresh read the store, the refresh used the same rule
    (`fixed` or not, and the same date when fixed) and, for current data, it ran today.
    Saves the scan of the daily order counts (3 s at ten million orders) that resolving
    would repeat on data that has not changed."""
    stored = stored_as_of(engine)
    if stored is not None and _still_holds(engine, stored, fixed, today or dt.date.today()):
        return stored
    return resolve_as_of(engine, fixed=fixed, today=today)


def _still_holds(engine: Engine, stored: AsOf, fixed: dt.date | None, today: dt.date) -> bool:
    if fixed is not None:
        same_rule = stored.mode == "fixed" and stored.date == fixed
    else:
        same_rule = stored.mode == "auto" or (stored.mode == "today" and stored.date == today)
    if not same_rule:
        return False
    read = (get_meta(engine, "refresh") or {}).get("read") or {}
    return read.get("watermark") is not None and read["watermark"] == current_watermark(engine)


def _make(date: dt.date, mode: str, reason: str, data_start: dt.date | None,
          data_end: dt.date | None, tail_start: dt.date | None, tail_orders: int) -> AsOf:
    return AsOf(date, mode, reason, data_start, data_end, tail_start, tail_orders,
                partial_last_month=month_is_partial(date, date))


def _daily_counts(engine: Engine, since: dt.date, until: dt.date) -> pd.Series:
    """Orders placed per calendar day (any status), `since` to `until`, zero-filled."""
    days = [since + dt.timedelta(days=i) for i in range((until - since).days + 1)]
    # one count per day, each a range of the purchase-time index: SQLite counts its entries
    # without reading a row, where grouping by a day worked out from each order's time
    # (julianday of its text) took 1.3-1.6 s over the 2.9M orders of 169 days at 10M
    # orders, against 0.12-0.14 s
    counts = [select(func.count()).where(ORD.c.purchased_at >= dt.datetime.combine(day, dt.time.min),
                                         ORD.c.purchased_at < end_of_day(day)).scalar_subquery()
              for day in days]
    with engine.connect() as conn:
        found = conn.execute(select(*counts)).one() if counts else ()
    return pd.Series([int(n) for n in found], index=days, dtype="int64")


def _orders_after(engine: Engine, day: dt.date) -> int:
    with engine.connect() as conn:
        stmt = select(func.count()).where(ORD.c.purchased_at >= end_of_day(day))
        return int(conn.execute(stmt).scalar())


def _as_date(value: Any) -> dt.date | None:
    return None if value is None else pd.Timestamp(value).date()
