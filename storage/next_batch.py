"""The next export of an Olist-layout folder, as a day's export brings it: new orders (of
known and of new people, after the last purchase) and changes to earlier orders (some
canceled, some delivered late, some with an extra line, payment and review, one customer
moved to another state). For incremental loads and refreshes (tests, benchmarks).

`next_batch(first, out)` reads only what it needs of the big files (Arrow's CSV reader,
rows picked before anything becomes Python objects), so it runs at 10M orders too.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

STEMS = {name: f"olist_{name}_dataset" for name in
         ("customers", "orders", "order_items", "order_payments", "order_reviews", "products")}


def _path(folder: Path, name: str) -> Path:
    return next(folder.glob(STEMS[name] + ".csv*"))


def _read_arrow(folder: Path, name: str) -> pa.Table:
    """The file with every column as text (empty fields as "")."""
    path = _path(folder, name)
    header = pacsv.open_csv(path).schema.names
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False))


def _rows_of(table: pa.Table, column: str, values: list[str]) -> pd.DataFrame:
    mask = pc.is_in(table.column(column), value_set=pa.array(values, type=pa.string()))
    return table.filter(mask).to_pandas()


def _new_id(rng: np.random.Generator) -> str:
    return uuid.UUID(bytes=rng.bytes(16)).hex


def next_batch(first: Path, out: Path, seed: int = 1, *, changed: int = 40, new: int = 60) -> dict[str, int]:
    """Write the batch's CSVs to `out`; returns how many orders it changes and adds."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    orders_all = _read_arrow(first, "orders")
    picked = rng.choice(orders_all.num_rows, changed + new, replace=False)
    orders = orders_all.take(pa.array(picked)).to_pandas()
    last = pd.Timestamp(pc.max(orders_all.column("order_purchase_timestamp")).as_py())
    del orders_all
    customers = _rows_of(_read_arrow(first, "customers"), "customer_id", orders["customer_id"].tolist())
    wanted = orders["order_id"].tolist()
    items = _rows_of(_read_arrow(first, "order_items"), "order_id", wanted)
    pays = _rows_of(_read_arrow(first, "order_payments"), "order_id", wanted)
    reviews = _rows_of(_read_arrow(first, "order_reviews"), "order_id", wanted)

    old = orders.iloc[:changed].copy()
    third = changed // 3
    old.iloc[:third, old.columns.get_loc("order_status")] = "canceled"
    late = pd.to_datetime(old["order_purchase_timestamp"].iloc[third: 2 * third]) + pd.Timedelta(days=9)
    old.iloc[third: 2 * third, old.columns.get_loc("order_delivered_customer_date")] = \
        late.dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()
    old.iloc[third: 2 * third, old.columns.get_loc("order_status")] = "delivered"
    extra_for = old["order_id"].iloc[2 * third:].tolist()  # an extra line, payment and review

    base = orders.iloc[changed:].copy()
    new_ids = [_new_id(rng) for _ in range(new)]
    id_map = dict(zip(base["order_id"], new_ids, strict=True))
    fresh = base.assign(order_id=new_ids)
    stamps = last + pd.to_timedelta(rng.integers(1, 30 * 86_400, new), unit="s")
    fresh["order_purchase_timestamp"] = stamps.strftime("%Y-%m-%d %H:%M:%S")
    for col in ("order_approved_at", "order_delivered_carrier_date", "order_delivered_customer_date"):
        fresh[col] = ""
    fresh["order_status"] = "shipped"
    # Olist's customer_id is per order: a new one each, of a known person (two thirds)
    # or of a new person
    source = customers.set_index("customer_id").loc[fresh["customer_id"]].reset_index()
    source["customer_id"] = [_new_id(rng) for _ in range(new)]
    newcomers = np.arange(new) >= 2 * new // 3
    source.loc[newcomers, "customer_unique_id"] = [_new_id(rng) for _ in range(int(newcomers.sum()))]
    fresh["customer_id"] = source["customer_id"].to_numpy()
    # a known person moves (their state changes): one with no other order in the batch, as
    # a person's place is that of their latest order
    known = customers[customers["customer_id"].isin(old["customer_id"])]
    once = known["customer_unique_id"].map(known["customer_unique_id"].value_counts()) == 1
    alone = known[once & ~known["customer_unique_id"].isin(source["customer_unique_id"])]
    moved = alone.head(1).copy()
    moved["customer_state"] = "AC"
    batch_customers = pd.concat([customers[customers["customer_id"].isin(old["customer_id"])
                                           & ~customers["customer_id"].isin(moved["customer_id"])],
                                 moved, source], ignore_index=True)

    old_items = items[items["order_id"].isin(old["order_id"])]
    new_items = items[items["order_id"].isin(id_map)].assign(order_id=lambda f: f["order_id"].map(id_map))
    extra_items = old_items[old_items["order_id"].isin(extra_for)].groupby("order_id").tail(1).copy()
    extra_items["order_item_id"] = (extra_items["order_item_id"].astype(int) + 1).astype(str)
    extra_items["price"] = "12.50"
    old_pays = pays[pays["order_id"].isin(old["order_id"])]
    new_pays = pays[pays["order_id"].isin(id_map)].assign(order_id=lambda f: f["order_id"].map(id_map))
    extra_pays = old_pays[old_pays["order_id"].isin(extra_for)].groupby("order_id").tail(1).copy()
    extra_pays["payment_sequential"] = (extra_pays["payment_sequential"].astype(int) + 1).astype(str)
    extra_pays["payment_type"] = "pix"  # a method the first batch never had
    extra_pays["payment_value"] = "5.00"
    extra_reviews = pd.DataFrame({
        "review_id": [_new_id(rng) for _ in extra_for], "order_id": extra_for,
        "review_score": [str(s) for s in rng.integers(1, 6, len(extra_for))],
        "review_comment_title": "", "review_comment_message": "",
        "review_creation_date": (last + pd.Timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S"),
        "review_answer_timestamp": "",
    })
    old_reviews = reviews[reviews["order_id"].isin(old["order_id"])]

    tables = {
        "customers": batch_customers, "orders": pd.concat([old, fresh], ignore_index=True),
        "order_items": pd.concat([old_items, extra_items, new_items], ignore_index=True),
        "order_payments": pd.concat([old_pays, extra_pays, new_pays], ignore_index=True),
        "order_reviews": pd.concat([old_reviews, extra_reviews], ignore_index=True),
    }
    for name, frame in tables.items():
        frame.to_csv(out / f"{STEMS[name]}.csv", index=False)
    products = _path(first, "products")
    shutil.copy(products, out / products.name)
    for translation in first.glob("product_category_name_translation.csv*"):
        shutil.copy(translation, out / translation.name)
    return {"changed": changed, "new": new}
