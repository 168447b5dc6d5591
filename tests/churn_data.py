"""Small synthetic shops for the churn and risk tests: customers who buy at their own rate
until they lapse, with items, payments, deliveries and reviews, written straight into a store."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from storage import schema
from storage.geography import region_of_state

AS_OF = dt.date(2024, 6, 30)
HORIZON = 90
STATES = np.array(["SP", "RJ", "MG", "BA", "RS"])
CATEGORIES = np.array(["toys", "books", "garden", "health"], dtype=object)


def synthetic_shop(customers: int = 500, seed: int = 3, start: str = "2023-01-01",
                   end: dt.date = AS_OF, buy_rate: float = 1 / 60) -> dict[str, pd.DataFrame]:
    """Canonical tables of a shop whose customers buy as a Poisson process (rate per day
    ~ Gamma, mean `buy_rate`) and lapse after an exponential lifetime (mean 300 days)."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64(start + "T00:00:00")
    span = (np.datetime64(end.isoformat() + "T23:59:59") - t0) / np.timedelta64(1, "s")
    first = rng.uniform(0, span, customers)
    rate = rng.gamma(0.7, buy_rate / 0.7, customers) / 86400  # per second
    life = rng.exponential(300 * 86400, customers)
    spend = rng.lognormal(4.3, 0.6, customers)
    rows = []
    for c in range(customers):
        t = first[c]
        stop = min(span, first[c] + life[c])
        while t <= stop:
            rows.append((c, t))
            t += rng.exponential(1 / rate[c])
    cust_code = np.array([r[0] for r in rows])
    at = t0 + np.array([r[1] for r in rows]).astype("timedelta64[s]")
    n = len(rows)
    ids = np.array([f"c{i:04d}" for i in range(customers)], dtype=object)
    status = rng.choice(np.array(["delivered"] * 18 + ["canceled", "shipped"], dtype=object), n)
    delivered = at + rng.integers(2 * 86400, 20 * 86400, n).astype("timedelta64[s]")
    estimated = (at + rng.integers(8, 15, n).astype("timedelta64[D]")).astype("datetime64[D]")
    orders = pd.DataFrame({
        "order_id": [f"o{i:05d}" for i in range(n)], "customer_id": ids[cust_code],
        "purchased_at": pd.to_datetime(at), "status": status,
        "delivered_at": pd.to_datetime(delivered).where(status == "delivered"),
        "estimated_delivery_at": pd.to_datetime(estimated), "source": "test",
    })
    n_items = rng.integers(1, 4, n)
    item_order = np.repeat(orders["order_id"].to_numpy(), n_items)
    owner = np.repeat(cust_code, n_items)
    items = pd.DataFrame({
        "order_id": item_order,
        "item_seq": np.concatenate([np.arange(1, k + 1) for k in n_items]),
        "product_id": [f"p{k}" for k in rng.integers(0, 40, len(item_order))],
        "category": CATEGORIES[rng.integers(0, len(CATEGORIES), len(item_order))],
        "seller_id": [f"s{k}" for k in rng.integers(0, 6, len(item_order))],
        "quantity": 1.0,
        "price": (spend[owner] * rng.uniform(0.5, 1.5, len(item_order)) / 2).round(2),
        "freight_value": rng.uniform(5, 25, len(item_order)).round(2),
    })
    sums = items.groupby("order_id")[["price", "freight_value"]].sum()
    orders["items_value"] = orders["order_id"].map(sums["price"])
    orders["freight_value"] = orders["order_id"].map(sums["freight_value"])
    orders["n_items"] = n_items
    payments = pd.DataFrame({
        "order_id": orders["order_id"], "seq": 1,
        "method": rng.choice(np.array(["credit_card", "boleto", "voucher"], dtype=object), n, p=[0.7, 0.2, 0.1]),
        "installments": rng.integers(1, 8, n), "value": orders["items_value"] + orders["freight_value"],
    })
    reviewed = rng.random(n) < 0.85
    reviews = pd.DataFrame({
        "review_id": [f"r{i:05d}" for i in np.flatnonzero(reviewed)],
        "order_id": orders["order_id"][reviewed].to_numpy(),
        "score": rng.integers(1, 6, reviewed.sum()),
        "created_at": pd.to_datetime(delivered[reviewed] + np.timedelta64(2, "D")),
    })
    state = STATES[rng.integers(0, len(STATES), customers)]
    cust = pd.DataFrame({"customer_id": ids, "city": "x", "state": state,
                         "region": [region_of_state(s) for s in state], "country": "BR", "source": "test"})
    return {"customers": cust, "orders": orders, "order_items": items, "payments": payments,
            "reviews": reviews}


def cut_at(tables: dict[str, pd.DataFrame], day: dt.date) -> dict[str, pd.DataFrame]:
    """The shop as its database looked at the end of `day`: later orders (with their items,
    payments and reviews), later reviews and later deliveries do not exist yet."""
    end = pd.Timestamp(day + dt.timedelta(days=1))
    orders = tables["orders"][tables["orders"]["purchased_at"] < end].copy()
    orders["delivered_at"] = orders["delivered_at"].where(orders["delivered_at"] < end)
    kept = set(orders["order_id"])
    reviews = tables["reviews"]
    return {
        "customers": tables["customers"],
        "orders": orders,
        "order_items": tables["order_items"][tables["order_items"]["order_id"].isin(kept)],
        "payments": tables["payments"][tables["payments"]["order_id"].isin(kept)],
        "reviews": reviews[reviews["order_id"].isin(kept) & (reviews["created_at"] < end)],
    }


def insert(engine: Engine, tables: dict[str, pd.DataFrame]) -> None:
    """Write the tables (canonical column names) into the store in one transaction."""
    with engine.begin() as conn:
        for name in ("customers", "orders", "order_items", "payments", "reviews"):
            frame = tables.get(name)
            if frame is None or frame.empty:
                continue
            clean = frame.astype(object).where(frame.notna(), None)
            rows = [{k: (v.to_pydatetime() if isinstance(v, pd.Timestamp) else
                         v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
                    for r in clean.to_dict("records")]
            conn.execute(schema.metadata.tables[name].insert(), rows)
