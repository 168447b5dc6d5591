"""From order lines (one CSV row = one line) to canonical orders, items and customers.

Used by the Online Retail and generic transactions loaders. A file is read in
chunks and the rows of one order need not be next to each other: an `OrderBook`
keeps, per order, the lines seen so far, the customer, the first timestamp and the
running value, so an order split over chunks is written with its full totals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from storage.loaders.ledger import KeyLedger, hash_keys
from storage.store import NON_PURCHASE_STATUSES
from storage.validation import positions, take

_NO_TS = np.iinfo(np.int64).max

class OrderBook:
    """Per-order running state over the chunks of one file."""

    def __init__(self) -> None:
        self.ledger = KeyLedger(
            n_lines=(np.int32, 0),  # rows of the order seen (valid or not): numbers the items
            n_valid=(np.int32, 0),  # lines loaded
            cust=(np.uint64, 0),  # hash of the order's customer (0: none yet)
            first_ts=(np.int64, _NO_TS),
            value=(np.float64, 0.0),
        )
        # per customer: first purchase and a hash of the place written so far
        self.customers = KeyLedger(first_ts=(np.int64, _NO_TS), place=(np.uint64, 0))

    def number_lines(self, order_ids: pd.Series) -> np.ndarray:
        """1-based position of each row among the rows of its order, in file order.

        Call it once per chunk, for every row that has an order id (valid or not), so
        the numbers do not depend on how the file was chunked or validated.
        """
        return number_rows(self.ledger, hash_keys(order_ids))

    def assemble(self, lines: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Orders of valid lines, and the mask of lines whose order belongs to another customer.

        `lines` has order_id, customer_id, purchased_at, status and value (the line amount).
        An order's customer is that of its first valid line in the file; a later line
        with another customer is rejected (the caller quarantines it). The orders frame
        has canonical columns plus `is_new` (first time this order is written).
        """
        if lines.empty:
            return pd.DataFrame(), np.zeros(0, dtype=bool)
        codes, uniq = pd.factorize(hash_keys(lines["order_id"]))
        uniq = np.asarray(uniq, dtype=np.uint64)
        k = len(uniq)
        cust = hash_keys(lines["customer_id"])
        found = self.ledger.find(uniq)
        stored_cust = self.ledger.get(found, "cust")
        first_idx = np.unique(codes, return_index=True)[1]
        order_cust = np.where(stored_cust != 0, stored_cust, cust[first_idx])
        conflict = cust != order_cust[codes]

        keep = ~conflict
        kc = codes[keep]
        ts = lines["purchased_at"].to_numpy(dtype="datetime64[us]").view(np.int64)[keep]
        n = np.bincount(kc, minlength=k)
        value = np.bincount(kc, weights=lines["value"].to_numpy(dtype=np.float64)[keep], minlength=k)
        first_ts = np.full(k, _NO_TS, dtype=np.int64)
        np.minimum.at(first_ts, kc, ts)

        prior_n = self.ledger.get(found, "n_valid")
        total_n = prior_n + n
        total_value = self.ledger.get(found, "value") + value
        total_ts = np.minimum(self.ledger.get(found, "first_ts"), first_ts)
        self.ledger.put(uniq, found, cust=order_cust, n_valid=total_n, value=total_value, first_ts=total_ts)

        kept = lines.loc[keep]
        firsts = kept.iloc[np.unique(kc, return_index=True)[1]]  # first kept line per order, by code
        order_codes = np.unique(kc)
        orders = pd.DataFrame({
            "order_id": firsts["order_id"].array,
            "customer_id": firsts["customer_id"].array,
            "purchased_at": total_ts[order_codes].view("datetime64[us]"),
            "status": firsts["status"].array,
            "items_value": total_value[order_codes],
            "freight_value": 0.0,
            "n_items": total_n[order_codes],
            "is_new": prior_n[order_codes] == 0,
        })
        return orders, conflict

    def customers_to_write(self, customers: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        """The rows of `customers` (from customers_of) that change what was written
        earlier in the file: new people, an earlier first purchase, another place.
        Returns them and how many people are new."""
        if customers.empty:
            return customers, 0
        keys = hash_keys(customers["customer_id"])
        place = hash_keys(customers[["city", "state", "region", "country"]])
        first = customers["first_seen"].to_numpy(dtype="datetime64[us]").view(np.int64).copy()
        first[np.isnat(customers["first_seen"].to_numpy(dtype="datetime64[us]"))] = _NO_TS
        found = self.customers.find(keys)
        stored = self.customers.get(found, "first_ts")
        write = ~found.present | (first < stored) | (place != self.customers.get(found, "place"))
        self.customers.put(keys, found, first_ts=np.minimum(first, stored), place=place)
        return customers[write], int((~found.present).sum())


def number_rows(ledger: KeyLedger, hashes: np.ndarray) -> np.ndarray:
    """1-based occurrence of each key hash in the file so far (`ledger` has an n_lines field)."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64)
    codes, uniq = pd.factorize(hashes)
    uniq = np.asarray(uniq, dtype=np.uint64)
    found = ledger.find(uniq)
    prior = ledger.get(found, "n_lines")
    within = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    ledger.put(uniq, found, n_lines=prior + np.bincount(codes, minlength=len(uniq)))
    return prior[codes] + within + 1


def customers_of(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per customer: the place of their last line, first purchase (NaT if none)."""
    last = lines.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    purchases = lines[~lines["status"].isin(NON_PURCHASE_STATUSES)]
    first = purchases.groupby("customer_id", sort=False)["purchased_at"].min()
    return pd.DataFrame({
        "customer_id": last.index.array,
        "city": last["city"].array,
        "state": last["state"].array,
        "region": last["region"].array,
        "country": last["country"].array,
        "first_seen": take(first.to_numpy(dtype="datetime64[us]"), positions(last.index, first.index)),
    })


def items_of(lines: pd.DataFrame) -> pd.DataFrame:
    """order_items rows of the lines (price = line value)."""
    return pd.DataFrame({
        "order_id": lines["order_id"].array,
        "item_seq": lines["item_seq"].to_numpy(dtype=np.int64),
        "product_id": lines["product_id"].array,
        "category": lines["category"].array,
        "quantity": lines["quantity"].to_numpy(dtype=np.float64),
        "price": lines["value"].to_numpy(dtype=np.float64),
        "freight_value": 0.0,
    })
