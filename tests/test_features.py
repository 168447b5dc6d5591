"""Customer features: hand-worked values, no look-ahead (a store cut at the as-of date
gives the same features), and the real Olist data against plain pandas on the raw CSVs."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analytics_data import Shop, loaded_store, olist_purchases, olist_raw, person_state
from conftest import copy_store, new_store
from sqlalchemy import Engine, text

from analytics.features import FEATURE_COLUMNS, build_features
from storage import schema
from storage.store import open_store

AS_OF = dt.date(2024, 3, 31)


def hand_made(engine: Engine) -> None:
    shop = Shop(engine)
    for cid, state in (("A", "SP"), ("B", "RJ"), ("C", "MG"), ("D", "SP"), ("E", "BA")):
        shop.customer(cid, state)
    shop.order("a1", "A", "2024-01-10 10:00", [("toys", 100, 10), ("toys", 50, 5), ("books", 30, 0)],
               delivered="2024-01-20 15:00", estimated="2024-01-20",  # on the estimated day: on time
               payments=[("credit_card", 3, 150), ("voucher", 1, 45)], reviews=[(4, "2024-01-21")])
    shop.order("a2", "A", "2024-03-01 12:00", [("books", 20, 5)],
               delivered="2024-03-10 09:00", estimated="2024-03-08",  # late
               payments=[("credit_card", 1, 25)], reviews=[(2, "2024-03-11")])
    shop.order("a3", "A", "2024-03-20 08:00", [("toys", 999, 0)], status="canceled")
    shop.order("a4", "A", "2024-04-05 08:00", [("books", 500, 0)])  # after as-of
    # on the as-of day, late evening; review only after as-of; nothing delivered
    shop.order("b1", "B", "2024-03-31 23:30", [(None, 40, 0)], status="shipped",
               estimated="2024-04-10", reviews=[(5, "2024-04-02")])
    shop.order("c1", "C", "2024-02-01 10:00", [("toys", 10, 1)], status="canceled")
    shop.order("c2", "C", "2024-02-02 10:00", [("toys", 10, 1)], status="unavailable")
    shop.order("d1", "D", "2024-04-01 00:00", [("toys", 10, 1)])  # first second after as-of
    shop.order("e1", "E", "2024-02-01 10:00", [("garden", 60, 6)],
               delivered="2024-04-03 10:00", estimated="2024-02-10")  # delivered after as-of


def test_hand_worked_features(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    hand_made(engine)
    f = build_features(engine, AS_OF).set_index("customer_id")
    assert list(f.reset_index().columns) == list(FEATURE_COLUMNS)
    assert list(f.index) == ["A", "B", "E"]  # C only canceled, D only after as-of

    a = f.loc["A"]
    assert a["orders"] == 2
    assert a["revenue"] == pytest.approx(220.0)  # 195 + 25
    assert a["avg_ticket"] == pytest.approx(110.0)
    assert a["items"] == 4
    assert a["categories"] == 2
    assert a["top_category"] == "books"  # 2 toys, 2 books: the tie goes alphabetically
    assert a["avg_installments"] == pytest.approx(2.0)  # max per order: 3 and 1
    assert a["late_share"] == pytest.approx(0.5)
    assert a["avg_review"] == pytest.approx(3.0)
    assert (a["state"], a["region"]) == ("SP", "Sudeste")
    assert a["tenure_days"] == 81 and a["recency_days"] == 30
    assert a["first_order_value"] == pytest.approx(195.0)
    assert a["freight"] == pytest.approx(20.0)
    assert a["first_purchase"] == pd.Timestamp("2024-01-10 10:00")
    assert a["last_purchase"] == pd.Timestamp("2024-03-01 12:00")
    assert a["as_of"] == AS_OF

    b = f.loc["B"]
    assert (b["orders"], b["revenue"], b["items"], b["categories"]) == (1, 40.0, 1.0, 0)
    assert b["top_category"] is None or pd.isna(b["top_category"])
    assert math.isnan(b["avg_installments"]) and math.isnan(b["late_share"]) and math.isnan(b["avg_review"])
    assert (b["recency_days"], b["tenure_days"]) == (0, 0)
    assert (b["state"], b["region"]) == ("RJ", "Sudeste")

    assert math.isnan(f.loc["E", "late_share"])  # its delivery is after the as-of date


def test_empty_store_gives_empty_frame(store: Engine) -> None:
    f = build_features(store, AS_OF)
    assert f.empty and list(f.columns) == list(FEATURE_COLUMNS)


def test_features_run_on_both_dialects(store: Engine) -> None:
    hand_made(store)
    f = build_features(store, AS_OF).set_index("customer_id")
    assert list(f.index) == ["A", "B", "E"]
    assert f.loc["A", "revenue"] == pytest.approx(220.0)
    assert f.loc["A", "late_share"] == pytest.approx(0.5)
    assert f.loc["A", "last_purchase"] == pd.Timestamp("2024-03-01 12:00")


# --- no look-ahead ------------------------------------------------------------------


def synthetic(seed: int = 7, customers: int = 150, orders: int = 900) -> dict[str, pd.DataFrame]:
    """A random shop over 2023-2024 with every kind of row on both sides of mid-2024."""
    rng = np.random.default_rng(seed)
    states = np.array(["SP", "RJ", "MG", "BA", "RS"])
    cust = pd.DataFrame({
        "customer_id": [f"c{i:03d}" for i in range(customers)],
        "state": states[rng.integers(0, len(states), customers)], "source": "test",
    })
    start = np.datetime64("2023-01-01T00:00:00")
    bought = start + rng.integers(0, 730 * 86400, orders).astype("timedelta64[s]")
    status = rng.choice(["delivered"] * 8 + ["shipped", "canceled", "unavailable", "invoiced"], orders)
    delivered = bought + rng.integers(1 * 86400, 25 * 86400, orders).astype("timedelta64[s]")
    estimated = (bought + rng.integers(5, 16, orders).astype("timedelta64[D]")).astype("datetime64[D]")
    ords = pd.DataFrame({
        "order_id": [f"o{i:04d}" for i in range(orders)],
        "customer_id": cust["customer_id"].to_numpy()[rng.integers(0, customers, orders)],
        "purchased_at": pd.to_datetime(bought), "status": status,
        "delivered_at": pd.to_datetime(delivered).where(status == "delivered"),
        "estimated_delivery_at": pd.to_datetime(estimated), "source": "test",
    })
    n_items = rng.integers(0, 4, orders)  # some orders have no items
    item_order = np.repeat(ords["order_id"].to_numpy(), n_items)
    items = pd.DataFrame({
        "order_id": item_order,
        "item_seq": np.concatenate([np.arange(1, k + 1) for k in n_items]),
        "category": rng.choice(np.array(["toys", "books", "garden", None], dtype=object), len(item_order)),
        "quantity": rng.integers(1, 3, len(item_order)).astype(float),
        "price": rng.uniform(5, 300, len(item_order)).round(2),
        "freight_value": rng.uniform(0, 30, len(item_order)).round(2),
    })
    sums = items.groupby("order_id")[["price", "freight_value"]].sum()
    ords["items_value"] = ords["order_id"].map(sums["price"]).fillna(0.0)
    ords["freight_value"] = ords["order_id"].map(sums["freight_value"]).fillna(0.0)
    pay_order = np.repeat(ords["order_id"].to_numpy(), rng.integers(0, 3, orders))
    pays = pd.DataFrame({
        "order_id": pay_order, "seq": pd.Series(pay_order).groupby(pay_order).cumcount().to_numpy() + 1,
        "installments": pd.array(rng.integers(1, 11, len(pay_order)), dtype="Int64"),
        "value": rng.uniform(1, 200, len(pay_order)).round(2),
    })
    pays.loc[pays.index % 17 == 0, "installments"] = pd.NA
    has_review = rng.random(orders) < 0.8
    revs = pd.DataFrame({
        "review_id": [f"r{i:04d}" for i in np.flatnonzero(has_review)],
        "order_id": ords["order_id"][has_review].to_numpy(),
        "score": rng.integers(1, 6, has_review.sum()),
        "created_at": pd.to_datetime(bought[has_review] + rng.integers(0, 40 * 86400, has_review.sum()).astype("timedelta64[s]")),
    })
    return {"customers": cust, "orders": ords, "order_items": items, "payments": pays, "reviews": revs}


def cut_at(tables: dict[str, pd.DataFrame], as_of: dt.date) -> dict[str, pd.DataFrame]:
    """What the source looked like at the end of `as_of`: later orders, reviews and
    deliveries do not exist yet."""
    end = pd.Timestamp(as_of + dt.timedelta(days=1))
    ords = tables["orders"][tables["orders"]["purchased_at"] < end].copy()
    ords["delivered_at"] = ords["delivered_at"].where(ords["delivered_at"] < end)
    kept = set(ords["order_id"])
    revs = tables["reviews"]
    return {
        "customers": tables["customers"],
        "orders": ords,
        "order_items": tables["order_items"][tables["order_items"]["order_id"].isin(kept)],
        "payments": tables["payments"][tables["payments"]["order_id"].isin(kept)],
        "reviews": revs[revs["order_id"].isin(kept) & (revs["created_at"] < end)],
    }


def insert(engine: Engine, tables: dict[str, pd.DataFrame]) -> None:
    with engine.begin() as conn:
        for name, frame in tables.items():
            rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
            for row in rows:
                for key, value in row.items():
                    if isinstance(value, pd.Timestamp):
                        row[key] = value.to_pydatetime()
            if rows:
                conn.execute(schema.metadata.tables[name].insert(), rows)


def test_features_use_only_data_up_to_as_of(tmp_path: Path) -> None:
    as_of = dt.date(2024, 6, 30)
    tables = synthetic()
    full = new_store(tmp_path, "full.db")
    cut = new_store(tmp_path, "cut.db")
    insert(full, tables)
    insert(cut, cut_at(tables, as_of))

    from_full = build_features(full, as_of)
    from_cut = build_features(cut, as_of)
    assert len(from_full) > 100
    pd.testing.assert_frame_equal(from_full, from_cut)
    # the full store does hold later data that would change the features
    later = build_features(full, dt.date(2024, 12, 31))
    assert len(later) > len(from_full)
    assert not later.set_index("customer_id").loc[from_full["customer_id"], "revenue"].equals(
        from_full.set_index("customer_id")["revenue"])


@pytest.mark.realdata
def test_olist_features_use_only_data_up_to_as_of(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    as_of = dt.date(2018, 1, 31)
    full = loaded_store(tmp_path_factory, "olist", "olist")
    cut = copy_store(full, tmp_path, "cut.db")
    end = (as_of + dt.timedelta(days=1)).isoformat()
    with cut.begin() as conn:
        late = "SELECT order_id FROM orders WHERE purchased_at >= :end"
        for table in ("order_items", "payments", "reviews"):
            conn.execute(text(f"DELETE FROM {table} WHERE order_id IN ({late})"), {"end": end})
        conn.execute(text("DELETE FROM orders WHERE purchased_at >= :end"), {"end": end})
        conn.execute(text("DELETE FROM reviews WHERE created_at >= :end"), {"end": end})
        conn.execute(text("UPDATE orders SET delivered_at = NULL WHERE delivered_at >= :end"), {"end": end})
    from_full = build_features(full, as_of)
    assert len(from_full) > 40_000
    pd.testing.assert_frame_equal(from_full, build_features(cut, as_of))


@pytest.mark.realdata
def test_olist_features_match_plain_pandas(tmp_path_factory: pytest.TempPathFactory) -> None:
    as_of = dt.date(2018, 8, 29)
    f = build_features(loaded_store(tmp_path_factory, "olist", "olist"), as_of).set_index("customer_id")
    p = olist_purchases()  # purchases to 2018-08-29 from the raw CSVs
    end = pd.Timestamp(as_of + dt.timedelta(days=1))
    g = p.groupby("person")
    expected = pd.DataFrame({
        "orders": g["order_id"].nunique(),
        "revenue": g["revenue"].sum(),
        "recency_days": (pd.Timestamp(as_of) - g["order_purchase_timestamp"].max().dt.normalize()).dt.days,
        "tenure_days": (pd.Timestamp(as_of) - g["order_purchase_timestamp"].min().dt.normalize()).dt.days,
    })
    delivered = p[p["order_delivered_customer_date"].notna() & (p["order_delivered_customer_date"] < end)]
    late = (delivered["order_delivered_customer_date"].dt.normalize()
            > delivered["order_estimated_delivery_date"].dt.normalize())
    expected["late_share"] = late.groupby(delivered["person"]).mean()
    reviews = olist_raw()["reviews"]
    reviews = reviews[reviews["review_creation_date"] < end].merge(p[["order_id", "person"]], on="order_id")
    expected["avg_review"] = reviews.groupby("person")["review_score"].mean()
    expected["state"] = person_state(olist_raw())

    assert len(f) == len(expected) == 94_990
    expected = expected.loc[f.index]
    assert (f["orders"] == expected["orders"]).all()
    assert np.allclose(f["revenue"], expected["revenue"], atol=1e-6)
    assert (f["recency_days"] == expected["recency_days"]).all()
    assert (f["tenure_days"] == expected["tenure_days"]).all()
    assert np.allclose(f["late_share"], expected["late_share"], equal_nan=True)
    assert np.allclose(f["avg_review"], expected["avg_review"], equal_nan=True)
    assert (f["state"] == expected["state"]).all()


def test_order_rows_sort_by_customer_time_then_order_id() -> None:
    import pyarrow as pa

    from analytics.dataset import order_by_time

    cust = np.array([1, 0, 1, 1, 0, 1, 1])
    at = np.array([5, 3, 5, 2, 3, 5, 9])
    ids = pa.array(["z", "b", "c", "q", "a", "m", "d"])
    rows = order_by_time(cust, at, ids)
    assert ids.take(pa.array(rows)).to_pylist() == ["a", "b", "q", "c", "m", "z", "d"]


def test_packed_sort_orders_rows_as_lexsort() -> None:
    """Customer, time and row packed in one uint64 sort the rows as np.lexsort does, with
    stamps that fit and stamps shortened to fit; missing stamps, and customer codes that
    leave too little room, take np.lexsort itself."""
    import itertools

    from analytics.dataset import NAT, _by_customer_then_time

    rng = np.random.default_rng(5)
    seconds = 1_500_000_000 + rng.integers(0, 86_400 * 700, 200_000)
    customers = (rng.integers(0, 5_000, 200_000),
                 # 16 bits left for the time: stamps shortened to ~18 minutes, and each
                 # customer's many rows of one shortened time ordered afterwards
                 rng.integers(0, 50, 200_000) << 24,
                 rng.integers(0, 50, 200_000) << 40)  # no room: np.lexsort
    stamps = (seconds * 1_000_000, seconds * 1_000_000 + rng.integers(0, 1_000_000, 200_000),
              np.where(rng.random(200_000) < 0.01, NAT, seconds * 1_000_000),
              rng.integers(-(2**62), 2**62, 200_000))
    for cust, at in itertools.product(customers, stamps):
        rows = _by_customer_then_time(cust, at)
        expected = np.lexsort((at, cust))
        # tied rows (same customer and time) may come in any order: compare the keys
        np.testing.assert_array_equal(cust[rows], cust[expected])
        np.testing.assert_array_equal(at[rows], at[expected])
