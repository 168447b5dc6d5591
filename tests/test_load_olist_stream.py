"""The streamed Olist load: chunk boundaries change nothing, the Arrow reader reads as pandas does."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import data_path, new_store
from sqlalchemy import Engine

from storage.loaders import load_path
from storage.loaders.keys import KeyIndex, combine, hash_strings
from storage.loaders.sources import CsvOptions, list_sources, read_chunks, read_chunks_fast

pytestmark = pytest.mark.realdata

TABLES = {
    "customers": "customer_id", "orders": "order_id", "order_items": "order_id, item_seq",
    "payments": "order_id, seq", "reviews": "review_id, order_id", "quarantine": "source, row_number",
}


@functools.cache
def _olist(name: str) -> pd.DataFrame:
    return pd.read_csv(data_path("olist", name), dtype=str, keep_default_na=False, na_values=[""])


def write_slice(dst: Path, n: int, twin: bool = False) -> Path:
    """The first `n` orders and their rows; `twin`: a repeated order id at the end, and an orphan item."""
    orders = _olist("olist_orders_dataset.csv.xz").head(n)
    ids = set(orders["order_id"])
    items = _olist("olist_order_items_dataset.csv.xz")
    items = items[items["order_id"].isin(ids)]
    if twin:
        orders = pd.concat([orders, orders.iloc[[5]].assign(order_status="canceled")])
        items = pd.concat([items, items.iloc[[0]].assign(order_id="f" * 32)])
    customers = _olist("olist_customers_dataset.csv.xz")
    payments = _olist("olist_order_payments_dataset.csv.gz")
    reviews = _olist("olist_order_reviews_dataset.partial.csv.xz")
    dst.mkdir(parents=True, exist_ok=True)
    for stem, part in {
        "olist_orders_dataset": orders,
        "olist_customers_dataset": customers[customers["customer_id"].isin(orders["customer_id"])],
        "olist_order_items_dataset": items,
        "olist_order_payments_dataset": payments[payments["order_id"].isin(ids)],
        "olist_order_reviews_dataset": reviews[reviews["order_id"].isin(ids)],
        "olist_products_dataset": _olist("olist_products_dataset.csv.gz"),
        "product_category_name_translation": _olist("product_category_name_translation.csv.gz"),
    }.items():
        part.to_csv(dst / f"{stem}.csv", index=False)
    return dst


def dump(engine: Engine) -> dict[str, pd.DataFrame]:
    with engine.connect() as conn:
        out = {}
        for table, key in TABLES.items():
            cols = "source, row_number, reason" if table == "quarantine" else "*"
            out[table] = pd.read_sql_query(f"SELECT {cols} FROM {table} ORDER BY {key}", conn)
        return out


def test_small_chunks_give_the_same_store(tmp_path: Path) -> None:
    folder = write_slice(tmp_path / "olist", 1_500, twin=True)
    stores = {}
    for name, options in (("whole", None), ("chunked", {"chunksize": 97})):
        engine = new_store(tmp_path, f"{name}.db")
        report = load_path(engine, folder, "olist", options=options)
        stores[name] = (report, dump(engine))
        engine.dispose()
    (whole, a), (chunked, b) = stores["whole"], stores["chunked"]
    assert whole.quarantined == chunked.quarantined == {
        "duplicate id: order_id": 1, "orphan: order_id not in the loaded orders": 1}
    assert (whole.rows_read, whole.tables, whole.counts) == (chunked.rows_read, chunked.tables, chunked.counts)
    assert whole.counts["orders"] == 1_500
    for table in TABLES:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=False, rtol=1e-12)
    twin = _olist("olist_orders_dataset.csv.xz").iloc[5]
    status = b["orders"].set_index("order_id").loc[twin["order_id"], "status"]
    assert status == twin["order_status"]  # the first row wins, across chunks too


def test_reload_into_a_store_with_data_upserts(tmp_path: Path) -> None:
    engine = new_store(tmp_path, "p.db")
    small = load_path(engine, write_slice(tmp_path / "a", 300), "olist")
    big = load_path(engine, write_slice(tmp_path / "b", 900), "olist", options={"chunksize": 200})
    assert small.quarantined == big.quarantined == {}
    after = dump(engine)
    assert len(after["orders"]) == 900
    again = load_path(engine, tmp_path / "b", "olist")
    assert again.tables == big.tables
    reloaded = dump(engine)
    for table in TABLES:
        if "load_run" in after[table]:
            # every row the reload wrote carries its run now (what an incremental refresh reads)
            assert set(after[table]["load_run"]) <= {small.load_run_id, big.load_run_id}
            assert (reloaded[table]["load_run"] == again.load_run_id).all(), table
            after[table] = after[table].drop(columns="load_run")
            reloaded[table] = reloaded[table].drop(columns="load_run")
        pd.testing.assert_frame_equal(reloaded[table], after[table])


# --- the Arrow reader against the pandas reader ------------------------------------------------


def _read_all(reader, path: Path, chunksize: int) -> tuple[pd.DataFrame, list, list, dict]:  # noqa: ANN001
    stats: dict = {}
    src = list_sources(path)[0]
    frames, bad, cut = [], [], []
    for chunk in reader(src, CsvOptions(chunksize=chunksize), stats):
        frames.append(chunk.frame)
        bad.extend(chunk.bad_lines)
        if chunk.cut is not None:
            cut.append(chunk.cut)
    frame = pd.concat(frames) if frames else pd.DataFrame()
    return frame, bad, [c.index.tolist() for c in cut], stats


BASE = "a,b,c\n" + "".join(f"x{i},\"line {i}\nwith a newline\",{i}\n" for i in range(500))


@pytest.mark.parametrize("name, data", [
    ("clean", BASE.encode()),
    ("not utf-8 late", (BASE + "caf\xe9,d,1\n").encode("latin-1") + BASE[6:].encode()),
    ("extra field late", (BASE + "p,q,r,s\n" + BASE[6:]).encode()),
    ("fewer fields late", (BASE + "p,q\n" + BASE[6:]).encode()),
    ("cut last line", (BASE + "p,q").encode()),
    ("complete last line without line end", (BASE + "p,q,r").encode()),
    ("blank values", (BASE + ",,\n\"\",x,\n").encode()),
])
def test_fast_reader_reads_as_pandas(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    for chunksize in (64, 100_000):
        fast = _read_all(read_chunks_fast, path, chunksize)
        slow = _read_all(read_chunks, path, chunksize)
        pd.testing.assert_frame_equal(fast[0], slow[0])
        assert fast[1:3] == slow[1:3], name
        assert fast[3].get("cp1252_bytes", 0) == slow[3].get("cp1252_bytes", 0)
        assert fast[3].get("unterminated_last_line") == slow[3].get("unterminated_last_line")


# --- hashed key sets ------------------------------------------------------------------------------


def test_hashes_do_not_depend_on_the_neighbours() -> None:
    ids = pd.Series([f"{i:032x}" for i in range(1000)], dtype="str")
    fixed = hash_strings(ids)
    mixed = hash_strings(pd.concat([ids, pd.Series(["short", None, "é" * 40], dtype="str")], ignore_index=True))
    assert (fixed == mixed[:1000]).all() and len(np.unique(fixed)) == 1000
    assert mixed[1001] == 0 and mixed[1000] != mixed[1002]
    assert len(set(combine(fixed[:3], np.array([1.0, 2.0, np.nan])))) == 3


def test_key_index() -> None:
    index = KeyIndex()
    keys = hash_strings(pd.Series(["a", "b", "c", "b"], dtype="str"))
    new = index.first_time(keys)
    assert new.tolist() == [True, True, True, False]
    index.add(keys[new], np.array([0, 1, 2]))
    more = hash_strings(pd.Series(["c", "d"], dtype="str"))
    assert index.first_time(more).tolist() == [False, True]
    assert index.lookup(more).tolist() == [2, -1]
