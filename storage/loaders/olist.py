"""The Kaggle Olist Brazilian e-commerce CSVs.

Input: a folder or a zip of it (or the path of one of its files: its folder is used),
files plain, .gz, .xz, .bz2 or single-file .zip, matched by name stem:
orders, customers and order_items are required; payments, reviews, products and the
category translation are optional; sellers and geolocation are not used. A
`*sample*` orders file is ignored when the full orders file is there.

The tables are small enough (about 100k rows each) to be read whole; joins are in
pandas. The person is `customer_unique_id`; the per-order `customer_id` goes to
`orders.source_customer_ref`.

Treatment (first applicable reason per row; everything quarantined keeps its raw row):
- any table: a missing key, a value that is not a number, an unparseable date
  (any of the order timestamps, the review date), an id over 64 characters, a
  repeated key (later rows: "duplicate id: ...");
- orders: a customer_id absent from the customers file;
- items: zero or negative price, negative freight; payments: negative value
  (zero-value vouchers load); reviews: a score outside 1-5;
- items, payments, reviews whose order is not among the loaded orders: "orphan ...".
Customers-file rows whose order is not loaded are skipped (counted), not quarantined.

Orders: items_value = sum of item price, freight_value = sum of item freight, n_items
= item rows, payment_value = sum of payments (NULL when none). Customers: city,
state, zip prefix of their latest order, region from the state, country Brazil,
first_seen = first purchase (NULL when all their orders are canceled/unavailable).
Items: category = English name when translated, else the Portuguese one; quantity 1.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from storage import schema
from storage.geography import region_of_state
from storage.loaders.bulk import KEEP_EARLIEST, KEEP_IF_NULL
from storage.loaders.context import KEY_LIMIT, LoadContext
from storage.loaders.report import LoadError
from storage.loaders.sources import Chunk, CsvOptions, SourceFile, list_sources, read_whole
from storage.store import NON_PURCHASE_STATUSES
from storage.validation import (
    blank,
    clean_text,
    find_columns,
    first_reason,
    infer_date_format,
    isin,
    parse_datetimes,
    parse_integers,
    parse_numbers,
    positions,
    take,
    take_strings,
    too_long,
)

SOURCE = "olist"
OPTIONS = ("encoding", "chunksize", "date_format")

# table -> file name stem (a file matches when its stem starts with it)
STEMS: dict[str, str] = {
    "orders": "olist_orders_dataset",
    "customers": "olist_customers_dataset",
    "order_items": "olist_order_items_dataset",
    "payments": "olist_order_payments_dataset",
    "reviews": "olist_order_reviews_dataset",
    "products": "olist_products_dataset",
    "translation": "product_category_name_translation",
    "sellers": "olist_sellers_dataset",
    "geolocation": "olist_geolocation_dataset",
}
REQUIRED = ("orders", "customers", "order_items")
UNUSED = ("sellers", "geolocation")

# table -> (required columns, optional columns)
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "orders": (
        ("order_id", "customer_id", "order_status", "order_purchase_timestamp"),
        ("order_approved_at", "order_delivered_customer_date", "order_estimated_delivery_date"),
    ),
    "customers": (
        ("customer_id", "customer_unique_id", "customer_state"),
        ("customer_zip_code_prefix", "customer_city"),
    ),
    "order_items": (("order_id", "order_item_id", "price"), ("product_id", "seller_id", "freight_value")),
    "payments": (("order_id", "payment_sequential", "payment_value"), ("payment_type", "payment_installments")),
    "reviews": (("review_id", "order_id", "review_score"), ("review_creation_date",)),
    "products": (("product_id", "product_category_name"), ()),
    "translation": (("product_category_name", "product_category_name_english"), ()),
}

CUSTOMER_MERGE = {
    "first_seen": KEEP_EARLIEST,
    "city": KEEP_IF_NULL, "state": KEEP_IF_NULL, "region": KEEP_IF_NULL,
    "country": KEEP_IF_NULL, "zip_prefix": KEEP_IF_NULL,
}


def table_of(stem: str) -> str | None:
    """The Olist table a file name stem belongs to, or None."""
    for table, prefix in STEMS.items():
        if stem.startswith(prefix):
            return table
    return None


def find_tables(sources: list[SourceFile], strict: bool = True) -> dict[str, SourceFile]:
    """Table -> file. A "sample" file is used only when it is the only one of its table."""
    found: dict[str, list[SourceFile]] = {}
    for src in sources:
        table = table_of(src.stem)
        if table is not None:
            found.setdefault(table, []).append(src)
    out: dict[str, SourceFile] = {}
    for table, files in found.items():
        full = [f for f in files if "sample" not in f.stem]
        pick = full or files
        if len(pick) > 1 and strict and table not in UNUSED:
            raise LoadError(
                f"several files for the Olist {table} table: {', '.join(f.label for f in pick)}; keep one."
            )
        out[table] = pick[0]
    return out


# --- reading -------------------------------------------------------------------------------


class _Table:
    """One Olist file read whole: raw strings, its source and the resolved column names."""

    def __init__(self, ctx: LoadContext, name: str, src: SourceFile, options: dict,
                 read: tuple[pd.DataFrame, list[Chunk], dict], count: bool = True):
        self.name = name
        self.src = src
        self.raw, chunks, stats = read
        for chunk in chunks:
            if count:
                ctx.rows_read += len(chunk.bad_lines) + (0 if chunk.cut is None else len(chunk.cut))
            ctx.reject_chunk_extras(src, chunk)
        if count:
            ctx.rows_read += len(self.raw)
        required, optional = COLUMNS[name]
        cols, missing = find_columns(self.raw.columns, {c: (c,) for c in required + optional})
        missing = [m for m in missing if m in required]
        if missing:
            raise LoadError(
                f"{src.label} is not the Olist {name} table: missing column(s) {', '.join(missing)} "
                f"(found: {', '.join(map(str, self.raw.columns))})."
            )
        self.cols = cols
        self.date_format = options.get("date_format")
        ctx.note_reading(src, stats)

    def text(self, col: str) -> pd.Series:
        if col not in self.cols:
            return pd.Series(np.nan, index=self.raw.index, dtype="str")
        return clean_text(self.raw[self.cols[col]])

    def raw_col(self, col: str) -> pd.Series:
        return self.raw[self.cols[col]] if col in self.cols else pd.Series(np.nan, index=self.raw.index, dtype="str")

    def dates(self, col: str) -> tuple[pd.Series, pd.Series]:
        values = self.raw_col(col)
        fmt = self.date_format or infer_date_format(values)
        return parse_datetimes(values, fmt)

    def missing(self, *cols: str) -> list[tuple[str, pd.Series]]:
        return [(f"missing value: {c}", blank(self.raw_col(c))) for c in cols]

    def too_long(self, *cols: str) -> list[tuple[str, pd.Series]]:
        return [(f"value too long: {c} (max {KEY_LIMIT})", too_long(self.text(c), KEY_LIMIT)) for c in cols]

    def duplicated(self, *keys: pd.Series) -> pd.Series:
        frame = pd.concat(list(keys), axis=1)
        return frame.duplicated(keep="first")

    def reject(self, ctx: LoadContext, checks: list[tuple[str, pd.Series]]) -> np.ndarray:
        """Quarantine rows failing a check; returns the mask of rows kept."""
        reasons = first_reason(self.raw.index, checks)
        return ~ctx.reject(self.src, self.raw, reasons).to_numpy()


def _resolve(path: Path) -> list[SourceFile]:
    sources = list_sources(path)
    if path.is_file() and len(sources) == 1 and table_of(sources[0].stem) is not None:
        return list_sources(path.parent)  # one Olist file given: use its folder
    return sources


# --- loading -------------------------------------------------------------------------------


def load(ctx: LoadContext, path: Path, options: dict) -> None:
    tables = find_tables(_resolve(path))
    missing = [STEMS[t] + ".csv" for t in REQUIRED if t not in tables]
    if missing:
        raise LoadError(f"{path} lacks the Olist file(s) {', '.join(missing)} (plain, .gz, .xz or .zip).")
    for t in ("payments", "reviews", "products", "translation"):
        if t not in tables:
            ctx.notes.append(f"No {STEMS[t]} file: {t} not loaded.")
    if "sample" in tables["orders"].stem:
        ctx.notes.append(f"Using the orders SAMPLE file {tables['orders'].label}.")

    names = [n for n in ("customers", "orders", "order_items", "payments", "reviews", "products", "translation")
             if n in tables]
    csv = CsvOptions(encoding=options.get("encoding"), chunksize=options["chunksize"])
    # the files are independent: decompress and parse them side by side
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="pulse-olist") as pool:
        raw = dict(zip(names, pool.map(lambda n: read_whole(tables[n], csv), names), strict=True))
    read = {n: _Table(ctx, n, tables[n], options, raw[n], count=n not in ("products", "translation"))
            for n in names}
    total = ctx.rows_read
    ctx.advance(0, total)

    customers = _customers(ctx, read["customers"])
    orders = _orders(ctx, read["orders"], customers)
    known = pd.Index(orders["order_id"])
    categories = _categories(read.get("products"), read.get("translation"))
    items = _items(ctx, read["order_items"], known, categories)
    payments = _payments(ctx, read["payments"], known) if "payments" in read else None
    reviews = _reviews(ctx, read["reviews"], known) if "reviews" in read else None

    by_order = items.groupby("order_id", sort=False).agg(
        items_value=("price", "sum"), freight_value=("freight_value", "sum"), n_items=("price", "size"),
    )
    orders = orders.join(by_order, on="order_id")
    orders["items_value"] = orders["items_value"].fillna(0.0)
    orders["freight_value"] = orders["freight_value"].fillna(0.0)
    orders["n_items"] = orders["n_items"].fillna(0).astype("int64")
    if payments is not None:
        orders = orders.join(payments.groupby("order_id", sort=False)["value"].sum().rename("payment_value"), on="order_id")
    else:
        orders["payment_value"] = np.nan

    people = _people(orders)
    used = isin(customers.index, orders["source_customer_ref"])
    ctx.skipped += int((~used).sum())

    ctx.counts.update({
        "orders": len(orders),
        "purchases": int((~orders["status"].isin(NON_PURCHASE_STATUSES)).sum()),
        "customers": len(people),
        "order_items": len(items),
        "payments": 0 if payments is None else len(payments),
        "reviews": 0 if reviews is None else len(reviews),
        "orders_without_items": int((orders["n_items"] == 0).sum()),
        "orders_without_payments": int(orders["payment_value"].isna().sum()) if payments is not None else 0,
        "customers_without_orders": int((~used).sum()),
    })

    people["source"] = SOURCE
    ctx.write(schema.customers, people, CUSTOMER_MERGE)
    ctx.advance(len(read["customers"].raw), total)
    order_cols = ["order_id", "customer_id", "purchased_at", "status", "approved_at", "delivered_at",
                  "estimated_delivery_at", "items_value", "freight_value", "payment_value", "n_items",
                  "source_customer_ref"]
    out = orders[order_cols].copy()
    out["source"] = SOURCE
    ctx.write(schema.orders, out)
    ctx.advance(len(read["orders"].raw), total)
    ctx.write(schema.order_items, items)
    ctx.advance(len(read["order_items"].raw), total)
    if payments is not None:
        ctx.write(schema.payments, payments)
        ctx.advance(len(read["payments"].raw), total)
    if reviews is not None:
        ctx.write(schema.reviews, reviews)
        ctx.advance(len(read["reviews"].raw), total)


def _customers(ctx: LoadContext, t: _Table) -> pd.DataFrame:
    """Valid customers-file rows indexed by the per-order customer_id."""
    cid, uid = t.text("customer_id"), t.text("customer_unique_id")
    keep = t.reject(ctx, [
        *t.missing("customer_id", "customer_unique_id"),
        *t.too_long("customer_id", "customer_unique_id"),
        ("duplicate id: customer_id", t.duplicated(cid)),
    ])
    state = t.text("customer_state").str.upper()
    return pd.DataFrame({
        "customer_id": cid,
        "customer_unique_id": uid,
        "city": t.text("customer_city"),
        "state": state,
        "zip_prefix": t.text("customer_zip_code_prefix"),
    })[keep].set_index("customer_id")


def _orders(ctx: LoadContext, t: _Table, customers: pd.DataFrame) -> pd.DataFrame:
    oid, cid = t.text("order_id"), t.text("customer_id")
    purchased, bad_p = t.dates("order_purchase_timestamp")
    approved, bad_a = t.dates("order_approved_at")
    delivered, bad_d = t.dates("order_delivered_customer_date")
    estimated, bad_e = t.dates("order_estimated_delivery_date")
    keep = t.reject(ctx, [
        *t.missing("order_id", "customer_id", "order_status", "order_purchase_timestamp"),
        ("unparseable date: order_purchase_timestamp", bad_p),
        ("unparseable date: order_approved_at", bad_a),
        ("unparseable date: order_delivered_customer_date", bad_d),
        ("unparseable date: order_estimated_delivery_date", bad_e),
        *t.too_long("order_id", "customer_id"),
        ("duplicate id: order_id", t.duplicated(oid)),
        ("unknown customer_id (not in the customers file)", ~isin(cid, customers.index)),
    ])
    ref = cid[keep]
    pos = positions(ref, customers.index)
    return pd.DataFrame({
        "order_id": oid[keep],
        "customer_id": take_strings(customers["customer_unique_id"], pos, ref.index),
        "purchased_at": purchased[keep],
        "status": t.text("order_status").str.lower().str[:32][keep],
        "approved_at": approved[keep],
        "delivered_at": delivered[keep],
        "estimated_delivery_at": estimated[keep],
        "source_customer_ref": ref,
        "city": take_strings(customers["city"], pos, ref.index),
        "state": take_strings(customers["state"], pos, ref.index),
        "zip_prefix": take_strings(customers["zip_prefix"], pos, ref.index),
    })


def _categories(products: _Table | None, translation: _Table | None) -> pd.Series:
    """product_id -> category (English when translated, else Portuguese)."""
    if products is None:
        return pd.Series(dtype="str")
    pt = pd.Series(products.text("product_category_name").to_numpy(), index=products.text("product_id").to_numpy())
    pt = pt[~pt.index.duplicated()]
    if translation is not None:
        en = pd.Series(
            translation.text("product_category_name_english").to_numpy(),
            index=translation.text("product_category_name").to_numpy(),
        )
        en = en[~en.index.duplicated()]
        pt = take_strings(en, positions(pt, en.index), pt.index).fillna(pt)
    return pt.str[:128]


def _items(ctx: LoadContext, t: _Table, known: pd.Index, categories: pd.Series) -> pd.DataFrame:
    oid = t.text("order_id")
    seq, bad_seq = parse_integers(t.raw_col("order_item_id"))
    price, bad_price = parse_numbers(t.raw_col("price"))
    freight, bad_freight = parse_numbers(t.raw_col("freight_value"))
    product = t.text("product_id")
    keep = t.reject(ctx, [
        *t.missing("order_id", "order_item_id", "price"),
        ("not a number: order_item_id", bad_seq),
        ("not a number: price", bad_price),
        ("not a number: freight_value", bad_freight),
        *t.too_long("order_id", "product_id", "seller_id"),
        ("zero price", price.eq(0)),
        ("negative price", price.lt(0)),
        ("negative value: freight_value", freight.lt(0)),
        ("duplicate id: order_id, order_item_id", t.duplicated(oid, seq)),
        ("orphan: order_id not in the loaded orders", ~isin(oid, known)),
    ])
    return pd.DataFrame({
        "order_id": oid[keep],
        "item_seq": seq[keep].astype(np.int64),
        "product_id": product[keep],
        "category": take_strings(categories, positions(product, categories.index), product.index)[keep],
        "seller_id": t.text("seller_id")[keep],
        "quantity": 1.0,
        "price": price[keep],
        "freight_value": freight.fillna(0.0)[keep],
    })


def _payments(ctx: LoadContext, t: _Table, known: pd.Index) -> pd.DataFrame:
    oid = t.text("order_id")
    seq, bad_seq = parse_integers(t.raw_col("payment_sequential"))
    inst, bad_inst = parse_integers(t.raw_col("payment_installments"))
    value, bad_value = parse_numbers(t.raw_col("payment_value"))
    keep = t.reject(ctx, [
        *t.missing("order_id", "payment_sequential", "payment_value"),
        ("not a number: payment_sequential", bad_seq),
        ("not a number: payment_installments", bad_inst),
        ("not a number: payment_value", bad_value),
        *t.too_long("order_id"),
        ("negative value: payment_value", value.lt(0)),
        ("duplicate id: order_id, payment_sequential", t.duplicated(oid, seq)),
        ("orphan: order_id not in the loaded orders", ~isin(oid, known)),
    ])
    return pd.DataFrame({
        "order_id": oid[keep],
        "seq": seq[keep].astype(np.int64),
        "method": t.text("payment_type").str[:32][keep],
        "installments": inst[keep],
        "value": value[keep],
    })


def _reviews(ctx: LoadContext, t: _Table, known: pd.Index) -> pd.DataFrame:
    rid, oid = t.text("review_id"), t.text("order_id")
    score, bad_score = parse_integers(t.raw_col("review_score"))
    created, bad_created = t.dates("review_creation_date")
    keep = t.reject(ctx, [
        *t.missing("review_id", "order_id", "review_score"),
        ("invalid review score (not 1-5)", bad_score | ~score.between(1, 5) & score.notna()),
        ("unparseable date: review_creation_date", bad_created),
        *t.too_long("review_id", "order_id"),
        ("duplicate id: review_id, order_id", t.duplicated(rid, oid)),
        ("orphan: order_id not in the loaded orders", ~isin(oid, known)),
    ])
    return pd.DataFrame({
        "review_id": rid[keep],
        "order_id": oid[keep],
        "score": score[keep].astype(np.int64),
        "created_at": created[keep],
    })


def _people(orders: pd.DataFrame) -> pd.DataFrame:
    """One row per customer_unique_id: place of the latest order, first purchase."""
    latest = orders.sort_values("purchased_at", kind="stable").drop_duplicates("customer_id", keep="last")
    purchases = orders[~orders["status"].isin(NON_PURCHASE_STATUSES)]
    first = purchases.groupby("customer_id")["purchased_at"].min()
    state = latest["state"]
    regions = {code: region_of_state(code) for code in state.dropna().unique()}
    return pd.DataFrame({
        "customer_id": latest["customer_id"].array,
        "city": latest["city"].str[:128].array,
        "state": state.array,
        "region": state.map(regions).astype("str").array,
        "country": "Brazil",
        "zip_prefix": latest["zip_prefix"].str[:16].array,
        "first_seen": take(first.to_numpy(dtype="datetime64[us]"), positions(latest["customer_id"], first.index)),
    })
