"""Broken inputs, made from slices of the real data: each gives its documented result.

Refused loads (LoadError) and failures leave every table as it was, apart from the
"failed" load_runs row; bad rows go to quarantine with their reason.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from storage import schema
from storage.loaders import LoadError, bulk, load_path, parse_mapping
from tests.conftest import data_path

pytestmark = pytest.mark.realdata

ECOM_MAP = parse_mapping("customer=CustomerID,order=TransactionID,timestamp=TransactionDate,"
                         "amount=TotalValue,quantity=Quantity,product=ProductID")


def all_counts(engine: Engine) -> dict[str, int]:
    """Row counts of every table but load_runs."""
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for name, t in schema.metadata.tables.items() if name != "load_runs"}


def runs(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql_query("SELECT id, status, summary FROM load_runs ORDER BY id", conn)


def reasons(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(schema.quarantine.c.reason, func.count()).group_by(schema.quarantine.c.reason))
        return dict(rows.all())


def uci_text(n: int = 2_000) -> str:
    return pd.read_csv(data_path("online-retail", "online_retail.csv.xz"), dtype=str, nrows=n).to_csv(index=False)


def ecom_frame() -> pd.DataFrame:
    return pd.read_csv(data_path("ecommerce-transactions", "Transactions.csv.gz"), dtype=str, encoding="utf-8-sig")


@functools.cache
def _olist(name: str, nrows: int | None = None) -> pd.DataFrame:
    return pd.read_csv(data_path("olist", name), dtype=str, keep_default_na=False, na_values=[""], nrows=nrows)


def olist_slice(dst: Path, n: int = 300) -> dict[str, pd.DataFrame]:
    """A consistent small Olist folder; returns the frames so a test can break one."""
    orders = _olist("olist_orders_dataset.csv.xz", n).copy()
    ids = set(orders["order_id"])
    customers = _olist("olist_customers_dataset.csv.xz")
    items = _olist("olist_order_items_dataset.csv.xz")
    frames = {
        "olist_orders_dataset": orders,
        "olist_customers_dataset": customers[customers["customer_id"].isin(orders["customer_id"])].copy(),
        "olist_order_items_dataset": items[items["order_id"].isin(ids)].copy(),
    }
    write_olist(dst, frames)
    return frames


def write_olist(dst: Path, frames: dict[str, pd.DataFrame]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for stem, part in frames.items():
        part.to_csv(dst / f"{stem}.csv", index=False)


def assert_refused(store: Engine, path: Path, fmt: str, match: str, **kw) -> None:
    """The load is refused with `match` in the message and nothing but a failed run changes."""
    before, n_runs = all_counts(store), len(runs(store))
    with pytest.raises(LoadError, match=match):
        load_path(store, path, fmt, **kw)
    assert all_counts(store) == before
    after = runs(store)
    assert len(after) == n_runs + 1 and after["status"].iloc[-1] == "failed"
    assert json.loads(after["summary"].iloc[-1])["error"]


# --- refused ---------------------------------------------------------------------------------


def test_missing_column_is_refused_and_named(store, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(uci_text())
    load_path(store, good, "online-retail")  # the store is not empty
    assert all_counts(store)["orders"] > 0

    bad = tmp_path / "bad.csv"
    pd.read_csv(good, dtype=str).drop(columns=["CustomerID", "Country"]).to_csv(bad, index=False)
    assert_refused(store, bad, "online-retail", "missing column\\(s\\) CustomerID, Country")

    folder = tmp_path / "olist"
    frames = olist_slice(folder)
    frames["olist_orders_dataset"] = frames["olist_orders_dataset"].drop(columns=["order_purchase_timestamp"])
    write_olist(folder, frames)
    assert_refused(store, folder, "olist", "missing column\\(s\\) order_purchase_timestamp")

    ecom = tmp_path / "t.csv"
    ecom_frame().drop(columns=["TotalValue"]).to_csv(ecom, index=False)
    assert_refused(store, ecom, "transactions", "TotalValue \\(amount\\)", mapping=ECOM_MAP)


def test_cut_inside_a_quoted_field_is_refused(store, tmp_path: Path) -> None:
    text = ecom_frame().to_csv(index=False, quoting=1)  # every field quoted
    path = tmp_path / "t.csv"
    path.write_text(text[: len(text) // 2])  # ends inside a quoted field
    assert_refused(store, path, "transactions", "not a well-formed CSV", mapping=ECOM_MAP)


def test_truncated_compressed_file_is_refused(store, tmp_path: Path) -> None:
    data = gzip.compress(uci_text(20_000).encode())
    path = tmp_path / "uci.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    assert_refused(store, path, "online-retail", "truncated or corrupt")


def test_failure_midway_rolls_everything_back(store, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "uci.csv"
    path.write_text(uci_text())
    original = bulk.BulkWriter.upsert

    def fail_on_items(self, table, frame, merge=None):  # noqa: ANN001
        if table.name == "order_items":
            raise RuntimeError("disk full")
        return original(self, table, frame, merge)

    monkeypatch.setattr(bulk.BulkWriter, "upsert", fail_on_items)
    before = all_counts(store)
    with pytest.raises(RuntimeError, match="disk full"):
        load_path(store, path, "online-retail")  # customers and orders were written, then rolled back
    assert all_counts(store) == before
    failed = runs(store).iloc[-1]
    assert failed["status"] == "failed" and "disk full" in json.loads(failed["summary"])["error"]


# --- quarantined -------------------------------------------------------------------------------


def test_truncated_last_line_is_quarantined(store, tmp_path: Path) -> None:
    text = uci_text()
    lines = text.rstrip("\n").split("\n")
    cut = ",".join(lines[-1].split(",")[:3])  # the last row, cut after its third field
    path = tmp_path / "uci.csv"
    path.write_text("\n".join([*lines[:-1], cut]))  # no line end: the file was cut
    report = load_path(store, path, "online-retail")
    assert report.quarantined == {**report.quarantined, "truncated last line (no line end)": 1}
    assert report.rows_read == len(lines) - 1
    assert report.rows_loaded + report.skipped + sum(report.quarantined.values()) == report.rows_read

    # a complete last row without a line end (as some exporters write) loads
    whole = tmp_path / "whole.csv"
    whole.write_text("\n".join(lines))
    again = load_path(store, whole, "online-retail")
    assert "truncated last line (no line end)" not in again.quarantined
    assert again.rows_loaded == report.rows_loaded + 1
    assert any("no line end" in n for n in again.notes)


def test_bad_dates_missing_keys_and_negative_amounts(store, tmp_path: Path) -> None:
    df = ecom_frame()
    df.loc[0, "TransactionDate"] = "2024-13-45 10:00:00"
    df.loc[1, "TransactionDate"] = "yesterday"
    df.loc[2, "TransactionDate"] = None
    df.loc[3, "CustomerID"] = None
    df.loc[4, "TotalValue"] = "-12.5"
    df.loc[5, "TotalValue"] = "12,5"
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    report = load_path(store, path, "transactions", mapping=ECOM_MAP)
    assert report.quarantined == {
        "unparseable date: TransactionDate": 2,
        "missing value: TransactionDate": 1,
        "missing value: CustomerID": 1,
        "negative amount: TotalValue": 1,
        "not a number: TotalValue": 1,
    }
    assert report.rows_loaded == len(df) - 6 and all_counts(store)["orders"] == len(df) - 6
    assert reasons(store) == report.quarantined
    # a re-load replaces its quarantine rows instead of adding to them
    load_path(store, path, "transactions", mapping=ECOM_MAP)
    assert reasons(store) == report.quarantined


def test_negative_and_zero_prices(store, tmp_path: Path) -> None:
    df = pd.read_csv(data_path("online-retail", "online_retail.csv.xz"), dtype=str, nrows=3_000)
    with_customer = df.index[df["CustomerID"].notna()]
    df.loc[with_customer[:3], "UnitPrice"] = "-1.5"
    df.loc[with_customer[3:5], "UnitPrice"] = "0"
    path = tmp_path / "uci.csv"
    df.to_csv(path, index=False)
    report = load_path(store, path, "online-retail")
    assert report.quarantined.get("negative price") == 3 and report.counts["negative_price"] == 3
    assert report.quarantined.get("zero price") == 2 + ((df["UnitPrice"] == "0.0") & df["CustomerID"].notna()).sum()

    folder = tmp_path / "olist"
    frames = olist_slice(folder)
    frames["olist_order_items_dataset"].loc[frames["olist_order_items_dataset"].index[:2], "price"] = "-3"
    write_olist(folder, frames)
    report = load_path(store, folder, "olist")
    assert report.quarantined == {"negative price": 2}


def test_duplicate_ids(store, tmp_path: Path) -> None:
    folder = tmp_path / "olist"
    frames = olist_slice(folder)
    orders = frames["olist_orders_dataset"]
    twin = orders.iloc[[5]].assign(order_status="canceled")
    frames["olist_orders_dataset"] = pd.concat([orders, twin])
    items = frames["olist_order_items_dataset"]
    frames["olist_order_items_dataset"] = pd.concat([items, items.iloc[[0]].assign(order_id="f" * 32)])
    write_olist(folder, frames)
    report = load_path(store, folder, "olist")
    assert report.quarantined == {"duplicate id: order_id": 1, "orphan: order_id not in the loaded orders": 1}
    with store.connect() as conn:
        status = conn.execute(select(schema.orders.c.status).where(
            schema.orders.c.order_id == orders.iloc[5]["order_id"])).scalar_one()
    assert status == orders.iloc[5]["order_status"]  # the first row wins

    df = ecom_frame()
    reused = df.iloc[[10]].assign(CustomerID="C9999")  # same TransactionID, another customer
    path = tmp_path / "t.csv"
    pd.concat([df, df.iloc[[20]], reused]).to_csv(path, index=False)
    report = load_path(store, path, "transactions", mapping=ECOM_MAP)
    assert report.quarantined == {"duplicate row": 1, "order id already belongs to another customer": 1}
    assert report.rows_loaded == len(df)


def test_line_with_extra_fields_is_quarantined(store, tmp_path: Path) -> None:
    lines = ecom_frame().to_csv(index=False).splitlines()
    lines[7] += ",surplus"
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    report = load_path(store, path, "transactions", mapping=ECOM_MAP)
    assert report.quarantined == {"malformed line (expected 7 fields, saw 8)": 1}
    assert report.rows_read == len(lines) - 1 and report.rows_loaded == len(lines) - 2


# --- encodings --------------------------------------------------------------------------------


def test_latin1_file_loads(store, tmp_path: Path) -> None:
    df = ecom_frame().head(50)
    df["City"] = (["São Paulo", "Zürich", "Kraków", "Ørsted £5"] * 13)[:50]
    path = tmp_path / "latin1.csv"
    path.write_bytes(df.to_csv(index=False).encode("cp1252", errors="replace"))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    report = load_path(store, path, "transactions", mapping={**ECOM_MAP, "city": "City"})
    assert report.rows_loaded == 50 and report.quarantined == {}
    assert any("cp1252" in n for n in report.notes)
    with store.connect() as conn:
        cities = set(conn.execute(select(schema.customers.c.city)).scalars())
    assert {"São Paulo", "Zürich", "Ørsted £5"} <= cities  # Kraków's ó is not in cp1252 ("?")
