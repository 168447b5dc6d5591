"""One row of behaviour features per customer, as of a date (the `customer_features` table).

Only data on or before the as-of date counts (a test checks that features from a store
cut at the as-of date equal those from the full store):
- purchases: orders with a status not in `NON_PURCHASE_STATUSES` placed before
  as_of + 1 day; a customer with none is left out;
- revenue of an order = items_value + freight_value; avg_ticket = revenue / orders;
- items = Σ item quantity; categories = distinct non-empty item categories;
  top_category = the category with most items (ties: alphabetical first);
- avg_installments = mean over the purchases with payments of the order's largest
  instalment count (a voucher paid alongside a card does not halve the card's count);
- late_share = share of the purchases delivered by the as-of date whose delivery *day*
  is after the estimated day (NaN without delivery data);
- avg_review = mean score of the reviews of the customer's purchases created by as-of;
- tenure_days / recency_days = whole days from the first / last purchase day to as-of;
- first_order_value = revenue of the earliest purchase (ties: smallest order_id).

The heavy lifting is one columnar read of the store (`analytics.dataset`: the database
serialises, Arrow's C++ reader parses) and integer-coded numpy group-bys (no per-row
Python), which is faster here than SQL GROUP BYs on SQLite. The refresh passes the
`Dataset` it has read so that features, cohorts, facts and the churn model share one read.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from analytics.dataset import DAY_US, NAT, Dataset, read_dataset, to_micros
from analytics.groups import run_starts
from analytics.periods import end_of_day
from storage import schema

FEATURE_COLUMNS = tuple(c.name for c in schema.customer_features.columns)


def build_features(engine: Engine, as_of: dt.date, dataset: Dataset | None = None) -> pd.DataFrame:
    """Features of every customer with a purchase on or before `as_of` (sorted by customer_id).

    `dataset`: the store already read (`read_dataset`), else it is read here.
    """
    data = dataset if dataset is not None else read_dataset(engine, full=False)
    return features_of(data, as_of)


def features_of(data: Dataset, as_of: dt.date) -> pd.DataFrame:
    """`build_features` over an already read `Dataset`."""
    cutoff_us = to_micros(end_of_day(as_of))
    scope = data.in_scope(as_of)
    if not scope.any():
        return empty_features()
    n_all = data.n_customers
    cust_all = data.cust[scope]
    n_orders_all = np.bincount(cust_all, minlength=n_all)
    who = np.flatnonzero(n_orders_all > 0)  # customers with a purchase, in id order
    new_code = np.full(n_all, -1, dtype=np.int64)
    new_code[who] = np.arange(len(who))
    n = len(who)
    cust = new_code[cust_all]

    def per_customer(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(codes, weights=weights, minlength=n)

    items_value = data.items_value[scope]
    freight_value = data.freight_value[scope]
    revenue_each = items_value + freight_value
    n_orders = n_orders_all[who].astype(np.int64)
    revenue = per_customer(cust, revenue_each)
    freight = per_customer(cust, freight_value)

    # rows are sorted by customer, purchase time, order_id: a customer's first row is their
    # earliest purchase (ties: smallest order_id), the last one their latest
    bought = data.purchased[scope]
    starts = np.flatnonzero(np.r_[True, cust[1:] != cust[:-1]])
    ends = np.r_[starts[1:], len(cust)] - 1
    first_purchase = bought[starts].view("datetime64[us]")
    last_purchase = bought[ends].view("datetime64[us]")
    first_order_value = revenue_each[starts]

    delivered = data.delivered[scope]
    estimated = data.estimated[scope]
    has_delivery = (delivered != NAT) & (estimated != NAT) & (delivered < cutoff_us)
    late = (np.floor_divide(delivered, DAY_US) > np.floor_divide(estimated, DAY_US)) & has_delivery
    n_delivered = per_customer(cust, has_delivery.astype(float))
    n_late = per_customer(cust, late.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        late_share = np.where(n_delivered > 0, n_late / n_delivered, np.nan)

    # the order-level arrays go before the line-level ones come (peak memory at 10M orders)
    del cust_all, items_value, freight_value, revenue_each, bought, delivered, estimated, has_delivery, late

    # customer (new code) of each order row; -1 outside the scope
    row_cust = np.full(len(data.cust), -1, dtype=np.int64)
    row_cust[scope] = cust
    del cust, scope
    items, categories, top_category = _item_features(data, row_cust, n)
    avg_installments = _installments(data, row_cust, n)
    rc = row_cust[data.review_ord]
    reviewed = (rc >= 0) & (data.review_created != NAT) & (data.review_created < cutoff_us)
    avg_review = _mean(rc[reviewed], data.review_score[reviewed], n)

    as_of_day = (pd.Timestamp(as_of) - _EPOCH).days
    frame = pd.DataFrame({
        "customer_id": pd.Series(data.customer_ids.take(who).to_numpy(zero_copy_only=False), dtype=object),
        "as_of": as_of,
        "first_purchase": first_purchase,
        "last_purchase": last_purchase,
        "orders": n_orders,
        "revenue": revenue,
        "avg_ticket": revenue / n_orders,
        "items": items,
        "categories": categories,
        "top_category": top_category,
        "avg_installments": avg_installments,
        "late_share": late_share,
        "avg_review": avg_review,
        "state": data.state[who],
        "region": data.region[who],
        "tenure_days": as_of_day - np.floor_divide(first_purchase.view(np.int64), DAY_US),
        "recency_days": as_of_day - np.floor_divide(last_purchase.view(np.int64), DAY_US),
        "first_order_value": first_order_value,
        "freight": freight,
    })
    return frame[list(FEATURE_COLUMNS)]


def empty_features() -> pd.DataFrame:
    """A features frame with no rows (the store has no purchases by the as-of date)."""
    return pd.DataFrame({c: pd.Series(dtype=_EMPTY_DTYPES.get(c, object)) for c in FEATURE_COLUMNS})


_EMPTY_DTYPES = {
    "first_purchase": "datetime64[ns]", "last_purchase": "datetime64[ns]", "orders": "int64",
    "revenue": float, "avg_ticket": float, "items": float, "categories": "int64",
    "avg_installments": float, "late_share": float, "avg_review": float,
    "tenure_days": "int64", "recency_days": "int64", "first_order_value": float, "freight": float,
}
_EPOCH = pd.Timestamp("1970-01-01")


def _item_features(data: Dataset, row_cust: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """items (Σ quantity), distinct categories and top category per customer."""
    codes = row_cust[data.item_ord]
    keep = codes >= 0  # items of purchases in scope only
    codes = codes[keep]
    items = np.bincount(codes, weights=data.item_quantity[keep], minlength=n)
    cat_code = data.item_category[keep]
    named = cat_code >= 0
    k = max(len(data.category_names), 1)
    pair, count = np.unique(codes[named] * np.int64(k) + cat_code[named], return_counts=True)
    c, kk = np.divmod(pair, k)
    categories = np.bincount(c, minlength=n).astype(np.int64)
    # per customer the category with most items, ties: alphabetical first (smallest code);
    # pairs are sorted by customer then code, so it is each customer's first pair whose
    # count is the customer's largest
    most = np.zeros(n, dtype=count.dtype)
    np.maximum.at(most, c, count)
    best = np.flatnonzero(count == most[c])
    best = best[run_starts(c[best])]
    top_category = np.full(n, None, dtype=object)
    top_category[c[best]] = data.category_names[kk[best]]
    return items, categories, top_category


def _installments(data: Dataset, row_cust: np.ndarray, n: int) -> np.ndarray:
    """Mean over each customer's purchases with payments of the order's largest instalment count."""
    inst = data.pay_installments
    keep = (row_cust[data.pay_ord] >= 0) & ~np.isnan(inst)
    o, v = data.pay_ord[keep], inst[keep]
    # largest instalment count per order, without sorting the payments (the lexsort of
    # ten million was half of this function's caller); orders in row order, as before
    largest = np.full(len(row_cust), -np.inf)
    np.maximum.at(largest, o, v)
    paid = np.flatnonzero(np.bincount(o, minlength=len(row_cust)))
    return _mean(row_cust[paid], largest[paid], n)


def _mean(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean of `values` per customer code; NaN without values."""
    total = np.bincount(codes, weights=values, minlength=n)
    count = np.bincount(codes, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)
