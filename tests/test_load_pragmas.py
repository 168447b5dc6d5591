"""SQLite settings during a load: temporary sorts on disk while the deferred indexes are
rebuilt, the store's own settings back afterwards (after a refused load too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event

from storage.generate import generate_olist
from storage.loaders import LoadError, load_path
from storage.store import open_store

STORE_SETTINGS = {"temp_store": 2, "mmap_size": 1 << 30, "cache_size": -262144, "threads": 0,
                  "secure_delete": 0, "busy_timeout": 60_000}  # storage/engine.py


def _settings(engine) -> dict[str, int]:  # noqa: ANN001 - Engine
    """The settings, the same on every pooled connection (all of them checked out at once,
    so the load's own connection is among them)."""
    conns = [engine.connect() for _ in range(max(1, engine.pool.checkedin()))]
    try:
        seen = [{p: int(c.exec_driver_sql(f"PRAGMA {p}").scalar()) for p in STORE_SETTINGS} for c in conns]
    finally:
        for c in conns:
            c.close()
    assert all(s == seen[0] for s in seen), seen
    return seen[0]


def test_first_load_builds_indexes_with_disk_sorts_then_restores(tmp_path: Path, sqlite_url: str) -> None:
    generate_olist(tmp_path / "data", customers=300, seed=3)
    engine = open_store(sqlite_url)
    statements: list[str] = []  # every statement SQLite runs, as its trace reports it
    event.listen(engine, "connect",
                 lambda dbapi_conn, _r: dbapi_conn.set_trace_callback(lambda sql: statements.append(" ".join(sql.split()))))
    engine.dispose()  # connections made from now on are traced
    report = load_path(engine, tmp_path / "data", "olist")
    assert report.counts["orders"] > 0

    def first(prefix: str) -> int:
        return next(i for i, s in enumerate(statements) if s.upper().startswith(prefix))

    on_disk = first("PRAGMA TEMP_STORE=FILE")
    index_builds = [i for i, s in enumerate(statements) if s.upper().startswith("CREATE INDEX")]
    restored = first("PRAGMA TEMP_STORE=2")
    assert index_builds, "a first load into an empty store rebuilds its deferred indexes"
    assert on_disk < min(index_builds) and max(index_builds) < restored
    assert _settings(engine) == STORE_SETTINGS
    engine.dispose()


def test_refused_load_restores_the_settings(tmp_path: Path, sqlite_url: str) -> None:
    generate_olist(tmp_path / "data", customers=50, seed=3)
    (tmp_path / "data" / "olist_order_items_dataset.csv").unlink()
    engine = open_store(sqlite_url)
    with pytest.raises(LoadError, match="olist_order_items_dataset"):
        load_path(engine, tmp_path / "data", "olist")
    assert _settings(engine) == STORE_SETTINGS
    engine.dispose()


def test_unmapped_reads_leave_the_store_settings_as_they_were(sqlite_url: str) -> None:
    from storage.engine import unmapped

    engine = open_store(sqlite_url)
    before = _settings(engine)
    with unmapped(engine) as conn:
        assert int(conn.exec_driver_sql("PRAGMA mmap_size").scalar()) == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM orders").scalar() == 0
    with pytest.raises(ZeroDivisionError), unmapped(engine):
        raise ZeroDivisionError
    assert _settings(engine) == before == STORE_SETTINGS


def test_a_brief_lock_wait_is_brief_then_the_store_waits_as_before(sqlite_url: str) -> None:
    import sqlite3
    import time

    from storage.engine import brief_lock_wait

    engine = open_store(sqlite_url)
    before = _settings(engine)
    path = engine.url.database
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    try:
        with engine.connect() as conn, brief_lock_wait(conn, 200):
            started = time.perf_counter()
            with pytest.raises(Exception, match="locked"):
                conn.exec_driver_sql("INSERT INTO meta (key, value) VALUES ('x', 'y')")
            waited = time.perf_counter() - started
            conn.rollback()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert 0.15 <= waited < 5, waited
    assert _settings(engine) == before == STORE_SETTINGS
