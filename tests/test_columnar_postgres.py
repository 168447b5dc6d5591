"""Columnar reads on PostgreSQL: the ADBC driver's binary COPY and the COPY-as-CSV path
give the same table, and a driver failure falls back to the CSV path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from adbc_driver_manager import AdbcStatusCode
from sqlalchemy.engine import make_url

from analytics import columnar
from analytics.columnar import Col, read_columns
from storage.loaders import load_path
from storage.store import open_store

SAMPLE = Path(__file__).resolve().parents[1] / "storage" / "sample"

# every kind of column, NULLs (undelivered orders), an int from a CASE (int4 on the server)
COLS = [
    Col("order_id", "order_id", "str"), Col("status", "status", "str"),
    Col("purchased", "purchased_at", "ts"), Col("delivered", "delivered_at", "ts"),
    Col("items_value", "items_value", "float"), Col("freight", "freight_value", "float"),
    Col("purchase", "CASE WHEN status IN ('canceled', 'unavailable') THEN 0 ELSE 1 END", "int"),
]
WHERE, PARAMS = "purchased_at < :t", {"t": dt.datetime(2018, 1, 1)}

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(columnar._adbc_pg is None, reason="adbc-driver-postgresql is not installed")]


@pytest.fixture
def engine(postgres_url: str):  # noqa: ANN201
    engine = open_store(postgres_url)
    load_path(engine, SAMPLE, "olist")
    yield engine
    engine.dispose()


def test_adbc_binary_read_equals_the_csv_read(engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    calls = []
    real = columnar._postgres_adbc
    monkeypatch.setattr(columnar, "_postgres_adbc", lambda *a: calls.append(real(*a)) or calls[-1])
    fast = read_columns(engine, "orders", COLS, WHERE, PARAMS)
    assert calls and calls[0] is not None, "the ADBC path was not taken"
    monkeypatch.setattr(columnar, "_adbc_pg", None)
    slow = read_columns(engine, "orders", COLS, WHERE, PARAMS)
    assert fast.schema == slow.schema == pa.schema([(c.name, columnar._TYPES[c.kind]) for c in COLS])
    assert fast.num_rows == slow.num_rows > 1000
    assert fast.column("delivered").null_count > 0
    assert fast.sort_by("order_id").equals(slow.sort_by("order_id"))


def test_a_failing_driver_falls_back_to_the_csv_read(engine, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    want = read_columns(engine, "orders", COLS, WHERE, PARAMS)

    def refuse(uri: str):  # noqa: ANN202
        raise columnar._adbc_pg.OperationalError("connection refused", status_code=AdbcStatusCode.IO)

    monkeypatch.setattr(columnar._adbc_pg, "connect", refuse)
    got = read_columns(engine, "orders", COLS, WHERE, PARAMS)
    assert got.sort_by("order_id").equals(want.sort_by("order_id"))


def test_options_in_the_url_reach_the_adbc_session(postgres_url: str) -> None:
    # SQLAlchemy renders the space of "-c statement_timeout=…" as '+', which libpq does not
    # decode: the driver then failed to connect and every read took the slower CSV path
    url = make_url(postgres_url).update_query_dict({"options": "-c statement_timeout=12345"})
    engine = open_store(url.render_as_string(hide_password=False))
    try:
        got = columnar._postgres_adbc(engine, "SELECT current_setting('statement_timeout') AS v",
                                      pa.schema([("v", pa.string())]))
    finally:
        engine.dispose()
    assert got is not None, "the ADBC driver did not connect"
    assert got.column("v").to_pylist() == ["12345ms"]
