"""Loading the Olist CSVs: figures checked against pandas on the raw files."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import new_store
from sqlalchemy import Engine, func, select

from storage import schema
from storage.geography import region_of_state
from storage.loaders import LoadError, detect_format, load_path
from storage.store import NON_PURCHASE_STATUSES
from tests.conftest import data_path

pytestmark = pytest.mark.realdata

FILES = {
    "orders": "olist_orders_dataset.csv.xz",
    "customers": "olist_customers_dataset.csv.xz",
    "items": "olist_order_items_dataset.csv.xz",
    "payments": "olist_order_payments_dataset.csv.gz",
    "reviews": "olist_order_reviews_dataset.partial.csv.xz",
    "products": "olist_products_dataset.csv.gz",
    "translation": "product_category_name_translation.csv.gz",
}
TABLES = ("customers", "orders", "order_items", "payments", "reviews", "quarantine")


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(select(func.count()).select_from(schema.metadata.tables[t])).scalar_one()
                for t in TABLES}


def read_raw(name: str) -> pd.DataFrame:
    return pd.read_csv(data_path("olist", FILES[name]), dtype=str, keep_default_na=False,
                       na_values=[""], encoding="utf-8-sig")


@pytest.fixture(scope="module")
def raw() -> SimpleNamespace:
    return SimpleNamespace(**{name: read_raw(name) for name in FILES})


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The full Olist data loaded twice into one SQLite store."""
    folder = data_path("olist")
    engine = new_store(tmp_path_factory.mktemp('olist'), "pulse.db")
    calls: list[tuple[int, int | None]] = []
    first = load_path(engine, folder, "olist", progress=lambda d, t: calls.append((d, t)))
    after_first = table_counts(engine)
    second = load_path(engine, folder, "olist")
    after_second = table_counts(engine)
    yield SimpleNamespace(engine=engine, first=first, second=second, after_first=after_first,
                          after_second=after_second, progress=calls)
    engine.dispose()


def frame(engine: Engine, sql: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql_query(sql, conn)


# --- full data on SQLite -------------------------------------------------------------------


def test_counts_match_the_raw_files(loaded, raw) -> None:
    counts = loaded.after_first
    assert counts["orders"] == raw.orders["order_id"].nunique() == 99_441
    assert counts["customers"] == raw.customers["customer_unique_id"].nunique() == 96_096
    assert counts["order_items"] == len(raw.items) == 112_650
    assert counts["payments"] == len(raw.payments)
    assert counts["reviews"] == len(raw.reviews)
    assert counts["quarantine"] == 0
    report = loaded.first
    assert report.rows_read == sum(len(getattr(raw, n)) for n in ("orders", "customers", "items", "payments", "reviews"))
    assert report.rows_loaded == report.rows_read and report.quarantined == {} and report.skipped == 0
    assert report.counts["purchases"] == int((~raw.orders["order_status"].isin(NON_PURCHASE_STATUSES)).sum())


def test_loading_twice_changes_no_count(loaded) -> None:
    assert loaded.after_second == loaded.after_first
    assert loaded.second.rows_loaded == loaded.first.rows_loaded
    assert loaded.second.tables == loaded.first.tables
    runs = frame(loaded.engine, "SELECT status, rows_read FROM load_runs ORDER BY id")
    assert runs["status"].tolist() == ["ok", "ok"]
    assert runs["rows_read"].tolist() == [loaded.first.rows_read] * 2


def test_item_and_payment_values(loaded, raw) -> None:
    price = raw.items["price"].astype(float)
    freight = raw.items["freight_value"].astype(float)
    totals = frame(loaded.engine, "SELECT SUM(items_value) AS items, SUM(freight_value) AS freight, "
                                  "SUM(payment_value) AS paid, SUM(n_items) AS n FROM orders")
    assert totals["items"][0] + totals["freight"][0] == pytest.approx(price.sum() + freight.sum(), rel=1e-9)
    assert totals["items"][0] == pytest.approx(price.sum(), rel=1e-9)
    assert totals["paid"][0] == pytest.approx(raw.payments["payment_value"].astype(float).sum(), rel=1e-9)
    assert totals["n"][0] == len(raw.items)

    # order by order, against pandas
    expected = raw.items.assign(price=price, freight=freight).groupby("order_id").agg(
        items=("price", "sum"), freight=("freight", "sum"), n=("price", "size"))
    got = frame(loaded.engine, "SELECT order_id, items_value, freight_value, n_items, payment_value FROM orders")
    got = got.set_index("order_id")
    joined = got.join(expected, how="left")
    assert np.allclose(joined["items_value"], joined["items"].fillna(0.0))
    assert np.allclose(joined["freight_value"], joined["freight"].fillna(0.0))
    assert (joined["n_items"] == joined["n"].fillna(0)).all()
    assert got.loc["bfbd0f9bdef84302105ad712db648a6c", "payment_value"] is None or np.isnan(
        got.loc["bfbd0f9bdef84302105ad712db648a6c", "payment_value"])  # the order with no payment


def test_customers_are_people_with_the_place_of_their_latest_order(loaded, raw) -> None:
    orders = raw.orders.merge(raw.customers, on="customer_id")
    orders["ts"] = pd.to_datetime(orders["order_purchase_timestamp"])
    latest = orders.sort_values("ts", kind="stable").drop_duplicates("customer_unique_id", keep="last")
    latest = latest.set_index("customer_unique_id")
    got = frame(loaded.engine, "SELECT * FROM customers").set_index("customer_id")
    assert set(got.index) == set(latest.index)
    got = got.loc[latest.index]
    assert (got["state"] == latest["customer_state"]).all()
    assert (got["city"] == latest["customer_city"]).all()
    assert (got["zip_prefix"] == latest["customer_zip_code_prefix"]).all()  # leading zeros kept
    assert got["zip_prefix"].str.startswith("0").sum() > 1000
    assert (got["region"] == got["state"].map(region_of_state)).all()
    assert (got["country"] == "Brazil").all() and (got["source"] == "olist").all()

    purchases = orders[~orders["order_status"].isin(NON_PURCHASE_STATUSES)]
    first = purchases.groupby("customer_unique_id")["ts"].min()
    seen = pd.to_datetime(got["first_seen"])
    assert (seen.loc[first.index] == first).all()
    assert seen.drop(first.index).isna().all()  # people whose every order was canceled/unavailable
    assert seen.drop(first.index).size > 0


def test_orders_keep_the_per_order_customer_ref_and_dates(loaded, raw) -> None:
    got = frame(loaded.engine, "SELECT order_id, customer_id, source_customer_ref, status, purchased_at, "
                               "approved_at, delivered_at, estimated_delivery_at FROM orders").set_index("order_id")
    exp = raw.orders.merge(raw.customers, on="customer_id").set_index("order_id").loc[got.index]
    assert (got["source_customer_ref"] == exp["customer_id"]).all()
    assert (got["customer_id"] == exp["customer_unique_id"]).all()
    assert (got["status"] == exp["order_status"]).all()
    for ours, theirs in (("purchased_at", "order_purchase_timestamp"), ("approved_at", "order_approved_at"),
                         ("delivered_at", "order_delivered_customer_date"),
                         ("estimated_delivery_at", "order_estimated_delivery_date")):
        a, b = pd.to_datetime(got[ours]), pd.to_datetime(exp[theirs])
        assert ((a == b) | (a.isna() & b.isna())).all(), ours
    # SQLAlchemy reads the stored text back as datetimes
    with loaded.engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(schema.orders.c.purchased_at),
                                     func.max(schema.orders.c.purchased_at))).one()
    assert (str(lo), str(hi)) == ("2016-09-04 21:15:19", "2018-10-17 17:30:18")


def test_item_categories_are_english_when_translated(loaded, raw) -> None:
    en = raw.translation.set_index("product_category_name")["product_category_name_english"]
    pt = raw.products.set_index("product_id")["product_category_name"]
    expected = raw.items["product_id"].map(pt)
    expected = expected.map(en).fillna(expected)
    got = frame(loaded.engine, "SELECT order_id, item_seq, category, quantity, seller_id FROM order_items")
    merged = raw.items.assign(item_seq=raw.items["order_item_id"].astype(int), expected=expected).merge(
        got, on=["order_id", "item_seq"])
    assert len(merged) == len(raw.items)
    assert (merged["category"].fillna("-") == merged["expected"].fillna("-")).all()
    assert merged["category"].isna().sum() == expected.isna().sum() > 0
    assert "pc_gamer" in set(merged["category"])  # untranslated: Portuguese name kept
    assert (merged["quantity"] == 1).all()
    assert (merged["seller_id_x"] == merged["seller_id_y"]).all()


def test_reviews_and_payments(loaded, raw) -> None:
    reviews = frame(loaded.engine, "SELECT score, COUNT(*) AS n FROM reviews GROUP BY score").set_index("score")["n"]
    assert reviews.to_dict() == raw.reviews["review_score"].astype(int).value_counts().to_dict()
    methods = frame(loaded.engine, "SELECT method, COUNT(*) AS n FROM payments GROUP BY method").set_index("method")["n"]
    assert methods.to_dict() == raw.payments["payment_type"].value_counts().to_dict()
    zero = frame(loaded.engine, "SELECT COUNT(*) AS n FROM payments WHERE value = 0")["n"][0]
    assert zero == (raw.payments["payment_value"].astype(float) == 0).sum() == 9  # vouchers of 0 load


def test_progress_is_reported(loaded) -> None:
    done = [d for d, _ in loaded.progress]
    assert done == sorted(done) and done[-1] > 0
    # the files are streamed: the total is unknown (None) until every file has been read once
    assert all(t in (None, loaded.first.rows_read) for _, t in loaded.progress)
    assert loaded.progress[-1] == (done[-1], loaded.first.rows_read)


def test_detect_format() -> None:
    folder = data_path("olist")
    assert detect_format(folder) == "olist"
    assert detect_format(folder / FILES["orders"]) == "olist"
    assert detect_format(data_path("online-retail", "online_retail.csv.xz")) == "online-retail"
    assert detect_format(data_path("cdnow", "CDNOW_master.txt.gz")) is None


# --- slices: file variants, PostgreSQL ----------------------------------------------------------


def write_slice(raw: SimpleNamespace, dst: Path, n_orders: int, suffix: dict[str, str] | None = None,
                skip: tuple[str, ...] = ()) -> Path:
    """A consistent Olist folder with the first `n_orders` orders and their rows."""
    dst.mkdir(parents=True, exist_ok=True)
    orders = raw.orders.head(n_orders)
    ids = set(orders["order_id"])
    parts = {
        "orders": orders,
        "customers": raw.customers[raw.customers["customer_id"].isin(orders["customer_id"])],
        "items": raw.items[raw.items["order_id"].isin(ids)],
        "payments": raw.payments[raw.payments["order_id"].isin(ids)],
        "reviews": raw.reviews[raw.reviews["order_id"].isin(ids)],
        "products": raw.products,
        "translation": raw.translation,
    }
    for name, part in parts.items():
        if name in skip:
            continue
        stem = FILES[name].split(".csv")[0]
        ext = (suffix or {}).get(name, "")
        target = dst / f"{stem}.csv{ext}"
        if ext == ".zip":
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(f"{stem}.csv", part.to_csv(index=False))
        else:
            part.to_csv(target, index=False)
    return dst


def test_sample_orders_file_is_ignored_next_to_the_full_one(tmp_path: Path, raw) -> None:
    folder = write_slice(raw, tmp_path / "olist", 300)
    shutil.copy(data_path("olist", "olist_orders_dataset.sample_first9999.csv.gz"), folder)
    engine = new_store(tmp_path, "p.db")
    report = load_path(engine, folder, "olist")
    assert table_counts(engine)["orders"] == 300
    assert report.quarantined == {}


def test_sample_orders_alone_load_with_their_us_dates(tmp_path: Path, raw) -> None:
    sample = pd.read_csv(data_path("olist", "olist_orders_dataset.sample_first9999.csv.gz"), dtype=str)
    folder = tmp_path / "olist"
    folder.mkdir()
    shutil.copy(data_path("olist", "olist_orders_dataset.sample_first9999.csv.gz"), folder)
    raw.customers[raw.customers["customer_id"].isin(sample["customer_id"])].to_csv(
        folder / "olist_customers_dataset.csv.gz", index=False)
    raw.items[raw.items["order_id"].isin(sample["order_id"])].to_csv(
        folder / "olist_order_items_dataset.csv", index=False)
    engine = new_store(tmp_path, "p.db")
    report = load_path(engine, folder)
    assert report.format == "olist" and report.counts["orders"] == 9_999
    assert any("SAMPLE" in n for n in report.notes)
    got = frame(engine, "SELECT purchased_at FROM orders WHERE order_id = 'e481f51cbdc54678b7cc49136f2d6af7'")
    assert str(pd.Timestamp(got["purchased_at"][0])) == "2017-10-02 10:56:00"  # 10/2/2017 10:56 (M/D/YYYY)


def test_missing_required_file_is_refused(tmp_path: Path, raw) -> None:
    folder = write_slice(raw, tmp_path / "olist", 50, skip=("items",))
    engine = new_store(tmp_path, "p.db")
    with pytest.raises(LoadError, match="olist_order_items_dataset"):
        load_path(engine, folder, "olist")
    assert table_counts(engine) == dict.fromkeys(TABLES, 0)


def test_optional_files_may_be_absent(tmp_path: Path, raw) -> None:
    folder = write_slice(raw, tmp_path / "olist", 200, skip=("payments", "reviews", "products", "translation"))
    engine = new_store(tmp_path, "p.db")
    report = load_path(engine, folder, "olist")
    counts = table_counts(engine)
    assert counts["orders"] == 200 and counts["payments"] == 0 and counts["reviews"] == 0
    assert frame(engine, "SELECT COUNT(*) AS n FROM order_items WHERE category IS NOT NULL")["n"][0] == 0
    assert frame(engine, "SELECT COUNT(*) AS n FROM orders WHERE payment_value IS NOT NULL")["n"][0] == 0
    assert sum("not loaded" in n for n in report.notes) == 4


def test_compressed_files_and_zipped_folder_load_the_same(store, tmp_path: Path, raw) -> None:
    """Plain, .gz, .xz and single-file .zip members, then the folder zipped: same rows, twice."""
    folder = write_slice(raw, tmp_path / "olist", 1_000, suffix={
        "customers": ".gz", "items": ".zip", "payments": ".xz", "reviews": ".bz2"})
    archive = shutil.make_archive(str(tmp_path / "olist_zip"), "zip", root_dir=tmp_path, base_dir="olist")
    n_items = raw.items["order_id"].isin(raw.orders.head(1_000)["order_id"]).sum()

    first = load_path(store, folder, "olist")
    counts = table_counts(store)
    assert counts["orders"] == 1_000 and counts["order_items"] == n_items
    assert first.quarantined == {}
    again = load_path(store, folder, "olist")
    assert table_counts(store) == counts and again.rows_loaded == first.rows_loaded
    zipped = load_path(store, archive)  # format detected from the member names
    assert zipped.format == "olist" and zipped.rows_loaded == first.rows_loaded
    assert table_counts(store) == counts
