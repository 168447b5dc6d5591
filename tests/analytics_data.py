"""Data for the analytics tests: a builder for small hand-made stores, and the full Olist
and UCI Online Retail loaded once per test run (plus their raw CSVs, for computing
expected figures independently with plain pandas)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
from conftest import copy_store_url, data_path, shared_store_url
from sqlalchemy import Engine

from storage import schema
from storage.geography import region_of_state
from storage.store import open_store

AS_OF_OLIST = dt.date(2018, 8, 29)  # what the `auto` rule picks for Olist
AS_OF_UCI = dt.date(2011, 12, 9)


def ts(text: str) -> dt.datetime:
    """'2024-01-01 10:00' → datetime (date only → midnight)."""
    return dt.datetime.fromisoformat(text)


class Shop:
    """Writes canonical rows straight into an (empty, migrated) store."""

    def __init__(self, engine: Engine, source: str = "test"):
        self.engine = engine
        self.source = source

    def customer(self, customer_id: str, state: str | None = "SP", region: str | None = None) -> Shop:
        region = region or region_of_state(state) or state
        with self.engine.begin() as conn:
            conn.execute(schema.customers.insert().values(
                customer_id=customer_id, city="x", state=state, region=region,
                country="BR", source=self.source,
            ))
        return self

    def order(
        self,
        order_id: str,
        customer_id: str,
        purchased_at: str,
        items: Sequence[tuple[str | None, float, float]] = (),
        *,
        status: str = "delivered",
        delivered: str | None = None,
        estimated: str | None = None,
        payments: Iterable[tuple[str, int, float]] = (),
        reviews: Iterable[tuple[int, str]] = (),
    ) -> Shop:
        """`items`: (category, price, freight); `payments`: (method, installments, value);
        `reviews`: (score, created date)."""
        items = list(items)
        with self.engine.begin() as conn:
            conn.execute(schema.orders.insert().values(
                order_id=order_id, customer_id=customer_id, purchased_at=ts(purchased_at),
                status=status,
                delivered_at=ts(delivered) if delivered else None,
                estimated_delivery_at=ts(estimated) if estimated else None,
                items_value=sum(p for _, p, _ in items),
                freight_value=sum(f for _, _, f in items),
                n_items=len(items), source=self.source,
            ))
            for seq, (category, price, freight) in enumerate(items, 1):
                conn.execute(schema.order_items.insert().values(
                    order_id=order_id, item_seq=seq, product_id=f"p-{category}",
                    category=category, seller_id="s", price=price, freight_value=freight,
                ))
            for seq, (method, installments, value) in enumerate(payments, 1):
                conn.execute(schema.payments.insert().values(
                    order_id=order_id, seq=seq, method=method, installments=installments, value=value,
                ))
            for n, (score, created) in enumerate(reviews, 1):
                conn.execute(schema.reviews.insert().values(
                    review_id=f"r-{order_id}-{n}", order_id=order_id, score=score, created_at=ts(created),
                ))
        return self


AS_OF_SHOP = dt.date(2024, 3, 20)  # as-of date of `build_shop`: March is partial


def build_shop(engine) -> None:  # noqa: ANN001
    """The store most hand-worked tests use: seven buying customers in six states, 2024-01
    to 2024-03, with canceled orders, an order after AS_OF_SHOP and late reviews (the
    arithmetic is in test_kpis and test_finance)."""
    s = Shop(engine)
    for cid, state in [("A", "SP"), ("B", "SP"), ("C", "RJ"), ("D", "RS"), ("E", "AM"),
                       ("F", "MG"), ("G", "BA"), ("H", "PE")]:
        s.customer(cid, state)
    s.order("o1", "A", "2024-01-01 00:30", [("toys", 100, 10)], reviews=[(5, "2024-01-15")])
    s.order("o2", "A", "2024-02-05 15:00", [("toys", 50, 5)])
    s.order("o3", "B", "2024-01-20 10:30", [("books", 200, 20)], reviews=[(3, "2024-01-25")])
    s.order("o4", "C", "2024-02-14 09:00", [("books", 30, 0), ("toys", 20, 10)])
    s.order("o5", "C", "2024-03-02 12:00", [("toys", 999, 0)], status="canceled",
            reviews=[(1, "2024-03-03")])
    s.order("o6", "D", "2024-03-15 18:00", [("garden", 40, 4)], reviews=[(4, "2024-03-25")])
    s.order("o7", "E", "2024-02-01 10:00", [("toys", 10, 0)], status="canceled")
    s.order("o8", "B", "2024-04-02 10:00", [("books", 500, 0)])  # after as_of
    s.order("o9", "F", "2024-03-05 11:00", [("garden", 10, 5)])
    s.order("o10", "G", "2024-03-06 11:00", [("toys", 5, 5)])
    s.order("o11", "H", "2024-03-07 11:00", [("books", 1, 0)])


# --- the real datasets --------------------------------------------------------------------

_WORKING: dict[str, str] = {}


def loaded_store_master(fmt: str, folder: str) -> str:
    """URL of the run's default store holding the whole dataset (built once per test run,
    shared by the xdist workers): copy it (`conftest.copy_store`), never open it."""
    path = data_path(folder)
    try:
        from storage.loaders import load_path
    except ImportError as exc:  # the loader is written in another issue
        import pytest

        pytest.skip(f"storage.loaders.load_path is not available yet ({exc})")
    return shared_store_url(f"real-{fmt}", lambda engine: load_path(engine, path, fmt))


def loaded_store(tmp_path_factory, fmt: str, folder: str) -> Engine:  # noqa: ANN001
    """An Engine on this test process's copy of the default store holding the whole dataset
    (a SQLite file, or a PostgreSQL database when the run has PULSE_DATABASE_URL). Tests
    only read it; one that writes takes its own copy (`conftest.copy_store`)."""
    if fmt not in _WORKING:
        master = loaded_store_master(fmt, folder)
        _WORKING[fmt] = copy_store_url(master, tmp_path_factory.mktemp(f"real-{fmt}"))
    return open_store(_WORKING[fmt])


@functools.cache
def olist_raw() -> dict[str, pd.DataFrame]:
    """The raw Olist CSVs (orders, customers, items, payments, reviews) as published."""
    folder: Path = data_path("olist")
    return {
        "orders": pd.read_csv(
            folder / "olist_orders_dataset.csv.xz",
            parse_dates=["order_purchase_timestamp", "order_delivered_customer_date",
                         "order_estimated_delivery_date"],
        ),
        "customers": pd.read_csv(folder / "olist_customers_dataset.csv.xz", dtype=str),
        "items": pd.read_csv(folder / "olist_order_items_dataset.csv.xz"),
        "payments": pd.read_csv(folder / "olist_order_payments_dataset.csv.gz"),
        "reviews": pd.read_csv(
            folder / "olist_order_reviews_dataset.partial.csv.xz", parse_dates=["review_creation_date"]
        ),
    }


@functools.cache
def olist_purchases() -> pd.DataFrame:
    """Olist purchases up to AS_OF_OLIST, one row per order: order_id, person, purchased_at,
    revenue (Σ item price + freight), delivered/estimated dates, the person's state."""
    raw = olist_raw()
    o = raw["orders"].merge(raw["customers"], on="customer_id")
    o = o[~o["order_status"].isin(["canceled", "unavailable"])]
    o = o[o["order_purchase_timestamp"] < pd.Timestamp(AS_OF_OLIST + dt.timedelta(days=1))]
    items = raw["items"].assign(revenue=raw["items"]["price"] + raw["items"]["freight_value"])
    revenue = items.groupby("order_id")["revenue"].sum()
    o = o.assign(revenue=o["order_id"].map(revenue).fillna(0.0))
    return o.rename(columns={"customer_unique_id": "person"})


def person_state(raw: dict[str, pd.DataFrame]) -> pd.Series:
    """person -> state: the state on the person's most recent order (a few people moved)."""
    o = raw["orders"].merge(raw["customers"], on="customer_id")
    last = o.sort_values(["order_purchase_timestamp", "order_id"]).groupby("customer_unique_id").last()
    return last["customer_state"]


@functools.cache
def uci_purchases() -> pd.DataFrame:
    """UCI Online Retail purchase lines up to AS_OF_UCI, cleaned as the loader documents:
    a CustomerID, not an exact duplicate row, price > 0, quantity > 0, an invoice that
    is not a cancellation (C…), one customer per invoice; `value` = Quantity × UnitPrice."""
    raw = pd.read_csv(
        data_path("online-retail", "online_retail.csv.xz"),
        dtype={"InvoiceNo": str, "StockCode": str}, parse_dates=["InvoiceDate"],
    )
    lines = raw[raw["CustomerID"].notna()]
    lines = lines[~lines.duplicated(keep="first")]
    lines = lines[(lines["UnitPrice"] > 0) & (lines["Quantity"] > 0)]
    lines = lines[~lines["InvoiceNo"].str.startswith("C")]
    owner = lines.groupby("InvoiceNo")["CustomerID"].transform("first")
    lines = lines[lines["CustomerID"] == owner]
    lines = lines[lines["InvoiceDate"] < pd.Timestamp(AS_OF_UCI + dt.timedelta(days=1))]
    return lines.assign(value=lines["Quantity"] * lines["UnitPrice"])
