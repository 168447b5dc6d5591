"""The calendar SQL expressions agree with Python on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from analytics.periods import (
    day_number,
    elapsed_days,
    hour_of,
    index_of_month,
    index_of_week,
    month_index,
    month_key,
    period_end,
    period_label,
    week_index,
    weekday,
)
from storage import schema

MOMENTS = [
    "2016-09-04 21:15:19", "2017-01-01 00:00:00", "2017-12-31 23:59:59", "2018-02-28 12:00:00",
    "2020-02-29 06:30:00", "2024-01-01 00:30:00", "2024-01-07 23:00:00", "2024-01-08 00:00:01",
    "2011-12-09 12:50:00",
]


def test_sql_calendar_matches_python(store) -> None:  # noqa: ANN001
    o = schema.orders
    with store.begin() as conn:
        for i, text in enumerate(MOMENTS):
            when = dt.datetime.fromisoformat(text)
            conn.execute(o.insert().values(
                order_id=str(i), customer_id="c", purchased_at=when, status="delivered",
                delivered_at=when + dt.timedelta(days=2, hours=6), estimated_delivery_at=when,
                items_value=1, freight_value=0, n_items=1, source="t",
            ))
        rows = conn.execute(select(
            o.c.order_id, month_key(o.c.purchased_at), month_index(o.c.purchased_at),
            week_index(o.c.purchased_at), weekday(o.c.purchased_at), hour_of(o.c.purchased_at),
            day_number(o.c.purchased_at), elapsed_days(o.c.delivered_at, o.c.purchased_at),
        )).all()
    assert len(rows) == len(MOMENTS)
    for oid, mkey, midx, widx, wd, hour, day, elapsed in rows:
        when = dt.datetime.fromisoformat(MOMENTS[int(oid)])
        assert mkey == when.strftime("%Y-%m")
        assert midx == index_of_month(when.date())
        assert widx == index_of_week(when.date())
        assert wd == when.weekday() and hour == when.hour
        assert day == (when.date() - dt.date(1970, 1, 1)).days
        assert float(elapsed) == pytest.approx(2.25, abs=1e-6)


def test_period_labels_and_ends() -> None:
    assert period_label("week", index_of_week(dt.date(2024, 1, 7))) == "2024-01-01"  # a Sunday
    assert period_end("week", index_of_week(dt.date(2024, 1, 1))) == dt.date(2024, 1, 7)
    assert period_end("month", index_of_month(dt.date(2024, 2, 10))) == dt.date(2024, 2, 29)
    assert period_label("month", index_of_month(dt.date(2017, 12, 31))) == "2017-12"
