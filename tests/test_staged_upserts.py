"""A SQLite load gathers its upserts in scratch files and applies them in key order at its
end (storage/loaders/staged.py): it leaves the store that chunk-by-chunk upserts leave,
and a failed load leaves neither rows nor scratch files behind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from conftest import data_path
from sqlalchemy import Engine, select
from test_load_olist_stream import TABLES, dump, write_slice

from storage import schema
from storage.loaders import LoadError, load_path, olist, staged
from storage.loaders.bulk import BulkWriter
from storage.store import open_store

pytestmark = pytest.mark.skipif(staged._adbc is None, reason="the ADBC SQLite driver is not installed")


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(table, rows) of every staged segment applied to a store."""
    seen: list[tuple[str, int]] = []
    seal = staged.StagedUpserts.seal

    def spy(seg: staged.Segment) -> bool:
        sealed = seal(seg)
        if sealed:
            seen.append((seg.table, seg.rows))
        return sealed

    monkeypatch.setattr(staged.StagedUpserts, "seal", staticmethod(spy))
    return seen


def _load_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: Path, fmt: str,
                    chunksize: int) -> tuple[dict, dict]:
    """The store after a staged load and after a chunk-by-chunk one, as (report, dump)."""
    out = {}
    for way in ("staged", "direct"):
        if way == "direct":
            monkeypatch.setattr(staged, "_adbc", None)
        engine = open_store(f"sqlite:///{tmp_path / way}.db")
        report = load_path(engine, source, fmt, options={"chunksize": chunksize})
        out[way] = (report, dump(engine))
        engine.dispose()
    assert not list(tmp_path.glob(".pulse-load-*")), "the scratch folder is removed"
    return out["staged"], out["direct"]


@pytest.mark.realdata
def test_olist_load_staged_equals_chunk_by_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  applied: list) -> None:
    # a repeated order id (the first row wins), an orphan line, and chunks of 97 rows, so
    # that keys meet again across chunks
    source = write_slice(tmp_path / "olist", 1_500, twin=True)
    (staged_report, a), (direct_report, b) = _load_both_ways(tmp_path, monkeypatch, source, "olist", 97)
    assert {t for t, _ in applied} == {"customers", "orders", "order_items", "payments", "reviews"}
    assert dict(applied)["orders"] == 1_500
    assert staged_report.quarantined == direct_report.quarantined == {
        "duplicate id: order_id": 1, "orphan: order_id not in the loaded orders": 1}
    assert (staged_report.tables, staged_report.counts) == (direct_report.tables, direct_report.counts)
    for table in TABLES:
        assert len(a[table]) > 0, table
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=True)


@pytest.mark.realdata
def test_online_retail_load_staged_equals_chunk_by_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         applied: list) -> None:
    # invoices split across chunks of 997 lines: each later chunk rewrites the order's totals
    path = tmp_path / "retail.csv"
    pd.read_csv(data_path("online-retail", "online_retail.csv.xz"), dtype=str, nrows=12_000).to_csv(path, index=False)
    (_, a), (_, b) = _load_both_ways(tmp_path, monkeypatch, path, "online-retail", 997)
    orders_written = sum(n for t, n in applied if t == "orders")
    assert orders_written > len(a["orders"]), "some orders were staged more than once and merged"
    for table in ("customers", "orders", "order_items", "quarantine"):
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=True)


def _customers(ids: list[str], first_seen: list[str], city: list, state: str | None) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ids, "first_seen": pd.to_datetime(first_seen),
                         "city": pd.Series(city, dtype=object), "state": state, "source": "test"})


def test_merge_rules_and_a_frame_arrow_cannot_carry_keep_their_order(tmp_path: Path) -> None:
    frames = [
        _customers(["a", "b"], ["2020-05-01", "2020-06-01"], ["Santos", None], "SP"),
        _customers(["a", "b"], ["2020-04-01", "2020-07-01"], [None, "Campinas"], "RJ"),
        # a city column of text and a number: Arrow cannot carry it, so it is written at once,
        # after the rows staged before it
        _customers(["a", "c"], ["2020-08-01", "2020-01-01"], ["Osasco", 12], "MG"),
        _customers(["c"], ["2019-12-01"], [None], None),
    ]
    merge = olist.CUSTOMER_MERGE
    got = {}
    for way in ("staged", "direct"):
        engine = open_store(f"sqlite:///{tmp_path / way}.db")
        with staged.staged_upserts(str(tmp_path / f"{way}.db") if way == "staged" else None) as stage:
            with engine.connect() as conn:
                with conn.begin():
                    writer = BulkWriter(conn)
                    writer.stage_upserts(stage)
                    with writer.overlapped():
                        for frame in frames:
                            writer.upsert(schema.customers, frame, merge)
                    writer.apply_staged()
                writer.detach_staged()
                if stage is not None:
                    assert [s.table for s in stage.segments] == ["customers", "customers"]
            got[way] = _read_customers(engine)
        engine.dispose()
    assert got["staged"] == got["direct"] == {
        # the earliest first_seen; the last city and state given (a missing one keeps the stored)
        "a": (dt.datetime(2020, 4, 1), "Osasco", "MG"),
        "b": (dt.datetime(2020, 6, 1), "Campinas", "RJ"),
        "c": (dt.datetime(2019, 12, 1), "12", "MG"),
    }


def _read_customers(engine: Engine) -> dict[str, tuple]:
    C = schema.customers
    with engine.connect() as conn:
        rows = conn.execute(select(C.c.customer_id, C.c.first_seen, C.c.city, C.c.state))
        return {r.customer_id: (r.first_seen, r.city, r.state) for r in rows}


@pytest.mark.realdata
def test_failed_load_leaves_no_rows_and_no_scratch_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_slice(tmp_path / "olist", 300)
    engine = open_store(f"sqlite:///{tmp_path / 'pulse.db'}")
    real_reviews = olist._reviews

    def broken(ctx, part, *args):  # noqa: ANN001, ANN202 - the loader's own signature
        if ctx.tables.get("reviews"):
            raise LoadError("the reviews file went away")  # after one chunk of them was staged
        return real_reviews(ctx, part, *args)

    monkeypatch.setattr(olist, "_reviews", broken)
    with pytest.raises(LoadError, match="went away"):
        load_path(engine, source, "olist", options={"chunksize": 50})
    with engine.connect() as conn:
        for table in ("customers", "orders", "order_items", "payments", "reviews"):
            assert conn.execute(select(getattr(schema, table)).limit(1)).first() is None, table
        assert conn.exec_driver_sql("PRAGMA database_list").fetchall()[-1][1] == "main"  # nothing attached
    assert not list(tmp_path.glob(".pulse-load-*"))
    monkeypatch.setattr(olist, "_reviews", real_reviews)
    report = load_path(engine, source, "olist")  # the same engine loads afterwards
    assert report.counts["orders"] == 300
    engine.dispose()
