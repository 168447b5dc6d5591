"""The Kaggle Olist Brazilian e-commerce CSVs.

Input: a folder or a zip of it (or the path of one of its files: its folder is used),
files plain, .gz, .xz, .bz2 or single-file .zip, matched by name stem:
orders, customers and order_items are required; payments, reviews, products and the
category translation are optional; sellers and geolocation are not used. A
`*sample*` orders file is ignored when the full orders file is there.

Streamed, in bounded memory: every file is read in chunks (Arrow's multi-threaded CSV
parser, see `sources.read_chunks_fast`), validated vectorised per chunk, and written
in chunks; nothing holds a whole table. The joins use compact in-memory maps (64-bit
hashes of the ids in sorted numpy arrays, see `keys`): 12 bytes per customers-file row
and about 40 per order, whatever the width of the ids. The passes:
1. customers: per customer_id its person (customer_unique_id, dictionary-coded) and
   place (city, state, zip, dictionary-coded); products: product_id -> category code.
2. orders: validated and remembered (kept or not per row; per valid order its person,
   purchase time and customers-file row); nothing written yet.
3. items, payments, reviews: validated against the valid orders, written chunk by
   chunk; the per-order sums (items_value, freight, n_items, payment_value) accumulate.
4. orders again: the valid rows are written with their sums; then the people.
Progress reports give no total (None) until every file has been read once. A date
column's format is inferred from its first chunk with values.
SQLite statements run on a helper thread while the next chunk is prepared; the whole
load stays one transaction. The person is `customer_unique_id`; the per-order
`customer_id` goes to `orders.source_customer_ref`.

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

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from storage import schema
from storage.geography import region_of_state
from storage.loaders.bulk import KEEP_EARLIEST, KEEP_IF_NULL
from storage.loaders.context import KEY_LIMIT, LoadContext
from storage.loaders.keys import KeyIndex, combine, hash_strings
from storage.loaders.report import LoadError
from storage.loaders.sources import (
    CsvOptions,
    SourceFile,
    list_sources,
    prefetch,
    read_chunks_fast,
    read_header,
    read_whole,
)
from storage.store import NON_PURCHASE_STATUSES
from storage.validation import (
    STR,
    blank,
    clean_text,
    find_columns,
    first_reason,
    infer_date_format,
    parse_datetimes,
    parse_integers,
    parse_numbers,
    positions,
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


class _Part:
    """One chunk of an Olist file: raw strings, its source and the resolved column names."""

    def __init__(self, src: SourceFile, frame: pd.DataFrame, cols: dict[str, str], formats: dict[str, str]):
        self.src = src
        self.raw = frame
        self.cols = cols
        self.formats = formats  # date column -> format, fixed by the file's first values

    def __len__(self) -> int:
        return len(self.raw)

    def text(self, col: str) -> pd.Series:
        if col not in self.cols:
            return pd.Series(np.nan, index=self.raw.index, dtype="str")
        return clean_text(self.raw[self.cols[col]])

    def raw_col(self, col: str) -> pd.Series:
        return self.raw[self.cols[col]] if col in self.cols else pd.Series(np.nan, index=self.raw.index, dtype="str")

    def dates(self, col: str) -> tuple[pd.Series, pd.Series]:
        values = self.raw_col(col)
        if col not in self.formats and not blank(values).all():
            self.formats[col] = infer_date_format(values)
        return parse_datetimes(values, self.formats.get(col, "ISO8601"))

    def missing(self, *cols: str) -> list[tuple[str, pd.Series]]:
        return [(f"missing value: {c}", blank(self.raw_col(c))) for c in cols]

    def too_long(self, *cols: str) -> list[tuple[str, pd.Series]]:
        return [(f"value too long: {c} (max {KEY_LIMIT})", too_long(self.text(c), KEY_LIMIT)) for c in cols]

    def reject(self, ctx: LoadContext, checks: list[tuple[str, pd.Series | np.ndarray]]) -> np.ndarray:
        """Quarantine rows failing a check; returns the mask of rows kept."""
        reasons = first_reason(self.raw.index, checks)
        return ~ctx.reject(self.src, self.raw, reasons).to_numpy()


class _File:
    """An Olist file read as a stream of `_Part`s (the header checked up front)."""

    def __init__(self, name: str, src: SourceFile, csv: CsvOptions, options: dict):
        self.name = name
        self.src = src
        self.csv = csv
        header = read_header(src, csv)
        required, optional = COLUMNS[name]
        cols, missing = find_columns(header, {c: (c,) for c in required + optional})
        missing = [m for m in missing if m in required]
        if missing:
            raise LoadError(
                f"{src.label} is not the Olist {name} table: missing column(s) {', '.join(missing)} "
                f"(found: {', '.join(header)})."
            )
        self.cols = cols
        given = options.get("date_format")
        self.formats: dict[str, str] = dict.fromkeys(_DATES.get(name, ()), given) if given else {}

    def parts(self, ctx: LoadContext, first: bool = True, count: bool = True) -> Iterator[_Part]:
        """The chunks; on the `first` reading, reader extras are quarantined and (if `count`) rows counted."""
        stats: dict = {}
        for chunk in prefetch(read_chunks_fast(self.src, self.csv, stats), depth=1):
            if first:
                if count:
                    ctx.rows_read += len(chunk.frame) + len(chunk.bad_lines) + (0 if chunk.cut is None else len(chunk.cut))
                ctx.reject_chunk_extras(self.src, chunk)
            if len(chunk.frame):
                yield _Part(self.src, chunk.frame, self.cols, self.formats)
        if first:
            ctx.note_reading(self.src, stats)

    def whole(self, ctx: LoadContext) -> _Part:
        """The whole file as one part (small lookup tables; their rows are not counted)."""
        frame, chunks, stats = read_whole(self.src, self.csv)
        for chunk in chunks:
            ctx.reject_chunk_extras(self.src, chunk)
        ctx.note_reading(self.src, stats)
        return _Part(self.src, frame, self.cols, self.formats)


_DATES = {
    "orders": ("order_purchase_timestamp", "order_approved_at", "order_delivered_customer_date",
               "order_estimated_delivery_date"),
    "reviews": ("review_creation_date",),
}


def _resolve(path: Path) -> list[SourceFile]:
    sources = list_sources(path)
    if path.is_file() and len(sources) == 1 and table_of(sources[0].stem) is not None:
        return list_sources(path.parent)  # one Olist file given: use its folder
    return sources


# --- state kept between the passes ----------------------------------------------------------


class _Grow:
    """A numpy array filled chunk by chunk (amortised doubling)."""

    def __init__(self, dtype: np.dtype | type, fill: object = 0):
        self.data = np.empty(1024, dtype=dtype)
        self.n = 0
        self.fill = fill

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self.data):
            bigger = np.empty(max(need, 2 * len(self.data)), dtype=self.data.dtype)
            bigger[: self.n] = self.data[: self.n]
            self.data = bigger
        self.data[self.n: need] = values
        self.n = need

    def array(self) -> np.ndarray:
        return self.data[: self.n]

    def trim(self) -> None:
        """Drop the spare capacity (the array stops growing)."""
        self.data = self.data[: self.n].copy()


_SEP = "\x1f"  # joins the parts of a place (city, state, zip); not found in CSV text


class _Customers:
    """Valid customers-file rows: id hash -> row, and per row the person and the place."""

    def __init__(self) -> None:
        self.ids = KeyIndex()  # customer_id hash -> valid row number, -1 for a quarantined row
        self.people = KeyIndex()  # customer_unique_id hash -> person code
        self.person_ids: list[pa.Array] = []  # the customer_unique_id of each person code
        self.person = _Grow(np.int32)  # valid row -> person code
        self.places = _Labels()  # "city\x1fstate\x1fzip" of each place
        self.place = _Grow(np.int32)  # valid row -> place code
        self.n = 0
        self.used: np.ndarray = np.zeros(0, dtype=bool)

    def add(self, part: _Part, ctx: LoadContext) -> None:
        cid, uid = part.text("customer_id"), part.text("customer_unique_id")
        h = hash_strings(cid)
        new = self.ids.first_time(h)
        keep = part.reject(ctx, [
            *part.missing("customer_id", "customer_unique_id"),
            *part.too_long("customer_id", "customer_unique_id"),
            ("duplicate id: customer_id", ~new),
        ])
        rows = np.full(len(part), -1, dtype=np.int64)
        rows[keep] = np.arange(self.n, self.n + int(keep.sum()))
        self.ids.add(h[new], rows[new])
        self.n += int(keep.sum())
        uid = uid[keep]
        uh = hash_strings(uid)
        fresh = self.people.first_time(uh)
        base = len(self.people)
        self.people.add(uh[fresh], np.arange(base, base + int(fresh.sum())))
        self.person_ids.append(_strings(uid[fresh]))
        self.person.extend(self.people.lookup(uh))
        # missing parts become empty between the separators; split back into NaN below
        place = (part.text("customer_city").fillna("") + _SEP + part.text("customer_state").str.upper().fillna("")
                 + _SEP + part.text("customer_zip_code_prefix").fillna(""))
        self.place.extend(self.places.encode(place[keep]))

    def finish(self) -> None:
        self.used = np.zeros(self.n, dtype=bool)
        self.person_ids = [pa.chunked_array(self.person_ids, type=pa.large_string()).combine_chunks()]


class _Orders:
    """What the first pass over the orders keeps per valid order (in file order)."""

    def __init__(self) -> None:
        self.seen = KeyIndex()  # order_id hash -> valid order number, -1 for a quarantined row
        self.keep = _Grow(bool)  # per data row of the file
        self.customer_row = _Grow(np.int32)
        self.person = _Grow(np.int32)
        self.purchased = _Grow(np.int64)
        self.purchase = _Grow(bool)  # status counts as a purchase
        self.n = 0

    def add(self, part: _Part, ctx: LoadContext, customers: _Customers) -> None:
        oid, cid = part.text("order_id"), part.text("customer_id")
        purchased, bad_p = part.dates("order_purchase_timestamp")
        _, bad_a = part.dates("order_approved_at")
        _, bad_d = part.dates("order_delivered_customer_date")
        _, bad_e = part.dates("order_estimated_delivery_date")
        h = hash_strings(oid)
        new = self.seen.first_time(h)
        row = customers.ids.lookup(hash_strings(cid))
        keep = part.reject(ctx, [
            *part.missing("order_id", "customer_id", "order_status", "order_purchase_timestamp"),
            ("unparseable date: order_purchase_timestamp", bad_p),
            ("unparseable date: order_approved_at", bad_a),
            ("unparseable date: order_delivered_customer_date", bad_d),
            ("unparseable date: order_estimated_delivery_date", bad_e),
            *part.too_long("order_id", "customer_id"),
            ("duplicate id: order_id", ~new),
            ("unknown customer_id (not in the customers file)", row < 0),
        ])
        if part.raw.index[0] != self.keep.n:
            raise RuntimeError("orders chunks are not consecutive")  # the reader's contract
        numbers = np.full(len(part), -1, dtype=np.int64)
        numbers[keep] = np.arange(self.n, self.n + int(keep.sum()))
        self.seen.add(h[new], numbers[new])
        self.n += int(keep.sum())
        self.keep.extend(keep)
        row = row[keep]
        customers.used[row] = True
        self.customer_row.extend(row)
        self.person.extend(customers.person.array()[row])
        self.purchased.extend(purchased[keep].to_numpy(dtype="datetime64[us]").view(np.int64))
        status = part.text("order_status").str.lower()[keep]
        self.purchase.extend(~status.isin(NON_PURCHASE_STATUSES).to_numpy(dtype=bool))

    def find(self, order_ids: pd.Series) -> np.ndarray:
        """The valid order number of each id, -1 for ids not among the loaded orders."""
        return self.seen.lookup(hash_strings(order_ids))


def _strings(values: pd.Series) -> pa.Array:
    arr = pa.array(values.array) if len(values) else pa.array([], type=pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


# --- loading -------------------------------------------------------------------------------


def load(ctx: LoadContext, path: Path, options: dict) -> None:
    with ctx.writer.overlapped():
        _load(ctx, path, options)


def _load(ctx: LoadContext, path: Path, options: dict) -> None:
    tables = find_tables(_resolve(path))
    missing = [STEMS[t] + ".csv" for t in REQUIRED if t not in tables]
    if missing:
        raise LoadError(f"{path} lacks the Olist file(s) {', '.join(missing)} (plain, .gz, .xz or .zip).")
    for t in ("payments", "reviews", "products", "translation"):
        if t not in tables:
            ctx.notes.append(f"No {STEMS[t]} file: {t} not loaded.")
    if "sample" in tables["orders"].stem:
        ctx.notes.append(f"Using the orders SAMPLE file {tables['orders'].label}.")

    csv = CsvOptions(encoding=options.get("encoding"), chunksize=options["chunksize"])
    names = [n for n in ("customers", "orders", "order_items", "payments", "reviews", "products", "translation")
             if n in tables]
    files = {n: _File(n, tables[n], csv, options) for n in names}  # every header checked before any write
    for name in ("customers", "orders", "order_items", "payments", "reviews"):
        if name in files:
            ctx.tables[name] = 0  # the report lists the tables in this order
    categories = _Categories(ctx, files.get("products"), files.get("translation"))

    customers = _Customers()
    for part in files["customers"].parts(ctx):
        customers.add(part, ctx)
        ctx.advance(len(part))
    customers.finish()

    orders = _Orders()
    for part in files["orders"].parts(ctx):
        orders.add(part, ctx, customers)
    customers.ids = customers.person = None  # type: ignore[assignment]  # needed by the orders pass only
    for grown in (orders.keep, orders.customer_row, orders.person, orders.purchased, orders.purchase, customers.place):
        grown.trim()
    n = orders.n
    items_value, freight_value = np.zeros(n), np.zeros(n)
    n_items = np.zeros(n, dtype=np.int32)
    item_keys = _Seen()
    for part in files["order_items"].parts(ctx):
        frame, number = _items(ctx, part, orders, item_keys, categories)
        np.add.at(items_value, number, frame["price"].to_numpy())
        np.add.at(freight_value, number, frame["freight_value"].to_numpy())
        np.add.at(n_items, number, 1)
        ctx.write(schema.order_items, frame)
        ctx.advance(len(part))
    ctx.finish(schema.order_items)
    del item_keys  # each key set lives for its own table only
    payment_value = np.zeros(n)
    paid = np.zeros(n, dtype=bool)
    for table, check in (("payments", _payments), ("reviews", _reviews)):
        if table not in files:
            continue
        keys = _Seen()
        for part in files[table].parts(ctx):
            frame, number = check(ctx, part, orders, keys)
            if table == "payments":
                np.add.at(payment_value, number, frame["value"].to_numpy())
                paid[number] = True
            ctx.write(getattr(schema, table), frame)
            ctx.advance(len(part))
        ctx.finish(getattr(schema, table))
        del keys
    orders.seen = KeyIndex()  # no longer needed: free it before the second pass
    payment_value[~paid] = np.nan

    total = ctx.rows_read  # every file has been read once
    ctx.advance(0, total)
    keep = orders.keep.array()
    number = np.cumsum(keep, dtype=np.int32) - 1  # data row -> valid order number
    person_ids = customers.person_ids[0]
    for part in files["orders"].parts(ctx, first=False):
        rows = part.raw.index.to_numpy()
        kept = keep[rows]
        at = number[rows][kept]
        out = _order_rows(part, kept, at, orders, customers, person_ids)
        out["items_value"] = items_value[at]
        out["freight_value"] = freight_value[at]
        out["payment_value"] = payment_value[at]
        out["n_items"] = n_items[at]
        out["source"] = SOURCE
        ctx.write(schema.orders, out)
        ctx.advance(len(part), total)
    ctx.finish(schema.orders)

    people = _people(orders, customers, csv.chunksize)
    used = customers.used
    ctx.skipped += int((~used).sum())
    ctx.counts.update({
        "orders": n,
        "purchases": int(orders.purchase.array().sum()),
        "customers": sum(len(p) for p in people),
        "order_items": ctx.tables["order_items"],
        "payments": ctx.tables.get("payments", 0),
        "reviews": ctx.tables.get("reviews", 0),
        "orders_without_items": int((n_items == 0).sum()),
        "orders_without_payments": int((~paid).sum()) if "payments" in files else 0,
        "customers_without_orders": int((~used).sum()),
    })
    for frame in people:
        ctx.write(schema.customers, frame, CUSTOMER_MERGE)
    ctx.finish(schema.customers)
    ctx.advance(0, total)


def _order_rows(part: _Part, kept: np.ndarray, at: np.ndarray, orders: _Orders, customers: _Customers,
                person_ids: pa.Array) -> pd.DataFrame:
    """The valid orders of a chunk, as the orders table has them (values added by the caller)."""
    def dates(col: str) -> pd.Series:
        return part.dates(col)[0][kept]

    ref = part.text("customer_id")[kept]
    person = orders.person.array()[at]
    return pd.DataFrame({
        "order_id": part.text("order_id")[kept],
        "customer_id": pd.Series(person_ids.take(pa.array(person)), dtype=STR, index=ref.index),
        "purchased_at": dates("order_purchase_timestamp"),
        "status": part.text("order_status").str.lower().str[:32][kept],
        "approved_at": dates("order_approved_at"),
        "delivered_at": dates("order_delivered_customer_date"),
        "estimated_delivery_at": dates("order_estimated_delivery_date"),
        "source_customer_ref": ref,
    })


class _Labels:
    """Strings of few distinct values (categories, places) as int32 codes into one list."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, values: pd.Series) -> np.ndarray:
        """The code of each value (-1 for missing); new values get new codes."""
        local, uniques = pd.factorize(values, use_na_sentinel=True)
        # a loop over the distinct values of a chunk, not over its rows
        mapping = np.array([self.codes.setdefault(u, len(self.codes)) for u in uniques] + [-1], dtype=np.int32)
        return mapping[local]

    def decode(self, codes: np.ndarray, index: pd.Index | None = None) -> pd.Series:
        names = pa.array(list(self.codes), type=pa.large_string())
        return pd.Series(names.take(pa.array(codes, mask=codes < 0)), dtype=STR, index=index)


class _Categories:
    """product_id -> category (English when translated, else Portuguese), streamed."""

    def __init__(self, ctx: LoadContext, products: _File | None, translation: _File | None):
        self.products = KeyIndex()
        self.labels = _Labels()
        if products is None:
            return
        for part in products.parts(ctx, count=False):
            h = hash_strings(part.text("product_id"))
            first = self.products.first_time(h)  # the first row of a product wins
            self.products.add(h[first], self.labels.encode(part.text("product_category_name")[first]))
        names = pd.Series(list(self.labels.codes), dtype=STR)
        if translation is not None:
            t = translation.whole(ctx)
            en = pd.Series(
                t.text("product_category_name_english").to_numpy(),
                index=t.text("product_category_name").to_numpy(),
            )
            en = en[~en.index.duplicated()]
            names = take_strings(en, positions(names, en.index), names.index).fillna(names)
        self.names = pa.array(names.str[:128].array).cast(pa.large_string())

    def of(self, product: pd.Series) -> pd.Series:
        if not len(self.products):
            return pd.Series(np.nan, index=product.index, dtype=STR)
        code = self.products.lookup(hash_strings(product))
        return pd.Series(self.names.take(pa.array(code, mask=code < 0)), dtype=STR, index=product.index)


class _Seen(KeyIndex):
    """Keys of a child table (e.g. order_id, item_seq) seen so far, for duplicates."""

    def first(self, keys: np.ndarray) -> np.ndarray:
        new = self.first_time(keys)
        self.add(keys[new], np.zeros(int(new.sum()), dtype=np.int32))
        return new


def _items(ctx: LoadContext, t: _Part, orders: _Orders, seen: _Seen, categories: _Categories) -> tuple[pd.DataFrame, np.ndarray]:
    oid = t.text("order_id")
    seq, bad_seq = parse_integers(t.raw_col("order_item_id"))
    price, bad_price = parse_numbers(t.raw_col("price"))
    freight, bad_freight = parse_numbers(t.raw_col("freight_value"))
    product = t.text("product_id")
    number = orders.find(oid)
    new = seen.first(combine(hash_strings(oid), seq.to_numpy(dtype="float64")))
    keep = t.reject(ctx, [
        *t.missing("order_id", "order_item_id", "price"),
        ("not a number: order_item_id", bad_seq),
        ("not a number: price", bad_price),
        ("not a number: freight_value", bad_freight),
        *t.too_long("order_id", "product_id", "seller_id"),
        ("zero price", price.eq(0)),
        ("negative price", price.lt(0)),
        ("negative value: freight_value", freight.lt(0)),
        ("duplicate id: order_id, order_item_id", ~new),
        ("orphan: order_id not in the loaded orders", number < 0),
    ])
    frame = pd.DataFrame({
        "order_id": oid[keep],
        "item_seq": seq[keep].astype(np.int64),
        "product_id": product[keep],
        "category": categories.of(product[keep]),
        "seller_id": t.text("seller_id")[keep],
        "quantity": 1.0,
        "price": price[keep],
        "freight_value": freight.fillna(0.0)[keep],
    })
    return frame, number[keep]


def _payments(ctx: LoadContext, t: _Part, orders: _Orders, seen: _Seen) -> tuple[pd.DataFrame, np.ndarray]:
    oid = t.text("order_id")
    seq, bad_seq = parse_integers(t.raw_col("payment_sequential"))
    inst, bad_inst = parse_integers(t.raw_col("payment_installments"))
    value, bad_value = parse_numbers(t.raw_col("payment_value"))
    number = orders.find(oid)
    new = seen.first(combine(hash_strings(oid), seq.to_numpy(dtype="float64")))
    keep = t.reject(ctx, [
        *t.missing("order_id", "payment_sequential", "payment_value"),
        ("not a number: payment_sequential", bad_seq),
        ("not a number: payment_installments", bad_inst),
        ("not a number: payment_value", bad_value),
        *t.too_long("order_id"),
        ("negative value: payment_value", value.lt(0)),
        ("duplicate id: order_id, payment_sequential", ~new),
        ("orphan: order_id not in the loaded orders", number < 0),
    ])
    frame = pd.DataFrame({
        "order_id": oid[keep],
        "seq": seq[keep].astype(np.int64),
        "method": t.text("payment_type").str[:32][keep],
        "installments": inst[keep],
        "value": value[keep],
    })
    return frame, number[keep]


def _reviews(ctx: LoadContext, t: _Part, orders: _Orders, seen: _Seen) -> tuple[pd.DataFrame, np.ndarray]:
    rid, oid = t.text("review_id"), t.text("order_id")
    score, bad_score = parse_integers(t.raw_col("review_score"))
    created, bad_created = t.dates("review_creation_date")
    number = orders.find(oid)
    new = seen.first(combine(hash_strings(rid), hash_strings(oid)))
    keep = t.reject(ctx, [
        *t.missing("review_id", "order_id", "review_score"),
        ("invalid review score (not 1-5)", bad_score | ~score.between(1, 5) & score.notna()),
        ("unparseable date: review_creation_date", bad_created),
        *t.too_long("review_id", "order_id"),
        ("duplicate id: review_id, order_id", ~new),
        ("orphan: order_id not in the loaded orders", number < 0),
    ])
    frame = pd.DataFrame({
        "review_id": rid[keep],
        "order_id": oid[keep],
        "score": score[keep].astype(np.int64),
        "created_at": created[keep],
    })
    return frame, number[keep]


def _people(orders: _Orders, customers: _Customers, chunksize: int) -> list[pd.DataFrame]:
    """One row per customer_unique_id with an order: place of the latest order (the later
    row on a tie), first purchase (NaT when every order was canceled/unavailable)."""
    person = orders.person.array()
    purchased = orders.purchased.array()
    n_people = len(customers.people)
    latest_at = np.full(n_people, np.iinfo(np.int64).min)
    np.maximum.at(latest_at, person, purchased)
    is_latest = purchased == latest_at[person]
    latest = np.full(n_people, -1, dtype=np.int64)
    np.maximum.at(latest, person[is_latest], np.nonzero(is_latest)[0])
    buying = orders.purchase.array()
    first = np.full(n_people, np.iinfo(np.int64).max)
    np.minimum.at(first, person[buying], purchased[buying])
    who = np.nonzero(latest >= 0)[0]
    place = customers.place.array()[orders.customer_row.array()[latest[who]]]
    first_seen = first[who]
    first_seen = np.where(first_seen == np.iinfo(np.int64).max, np.iinfo(np.int64).min, first_seen)
    out = []
    for lo in range(0, len(who), chunksize):
        sl = slice(lo, lo + chunksize)
        parts = customers.places.decode(place[sl]).str.split(_SEP, expand=True, regex=False)
        city, state, zip_prefix = (clean_text(parts[i]) for i in range(3))
        regions = {code: region_of_state(code) for code in state.dropna().unique()}
        out.append(pd.DataFrame({
            "customer_id": pd.Series(customers.person_ids[0].take(pa.array(who[sl])), dtype=STR),
            "city": city.str[:128],
            "state": state,
            "region": state.map(regions).astype("str"),
            "country": "Brazil",
            "zip_prefix": zip_prefix.str[:16],
            "first_seen": first_seen[sl].view("datetime64[us]"),
            "source": SOURCE,
        }))
    return out
