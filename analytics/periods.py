"""Calendar buckets as SQL expressions that compile on SQLite and PostgreSQL, and the
Python side of the same calendar (labels, period ends, partial months).

Periods are numbered so that SQL can subtract them: month index = year*12 + month-1,
week index = whole weeks since Monday 1970-01-05 (weeks start on Monday).
"""

from __future__ import annotations

import calendar
import datetime as dt

from sqlalchemy import Float, Integer, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

EPOCH_MONDAY = dt.date(1970, 1, 5)
_JULIAN_EPOCH_MONDAY = 2440591.5  # julianday('1970-01-05')
_JULIAN_EPOCH = 2440587.5  # julianday('1970-01-01')
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class _Unary(FunctionElement):
    inherit_cache = True

    @property
    def arg(self):  # noqa: ANN201
        return list(self.clauses)[0]


class month_key(_Unary):  # noqa: N801 - reads like a SQL function
    """'YYYY-MM' of a timestamp."""

    type = String()
    inherit_cache = True
    name = "month_key"


class month_index(_Unary):  # noqa: N801
    """year*12 + month-1 of a timestamp (consecutive months differ by 1)."""

    type = Integer()
    inherit_cache = True
    name = "month_index"


class week_index(_Unary):  # noqa: N801
    """Whole weeks (Monday-based) since 1970-01-05."""

    type = Integer()
    inherit_cache = True
    name = "week_index"


class weekday(_Unary):  # noqa: N801
    """Day of week, Monday = 0 … Sunday = 6."""

    type = Integer()
    inherit_cache = True
    name = "weekday"


class hour_of(_Unary):  # noqa: N801
    """Hour of day 0–23."""

    type = Integer()
    inherit_cache = True
    name = "hour_of"


class day_number(_Unary):  # noqa: N801
    """Calendar day as an integer (days since 1970-01-01); differences are whole days."""

    type = Integer()
    inherit_cache = True
    name = "day_number"


class elapsed_days(FunctionElement):  # noqa: N801
    """(later − earlier) in fractional days."""

    type = Float()
    inherit_cache = True
    name = "elapsed_days"


# --- SQLite ------------------------------------------------------------------------


@compiles(month_key, "sqlite")
def _month_key_sqlite(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"strftime('%Y-%m', {compiler.process(el.arg, **kw)})"


@compiles(month_index, "sqlite")
def _month_index_sqlite(el, compiler, **kw):  # noqa: ANN001, ANN202
    x = compiler.process(el.arg, **kw)
    return (
        f"(CAST(strftime('%Y', {x}) AS INTEGER) * 12 "
        f"+ CAST(strftime('%m', {x}) AS INTEGER) - 1)"
    )


@compiles(week_index, "sqlite")
def _week_index_sqlite(el, compiler, **kw):  # noqa: ANN001, ANN202
    x = compiler.process(el.arg, **kw)
    return f"(CAST((julianday(date({x})) - {_JULIAN_EPOCH_MONDAY}) AS INTEGER) / 7)"


@compiles(weekday, "sqlite")
def _weekday_sqlite(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"((CAST(strftime('%w', {compiler.process(el.arg, **kw)}) AS INTEGER) + 6) % 7)"


@compiles(hour_of, "sqlite")
def _hour_sqlite(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"CAST(strftime('%H', {compiler.process(el.arg, **kw)}) AS INTEGER)"


@compiles(day_number, "sqlite")
def _day_number_sqlite(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"CAST(julianday(date({compiler.process(el.arg, **kw)})) - {_JULIAN_EPOCH} AS INTEGER)"


@compiles(elapsed_days, "sqlite")
def _elapsed_sqlite(el, compiler, **kw):  # noqa: ANN001, ANN202
    later, earlier = (compiler.process(c, **kw) for c in el.clauses)
    return f"(julianday({later}) - julianday({earlier}))"


# --- PostgreSQL (and the default for other dialects) --------------------------------


@compiles(month_key)
def _month_key_pg(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"to_char({compiler.process(el.arg, **kw)}, 'YYYY-MM')"


@compiles(month_index)
def _month_index_pg(el, compiler, **kw):  # noqa: ANN001, ANN202
    x = compiler.process(el.arg, **kw)
    return (
        f"(CAST(EXTRACT(YEAR FROM {x}) AS INTEGER) * 12 "
        f"+ CAST(EXTRACT(MONTH FROM {x}) AS INTEGER) - 1)"
    )


@compiles(week_index)
def _week_index_pg(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"((CAST({compiler.process(el.arg, **kw)} AS DATE) - DATE '1970-01-05') / 7)"


@compiles(weekday)
def _weekday_pg(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"(CAST(EXTRACT(ISODOW FROM {compiler.process(el.arg, **kw)}) AS INTEGER) - 1)"


@compiles(hour_of)
def _hour_pg(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"CAST(EXTRACT(HOUR FROM {compiler.process(el.arg, **kw)}) AS INTEGER)"


@compiles(day_number)
def _day_number_pg(el, compiler, **kw):  # noqa: ANN001, ANN202
    return f"(CAST({compiler.process(el.arg, **kw)} AS DATE) - DATE '1970-01-01')"


@compiles(elapsed_days)
def _elapsed_pg(el, compiler, **kw):  # noqa: ANN001, ANN202
    later, earlier = (compiler.process(c, **kw) for c in el.clauses)
    return f"(EXTRACT(EPOCH FROM ({later} - {earlier})) / 86400.0)"


# --- the same calendar in Python -----------------------------------------------------


def end_of_day(day: dt.date) -> dt.datetime:
    """The exclusive upper bound of `day`: midnight at the start of the next day."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min)


def month_of_index(index: int) -> dt.date:
    """First day of the month with this month index."""
    return dt.date(index // 12, index % 12 + 1, 1)


def index_of_month(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def week_of_index(index: int) -> dt.date:
    """The Monday starting the week with this week index."""
    return EPOCH_MONDAY + dt.timedelta(weeks=index)


def index_of_week(day: dt.date) -> int:
    return (day - EPOCH_MONDAY).days // 7


def period_start(period: str, index: int) -> dt.date:
    return month_of_index(index) if period == "month" else week_of_index(index)


def period_end(period: str, index: int) -> dt.date:
    """Last day of the month/week with this index."""
    if period == "month":
        first = month_of_index(index)
        return first.replace(day=calendar.monthrange(first.year, first.month)[1])
    return week_of_index(index) + dt.timedelta(days=6)


def period_index(period: str, day: dt.date) -> int:
    return index_of_month(day) if period == "month" else index_of_week(day)


def period_label(period: str, index: int) -> str:
    """'2017-01' for a month, '2017-01-02' (its Monday) for a week."""
    start = period_start(period, index)
    return start.strftime("%Y-%m") if period == "month" else start.isoformat()


def month_range(start: dt.date, end: dt.date) -> list[str]:
    """'YYYY-MM' of every month from `start`'s to `end`'s, both included."""
    return [
        month_of_index(i).strftime("%Y-%m")
        for i in range(index_of_month(start), index_of_month(end) + 1)
    ]


def month_is_partial(as_of: dt.date, month: str | dt.date, data_start: dt.date | None = None) -> bool:
    """Whether `month` ('YYYY-MM' or any day in it) is only partly covered by the data.

    A month is partial when `as_of` falls before its last day, or when the data
    starts after its first day (`data_start`, the first day with data).
    """
    first = dt.date.fromisoformat(month + "-01") if isinstance(month, str) else month.replace(day=1)
    last = period_end("month", index_of_month(first))
    if as_of < last:
        return True
    return data_start is not None and first < data_start <= last
