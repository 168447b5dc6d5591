"""Staged writes on SQLite: rows a helper process wrote into a scratch file with ADBC, copied
by one INSERT … SELECT, store exactly what binding them from Python stores."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_refresh import AS_OF, small_shop

import analytics.columnar as columnar
import analytics.refresh as R
from analytics.refresh import refresh
from storage import schema
from storage.loaders.bulk import (
    BulkWriter,
    sql_datetime_strings,
    sql_datetimes,
    sqlite_arrow,
    sqlite_definition,
)
from storage.store import open_store

pytestmark = pytest.mark.skipif(not columnar.fast_sqlite_available(), reason="adbc-driver-sqlite is not installed")

F = schema.customer_features
SC = schema.customer_scores


def features_frame() -> pd.DataFrame:
    """Every kind of value the refresh writes: dates as objects and as text, datetimes with
    NaT, whole numbers as int64 and as floats with NaN, text with None and NaN, NaN and
    infinite floats, a column with no value at all."""
    n = 7
    return pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)],
        "as_of": pd.Series([dt.date(2024, 3, 31), "2024-03-31", dt.date(2024, 1, 2), "2024-01-02", "2024-03-31",
                            dt.date(2024, 3, 31), dt.date(2024, 3, 31)], dtype=object),
        "first_purchase": pd.to_datetime(["2023-01-02 03:04:05.123456", None, "2024-03-30 10:00", "2021-12-31",
                                          "2023-01-02 03:04:05", None, "2020-02-29 23:59:59"], format="ISO8601"),
        "last_purchase": pd.to_datetime(["2024-03-30 10:00"] * n),
        "orders": np.arange(1, n + 1, dtype=np.int64),
        "revenue": [1.5, 2.0, 0.1 + 0.2, -0.0, 1e308, np.inf, 12345678.9],
        "avg_ticket": [1.5, np.nan, 3.0, 0.0, 2.0, np.nan, 1.0],
        "items": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0],
        "categories": [1.0, np.nan, 3.0, 0.0, 2.0, 1.0, 1.0],  # an INTEGER column given as floats
        "top_category": ["toys", None, np.nan, "bed_bath", "", "ação", "x" * 120],
        "avg_installments": [np.nan] * n,
        "late_share": [0.0, 1.0, 0.5, np.nan, 0.25, 0.0, 1.0],
        "avg_review": [5.0, np.nan, 4.5, 1.0, 3.0, 2.0, np.nan],
        "state": ["SP", "RJ", None, "MG", "SP", "SP", "RJ"],
        "region": pd.Series([None] * n, dtype=object),
        "tenure_days": pd.array([1, None, 3, 4, 5, 6, 7], dtype="Int64"),
        "recency_days": np.array([0, 10, 20, 30, 40, 50, 60], dtype=np.int32),
        "first_order_value": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5],
        "freight": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    })


def scores_frame() -> pd.DataFrame:
    n = 5
    return pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)], "as_of": ["2024-03-31"] * n, "model_version": ["v1"] * n,
        "r_score": [1, 2, 3, 4, 5], "f_score": [5.0, 4.0, np.nan, 2.0, 1.0], "m_score": [3] * n,
        "segment": ["Champions", "Lost", None, "At risk", "Loyal"],
        "cluster": pd.array([0, 1, None, 2, 1], dtype="Int64"), "cluster_name": ["a", "b", None, "c", "b"],
        "tier": ["A", "B", "C", None, "A"], "churn_prob": [0.1, 0.9, np.nan, 0.5, 0.0],
        "churn_source": ["supervised", "bgnbd", None, "supervised", "bgnbd"],
        "p_alive": [np.nan] * n, "expected_purchases": [0.5] * n, "expected_spend": [1.0] * n,
        "clv": [10.0, 0.0, np.nan, 1.0, 2.0], "value_at_risk": [1.0, 0.0, np.nan, 0.5, 0.0],
        "risk_band": pd.Series([True, False, None, True, False], dtype=object).map(
            {True: "high", False: "low"}),
    })


def stored(path: Path, table: str) -> list[dict[str, tuple]]:
    """Every row in insertion order (rowid): each column's value with SQLite's storage
    class of it."""
    conn = sqlite3.connect(path)
    try:
        cols = ["rowid"] + [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        pairs = ", ".join(f'{c}, typeof({c})' for c in cols)
        return [{c: row[2 * i: 2 * i + 2] for i, c in enumerate(cols)}
                for row in conn.execute(f"SELECT {pairs} FROM {table} ORDER BY rowid")]
    finally:
        conn.close()


@pytest.mark.parametrize(("table", "make"), [(F, features_frame), (SC, scores_frame)])
def test_staged_insert_stores_what_the_plain_insert_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           table, make) -> None:  # noqa: ANN001
    monkeypatch.setattr(columnar, "STAGED_MIN_ROWS", 0)
    frame = make()
    plain = open_store(f"sqlite:///{tmp_path / 'plain.db'}")  # SQLite files, whatever the run's default store
    staged_store = open_store(f"sqlite:///{tmp_path / 'staged.db'}")
    with plain.begin() as conn:
        BulkWriter(conn).insert(table, frame)

    staged = columnar.start_staging(staged_store, sqlite_arrow(table, frame))
    assert staged is not None
    with staged:
        path = staged.path()
        assert path is not None and Path(path).exists()  # the helper wrote it: no fallback here
        with staged_store.connect() as conn:
            writer = BulkWriter(conn)
            with conn.begin():
                assert writer.insert_staged(table, path, list(frame.columns)) == len(frame)
            writer.detach_staged()
            assert attached(conn) == []
    assert not Path(staged.folder).exists()

    got = stored(tmp_path / "staged.db", table.name)
    assert got == stored(tmp_path / "plain.db", table.name)
    assert len(got) == len(frame)
    assert [r["rowid"][0] for r in got] == list(range(1, len(frame) + 1))
    if table is F:  # a few spot checks of what both wrote
        assert got[1]["as_of"] == ("2024-03-31", "text") and got[2]["as_of"] == ("2024-01-02", "text")
        assert got[0]["first_purchase"] == ("2023-01-02 03:04:05.123456", "text")
        assert got[1]["first_purchase"] == (None, "null")  # NaT
        assert [r["categories"] for r in got][:3] == [(1, "integer"), (None, "null"), (3, "integer")]
        assert got[1]["avg_ticket"] == (None, "null") and got[5]["revenue"] == (float("inf"), "real")
        assert got[2]["top_category"] == (None, "null") and got[4]["top_category"] == ("", "text")
        assert got[1]["tenure_days"] == (None, "null") and got[0]["recency_days"] == (0, "integer")
    else:
        assert got[2]["f_score"] == (None, "null") and got[0]["f_score"] == (5, "integer")
        assert got[2]["cluster"] == (None, "null") and got[3]["cluster"] == (2, "integer")


@pytest.mark.parametrize(("table", "make"), [(F, features_frame), (SC, scores_frame)])
def test_rows_staged_in_a_copy_of_the_table_bring_its_index_entries(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     table, make) -> None:  # noqa: ANN001
    """Staged with the store's definition of the table, the rows are stored as the plain
    insert stores them, the table keeps its indexes (never dropped), SQLite finds them
    consistent, and the copy is SQLite's transfer: its program reads the staged file's
    indexes (a row-by-row insert reads only the staged table)."""
    monkeypatch.setattr(columnar, "STAGED_MIN_ROWS", 0)
    frame = make()
    plain = open_store(f"sqlite:///{tmp_path / 'plain.db'}")
    with plain.begin() as conn:
        BulkWriter(conn).insert(table, frame)
    store = open_store(f"sqlite:///{tmp_path / 'staged.db'}")
    with store.connect() as conn:
        definition = sqlite_definition(conn, table)
    assert definition[0].startswith(f"CREATE TABLE {table.name}")
    assert sorted(d.split()[2] for d in definition[1:]) == sorted(i.name for i in table.indexes)
    indexes = _indexes(tmp_path / "staged.db")

    staged = columnar.start_staging(store, sqlite_arrow(table, frame), definition)
    assert staged is not None and staged.table == table.name
    with staged:
        path = staged.path()
        assert path is not None
        with store.connect() as conn:
            with conn.begin():
                conn.exec_driver_sql("ATTACH DATABASE ? AS probe", (path,))
                program = conn.exec_driver_sql(
                    f"EXPLAIN INSERT INTO main.{table.name} SELECT * FROM probe.{table.name}").all()
                probe = [r[1] for r in conn.exec_driver_sql("PRAGMA database_list")].index("probe")
                read = {r[3] for r in program if r[1] == "OpenRead" and r[4] == probe}
                assert len(read) == 1 + len(definition)  # the table, its key's index and every other index
                conn.exec_driver_sql("DETACH DATABASE probe")
            writer = BulkWriter(conn)
            with conn.begin():
                assert writer.insert_staged(table, path, list(frame.columns), as_made=True) == len(frame)
            writer.detach_staged()

    got = stored(tmp_path / "staged.db", table.name)
    assert got == stored(tmp_path / "plain.db", table.name) and len(got) == len(frame)
    assert _indexes(tmp_path / "staged.db") == indexes
    with contextlib.closing(sqlite3.connect(tmp_path / "staged.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        by_value = [r[0] for r in conn.execute(f"SELECT customer_id FROM {table.name} INDEXED BY "
                                               f"{sorted(i.name for i in table.indexes)[0]} ORDER BY rowid")]
        assert sorted(by_value) == sorted(frame["customer_id"])


def test_a_definition_that_is_not_a_plain_create_table_stages_plain_rows(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columnar, "STAGED_MIN_ROWS", 0)
    store = open_store(f"sqlite:///{tmp_path / 'pulse.db'}")
    frame = scores_frame()
    staged = columnar.start_staging(store, sqlite_arrow(SC, frame), ["CREATE VIEW v AS SELECT 1"])
    assert staged is not None and staged.table == "rows"
    with staged, store.connect() as conn:
        writer = BulkWriter(conn)
        with conn.begin():
            assert writer.insert_staged(SC, staged.path(), list(frame.columns)) == len(frame)
        writer.detach_staged()


def test_a_column_arrow_cannot_carry_is_refused_and_the_refresh_binds_it(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    frame = features_frame().assign(top_category=pd.Series(["toys", 3, None, "x", 1.5, "y", "z"], dtype=object))
    with pytest.raises((TypeError, pa.ArrowException)):
        sqlite_arrow(F, frame)
    monkeypatch.setattr(columnar, "STAGED_MIN_ROWS", 0)
    engine = open_store(f"sqlite:///{tmp_path / 'pulse.db'}")
    with R._Writes(engine) as writes:
        writes.stage(F, frame)
        assert writes.staged == {}
        with engine.connect() as conn, conn.begin():
            assert writes.insert(BulkWriter(conn), F, frame) == len(frame)
    assert [r["top_category"][0] for r in stored(tmp_path / "pulse.db", "customer_features")] == \
        ["toys", "3", None, "x", "1.5", "y", "z"]  # bound from Python; TEXT affinity


def attached(conn) -> list[str]:  # noqa: ANN001
    """The files attached to a connection besides the store and its temporary tables."""
    return [r[1] for r in conn.exec_driver_sql("PRAGMA database_list") if r[1] not in ("main", "temp")]


def _count_staged(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = BulkWriter.insert_staged

    def counted(self, table, path, columns, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(table.name)
        return real(self, table, path, columns, **kw)

    monkeypatch.setattr(BulkWriter, "insert_staged", counted)
    return calls


def test_refresh_writes_the_same_rows_staged_or_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the scratch files go
    plain = open_store(f"sqlite:///{tmp_path / 'plain.db'}")
    small_shop(plain)
    refresh(plain, AS_OF)
    calls = _count_staged(monkeypatch)
    monkeypatch.setattr(columnar, "STAGED_MIN_ROWS", 0)
    staged = open_store(f"sqlite:///{tmp_path / 'staged.db'}")
    small_shop(staged)
    refresh(staged, AS_OF)
    assert sorted(calls) == ["customer_features", "customer_scores", "segment_snapshots"]
    for table in ("customer_features", "customer_scores", "segment_snapshots"):
        got = stored(tmp_path / "staged.db", table)
        assert got == stored(tmp_path / "plain.db", table) and len(got) == 5
    assert not list(tmp_path.glob("pulse-stage-*"))  # the scratch files are gone

    # the same connection serves the next refresh: nothing stays attached
    refresh(staged, AS_OF)
    assert len(calls) == 6
    with staged.connect() as conn:
        assert attached(conn) == []


def test_a_failed_write_after_staged_rows_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(columnar, "STAGED_MIN_ROWS", 0)
    engine = open_store(f"sqlite:///{tmp_path / 'pulse.db'}")
    small_shop(engine)
    refresh(engine, AS_OF)
    before = {t: stored(tmp_path / "pulse.db", t) for t in ("customer_features", "customer_scores")}
    indexes = _indexes(tmp_path / "pulse.db")
    assert {"ix_scores_var", "ix_scores_band_var", "ix_features_state"} <= {name for name, _ in indexes}
    calls = _count_staged(monkeypatch)

    def broken_cells(conn, day, cells):  # noqa: ANN001, ANN202 - after the staged inserts
        raise RuntimeError("disk full")

    monkeypatch.setattr(R, "write_cells", broken_cells)
    with pytest.raises(RuntimeError, match="disk full"):
        refresh(engine, AS_OF + dt.timedelta(days=1))
    assert len(calls) == 3
    assert {t: stored(tmp_path / "pulse.db", t) for t in before} == before  # rolled back
    assert _indexes(tmp_path / "pulse.db") == indexes  # as they were: the failed write left no trace
    assert not list(tmp_path.glob("pulse-stage-*"))
    monkeypatch.undo()
    monkeypatch.setattr(columnar, "STAGED_MIN_ROWS", 0)
    refresh(engine, AS_OF + dt.timedelta(days=1))  # the store and its connections still work
    assert {r["as_of"] for r in stored(tmp_path / "pulse.db", "customer_features")} == {("2024-04-01", "text")}
    assert _indexes(tmp_path / "pulse.db") == indexes  # rebuilt after the rows, as they were


def _indexes(path: Path) -> list[tuple[str, str]]:
    """The secondary indexes of the features and scores tables, as SQLite stores them."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                            "AND tbl_name IN ('customer_features', 'customer_scores') ORDER BY name").fetchall()


def test_datetime_text_written_by_arithmetic_is_numpys_text() -> None:
    """The staged datetimes' digits, computed from the day number, are the text
    `sql_datetimes` makes with numpy's datetime text: leap days, years before 1970 and
    before 1000, microseconds, NaT; a year past 9999 takes numpy's text as it is."""
    rng = np.random.default_rng(5)
    micros = rng.integers(-62_135_596_800 * 10**6, 253_402_300_799 * 10**6, 50_000)  # years 1 to 9999
    fixed = pd.to_datetime(["1600-02-29", "1900-03-01 00:00:00.000001", "1969-12-31 23:59:59.999999",
                            "2000-02-29 12:34:56.5", "2024-12-31 23:59:59", "0001-01-01", "9999-12-31 23:59:59.999999"], format="ISO8601")
    random = micros.astype("datetime64[us]")
    random[::11] = np.datetime64("NaT")
    stamps = pd.Series(np.concatenate([random, fixed.to_numpy(dtype="datetime64[us]")]))
    for values in (stamps, stamps[:0], pd.Series([pd.NaT], dtype="datetime64[us]"),
                   pd.Series(np.array([300_000_000_000 * 10**6], dtype="datetime64[us]"))):
        made = sql_datetime_strings(values)
        assert made.equals(pa.array(sql_datetimes(values), pa.string()))
    assert sql_datetime_strings(stamps[-7:]).to_pylist() == [
        "1600-02-29 00:00:00.000000", "1900-03-01 00:00:00.000001", "1969-12-31 23:59:59.999999",
        "2000-02-29 12:34:56.500000", "2024-12-31 23:59:59.000000", "0001-01-01 00:00:00.000000",
        "9999-12-31 23:59:59.999999"]
