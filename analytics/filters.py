"""The scope every analysis shares: purchases on or before the as-of date, for one place.

- A *purchase* is an order whose status is not in `NON_PURCHASE_STATUSES`.
- "On or before as_of" means `purchased_at < as_of + 1 day` (timestamps are naive).
- A place filters on the customer's state or region (`customers` table).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import ColumnElement, Engine, Select, Table, and_, func, null, select, true

from analytics.errors import NotAvailable
from analytics.periods import end_of_day
from storage import schema
from storage.geography import ALL, Place
from storage.store import NON_PURCHASE_STATUSES, get_meta

ORD = schema.orders
CUS = schema.customers


def is_purchase(orders: Table = ORD) -> ColumnElement[bool]:
    return orders.c.status.not_in(NON_PURCHASE_STATUSES)


def place_column(place: Place, table: Table = CUS) -> ColumnElement | None:
    """`table.state` or `table.region` for a state/region place, None for ALL."""
    if place.is_all:
        return None
    if place.kind not in ("state", "region"):
        raise ValueError(f"unknown place kind {place.kind!r}")
    return table.c[place.kind]


def in_place(place: Place, customer_id: ColumnElement) -> ColumnElement[bool]:
    """`customer_id` belongs to a customer living in `place` (always true for ALL)."""
    col = place_column(place)
    if col is None:
        return true()
    return customer_id.in_(select(CUS.c.customer_id).where(col == place.value))


def purchase_scope(as_of: dt.date, place: Place = ALL, orders: Table = ORD) -> ColumnElement[bool]:
    """WHERE clause: purchases placed on or before `as_of` by customers in `place`."""
    clauses = [is_purchase(orders), orders.c.purchased_at < end_of_day(as_of)]
    if not place.is_all:
        clauses.append(in_place(place, orders.c.customer_id))
    return and_(*clauses)


def scoped_purchases(as_of: dt.date, place: Place = ALL) -> Select:
    """SELECT order_id, customer_id, purchased_at, revenue of the purchases in scope."""
    return select(
        ORD.c.order_id,
        ORD.c.customer_id,
        ORD.c.purchased_at,
        (ORD.c.items_value + ORD.c.freight_value).label("revenue"),
    ).where(purchase_scope(as_of, place))


def features_ready(engine: Engine, as_of: dt.date) -> bool:
    """Whether `customer_features` holds a refresh made for exactly `as_of`."""
    with engine.connect() as conn:
        # a refresh replaces every feature row with its own as-of date, so one row tells it
        # (a count, min and max scanned the million rows: 0.3 s on a cold page cache at 10M orders)
        value = conn.execute(select(schema.customer_features.c.as_of).limit(1)).scalar()
    return _as_date(value) == as_of


CUSTOMER_FACTS_META = "customer_facts"  # meta key: agg_customers was built (with the scores)


def customer_facts(engine: Engine, place: Place = ALL, segment: str | None = None) -> pd.DataFrame | None:
    """The `agg_customers` rows in a place (and RFM segment), typed; None before a refresh
    built them. They always match the stored features and scores: the refresh writes all
    three in one transaction, and only it writes scores."""
    if get_meta(engine, CUSTOMER_FACTS_META) is None:
        return None
    A = schema.agg_customers
    stmt = select(A)
    if not place.is_all:
        stmt = stmt.where(A.c[place.kind] == place.value)
    if segment:
        stmt = stmt.where(A.c.segment == segment)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=[c.name for c in A.columns])
    # a column of NULLs alone would come back as objects
    return frame.astype({"customers": "int64", "buyers": "int64", "orders": "int64", "repeaters": "int64",
                         "revenue": float, "value_at_risk": float, "clv": float, "clv_customers": "int64"})


FACTS_META = "facts"  # meta key: as-of date and parameters of the agg_* tables


def facts_meta(engine: Engine, as_of: dt.date) -> dict | None:
    """Meta "facts" when the refresh's answer facts (`agg_*` tables) were built for exactly
    `as_of`, else None (no refresh yet, or one made for another date)."""
    value = get_meta(engine, FACTS_META)
    if not isinstance(value, dict) or value.get("as_of") != as_of.isoformat():
        return None
    return value


FACTS_ALL_KEY = "*"  # place_value of the ("all", …) rows of per-place facts


def where_place(stmt: Select, table: Table, place: Place) -> Select:
    """`stmt` restricted to the rows of `table` (with state/region columns) in `place`."""
    col = place_column(place, table)
    return stmt if col is None else stmt.where(col == place.value)


def customer_totals(
    engine: Engine, as_of: dt.date, place: Place = ALL, *, use_features: bool = True,
    geography: bool = True,
):
    """Per purchasing customer: customer_id, state, region, orders, revenue, first_purchase,
    last_purchase — as a subquery.

    Reads the precomputed `customer_features` when a refresh exists for `as_of` (its
    orders/revenue count purchases only, revenue = items + freight); otherwise aggregates
    `orders` (`geography=False` skips the join to customers and leaves state/region NULL).
    """
    if use_features and features_ready(engine, as_of):
        F = schema.customer_features
        col = place_column(place, F)
        stmt = select(
            F.c.customer_id, F.c.state, F.c.region, F.c.orders, F.c.revenue,
            F.c.first_purchase, F.c.last_purchase,
        ).where(F.c.as_of == as_of, F.c.orders > 0)
        if col is not None:
            stmt = stmt.where(col == place.value)
        return stmt.subquery("totals")
    per_customer = (
        select(
            ORD.c.customer_id,
            func.count().label("orders"),
            func.sum(ORD.c.items_value + ORD.c.freight_value).label("revenue"),
            func.min(ORD.c.purchased_at).label("first_purchase"),
            func.max(ORD.c.purchased_at).label("last_purchase"),
        )
        .where(purchase_scope(as_of, place))
        .group_by(ORD.c.customer_id)
        .subquery("per_customer")
    )
    if not geography:  # no join to customers; state and region are NULL
        pc = per_customer.c
        return select(
            pc.customer_id, null().label("state"), null().label("region"), pc.orders,
            pc.revenue, pc.first_purchase, pc.last_purchase,
        ).subquery("totals")
    return (
        select(
            per_customer.c.customer_id, CUS.c.state, CUS.c.region, per_customer.c.orders,
            per_customer.c.revenue, per_customer.c.first_purchase, per_customer.c.last_purchase,
        )
        .select_from(per_customer.outerjoin(CUS, CUS.c.customer_id == per_customer.c.customer_id))
        .subquery("totals")
    )


def has_rows(engine: Engine, stmt: Select) -> bool:
    with engine.connect() as conn:
        return conn.execute(stmt.limit(1)).first() is not None


def data_sources(engine: Engine) -> str:
    """The `source` names of the loaded orders, for messages ("online-retail")."""
    with engine.connect() as conn:
        names = conn.execute(select(ORD.c.source).distinct()).scalars().all()
    return ", ".join(sorted(n for n in names if n)) or "the store"


def require(engine: Engine, stmt: Select, what: str) -> None:
    """Raise NotAvailable("<sources> has no <what>") unless `stmt` returns a row (store-wide)."""
    if not has_rows(engine, stmt):
        raise NotAvailable(f"The loaded data ({data_sources(engine)}) has no {what}.")


def first_purchase_date(engine: Engine) -> dt.date | None:
    """Date of the earliest order in the store (any status, any place): where the data starts."""
    with engine.connect() as conn:
        first = conn.execute(select(func.min(ORD.c.purchased_at))).scalar()
    return _as_date(first)


def _as_date(value) -> dt.date | None:  # noqa: ANN001
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.datetime.fromisoformat(str(value)).date()


def read_frame(engine: Engine, stmt: Select) -> pd.DataFrame:
    """Run `stmt` and return its rows as a DataFrame (columns named after the labels)."""
    with engine.connect() as conn:
        result = conn.execute(stmt)
        columns = list(result.keys())
        # Plain tuples: building a DataFrame from Row objects is ten times slower.
        return pd.DataFrame([tuple(row) for row in result], columns=columns)


def scores_as_of(engine: Engine) -> dt.date | None:
    """The as-of date of the stored churn and segment scores (None when there are none)."""
    with engine.connect() as conn:
        # a refresh replaces every score row with its own as-of date, so one row tells it
        # (a count or max scanned the million scores at 10M orders: 1-4 s on a cold page cache)
        value = conn.execute(select(schema.customer_scores.c.as_of).limit(1)).scalar()
    return _as_date(value)
