"""Columnar reads: the ADBC path (helper process) gives the DB-API path's table, and the
store's own connections keep working after it (two SQLite libraries never share a process)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import Engine, func, select

from analytics import columnar
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
