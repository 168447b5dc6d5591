"""The as-of date: the auto rule on sparse tails, partial months, fixed and today modes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from analytics_data import loaded_store, olist_raw
from sqlalchemy import Engine, event, text

from analytics.asof import (
    AsOf,
    current_as_of,
    is_partial_month,
    purchase_time_range,
    resolve_as_of,
    sparse_tail_start,
    stored_as_of,
)
from storage import schema
from storage.store import set_meta

D = dt.date


def days(start: D, counts: list[int]) -> dict[D, int]:
    return {start + dt.timedelta(days=i): n for i, n in enumerate(counts)}


def add_orders(engine: Engine, per_day: dict[D, int], status: str = "delivered") -> None:
    """`n` orders on each day (at 10:00, a minute apart), one customer each."""
    rows = []
    for day, n in per_day.items():
        for i in range(n):
            rows.append({
                "order_id": f"o{day:%Y%m%d}-{i}", "customer_id": f"c{day:%Y%m%d}-{i}",
                "purchased_at": dt.datetime.combine(day, dt.time(10, 0)) + dt.timedelta(minutes=i),
                "status": status, "items_value": 10.0, "freight_value": 0.0, "source": "test",
            })
    if rows:
        with engine.begin() as conn:
            conn.execute(schema.orders.insert(), rows)


# Twelve weeks at 90 orders a day (typical day 90, so the sparse bar is 90/30 = 3 orders),
# a run-down of 30, 9 and 4 orders (4 >= 3: still normal), then a tail of 2 + 1 + 2 orders.
NORMAL = days(D(2024, 1, 1), [90] * 84)  # 2024-01-01 .. 2024-03-24
RUNDOWN = {D(2024, 3, 25): 30, D(2024, 3, 26): 9, D(2024, 3, 27): 4}
TAIL = {D(2024, 3, 30): 2, D(2024, 4, 12): 1, D(2024, 5, 1): 2}
LATER = D(2024, 12, 1)  # a "today" long after the data


def test_auto_skips_a_sparse_tail(store: Engine) -> None:
    add_orders(store, NORMAL | RUNDOWN | TAIL)
    a = resolve_as_of(store, today=LATER)
    assert a.mode == "auto"
    assert a.date == D(2024, 3, 27)
    assert a.tail_start == D(2024, 3, 28)
    assert a.tail_orders == 5
    assert (a.data_start, a.data_end) == (D(2024, 1, 1), D(2024, 5, 1))
    assert "2024-03-28 → 2024-05-01 has only 5 orders" in a.reason
    assert a.partial_last_month
    assert a.is_partial_month("2024-03") and is_partial_month(a, D(2024, 3, 5))
    assert not a.is_partial_month("2024-02") and not a.is_partial_month("2024-01")
    assert a.last_complete_month == D(2024, 2, 1)


def test_canceled_orders_count_as_volume(default_store_url: str) -> None:
    """The tail's volume is orders placed, whatever became of them."""
    from storage.store import open_store

    engine = open_store(default_store_url)
    add_orders(engine, NORMAL | {D(2024, 3, 25): 30})
    add_orders(engine, {D(2024, 3, 26): 5}, status="canceled")  # 5 >= 3: a normal day
    add_orders(engine, {D(2024, 4, 20): 1})
    assert resolve_as_of(engine, today=LATER).date == D(2024, 3, 26)


def test_normal_volume_to_the_end_gives_the_last_day_and_a_partial_month(store: Engine) -> None:
    # UCI-like: ~20 orders a day, closed on Saturdays, data ending on Friday 2011-12-09
    per_day = {d: (0 if d.weekday() == 5 else 20)
               for d in (D(2011, 9, 1) + dt.timedelta(days=i) for i in range(100))}
    assert max(per_day) == D(2011, 12, 9)
    add_orders(store, per_day)
    a = resolve_as_of(store, today=D(2024, 1, 1))
    assert (a.mode, a.date, a.tail_start, a.tail_orders) == ("auto", D(2011, 12, 9), None, 0)
    assert a.partial_last_month
    assert a.is_partial_month("2011-12") and not a.is_partial_month("2011-11")
    assert a.is_partial_month("2011-09") is False  # data starts on the 1st
    assert a.last_complete_month == D(2011, 11, 1)


def test_a_month_ending_on_the_as_of_day_is_complete(default_store_url: str) -> None:
    from storage.store import open_store

    engine = open_store(default_store_url)
    add_orders(engine, days(D(2024, 1, 1), [5] * 60))  # to 2024-02-29
    a = resolve_as_of(engine, today=LATER)
    assert a.date == D(2024, 2, 29)
    assert not a.partial_last_month
    assert a.last_complete_month == D(2024, 2, 1)


def test_current_data_runs_as_of_today(store: Engine) -> None:
    add_orders(store, days(D(2024, 5, 1), [10] * 20))  # to 2024-05-20
    a = resolve_as_of(store, today=D(2024, 5, 25))
    assert (a.mode, a.date, a.data_end) == ("today", D(2024, 5, 25), D(2024, 5, 20))
    assert a.tail_start is None and a.tail_orders == 0
    # eight days later the data is historical again
    assert resolve_as_of(store, today=D(2024, 5, 28)).mode == "auto"


def test_fixed_date_counts_what_it_leaves_out(store: Engine) -> None:
    add_orders(store, days(D(2024, 1, 1), [3] * 10))
    a = resolve_as_of(store, fixed=D(2024, 1, 7), today=LATER)
    assert (a.mode, a.date, a.tail_start, a.tail_orders) == ("fixed", D(2024, 1, 7), D(2024, 1, 8), 9)
    assert "9 later orders" in a.reason
    b = resolve_as_of(store, fixed=D(2024, 2, 1), today=LATER)
    assert (b.tail_start, b.tail_orders) == (None, 0)


def test_empty_store_is_today(store: Engine) -> None:
    a = resolve_as_of(store, today=D(2024, 3, 10))
    assert (a.mode, a.date, a.data_start, a.data_end, a.tail_orders) == ("today", D(2024, 3, 10), None, None, 0)
    assert "no orders" in a.reason


def test_to_dict_round_trip_and_stored_as_of(store: Engine) -> None:
    add_orders(store, NORMAL | RUNDOWN | TAIL)
    a = resolve_as_of(store, today=LATER)
    assert AsOf.from_dict(a.to_dict()) == a
    assert stored_as_of(store) is None
    with store.begin() as conn:
        set_meta(conn, "as_of", a.to_dict())
    assert stored_as_of(store) == a


def _refreshed_with(engine: Engine, as_of: AsOf, watermark: int) -> None:
    """Meta as a refresh that read the store at `watermark` leaves it."""
    with engine.begin() as conn:
        set_meta(conn, "as_of", as_of.to_dict())
        set_meta(conn, "refresh", {"read": {"watermark": watermark}})


def _finish_a_load(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(schema.load_runs.insert().values(
            format="olist", path="x", started_at=dt.datetime(2024, 6, 1), status="ok"))


def test_current_as_of_reuses_the_refresh_until_data_changes(store: Engine) -> None:
    add_orders(store, NORMAL | RUNDOWN | TAIL)
    resolved = resolve_as_of(store, today=LATER)
    assert current_as_of(store, today=LATER) == resolved  # no refresh yet
    # a stored as-of that differs from what resolving gives shows which one is returned
    marked = AsOf.from_dict({**resolved.to_dict(), "reason": "from the refresh"})
    _refreshed_with(store, marked, watermark=0)
    assert current_as_of(store, today=LATER) == marked
    # another rule than the refresh's: resolved again
    fixed = current_as_of(store, fixed=D(2024, 2, 1), today=LATER)
    assert (fixed.mode, fixed.date) == ("fixed", D(2024, 2, 1))
    # a load finished since the refresh read the store: resolved again
    _finish_a_load(store)
    assert current_as_of(store, today=LATER) == resolved
    _refreshed_with(store, marked, watermark=1)
    assert current_as_of(store, today=LATER) == marked


def test_current_as_of_today_holds_only_on_its_day(store: Engine) -> None:
    add_orders(store, days(D(2024, 5, 1), [10] * 20))  # to 2024-05-20
    yesterday = resolve_as_of(store, today=D(2024, 5, 24))
    _refreshed_with(store, yesterday, watermark=0)
    assert current_as_of(store, today=D(2024, 5, 24)) == yesterday
    assert current_as_of(store, today=D(2024, 5, 25)).date == D(2024, 5, 25)
    # a refresh at a fixed date does not answer for the auto rule
    _refreshed_with(store, resolve_as_of(store, fixed=D(2024, 5, 10)), watermark=0)
    assert current_as_of(store, today=D(2024, 5, 24)).mode == "today"


# --- the tail rule on plain series -----------------------------------------------------


def series(start: D, counts: list[int]) -> pd.Series:
    return pd.Series(counts, index=[start + dt.timedelta(days=i) for i in range(len(counts))])


def test_tail_rule_edges() -> None:
    start = D(2024, 1, 1)
    normal = [90] * 84
    # a one-day tail: an extract taken just after midnight
    assert sparse_tail_start(series(start, normal + [1])) == start + dt.timedelta(days=84)
    # the last day at exactly the bar (90/30 = 3) is normal: "fewer than" the bar is sparse
    assert sparse_tail_start(series(start, normal + [3])) is None
    # a sparse run longer than 12 weeks is the business's real volume, not a tail
    assert sparse_tail_start(series(start, normal + ([1] + [0] * 4) * 18)) is None
    # ... but 12 weeks of it still is a tail
    run = ([1] + [0] * 5) * 14  # 84 days
    assert sparse_tail_start(series(start, normal + run)) == start + dt.timedelta(days=84)
    # small shops (3 orders a day) never get a tail: one order is not below 1/30 of a day
    assert sparse_tail_start(series(start, [3] * 84 + [0, 0, 1])) is None
    # under four weeks of history: no baseline, no tail
    assert sparse_tail_start(series(start, [90] * 20 + [1])) is None
    assert sparse_tail_start(series(start, [])) is None


def test_tail_rule_ignores_weekday_patterns() -> None:
    # weekends at 5% of weekdays must not look like a tail when the data ends on a Sunday
    week = [100] * 5 + [5, 5]
    counts = week * 12
    assert sparse_tail_start(series(D(2024, 1, 1), counts)) is None


# --- real data -------------------------------------------------------------------------


@pytest.mark.realdata
def test_olist_auto_as_of(tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = loaded_store(tmp_path_factory, "olist", "olist")
    a = resolve_as_of(engine, today=D(2025, 1, 1))
    # independently from the raw CSV: orders per day (any status)
    raw = olist_raw()["orders"]
    daily = raw["order_purchase_timestamp"].dt.normalize().value_counts().sort_index()
    daily = daily.reindex(pd.date_range(daily.index.min(), daily.index.max()), fill_value=0)
    last_busy = pd.Timestamp("2018-08-29")
    before = daily[:last_busy - pd.Timedelta(days=1)]
    weekly = [before.iloc[len(before) - 7 * (j + 1): len(before) - 7 * j].sum() for j in range(12)]
    bar = np.median(weekly) / 7 / 30
    assert daily[last_busy] >= bar  # 14 orders against a bar of ~7
    assert (daily[last_busy + pd.Timedelta(days=1):] < bar).all()  # at most 4 a day after
    tail = int(daily[last_busy + pd.Timedelta(days=1):].sum())

    assert (a.mode, a.date) == ("auto", D(2018, 8, 29))
    assert a.tail_start == D(2018, 8, 30)
    assert a.tail_orders == tail == 25
    assert (a.data_start, a.data_end) == (D(2016, 9, 4), D(2018, 10, 17))
    assert a.partial_last_month and a.last_complete_month == D(2018, 7, 1)


def test_the_purchase_range_is_read_from_the_ends_of_the_index(store: Engine) -> None:
    with store.connect() as conn:
        assert purchase_time_range(conn) == (None, None)
    add_orders(store, {D(2024, 3, 2): 3, D(2024, 1, 5): 2, D(2024, 2, 9): 1})
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_rest) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(store, "before_cursor_execute", record)
    try:
        with store.connect() as conn:
            first, last = purchase_time_range(conn)
    finally:
        event.remove(store, "before_cursor_execute", record)
    assert (pd.Timestamp(first), pd.Timestamp(last)) == (pd.Timestamp("2024-01-05 10:00"),
                                                         pd.Timestamp("2024-03-02 10:02"))
    if store.dialect.name == "sqlite":  # one min() and one max() in a SELECT would scan it all
        with store.connect() as conn:
            plan = [row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + statements[-1]))]
        assert sum("SEARCH orders USING COVERING INDEX ix_orders_purchased" in p for p in plan) == 2, plan
        assert not any(p.startswith("SCAN orders") for p in plan), plan


def test_daily_counts_cut_at_midnight_and_fill_empty_days(store: Engine) -> None:
    """Each day's count is its own range of the purchase-time index: orders at 00:00:00 and
    at 23:59:59.999999 fall on their own day, days without orders count 0, and SQLite
    counts index entries without reading the orders' rows."""
    from analytics.asof import _daily_counts

    times = ["2024-03-01 00:00:00", "2024-03-01 23:59:59.999999", "2024-03-02 00:00:00",
             "2024-03-04 12:00:00", "2024-03-04 12:00:00.5", "2024-02-29 23:59:59", "2024-03-05 00:00:00"]
    with store.begin() as conn:
        conn.execute(schema.orders.insert(), [
            {"order_id": f"o{i}", "customer_id": f"c{i}", "purchased_at": pd.Timestamp(t).to_pydatetime(),
             "status": "delivered", "items_value": 10.0, "freight_value": 0.0, "source": "test"}
            for i, t in enumerate(times)])
    statements: list[tuple] = []

    def record(_conn, _cursor, statement, parameters, *_rest) -> None:  # noqa: ANN001
        statements.append((statement, parameters))

    event.listen(store, "before_cursor_execute", record)
    try:
        counts = _daily_counts(store, D(2024, 3, 1), D(2024, 3, 4))
    finally:
        event.remove(store, "before_cursor_execute", record)
    expected = pd.Series(pd.to_datetime(times, format="ISO8601")).dt.date.value_counts()
    assert list(counts.index) == [D(2024, 3, 1), D(2024, 3, 2), D(2024, 3, 3), D(2024, 3, 4)]
    assert counts.tolist() == [int(expected.get(d, 0)) for d in counts.index] == [2, 1, 0, 2]
    if store.dialect.name == "sqlite":
        with store.connect() as conn:
            statement, parameters = statements[-1]
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
        assert not any(p.startswith("SCAN orders") for p in plan), plan
        assert any("COVERING INDEX ix_orders_purchased" in p for p in plan), plan
