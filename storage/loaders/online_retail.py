"""UCI Online Retail (2010-2011) and Online Retail II (2009-2011) invoices.

Both layouts are read; the header tells which (InvoiceNo/UnitPrice/CustomerID or
Invoice/Price/Customer ID). One CSV row is an invoice line. Treatment, in order
(the first that applies decides a row's fate):

1. malformed -> quarantine: a missing invoice, stock code, quantity, date or price,
   a quantity or price that is not a number, an unparseable date, an id over 64 chars;
2. no CustomerID -> skipped (not loaded, counted as `no_customer`): such rows cannot
   belong to a customer, so they are kept out of customer analytics;
3. exact duplicate of an earlier row (all eight columns) -> quarantine "duplicate row";
4. zero price, negative price (the "A" bad-debt adjustments), zero quantity, a
   negative quantity on an invoice that is not a cancellation, a positive quantity on
   a cancellation -> quarantine;
5. a line whose invoice already belongs to another customer -> quarantine.

The rest loads: one order per invoice (status "canceled" for invoices starting with
C, else "invoiced"; purchased_at = the earliest line time; items_value = sum of
quantity x unit price, negative for cancellations; freight 0; no payments), one
order_item per line (item_seq = position of the line among the invoice's rows in the
file, so quarantined lines leave gaps), one customer per CustomerID (state = region =
country = Country of their last line; first_seen = first purchase).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from storage import schema
from storage.loaders.bulk import KEEP_EARLIEST, KEEP_IF_NULL
from storage.loaders.context import KEY_LIMIT, LoadContext
from storage.loaders.ledger import RowSet, hash_keys
from storage.loaders.lines import OrderBook, customers_of, items_of
from storage.loaders.report import LoadError
from storage.loaders.sources import CsvOptions, prefetch, read_chunks, read_header, single_source
from storage.validation import (
    blank,
    clean_text,
    find_columns,
    first_reason,
    infer_date_format,
    parse_datetimes,
    parse_numbers,
    too_long,
)

SOURCE = "online-retail"
OPTIONS = ("encoding", "chunksize", "date_format")

# canonical name -> accepted header spellings (UCI Online Retail, Online Retail II)
LAYOUT: dict[str, tuple[str, ...]] = {
    "invoice": ("InvoiceNo", "Invoice"),
    "stock_code": ("StockCode",),
    "quantity": ("Quantity",),
    "invoice_date": ("InvoiceDate",),
    "unit_price": ("UnitPrice", "Price"),
    "customer_id": ("CustomerID", "Customer ID"),
    "country": ("Country",),
}

CUSTOMER_MERGE = {
    "first_seen": KEEP_EARLIEST,
    "city": KEEP_IF_NULL, "state": KEEP_IF_NULL, "region": KEEP_IF_NULL, "country": KEEP_IF_NULL,
}


def looks_like(columns: list[str]) -> bool:
    """True when a header is an Online Retail layout."""
    _, missing = find_columns(columns, LAYOUT)
    return not missing


def customer_ids(values: pd.Series) -> pd.Series:
    """CustomerID as text, without the ".0" a float export adds (17850.0 -> 17850)."""
    return clean_text(values).str.replace(r"^(\d+)\.0+$", r"\1", regex=True)


def load(ctx: LoadContext, path: Path, options: dict) -> None:
    src = single_source(path)
    csv = CsvOptions(encoding=options.get("encoding"), chunksize=options["chunksize"])
    header = read_header(src, csv)
    cols, missing = find_columns(header, LAYOUT)
    if missing:
        names = ", ".join(LAYOUT[m][0] for m in missing)
        raise LoadError(
            f"{src.label} is not an Online Retail file: missing column(s) {names} "
            f"(found: {', '.join(header)})."
        )
    date_format = options.get("date_format")
    book = OrderBook()
    rows = RowSet()
    stats: dict = {}
    for name in ("purchases", "cancellations", "purchase_lines", "cancellation_lines",
                 "no_customer", "duplicates", "zero_price", "negative_price", "customers"):
        ctx.count(name, 0)

    for chunk in prefetch(read_chunks(src, csv, stats)):
        raw = chunk.frame
        ctx.rows_read += len(raw) + len(chunk.bad_lines) + (0 if chunk.cut is None else len(chunk.cut))
        ctx.reject_chunk_extras(src, chunk)
        if raw.empty:
            continue
        if date_format is None:
            date_format = infer_date_format(raw[cols["invoice_date"]])
        _load_chunk(ctx, src, raw, cols, date_format, book, rows)
        ctx.advance(len(raw))

    ctx.note_reading(src, stats)


def _load_chunk(ctx: LoadContext, src, raw: pd.DataFrame, cols: dict[str, str], date_format: str,  # noqa: ANN001
                book: OrderBook, rows: RowSet) -> None:
    invoice = clean_text(raw[cols["invoice"]])
    code = clean_text(raw[cols["stock_code"]])
    customer = customer_ids(raw[cols["customer_id"]])
    country = clean_text(raw[cols["country"]])
    qty, bad_qty = parse_numbers(raw[cols["quantity"]])
    price, bad_price = parse_numbers(raw[cols["unit_price"]])
    when, bad_when = parse_datetimes(raw[cols["invoice_date"]], date_format)

    has_invoice = invoice.notna().to_numpy()
    item_seq = np.zeros(len(raw), dtype=np.int64)
    item_seq[has_invoice] = book.number_lines(invoice[has_invoice])
    duplicate = rows.seen_before(hash_keys(raw))
    cancel = invoice.str.upper().str.startswith("C").fillna(False).astype(bool)

    c = cols
    malformed = first_reason(raw.index, [
        (f"missing value: {c['invoice']}", invoice.isna()),
        (f"missing value: {c['stock_code']}", code.isna()),
        (f"missing value: {c['quantity']}", blank(raw[c["quantity"]])),
        (f"missing value: {c['invoice_date']}", blank(raw[c["invoice_date"]])),
        (f"missing value: {c['unit_price']}", blank(raw[c["unit_price"]])),
        (f"not a number: {c['quantity']}", bad_qty),
        (f"not a number: {c['unit_price']}", bad_price),
        (f"unparseable date: {c['invoice_date']}", bad_when),
        (f"value too long: {c['invoice']} (max {KEY_LIMIT})", too_long(invoice, KEY_LIMIT)),
        (f"value too long: {c['stock_code']} (max {KEY_LIMIT})", too_long(code, KEY_LIMIT)),
        (f"value too long: {c['customer_id']} (max {KEY_LIMIT})", too_long(customer, KEY_LIMIT)),
    ])
    bad = ctx.reject(src, raw, malformed).to_numpy()
    no_customer = ~bad & customer.isna().to_numpy()
    ctx.skipped += int(no_customer.sum())
    ctx.count("no_customer", no_customer.sum())

    open_ = ~bad & ~no_customer
    rules = first_reason(raw.index, [
        ("duplicate row", duplicate),
        ("zero price", price.eq(0)),
        ("negative price", price.lt(0)),
        ("zero quantity", qty.eq(0)),
        ("negative quantity outside a cancellation", qty.lt(0) & ~cancel),
        ("positive quantity in a cancellation", qty.gt(0) & cancel),
    ])
    rules[~open_] = None
    ruled = ctx.reject(src, raw, rules).to_numpy()
    for reason, name in (("duplicate row", "duplicates"), ("zero price", "zero_price"),
                         ("negative price", "negative_price")):
        ctx.count(name, (rules == reason).sum())

    ok = open_ & ~ruled
    if not ok.any():
        return
    status = pd.Series(pd.Categorical.from_codes(cancel.to_numpy().astype(np.int8), ["invoiced", "canceled"]),
                       index=raw.index)
    value = qty * price
    lines = pd.DataFrame({
        "order_id": invoice,
        "customer_id": customer,
        "purchased_at": when,
        "status": status,
        "value": value,
        "quantity": qty,
        "product_id": code,
        "category": pd.Series(np.nan, index=raw.index, dtype="str"),
        "item_seq": item_seq,
        "city": pd.Series(np.nan, index=raw.index, dtype="str"),
        "state": country,
        "region": country,
        "country": country,
    })[ok]
    orders, conflict = book.assemble(lines)
    ctx.reject(src, raw.loc[lines.index], pd.Series(
        np.where(conflict, "invoice already belongs to another customer", None), index=lines.index,
    ))
    lines = lines[~conflict]
    canceled = lines["status"].eq("canceled")
    ctx.count("purchase_lines", (~canceled).sum())
    ctx.count("cancellation_lines", canceled.sum())
    new = orders.pop("is_new")
    ctx.count("purchases", (new & orders["status"].eq("invoiced")).sum())
    ctx.count("cancellations", (new & orders["status"].eq("canceled")).sum())

    customers, fresh = book.customers_to_write(customers_of(lines))
    customers["source"] = SOURCE
    ctx.count("customers", fresh)
    ctx.write(schema.customers, customers, CUSTOMER_MERGE, distinct=fresh)
    orders["source"] = SOURCE
    ctx.write(schema.orders, orders, distinct=int(new.sum()))
    ctx.write(schema.order_items, items_of(lines))
