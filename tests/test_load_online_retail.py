"""Loading UCI Online Retail (I and II): figures checked against pandas on the raw CSV.

The documented treatment (storage/loaders/online_retail.py), recomputed here:
no CustomerID -> skipped; else exact duplicate -> quarantined; else zero / negative
price -> quarantined; else loaded (cancellations = invoices starting with C).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import new_store
from sqlalchemy import Engine, func, select

from storage import schema
from storage.loaders import LoadError, load_path
from tests.conftest import data_path

pytestmark = pytest.mark.realdata

UCI = ("online-retail", "online_retail.csv.xz")
UCI_II = ("online-retail-ii", "online_retail_II_2009-2010.csv.xz")
TABLES = ("customers", "orders", "order_items", "payments", "reviews", "quarantine")


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(select(func.count()).select_from(schema.metadata.tables[t])).scalar_one()
                for t in TABLES}


def frame(engine: Engine, sql: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql_query(sql, conn)


def read_raw(parts: tuple[str, str], nrows: int | None = None) -> pd.DataFrame:
    df = pd.read_csv(data_path(*parts), dtype=str, keep_default_na=False, na_values=[""], nrows=nrows)
    # the two layouts under one set of names
    return df.rename(columns={"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"})


def expected(df: pd.DataFrame) -> SimpleNamespace:
    """The documented treatment, recomputed with plain pandas."""
    qty, price = df["Quantity"].astype(float), df["UnitPrice"].astype(float)
    cancel = df["InvoiceNo"].str.startswith("C")
    has_customer = df["CustomerID"].notna()
    dup = df.duplicated() & has_customer
    zero = has_customer & ~dup & (price == 0)
    negative = has_customer & ~dup & (price < 0)
    loaded = has_customer & ~dup & (price > 0)
    assert not (loaded & (qty < 0) & ~cancel).any() and not (loaded & (qty > 0) & cancel).any()
    lines = df[loaded].assign(value=(qty * price)[loaded], ts=pd.to_datetime(df["InvoiceDate"])[loaded],
                              cancel=cancel[loaded])
    return SimpleNamespace(
        no_customer=int((~has_customer).sum()), duplicates=int(dup.sum()), zero_price=int(zero.sum()),
        negative_price=int(negative.sum()), lines=lines,
        purchases=lines.loc[~lines["cancel"], "InvoiceNo"].nunique(),
        cancellations=lines.loc[lines["cancel"], "InvoiceNo"].nunique(),
    )


@pytest.fixture(scope="module")
def uci(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    engine = new_store(tmp_path_factory.mktemp('uci'), "pulse.db")
    report = load_path(engine, data_path(*UCI))  # layout detected from the header
    raw = read_raw(UCI)
    yield SimpleNamespace(engine=engine, report=report, raw=raw, exp=expected(raw))
    engine.dispose()


def test_counts_follow_the_documented_treatment(uci) -> None:
    r, exp = uci.report, uci.exp
    assert r.format == "online-retail" and r.rows_read == len(uci.raw) == 541_909
    assert r.counts["no_customer"] == r.skipped == exp.no_customer == 135_080
    assert r.counts["duplicates"] == r.quarantined["duplicate row"] == exp.duplicates
    assert r.counts["zero_price"] == r.quarantined["zero price"] == exp.zero_price
    assert r.counts["negative_price"] == exp.negative_price == 0  # both "A" rows have no customer
    assert r.counts["purchases"] == exp.purchases
    assert r.counts["cancellations"] == exp.cancellations
    assert r.rows_loaded == len(exp.lines)
    assert r.counts["purchase_lines"] + r.counts["cancellation_lines"] == len(exp.lines)
    assert sum(r.quarantined.values()) == exp.duplicates + exp.zero_price
    counts = table_counts(uci.engine)
    assert counts["orders"] == exp.purchases + exp.cancellations
    assert counts["order_items"] == len(exp.lines)
    assert counts["customers"] == exp.lines["CustomerID"].nunique() == r.counts["customers"]
    assert counts["quarantine"] == sum(r.quarantined.values())
    assert counts["payments"] == counts["reviews"] == 0


def test_orders_statuses_and_values(uci) -> None:
    lines = uci.exp.lines
    got = frame(uci.engine, "SELECT order_id, customer_id, status, purchased_at, items_value, "
                            "freight_value, n_items FROM orders").set_index("order_id")
    exp = lines.groupby("InvoiceNo").agg(customer=("CustomerID", "first"), ts=("ts", "min"),
                                         value=("value", "sum"), n=("value", "size"))
    got = got.loc[exp.index]
    assert (got["customer_id"] == exp["customer"]).all()
    assert (pd.to_datetime(got["purchased_at"]) == exp["ts"]).all()
    assert np.allclose(got["items_value"], exp["value"])
    assert (got["n_items"] == exp["n"]).all() and (got["freight_value"] == 0).all()
    status = np.where(exp.index.str.startswith("C"), "canceled", "invoiced")
    assert (got["status"] == status).all()
    assert (got.loc[got["status"] == "canceled", "items_value"] < 0).all()


def test_items_are_numbered_by_position_in_the_invoice(uci) -> None:
    raw = uci.raw
    seq = raw.groupby("InvoiceNo").cumcount() + 1
    lines = uci.exp.lines.assign(seq=seq[uci.exp.lines.index])
    got = frame(uci.engine, "SELECT order_id, item_seq, product_id, quantity, price FROM order_items")
    merged = lines.merge(got, left_on=["InvoiceNo", "seq"], right_on=["order_id", "item_seq"], how="left")
    assert merged["order_id"].notna().all()
    assert (merged["product_id"] == merged["StockCode"]).all()
    assert np.allclose(merged["price"], merged["value"])
    assert np.allclose(merged["quantity"], merged["Quantity"].astype(float))
    # invoice 542806 is not contiguous in the file: its rows still form one order
    n = frame(uci.engine, "SELECT n_items FROM orders WHERE order_id = '542806'")["n_items"][0]
    assert n == len(uci.exp.lines.query("InvoiceNo == '542806'")) > 30


def test_customers_have_their_country_and_first_purchase(uci) -> None:
    lines = uci.exp.lines
    got = frame(uci.engine, "SELECT * FROM customers").set_index("customer_id")
    last_country = lines.groupby("CustomerID")["Country"].last()
    assert (got.loc[last_country.index, "state"] == last_country).all()
    assert (got["state"] == got["region"]).all() and (got["state"] == got["country"]).all()
    first = lines[~lines["cancel"]].groupby("CustomerID")["ts"].min()
    seen = pd.to_datetime(got["first_seen"])
    assert (seen.loc[first.index] == first).all()
    only_cancels = got.index.difference(first.index)
    assert len(only_cancels) > 0 and seen.loc[only_cancels].isna().all()


def test_quarantine_holds_the_raw_rows(uci) -> None:
    q = frame(uci.engine, "SELECT row_number, row, reason FROM quarantine WHERE reason = 'zero price' "
                          "ORDER BY row_number")
    first = json.loads(q["row"][0])
    raw_row = uci.raw.iloc[q["row_number"][0] - 1]
    assert first["InvoiceNo"] == raw_row["InvoiceNo"] and float(first["UnitPrice"]) == 0.0


def test_online_retail_ii_layout(tmp_path: Path) -> None:
    raw = read_raw(UCI_II, nrows=60_000)
    path = tmp_path / "online_retail_II.csv.gz"
    pd.read_csv(data_path(*UCI_II), dtype=str, nrows=60_000).to_csv(path, index=False)
    engine = new_store(tmp_path, "p.db")
    report = load_path(engine, path, "online-retail")
    exp = expected(raw)
    assert report.counts["no_customer"] == exp.no_customer
    assert report.counts["duplicates"] == exp.duplicates
    assert report.counts["purchases"] == exp.purchases and report.counts["cancellations"] == exp.cancellations
    assert table_counts(engine)["order_items"] == len(exp.lines)


def test_chunking_does_not_change_the_result(tmp_path: Path) -> None:
    """Orders split over chunk boundaries (and the non-contiguous invoice) come out whole."""
    path = tmp_path / "uci.csv"
    # rows 60,001-80,000: invoice 542806 (rows 78,087-78,127, two foreign rows inside) is in
    pd.read_csv(data_path(*UCI), dtype=str, skiprows=range(1, 60_001), nrows=20_000).to_csv(path, index=False)
    tables = {}
    for chunksize in (1_000_000, 997):
        engine = new_store(tmp_path, f"c{chunksize}.db")
        load_path(engine, path, "online-retail", options={"chunksize": chunksize})
        tables[chunksize] = {
            t: frame(engine, f"SELECT * FROM {t} ORDER BY 1, 2")
            for t in ("orders", "order_items", "customers")
        }
        q = frame(engine, "SELECT reason, COUNT(*) AS n FROM quarantine GROUP BY reason ORDER BY reason")
        tables[chunksize]["quarantine"] = q
    for t in tables[997]:
        pd.testing.assert_frame_equal(tables[997][t], tables[1_000_000][t], check_exact=False)
    assert (tables[997]["orders"]["order_id"] == "542806").sum() == 1


def test_loading_twice_changes_no_count(store, tmp_path: Path) -> None:
    path = tmp_path / "uci.csv"
    pd.read_csv(data_path(*UCI), dtype=str, nrows=15_000).to_csv(path, index=False)
    first = load_path(store, path, "online-retail")
    counts = table_counts(store)
    assert counts["orders"] > 500 and counts["quarantine"] == sum(first.quarantined.values()) > 0
    second = load_path(store, path, "online-retail")
    assert table_counts(store) == counts
    assert second.counts == first.counts and second.quarantined == first.quarantined


def test_wrong_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "uci.csv"
    pd.read_csv(data_path(*UCI), dtype=str, nrows=100).drop(columns=["UnitPrice"]).to_csv(path, index=False)
    engine = new_store(tmp_path, "p.db")
    with pytest.raises(LoadError, match="UnitPrice"):
        load_path(engine, path, "online-retail")
