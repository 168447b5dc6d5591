"""Loading generic transaction CSVs through a column mapping (eCommerce Transactions, CDNOW)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import new_store
from sqlalchemy import Engine, func, select

from storage import schema
from storage.loaders import LoadError, load_path, parse_mapping, parse_options
from tests.conftest import data_path

TABLES = ("customers", "orders", "order_items", "payments", "reviews", "quarantine")
ECOM_MAP = ("customer=CustomerID,order=TransactionID,timestamp=TransactionDate,amount=TotalValue,"
            "quantity=Quantity,product=ProductID")
CDNOW_MAP = "customer=customer_id,timestamp=date,amount=dollar_value,quantity=number_of_cds"


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(select(func.count()).select_from(schema.metadata.tables[t])).scalar_one()
                for t in TABLES}


def frame(engine: Engine, sql: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql_query(sql, conn)


@pytest.fixture
def engine(tmp_path: Path):
    e = new_store(tmp_path, "pulse.db")
    yield e
    e.dispose()


# --- parsing the mapping and options ---------------------------------------------------------


def test_parse_mapping_and_options() -> None:
    assert parse_mapping(" customer=CustomerID, order_id=TransactionID,date=TransactionDate,value=TotalValue") == {
        "customer": "CustomerID", "order": "TransactionID", "timestamp": "TransactionDate", "amount": "TotalValue"}
    assert parse_options("sep=whitespace,columns=a,b,c,header=false") == {
        "sep": "whitespace", "columns": "a,b,c", "header": "false"}
    assert parse_options(["date-format=%Y%m%d", "sep=;"]) == {"date_format": "%Y%m%d", "sep": ";"}
    with pytest.raises(LoadError, match="unknown field “shop”"):
        parse_mapping("customer=a,shop=b")
    with pytest.raises(LoadError, match="key=value"):
        parse_mapping("customer")


# --- eCommerce Transactions --------------------------------------------------------------------


@pytest.mark.realdata
def test_ecommerce_transactions_with_customer_and_product_files(engine) -> None:
    path = data_path("ecommerce-transactions", "Transactions.csv.gz")
    raw = pd.read_csv(path, encoding="utf-8-sig")
    customers = pd.read_csv(data_path("ecommerce-transactions", "Customers.csv.gz"), encoding="utf-8-sig")
    products = pd.read_csv(data_path("ecommerce-transactions", "Products.csv.gz"), encoding="utf-8-sig")
    mapping = parse_mapping(ECOM_MAP + ",region=Region,category=Category")
    report = load_path(engine, path, "transactions", mapping=mapping, options={
        "customers_file": "Customers.csv.gz", "products_file": "Products.csv.gz"})

    counts = table_counts(engine)
    assert counts["orders"] == raw["TransactionID"].nunique() == report.counts["orders"] == 1_000
    assert counts["customers"] == raw["CustomerID"].nunique() == 199
    assert counts["order_items"] == len(raw) and counts["quarantine"] == 0
    totals = frame(engine, "SELECT SUM(items_value) AS v FROM orders")
    assert totals["v"][0] == pytest.approx(raw["TotalValue"].sum(), rel=1e-9)

    got = frame(engine, "SELECT customer_id, region, state FROM customers").set_index("customer_id")
    expected = customers.set_index("CustomerID").loc[got.index, "Region"]
    assert (got["region"] == expected).all() and (got["state"] == got["region"]).all()
    items = frame(engine, "SELECT product_id, category, quantity FROM order_items")
    cat = products.set_index("ProductID")["Category"]
    assert (items["category"] == items["product_id"].map(cat)).all()
    assert items["quantity"].sum() == raw["Quantity"].sum()
    first = frame(engine, "SELECT customer_id, first_seen FROM customers").set_index("customer_id")["first_seen"]
    exp_first = pd.to_datetime(raw["TransactionDate"]).groupby(raw["CustomerID"]).min()
    assert (pd.to_datetime(first.loc[exp_first.index]) == exp_first).all()


@pytest.mark.realdata
def test_ecommerce_loads_twice_without_changes(store) -> None:
    path = data_path("ecommerce-transactions", "Transactions.csv.gz")
    mapping = parse_mapping(ECOM_MAP)
    first = load_path(store, path, "transactions", mapping=mapping)
    counts = table_counts(store)
    assert counts["orders"] == 1_000 and counts["customers"] == 199
    second = load_path(store, path, mapping=mapping)  # no format: a mapping means transactions
    assert second.format == "transactions" and table_counts(store) == counts
    assert second.counts == first.counts


@pytest.mark.realdata
def test_amount_from_unit_price_times_quantity(engine) -> None:
    path = data_path("ecommerce-transactions", "Transactions.csv.gz")
    raw = pd.read_csv(path, encoding="utf-8-sig")
    mapping = parse_mapping("customer=CustomerID,order=TransactionID,timestamp=TransactionDate,"
                            "price=Price,quantity=Quantity")
    load_path(engine, path, "transactions", mapping=mapping)
    v = frame(engine, "SELECT SUM(items_value) AS v FROM orders")["v"][0]
    assert v == pytest.approx((raw["Price"] * raw["Quantity"]).sum(), rel=1e-9)


# --- CDNOW -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cdnow_raw() -> pd.DataFrame:
    return pd.read_csv(data_path("cdnow", "CDNOW_master.txt.gz"), sep=r"\s+", dtype={"customer_id": str})


@pytest.mark.realdata
def test_cdnow_master(engine, cdnow_raw) -> None:
    raw = cdnow_raw
    path = data_path("cdnow", "CDNOW_master.txt.gz")
    options = {"sep": "whitespace", "date_format": "%Y%m%d"}
    report = load_path(engine, path, "transactions", mapping=parse_mapping(CDNOW_MAP), options=options)
    counts = table_counts(engine)
    assert counts["orders"] == len(raw) == 69_659  # the exact duplicates are separate purchases
    assert counts["customers"] == raw["customer_id"].nunique() == 23_570
    assert report.counts["duplicate_rows"] == raw.duplicated().sum() == 255
    assert report.counts["zero_amount"] == (raw["dollar_value"] == 0).sum() == 80
    assert report.quarantined == {}
    v = frame(engine, "SELECT SUM(items_value) AS v, SUM(n_items) AS n FROM orders")
    assert v["v"][0] == pytest.approx(2_500_315.63, abs=0.01)
    assert frame(engine, "SELECT SUM(quantity) AS q FROM order_items")["q"][0] == raw["number_of_cds"].sum()
    # derived ids: customer/date/occurrence, stable on a re-load
    ids = frame(engine, "SELECT order_id FROM orders WHERE customer_id = '00002' ORDER BY order_id")["order_id"]
    assert ids.tolist() == ["00002/19970112/1", "00002/19970112/2"]
    load_path(engine, path, "transactions", mapping=parse_mapping(CDNOW_MAP), options=options)
    assert table_counts(engine) == counts
    dates = frame(engine, "SELECT MIN(purchased_at) AS lo, MAX(purchased_at) AS hi FROM orders")
    assert (str(pd.Timestamp(dates["lo"][0])), str(pd.Timestamp(dates["hi"][0]))) == (
        "1997-01-01 00:00:00", "1998-06-30 00:00:00")


@pytest.mark.realdata
def test_cdnow_sample_without_header(engine) -> None:
    path = data_path("cdnow", "CDNOW_sample.txt.gz")
    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str)
    mapping = parse_mapping("customer=0,timestamp=2,quantity=3,amount=4")
    report = load_path(engine, path, "transactions", mapping=mapping,
                       options=parse_options("sep=whitespace,header=false"))  # date format inferred
    assert report.rows_loaded == len(raw) == 6_919
    assert table_counts(engine)["customers"] == raw[0].nunique() == 2_357
    named = load_path(engine, path, "transactions",
                      mapping=parse_mapping("customer=id,timestamp=day,quantity=cds,amount=value"),
                      options={"sep": "whitespace", "columns": "id|sample_id|day|cds|value"})
    assert named.rows_loaded == 6_919 and table_counts(engine)["orders"] == 6_919


# --- mapping problems ----------------------------------------------------------------------------


@pytest.mark.realdata
def test_mapping_problems_are_refused(engine) -> None:
    path = data_path("ecommerce-transactions", "Transactions.csv.gz")
    with pytest.raises(LoadError, match="missing: timestamp"):
        load_path(engine, path, "transactions", mapping=parse_mapping("customer=CustomerID,amount=TotalValue"))
    with pytest.raises(LoadError, match=r"Nope \(amount\)"):
        load_path(engine, path, "transactions",
                  mapping=parse_mapping("customer=CustomerID,timestamp=TransactionDate,amount=Nope"))
    with pytest.raises(LoadError, match="cannot tell the format"):
        load_path(engine, path)
    with pytest.raises(LoadError, match="option “sepp” is not accepted"):
        load_path(engine, path, "transactions", mapping=parse_mapping(ECOM_MAP), options={"sepp": ";"})
    assert table_counts(engine) == dict.fromkeys(TABLES, 0)
    runs = frame(engine, "SELECT status FROM load_runs")
    assert (runs["status"] == "failed").all() and len(runs) == 2  # refused before a run: no row


def test_status_column_and_long_ids(engine, tmp_path: Path) -> None:
    long_customer = "c" * 60
    rows = pd.DataFrame({
        "who": ["a", "a", "b", long_customer],
        "when": ["2024-01-01 10:00", "2024-01-02 10:00", "2024-01-02 11:00", "2024-01-03"],
        "total": ["10", "5", "7", "3"],
        "state": ["Cancelled", "paid", None, "paid"],
        "uf": ["SP", "RJ", "BA", "XX"],
    })
    path = tmp_path / "t.csv"
    rows.to_csv(path, index=False)
    load_path(engine, path, "transactions",
              mapping=parse_mapping("customer=who,timestamp=when,amount=total,status=state,state=uf"))
    orders = frame(engine, "SELECT order_id, customer_id, status FROM orders ORDER BY purchased_at")
    assert orders["status"].tolist() == ["canceled", "paid", "completed", "paid"]
    assert orders["order_id"].str.len().max() <= 64
    assert orders["order_id"].iloc[0] == "a/20240101100000/1"
    cust = frame(engine, "SELECT customer_id, state, region, first_seen FROM customers ORDER BY customer_id")
    assert cust["region"].tolist()[:2] == ["Sudeste", "Nordeste"]
    assert cust.loc[cust["customer_id"] == "a", "first_seen"].notna().all()  # the paid one
    assert np.isnan(frame(engine, "SELECT SUM(payment_value) AS p FROM orders")["p"][0] or np.nan)


@pytest.mark.realdata
def test_columns_option_renames_a_header(engine) -> None:
    path = data_path("ecommerce-transactions", "Transactions.csv.gz")
    report = load_path(engine, path, "transactions",
                       mapping=parse_mapping("customer=c,order=t,timestamp=d,amount=v"),
                       options={"header": "true", "columns": "t;c;p;d;q;v;u"})
    assert report.rows_loaded == 1_000 and table_counts(engine)["orders"] == 1_000
