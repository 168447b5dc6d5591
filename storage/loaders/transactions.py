"""Any CSV of purchases, read through a column mapping ("transactions").

Mapping (canonical field -> column of the file; positions "0", "1", ... without a
header): customer, timestamp and amount (or price, then amount = price x quantity)
are required; order, quantity, product, category, status, region, state, city and
country are optional. region/state/city/country may be columns of a customers file
(option customers_file, joined on customers_key, default the customer column's name)
and category a column of a products file (products_file, products_key).

Options: sep ("," default; "whitespace", "tab", ";", ...), header (true/false/none),
columns (names for a file without a header, "a;b;c", "a|b|c" or "a,b,c"), date_format
(strftime, e.g. %Y%m%d; default: inferred from the first rows), encoding,
chunksize, duplicates ("quarantine" or "keep"), zero_amount ("keep" or "quarantine").

One row is one order line. With an `order` column, rows sharing an order id are the
lines of one order (same customer; item_seq = position among the order's rows).
Without one, each row is its own order, with the stable id
"<customer>/<YYYYMMDD[HHMMSS]>/<n>" (n = occurrence of that customer and time in the
file), so a re-load gives the same ids.

Treatment (first applicable reason per row):
1. malformed -> quarantine: missing customer, timestamp, amount (or price) or mapped
   order id; a number that does not parse; an unparseable date; an id over 64 chars;
2. exact duplicate of an earlier row -> quarantine "duplicate row" when the file has
   order ids (a repeated line), but KEPT as a separate purchase when ids are derived
   (several purchases on one day, as in CDNOW) -- option `duplicates` overrides;
3. negative amount or quantity -> quarantine; zero amount -> loaded and counted
   (CDNOW's free items), or quarantined with zero_amount=quarantine;
4. an order id already used by another customer -> quarantine.

Orders: status from the status column ("cancelled" -> "canceled") or "completed";
items_value = sum of line amounts; freight 0; n_items = lines. order_items are written
when product, category or quantity is mapped. Customers: country; state = state, else
country; region = region, else the Brazilian macro-region of a BR state code, else the
state; a state still unknown takes the region; first_seen = first purchase.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from storage import schema
from storage.geography import region_of_state
from storage.loaders.bulk import KEEP_EARLIEST, KEEP_IF_NULL
from storage.loaders.context import KEY_LIMIT, LoadContext
from storage.loaders.ledger import KeyLedger, RowSet, hash_keys
from storage.loaders.lines import OrderBook, customers_of, items_of, number_rows
from storage.loaders.report import LoadError
from storage.loaders.sources import CsvOptions, prefetch, read_chunks, read_header, single_source
from storage.store import NON_PURCHASE_STATUSES
from storage.validation import (
    blank,
    clean_text,
    first_reason,
    header_key,
    infer_date_format,
    parse_datetimes,
    parse_numbers,
    positions,
    take,
    too_long,
)

SOURCE = "transactions"
MAPPING_FIELDS = (
    "customer", "order", "timestamp", "amount", "price", "quantity", "product", "category",
    "status", "region", "state", "city", "country",
)
FIELD_ALIASES = {
    "customer_id": "customer", "client": "customer",
    "order_id": "order", "invoice": "order", "transaction": "order", "transaction_id": "order",
    "date": "timestamp", "datetime": "timestamp", "time": "timestamp", "purchased_at": "timestamp",
    "value": "amount", "total": "amount", "revenue": "amount", "sales": "amount",
    "unit_price": "price", "qty": "quantity", "product_id": "product", "sku": "product",
}
CUSTOMER_FIELDS = ("region", "state", "city", "country")
OPTIONS = (
    "encoding", "chunksize", "date_format", "sep", "header", "columns",
    "customers_file", "customers_key", "products_file", "products_key", "duplicates", "zero_amount",
)

CUSTOMER_MERGE = {
    "first_seen": KEEP_EARLIEST,
    "city": KEEP_IF_NULL, "state": KEEP_IF_NULL, "region": KEEP_IF_NULL, "country": KEEP_IF_NULL,
}
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off", "none"}


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LoadError(f"option {name}: {value!r} is not accepted; use true or false.")


def _choice(name: str, value: object, accepted: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in accepted:
        raise LoadError(f"option {name}: {value!r} is not accepted; use {' or '.join(accepted)}.")
    return text


def _names(value: object) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value)
    text = str(value)
    for sep in ("|", ";", ","):
        if sep in text:
            return tuple(p.strip() for p in text.split(sep))
    return (text.strip(),)


def _match(name: str, header: list[str]) -> str | None:
    if name in header:
        return name
    loose = {header_key(h): h for h in header}
    return loose.get(header_key(name))


def _side_file(option: str, value: str, main: Path) -> Path:
    candidate = Path(value).expanduser()
    if not candidate.is_absolute() and not candidate.exists():
        candidate = main.parent / candidate
    if not candidate.exists():
        raise LoadError(f"option {option}: {value} does not exist (also looked in {main.parent}).")
    return candidate


class _Lookup:
    """A side file (customers or products) read whole, indexed by its key column."""

    def __init__(self, ctx: LoadContext, option: str, path: Path, key: str, wanted: dict[str, str],
                 encoding: str | None):
        src = single_source(path)
        csv = CsvOptions(encoding=encoding)
        header = read_header(src, csv)
        key_col = _match(key, header)
        if key_col is None:
            raise LoadError(f"{src.label} ({option}) has no key column {key} (found: {', '.join(header)}).")
        frames = [c.frame for c in read_chunks(src, csv)]
        frame = pd.concat(frames) if frames else pd.DataFrame(columns=header, dtype="str")
        frame = frame.assign(**{key_col: clean_text(frame[key_col])}).dropna(subset=[key_col])
        frame = frame.drop_duplicates(key_col, keep="last").set_index(key_col)
        self.columns = {f: col for f, name in wanted.items() if (col := _match(name, header)) is not None}
        self.frame = frame[[c for c in self.columns.values() if c != key_col]]
        self.label = src.label

    def values(self, field: str, keys: pd.Series) -> pd.Series:
        col = self.columns[field]
        values = clean_text(self.frame[col])
        return pd.Series(take(values, positions(keys, values.index)), index=keys.index, dtype="str")


def load(ctx: LoadContext, path: Path, mapping: dict[str, str], options: dict) -> None:
    src = single_source(path)
    csv = CsvOptions(
        sep=str(options.get("sep", ",")),
        header=None if options.get("header") in (None, "") else _flag("header", options["header"]),
        names=_names(options.get("columns")),
        encoding=options.get("encoding"),
        chunksize=options["chunksize"],
    )
    need = [f for f in ("customer", "timestamp") if f not in mapping]
    if "amount" not in mapping and "price" not in mapping:
        need.append("amount")
    if need:
        raise LoadError(
            "the transactions format needs a column mapping; missing: " + ", ".join(need)
            + " (e.g. --map customer=CustomerID,order=TransactionID,timestamp=TransactionDate,amount=TotalValue)."
        )
    header = read_header(src, csv)

    customers_lookup = products_lookup = None
    if options.get("customers_file"):
        wanted = {f: mapping[f] for f in CUSTOMER_FIELDS if f in mapping}
        customers_lookup = _Lookup(ctx, "customers_file", _side_file("customers_file", options["customers_file"], path),
                                   options.get("customers_key") or mapping["customer"], wanted, options.get("encoding"))
    if options.get("products_file"):
        if "product" not in mapping:
            raise LoadError("option products_file needs a product column in the mapping (product=...).")
        wanted = {"category": mapping["category"]} if "category" in mapping else {}
        products_lookup = _Lookup(ctx, "products_file", _side_file("products_file", options["products_file"], path),
                                  options.get("products_key") or mapping["product"], wanted, options.get("encoding"))

    cols: dict[str, str] = {}
    unknown = []
    for field, name in mapping.items():
        col = _match(name, header)
        if col is not None:
            cols[field] = col
        elif customers_lookup is not None and field in customers_lookup.columns or products_lookup is not None and field in products_lookup.columns:
            continue
        else:
            unknown.append(f"{name} ({field})")
    if unknown:
        raise LoadError(
            f"{src.label}: missing column(s) {', '.join(unknown)} named in the mapping "
            f"(found: {', '.join(header)})."
        )

    derived = "order" not in cols
    duplicates = _choice("duplicates", options.get("duplicates", "keep" if derived else "quarantine"),
                         ("quarantine", "keep"))
    zero_amount = _choice("zero_amount", options.get("zero_amount", "keep"), ("keep", "quarantine"))
    write_items = any(f in mapping for f in ("product", "category", "quantity"))
    state = _State(
        cols=cols, derived=derived, duplicates=duplicates, zero_amount=zero_amount, write_items=write_items,
        date_format=options.get("date_format"), customers=customers_lookup, products=products_lookup,
    )
    for name in ("orders", "purchases", "lines", "customers", "duplicate_rows", "zero_amount", "negative_amount"):
        ctx.count(name, 0)
    stats: dict = {}
    for chunk in prefetch(read_chunks(src, csv, stats)):
        raw = chunk.frame
        ctx.rows_read += len(raw) + len(chunk.bad_lines) + (0 if chunk.cut is None else len(chunk.cut))
        ctx.reject_chunk_extras(src, chunk)
        if raw.empty:
            continue
        if state.date_format is None:
            state.date_format = infer_date_format(raw[cols["timestamp"]])
        _load_chunk(ctx, src, raw, state)
        ctx.advance(len(raw))
    if derived:
        ctx.notes.append("No order column: each row is one order, id <customer>/<date>/<occurrence>.")
    ctx.note_reading(src, stats)


class _State:
    """What persists across the chunks of one transactions load."""

    def __init__(self, *, cols, derived, duplicates, zero_amount, write_items, date_format,  # noqa: ANN001
                 customers, products):
        self.cols: dict[str, str] = cols
        self.derived: bool = derived
        self.duplicates: str = duplicates
        self.zero_amount: str = zero_amount
        self.write_items: bool = write_items
        self.date_format: str | None = date_format
        self.customers: _Lookup | None = customers
        self.products: _Lookup | None = products
        self.book = OrderBook()
        self.rows = RowSet()
        self.occurrences = KeyLedger(n_lines=(np.int64, 0))


def _text(raw: pd.DataFrame, cols: dict[str, str], field: str) -> pd.Series:
    if field in cols:
        return clean_text(raw[cols[field]])
    return pd.Series(np.nan, index=raw.index, dtype="str")


def _stamp(when: pd.Series) -> pd.Series:
    """YYYYMMDD, or YYYYMMDDHHMMSS when the time is not midnight (integer arithmetic: fast)."""
    t = when.to_numpy(dtype="datetime64[s]")
    day = t.astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    ymd = ((month.astype("datetime64[Y]").astype(np.int64) + 1970) * 10_000
           + (month.astype(np.int64) % 12 + 1) * 100 + (day - month).astype(np.int64) + 1)
    secs = (t - day).astype(np.int64)
    hms = secs // 3600 * 10_000 + secs // 60 % 60 * 100 + secs % 60
    stamp = np.where(hms == 0, ymd, ymd * 1_000_000 + hms)
    return pd.Series(stamp, index=when.index).astype("str").where(when.notna())


def _load_chunk(ctx: LoadContext, src, raw: pd.DataFrame, st: _State) -> None:  # noqa: ANN001, PLR0915
    cols = st.cols
    customer = _text(raw, cols, "customer")
    order = _text(raw, cols, "order")
    product = _text(raw, cols, "product")
    when, bad_when = parse_datetimes(raw[cols["timestamp"]], st.date_format or "ISO8601")
    if "quantity" in cols:
        qty, bad_qty = parse_numbers(raw[cols["quantity"]])
    else:
        qty, bad_qty = pd.Series(1.0, index=raw.index), pd.Series(False, index=raw.index)
    if "amount" in cols:
        amount, bad_amount = parse_numbers(raw[cols["amount"]])
        amount_col = cols["amount"]
    else:
        price, bad_amount = parse_numbers(raw[cols["price"]])
        amount = price * qty.fillna(1.0)
        amount_col = cols["price"]

    checks = [
        (f"missing value: {cols['customer']}", customer.isna()),
        (f"missing value: {cols['timestamp']}", blank(raw[cols["timestamp"]])),
        (f"missing value: {amount_col}", blank(raw[amount_col])),
    ]
    if not st.derived:
        checks.append((f"missing value: {cols['order']}", order.isna()))
    checks += [
        (f"not a number: {amount_col}", bad_amount),
        (f"not a number: {cols.get('quantity', 'quantity')}", bad_qty),
        (f"unparseable date: {cols['timestamp']}", bad_when),
        (f"value too long: {cols['customer']} (max {KEY_LIMIT})", too_long(customer, KEY_LIMIT)),
        (f"value too long: {cols.get('order', 'order')} (max {KEY_LIMIT})", too_long(order, KEY_LIMIT)),
        (f"value too long: {cols.get('product', 'product')} (max {KEY_LIMIT})", too_long(product, KEY_LIMIT)),
    ]
    malformed = first_reason(raw.index, checks)

    # order ids and line numbers (for every row that has its keys, whatever else is wrong)
    if st.derived:
        keyed = (customer.notna() & when.notna()).to_numpy()
        occurrence = np.zeros(len(raw), dtype=np.int64)
        occurrence[keyed] = number_rows(st.occurrences, hash_keys(customer[keyed], when[keyed]))
        order = customer + "/" + _stamp(when) + "/" + pd.Series(occurrence, index=raw.index).astype("str")
        too_long_id = too_long(order, KEY_LIMIT) & keyed
        if too_long_id.any():  # keep ids within the column size with a stable digest
            digest = pd.Series(hash_keys(order[too_long_id]), index=order[too_long_id].index)
            order = order.where(~too_long_id, "h/" + digest.map("{:016x}".format))
        item_seq = np.ones(len(raw), dtype=np.int64)
    else:
        keyed = order.notna().to_numpy()
        item_seq = np.zeros(len(raw), dtype=np.int64)
        item_seq[keyed] = st.book.number_lines(order[keyed])

    is_dup = st.rows.seen_before(hash_keys(raw))
    bad = ctx.reject(src, raw, malformed).to_numpy()
    dup_open = is_dup & ~bad
    ctx.count("duplicate_rows", dup_open.sum())
    negative, zero = f"negative amount: {amount_col}", f"zero amount: {amount_col}"
    rules = first_reason(raw.index, [
        ("duplicate row", dup_open if st.duplicates == "quarantine" else np.zeros(len(raw), bool)),
        (negative, amount.lt(0)),
        (f"negative quantity: {cols.get('quantity', 'quantity')}", qty.lt(0)),
        (zero, amount.eq(0) if st.zero_amount == "quarantine" else np.zeros(len(raw), bool)),
    ])
    rules[bad] = None
    ruled = ctx.reject(src, raw, rules).to_numpy()
    ok = ~bad & ~ruled
    ctx.count("negative_amount", (rules == negative).sum())
    ctx.count("zero_amount", ((rules == zero).to_numpy() | (ok & amount.eq(0).to_numpy())).sum())
    if not ok.any():
        return

    status = _text(raw, cols, "status").str.lower().replace({"cancelled": "canceled"}).fillna("completed")
    attrs = {}
    for field in CUSTOMER_FIELDS:
        if field in cols:
            attrs[field] = _text(raw, cols, field)
        elif st.customers is not None and field in st.customers.columns:
            attrs[field] = st.customers.values(field, customer)
        else:
            attrs[field] = pd.Series(np.nan, index=raw.index, dtype="str")
    country = attrs["country"]
    state_ = attrs["state"].fillna(country)
    brazil = country.isna() | country.str.lower().isin(["brazil", "brasil", "br"])
    br_region = state_.map({s: region_of_state(s) for s in state_.dropna().unique()}).astype("str").where(brazil)
    region = attrs["region"].fillna(br_region).fillna(state_)
    state_ = state_.fillna(region)  # e.g. only a region (continent) is known: group by it
    if "category" in cols:
        category = _text(raw, cols, "category")
    elif st.products is not None and "category" in st.products.columns:
        category = st.products.values("category", product)
    else:
        category = pd.Series(np.nan, index=raw.index, dtype="str")

    lines = pd.DataFrame({
        "order_id": order.to_numpy()[ok],
        "customer_id": customer.to_numpy()[ok],
        "purchased_at": when.to_numpy()[ok],
        "status": status.str[:32].to_numpy()[ok],
        "value": amount.to_numpy()[ok],
        "quantity": qty.fillna(1.0).to_numpy()[ok],
        "product_id": product.to_numpy()[ok],
        "category": category.str[:128].to_numpy()[ok],
        "item_seq": item_seq[ok],
        "city": attrs["city"].str[:128].to_numpy()[ok],
        "state": state_.str[:64].to_numpy()[ok],
        "region": region.str[:64].to_numpy()[ok],
        "country": country.str[:64].to_numpy()[ok],
    }, index=raw.index[ok])

    if st.derived:
        orders = pd.DataFrame({
            "order_id": lines["order_id"].to_numpy(),
            "customer_id": lines["customer_id"].to_numpy(),
            "purchased_at": lines["purchased_at"].to_numpy(),
            "status": lines["status"].to_numpy(),
            "items_value": lines["value"].to_numpy(),
            "freight_value": 0.0,
            "n_items": 1,
        })
        new = np.ones(len(orders), dtype=bool)
    else:
        orders, conflict = st.book.assemble(lines)
        ctx.reject(src, raw.loc[lines.index], pd.Series(
            np.where(conflict, "order id already belongs to another customer", None), index=lines.index,
        ))
        lines = lines[~conflict]
        new = orders.pop("is_new").to_numpy()
    ctx.count("lines", len(lines))
    ctx.count("orders", new.sum())
    ctx.count("purchases", (new & ~orders["status"].isin(NON_PURCHASE_STATUSES).to_numpy()).sum())

    customers, fresh = st.book.customers_to_write(customers_of(lines))
    customers["source"] = SOURCE
    ctx.count("customers", fresh)
    ctx.write(schema.customers, customers, CUSTOMER_MERGE, distinct=fresh)
    orders["source"] = SOURCE
    ctx.write(schema.orders, orders, distinct=int(new.sum()))
    if st.write_items:
        ctx.write(schema.order_items, items_of(lines))
