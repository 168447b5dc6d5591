"""The store's order history read once, columnar and integer-coded, for the refresh.

Every heavy computation of the refresh (features, cohorts, answer facts, churn history)
groups orders, items, payments and reviews by customer. Reading each table once through
`analytics.columnar` (ADBC on SQLite, COPY on PostgreSQL) and joining on integer codes
costs a fraction of a DB-API fetch and of grouping by id strings:
- `customer_ids`: every customer id of the orders and customers tables, sorted; a
  customer's *code* is its position in it, so sorting by code sorts by id;
- orders sorted by customer code, purchase time and order_id (the first order of a
  customer is their earliest purchase, ties broken by the smallest order_id);
- items, payments and reviews carry `ord`, the row of their order (rows whose order is not
  in the store are dropped); their categorical columns are codes into name arrays (-1 for
  missing; categories and payment methods sorted, products and sellers in any order).
  An incremental read's items, the refresh's kept snapshot's and so the merged dataset's
  come in the order of their `ord` (an order's lines as the store holds them), hence by
  customer: the churn features' and the facts' sorts of (customer or order, product /
  seller / category) pairs then merge long sorted runs instead of sorting them
  (`analytics.groups.sorted_keys`). A whole-store read leaves them in the store's order
  (sorting eleven million lines there cost the read seconds; the snapshot of it is
  saved sorted, on its own thread). Payments and reviews come in any order.
`read_dataset(engine, since=run)` reads only what loads after load run `run` wrote: the
orders they touched (an order, or a line, payment or review of it) with all their lines,
payments and reviews, and the customers they wrote (`analytics.snapshot` merges that into
the dataset it kept).
Timestamps are int64 microseconds since 1970-01-01 (`NAT` where missing).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, text

from analytics.columnar import Col, SharedKeys, start_read
from analytics.columnar_worker import flat, positions_in
from analytics.groups import stable_order
from storage.engine import unmapped
from storage.store import NON_PURCHASE_STATUSES

NAT = np.iinfo(np.int64).min
READ_PARTS = 2  # the orders and the items are read as this many rowid ranges, one per reader process
DAY_US = 86_400_000_000
ITEM_FIELDS = ("item_ord", "item_category", "item_quantity", "item_price", "item_freight", "item_product",
               "item_seller")
_NON_PURCHASE = ", ".join(f"'{s}'" for s in NON_PURCHASE_STATUSES)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Orders (sorted by customer, time, order_id), their items, payments, reviews and the
    customers' geography, integer-coded (see the module docstring)."""

    customer_ids: pa.Array  # sorted distinct ids
    state: np.ndarray  # per customer code (object, None when unknown)
    region: np.ndarray
    order_id: pa.Array  # per order row
    cust: np.ndarray  # int64 customer code per order row
    purchased: np.ndarray  # int64 µs
    purchase: np.ndarray  # bool: status not in NON_PURCHASE_STATUSES
    items_value: np.ndarray
    freight_value: np.ndarray
    delivered: np.ndarray  # int64 µs or NAT
    estimated: np.ndarray  # int64 µs or NAT
    item_ord: np.ndarray  # ascending but after a whole-store read (see the module docstring)
    item_category: np.ndarray  # code into category_names, -1 when missing
    item_quantity: np.ndarray
    item_price: np.ndarray
    item_freight: np.ndarray
    item_product: np.ndarray | None  # codes (full reads only)
    item_seller: np.ndarray | None
    category_names: np.ndarray  # sorted (object)
    pay_ord: np.ndarray
    pay_method: np.ndarray  # code into method_names, -1 when missing
    pay_installments: np.ndarray  # float, NaN when missing
    pay_value: np.ndarray
    method_names: np.ndarray
    review_ord: np.ndarray
    review_score: np.ndarray  # float
    review_created: np.ndarray  # int64 µs or NAT
    listed: np.ndarray  # bool per customer code: in the customers table
    product_names: np.ndarray | None = None  # for item_product (full reads only)
    seller_names: np.ndarray | None = None

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    def ids(self) -> np.ndarray:
        """`customer_ids` as an object array."""
        return self.customer_ids.to_numpy(zero_copy_only=False).astype(object)

    def in_scope(self, as_of: dt.date) -> np.ndarray:
        """Mask of the order rows that are purchases placed on or before `as_of`."""
        return self.purchase & (self.purchased < to_micros(end_of_day_dt(as_of)))


def changed_since(run: int) -> tuple[str, str]:
    """SQL conditions (param :since = `run`) for the rows loads after `run` wrote (or that
    no load stamped), and for the order_id of the orders they touched."""
    fresh = "(load_run IS NULL OR load_run > :since)"
    # UNION ALL, not UNION: for the latter SQLite 3.53 merges sorted scans of whole key
    # indexes (seconds at 1M orders) instead of probing the load_run indexes (milliseconds)
    touched = " UNION ALL ".join(f"SELECT order_id FROM {t} WHERE {fresh}"
                                 for t in ("orders", "order_items", "payments", "reviews"))
    return fresh, f"order_id IN ({touched})"


def touched_orders(engine: Engine, since: int) -> int:
    """How many orders loads after run `since` touched (what `read_dataset(since=)` reads)."""
    _, touched = changed_since(since)
    sql = f"SELECT count(*) FROM orders WHERE {touched}"
    with unmapped(engine) as conn:
        return int(conn.execute(text(sql), {"since": int(since)}).scalar() or 0)


def read_dataset(engine: Engine, *, full: bool = True, since: int | None = None) -> Dataset:
    """Read the store (every order, any status or date); `full` adds what the churn model
    needs beyond the features (item products and sellers). With `since` (a load run id),
    only what later loads touched (see the module docstring; meant for a small part of the
    store: see `touched_orders`)."""
    if since is None:
        where: dict[str, str] = {}
        params: dict[str, int] = {}
    else:
        fresh, touched = changed_since(since)
        where = {"customers": fresh, "orders": touched, "items": touched, "payments": touched,
                 "reviews": touched}
        params = {"since": int(since)}
    item_cols = [Col("order_id", "order_id", "str"), Col("category", "category", "str"),
                 Col("quantity", "quantity", "float"), Col("price", "price", "float"),
                 Col("freight", "freight_value", "float")]
    if full:
        item_cols += [Col("product", "product_id", "str"), Col("seller", "seller_id", "str")]
    reads = {
        "customers": ("customers", [Col("customer_id", "customer_id", "str"),
                                    Col("state", "state", "str"), Col("region", "region", "str")]),
        "items": ("order_items", item_cols),
        "payments": ("payments", [Col("order_id", "order_id", "str"), Col("method", "method", "str"),
                                  Col("installments", "installments", "float"),
                                  Col("value", "value", "float")]),
        "reviews": ("reviews", [Col("order_id", "order_id", "str"), Col("score", "score", "float"),
                                Col("created", "created_at", "ts")]),
    }
    with SharedKeys("order_id") as order_keys:
        # the orders first, halves read side by side: the other reads look their order_id
        # up in the orders' (in the helper processes, once published) while this thread
        # codes and sorts the orders
        orders_read = start_read(engine, "orders", [
            Col("order_id", "order_id", "str"), Col("customer_id", "customer_id", "str"),
            Col("purchased", "purchased_at", "ts"),
            Col("purchase", f"CASE WHEN status IN ({_NON_PURCHASE}) THEN 0 ELSE 1 END", "int"),
            Col("items_value", "items_value", "float"), Col("freight_value", "freight_value", "float"),
            Col("delivered", "delivered_at", "ts"), Col("estimated", "estimated_delivery_at", "ts"),
        ], where.get("orders", ""), params, codes=("customer_id",), few=since is not None, parts=READ_PARTS)
        # the items, the biggest of the rest, in parts too: the two helpers then finish together
        later = {name: start_read(engine, table, cols, where.get(name, ""), params,
                                  keys=None if name == "customers" else order_keys,
                                  codes=("product", "seller") if name == "items" and full else (),
                                  few=since is not None, parts=READ_PARTS if name == "items" else 1)
                 for name, (table, cols) in reads.items()}
        orders = orders_read.result()
        del orders_read  # (the future would hold the table after `del orders`)
        order_id = flat(orders.column("order_id"))  # the parts' ids as one array, made once
        order_keys.publish(order_id)
        # each table's arrays are taken out as it arrives and the table dropped (futures
        # popped), so the raw columns of only a few tables are held at once
        customers = later.pop("customers").result()
        customer_ids, cust, as_listed = _customer_codes(orders.column("customer_id"),
                                                        customers.column("customer_id"))
        purchased = micros(orders, "purchased")
        rows = order_by_time(cust, purchased, order_id)
        # the other columns taken in row order from the parts as they are: one new array
        # each (to_numpy of two parts, then a gather, made two)
        sorted_orders = orders.select(["purchase", "items_value", "freight_value", "delivered",
                                       "estimated"]).take(pa.array(rows))
        f: dict[str, Any] = {
            "customer_ids": customer_ids, "cust": cust[rows], "purchased": purchased[rows],
            "order_id": order_id.take(pa.array(rows)),
            "purchase": _ints(sorted_orders, "purchase") > 0,
            "items_value": floats(sorted_orders, "items_value"),
            "freight_value": floats(sorted_orders, "freight_value"),
            "delivered": micros(sorted_orders, "delivered"), "estimated": micros(sorted_orders, "estimated"),
        }
        del orders, order_id, cust, purchased, sorted_orders
        sorted_at = np.empty(len(rows), dtype=np.int64)  # read position -> sorted row
        sorted_at[rows] = np.arange(len(rows))
        del rows
        geo_at = (np.arange(len(customer_ids)) if as_listed
                  else codes_in(customer_ids, customers.column("customer_id")))
        f["listed"] = geo_at >= 0
        f["state"] = _take_objects(customers.column("state"), geo_at)
        f["region"] = _take_objects(customers.column("region"), geo_at)
        del customers

        items = _known(later.pop("items").result(), sorted_at)
        names, f["item_category"] = sorted_codes(items.column("category"))
        f["category_names"] = names.to_numpy(zero_copy_only=False).astype(object)
        f.update(item_ord=_ords(items), item_quantity=floats(items, "quantity"),
                 item_price=floats(items, "price"), item_freight=floats(items, "freight"))
        if full:
            f["item_product"], f["product_names"] = _dictionary_codes(items.column("product"))
            f["item_seller"], f["seller_names"] = _dictionary_codes(items.column("seller"))
        else:
            f["item_product"] = f["item_seller"] = None
        del items
        if since is not None:
            put_items_in_order(f)
        pay = _known(later.pop("payments").result(), sorted_at)
        names, f["pay_method"] = sorted_codes(pay.column("method"))
        f["method_names"] = names.to_numpy(zero_copy_only=False).astype(object)
        f.update(pay_ord=_ords(pay), pay_installments=floats(pay, "installments"),
                 pay_value=floats(pay, "value"))
        del pay
        rev = _known(later.pop("reviews").result(), sorted_at)
        f.update(review_ord=_ords(rev), review_score=floats(rev, "score"),
                 review_created=micros(rev, "created"))
        del rev
    return Dataset(**f)


def put_items_in_order(fields: dict[str, Any]) -> None:
    """Reorder the item columns among a Dataset's `fields` (in place) by their order row,
    each order's lines in their order, unless they are in that order already."""
    in_order = stable_order(fields["item_ord"])
    if in_order is not None:
        for name in ITEM_FIELDS:
            if fields.get(name) is not None:
                fields[name] = fields[name][in_order]


def _customer_codes(buyers: pa.ChunkedArray, listed: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, bool]:
    """(every customer id: of the orders' `buyers` and of the customers table, `listed`;
    sorted and distinct; the code of each order's buyer in them; whether the ids are
    `listed` as it is). A store read in key order gives its customers' ids sorted: when
    they are distinct and every buyer is among them, they are those ids as they are (no
    sort of a million ids)."""
    ids = flat(listed)
    if len(ids) > 1 and not ids.null_count and pc.all(pc.less(ids[:-1], ids[1:])).as_py():
        cust = codes_in(buyers, ids)
        if not len(cust) or cust.min() >= 0:
            return ids, cust, True
    customer_ids = sorted_unique(pa.chunked_array(distinct_values(buyers).chunks + listed.chunks,
                                                  type=pa.string()))
    return customer_ids, codes_in(buyers, customer_ids), False


def _known(table: pa.Table, sorted_at: np.ndarray) -> pa.Table:
    """The rows of `table` whose order is in the store, `ord` (the order's read position)
    turned into the order's row in the Dataset."""
    at = np.asarray(table.column("ord").to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = at >= 0
    if keep.all():
        kept = table
    else:
        kept, at = table.filter(pa.array(keep)), at[keep]
    i = kept.schema.get_field_index("ord")
    return kept.set_column(i, "ord", pa.array(sorted_at[at]))


def _dictionary_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, -1 for null; names) of a dictionary-encoded column (see `as_codes`)."""
    col = col.unify_dictionaries() if col.num_chunks > 1 else col
    if col.num_chunks == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
    codes = pa.chunked_array([c.indices for c in col.chunks]).cast(pa.int64()).fill_null(-1)
    names = col.chunk(0).dictionary.to_numpy(zero_copy_only=False).astype(object)
    return np.asarray(codes.to_numpy(), dtype=np.int64), names


def _ints(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype=np.int64)


def _ords(table: pa.Table) -> np.ndarray:
    return _ints(table, "ord")


def order_by_time(cust: np.ndarray, at: np.ndarray, order_id: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Row order by customer, time, then order_id (only rows tied on customer and time are
    compared by id, which are few)."""
    rows = _by_customer_then_time(cust, at)
    c, t = cust[rows], at[rows]
    tied = np.flatnonzero((c[1:] == c[:-1]) & (t[1:] == t[:-1]))
    if len(tied):
        # runs of equal (customer, time); each sorted by order_id
        members, run = _tie_runs(tied)
        ids = flat(order_id).take(pa.array(rows[members])).to_numpy(zero_copy_only=False)
        within = pd.DataFrame({"run": run, "id": ids}).sort_values(["run", "id"], kind="stable").index
        rows[members] = rows[members[within.to_numpy()]]
    return rows


def _by_customer_then_time(cust: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Row order by customer code, then time (rows tied on both in any order): one np.sort
    of customer, time and row packed in a uint64 (at ten million orders 0.9–1.4 s where
    np.argsort of customer × time took 1.6–2.1 s, and np.lexsort three times that), else
    np.lexsort. Where the time does not fit it is packed shortened (its low bits dropped),
    and the few rows of one customer whose shortened times are equal are then ordered by
    their stamps."""
    n = len(at)
    if n > 1 and cust.min() >= 0 and at.min() != NAT:
        row_bits = (n - 1).bit_length()
        time_bits = 64 - row_bits - max(1, int(cust.max()).bit_length())
        if time_bits >= 16:  # else too many rows would need ordering afterwards
            low = int(at.min())
            shift = max(0, (int(at.max()) - low).bit_length() - time_bits)
            key = cust.astype(np.uint64)
            key <<= np.uint64(time_bits + row_bits)
            t = (at - low).view(np.uint64)
            t >>= np.uint64(shift)
            t <<= np.uint64(row_bits)
            key |= t
            del t
            key |= np.arange(n, dtype=np.uint64)
            key.sort()
            rows = np.bitwise_and(key, np.uint64((1 << row_bits) - 1)).view(np.int64)
            if shift:
                key >>= np.uint64(row_bits)  # customer and shortened time
                _order_runs_by_time(rows, key, at)
            return rows
    return np.lexsort((at, cust))


def _order_runs_by_time(rows: np.ndarray, key: np.ndarray, at: np.ndarray) -> None:
    """Reorder, in place, each run of `rows` with equal (sorted) `key` by the rows' `at`."""
    tied = np.flatnonzero(key[1:] == key[:-1])
    if len(tied):
        members, run = _tie_runs(tied)
        rows[members] = rows[members[np.lexsort((at[rows[members]], run))]]


def _tie_runs(tied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the places in runs of tied neighbours, each one's run number, ascending), from
    `tied`: the places i where the item at i ties the one at i + 1."""
    members = np.unique(np.concatenate([tied, tied + 1]))
    return members, np.cumsum(~np.isin(members - 1, tied))  # a run starts where no tie links back


# --- Arrow helpers ------------------------------------------------------------------------


def sorted_unique(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The distinct non-null values, sorted."""
    uniq = flat(pc.unique(values).drop_null()) if len(values) else pa.array([], pa.string())
    return uniq.take(pc.sort_indices(uniq))


def sorted_codes(values: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(distinct non-null values sorted, code of each value in them; -1 for null)."""
    uniq = sorted_unique(values)
    return uniq, codes_in(values, uniq)


def codes_in(keys: pa.ChunkedArray | pa.Array, index: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Position of each key in `index` (-1 when absent or null); a dictionary-encoded
    chunk of `keys` is looked up by its dictionary's values."""
    chunks = keys.chunks if isinstance(keys, pa.ChunkedArray) else [keys]
    if not any(pa.types.is_dictionary(c.type) for c in chunks):
        found = positions_in(keys, flat(index))
        return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)
    parts = [np.empty(0, dtype=np.int64)]
    for chunk in chunks:
        if not pa.types.is_dictionary(chunk.type):
            parts.append(codes_in(chunk, index))
            continue
        at = np.append(codes_in(chunk.dictionary, index), -1)  # a null picks the last
        parts.append(at[np.asarray(chunk.indices.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False))])
    return np.concatenate(parts)


def distinct_values(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """The string values a column may hold: its plain chunks, and the dictionaries of its
    dictionary-encoded ones."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    return pa.chunked_array([c.dictionary if pa.types.is_dictionary(c.type) else c for c in chunks],
                            type=pa.string())


def _take_objects(col: pa.ChunkedArray, at: np.ndarray) -> np.ndarray:
    values = flat(col).take(pa.array(at, mask=at < 0)) if len(at) else pa.array([], pa.string())
    return values.to_numpy(zero_copy_only=False).astype(object)


def floats(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).cast(pa.float64())
    if col.null_count:  # (fill_null copies even a column without nulls)
        col = col.fill_null(np.nan)
    return col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def micros(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).cast(pa.int64())
    if col.null_count:
        col = col.fill_null(NAT)
    return col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def to_micros(value: dt.datetime | dt.date) -> int:
    return int((pd.Timestamp(value) - pd.Timestamp("1970-01-01")) // pd.Timedelta(microseconds=1))


def end_of_day_dt(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min)


def day_of(us: np.ndarray) -> np.ndarray:
    """Whole days since 1970-01-01 of µs timestamps (floor; NAT gives garbage — mask it)."""
    return np.floor_divide(us, DAY_US)
