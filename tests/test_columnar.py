"""Columnar reads: the ADBC path (helper process) gives the DB-API path's table, and the
store's own connections keep working after it (two SQLite libraries never share a process)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import Engine, func, select

from analytics import columnar, dataset
from analytics.columnar import Col, read_columns
from analytics.refresh import refresh
from storage import schema
from storage.loaders import load_path
from storage.store import get_meta, open_store, set_meta

SAMPLE = Path(__file__).resolve().parents[1] / "storage" / "sample"

COLS = [
    Col("order_id", "order_id", "str"), Col("customer_id", "customer_id", "str"),
    Col("purchased", "purchased_at", "ts"), Col("items_value", "items_value", "float"),
    Col("delivered", "delivered_at", "ts"),
]

pytestmark = pytest.mark.skipif(not columnar.fast_sqlite_available(),
                                reason="adbc-driver-sqlite is not installed")


def sample_store(folder: Path) -> Engine:
    """The bundled sample in a SQLite file (these tests are about SQLite files)."""
    engine = open_store(f"sqlite:///{folder / 'pulse.db'}")
    load_path(engine, SAMPLE, "olist")
    return engine


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by("order_id")


def test_adbc_read_equals_dbapi_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = sample_store(tmp_path)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 10**12)
    slow = read_columns(engine, "orders", COLS, "purchased_at < :t", {"t": "2018-01-01"})
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    monkeypatch.setattr(columnar, "_adbc_read", _counting(columnar._adbc_read, calls := []))
    fast = read_columns(engine, "orders", COLS, "purchased_at < :t", {"t": "2018-01-01"})
    assert calls, "the ADBC path was not taken"
    assert fast.num_rows == slow.num_rows > 1000
    assert _sorted(fast).equals(_sorted(slow))
    engine.dispose()


def test_store_stays_writable_after_fast_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = sample_store(tmp_path)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    monkeypatch.setattr(columnar, "_adbc_read", _counting(columnar._adbc_read, calls := []))
    with engine.connect() as conn:
        orders = conn.execute(select(func.count()).select_from(schema.orders)).scalar_one()
    for round_ in range(2):  # refresh (fast reads), then writes through the store's own pool
        assert refresh(engine).customers > 9000
        for i in range(3):
            with engine.begin() as w:
                set_meta(w, f"columnar-test-{i}", {"round": round_})
            assert get_meta(engine, f"columnar-test-{i}") == {"round": round_}
    assert calls, "the ADBC path was not taken"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.orders)).scalar_one() == orders
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
    engine.dispose()


def _counting(fn, calls: list):  # noqa: ANN001, ANN202 - a pass-through spy
    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        got = fn(*args, **kwargs)
        if got is not None:
            calls.append(args)
        return got
    return wrapped


def _datasets_equal(a: dataset.Dataset, b: dataset.Dataset) -> None:
    for f in dataclasses.fields(dataset.Dataset):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, pa.Array | pa.ChunkedArray):
            assert x.equals(y), f.name
        elif x is None or y is None:
            assert x is None and y is None, f.name
        elif x.dtype == object:
            assert list(x) == list(y), f.name
        else:
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name


@pytest.mark.parametrize("fast", [False, True], ids=["dbapi", "adbc"])
def test_lines_joined_by_rowid_equal_lines_joined_by_order_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """Items, payments and reviews matched to their orders by rowid inside SQLite give the
    dataset that matching by order_id strings gives: lines of unknown orders dropped, lines
    of orders deleted from the middle of the table (gaps in the rowids) too."""
    engine = sample_store(tmp_path)
    with engine.begin() as conn:
        gone = [r[0] for r in conn.execute(select(schema.orders.c.order_id).limit(40))]
        conn.execute(schema.orders.delete().where(schema.orders.c.order_id.in_(gone)))
        conn.execute(schema.order_items.insert(), [
            {"order_id": "no-such-order", "item_seq": 1, "price": 9.5, "quantity": 1.0, "freight_value": 0.0}])
        conn.execute(schema.payments.insert(), [{"order_id": "no-such-order", "seq": 1, "value": 9.5}])
        conn.execute(schema.reviews.insert(), [{"review_id": "r-x", "order_id": "no-such-order", "score": 1}])
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0 if fast else 10**12)
    assert dataset.joins_by_rowid(engine)
    by_rowid = dataset.read_dataset(engine)
    monkeypatch.setattr(dataset, "joins_by_rowid", lambda _engine: False)
    by_id = dataset.read_dataset(engine)
    _datasets_equal(by_rowid, by_id)
    with engine.connect() as conn:
        items = conn.execute(select(func.count()).select_from(
            schema.order_items.join(schema.orders, schema.orders.c.order_id == schema.order_items.c.order_id))
        ).scalar_one()
    assert len(by_rowid.item_ord) == items > 10_000
    assert not set(gone) & set(by_rowid.order_id.to_pylist())
    engine.dispose()


def test_order_rows_map_dense_and_sparse_rowids() -> None:
    """The rowid → order-row map answers the same for dense rowids (a table) and sparse
    ones (binary search), and -1 for rowids it was not given."""
    for rowids in ([5, 3, 9, 1], [5, 3, 10**9, 1]):
        orders = pa.table({"rowid": pa.array(rowids, pa.int64())})
        rows = np.array([2, 0, 3, 1])  # sorted order: rowids[2], rowids[0], …
        lookup = dataset._OrderRows(orders, rows)
        assert (lookup._dense is None) == (max(rowids) > 100)
        got = lookup(np.array([rowids[2], rowids[1], 7, -1, 10**10, rowids[0]], dtype=np.int64))
        assert got.tolist() == [0, 3, -1, -1, -1, 1]


def test_adbc_read_types_columns_from_all_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A column whose first few thousand values are NULL still reads through ADBC (the driver
    would type it int64 from a first batch of NULLs, then fail on the first timestamp)."""
    engine = sample_store(tmp_path)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE orders SET delivered_at = NULL WHERE rowid <= 3000")
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 10**12)
    slow = read_columns(engine, "orders", COLS)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    monkeypatch.setattr(columnar, "_adbc_read", _counting(columnar._adbc_read, calls := []))
    fast = read_columns(engine, "orders", COLS)
    assert calls, "the ADBC read failed and the DB-API path was taken"
    assert fast.num_rows == slow.num_rows > 3000
    assert fast.column("delivered").null_count == slow.column("delivered").null_count >= 3000
    assert _sorted(fast).equals(_sorted(slow))
    engine.dispose()
