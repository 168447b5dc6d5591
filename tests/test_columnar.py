"""Columnar reads: the ADBC path (helper process) gives the DB-API path's table, and the
store's own connections keep working after it (two SQLite libraries never share a process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sqlalchemy import Engine, func, select

from analytics import columnar
from analytics import columnar_worker as worker
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
    monkeypatch.setattr(columnar, "_adbc_result", _counting(columnar._adbc_result, calls := []))
    fast = read_columns(engine, "orders", COLS, "purchased_at < :t", {"t": "2018-01-01"})
    assert calls, "the ADBC path was not taken"
    assert fast.num_rows == slow.num_rows > 1000
    assert _sorted(fast).equals(_sorted(slow))
    engine.dispose()


def test_store_stays_writable_after_fast_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = sample_store(tmp_path)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    monkeypatch.setattr(columnar, "_adbc_result", _counting(columnar._adbc_result, calls := []))
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
    monkeypatch.setattr(columnar, "_adbc_result", _counting(columnar._adbc_result, calls := []))
    fast = read_columns(engine, "orders", COLS)
    assert calls, "the ADBC read failed and the DB-API path was taken"
    assert fast.num_rows == slow.num_rows > 3000
    assert fast.column("delivered").null_count == slow.column("delivered").null_count >= 3000
    assert _sorted(fast).equals(_sorted(slow))
    engine.dispose()


def _assert_same_dataset(got: dict, expected: dict) -> None:
    """Every field of two `_dataset_arrays` results is equal."""
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        else:
            assert got[name] == value, name


def _dataset_arrays(engine: Engine) -> dict:
    from analytics.dataset import read_dataset

    data = read_dataset(engine, full=True)
    return {k: (v.to_pylist() if isinstance(v, pa.Array) else v) for k, v in vars(data).items()}


def test_dataset_joins_in_the_readers_equal_the_local_joins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader processes look items, payments and reviews up in the published order ids;
    the result equals the DB-API path's local lookups, orphan rows (dropped) included."""
    _adbc_result = columnar._adbc_result
    engine = sample_store(tmp_path)
    with engine.begin() as conn:  # an item and a payment of an order that is not in the store
        conn.exec_driver_sql("INSERT INTO order_items (order_id, item_seq, product_id, quantity, price, "
                             "freight_value) VALUES ('no-such-order', 1, 'p', 1, 10.0, 1.0)")
        conn.exec_driver_sql("INSERT INTO payments (order_id, seq, method, installments, value) "
                             "VALUES ('no-such-order', 1, 'voucher', 1, 11.0)")
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 10**12)
    slow = _dataset_arrays(engine)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    got: list[pa.Table] = []
    monkeypatch.setattr(columnar, "_adbc_result", lambda *a: got.append(t := _adbc_result(*a)) or t)
    fast = _dataset_arrays(engine)
    # items (in two rowid ranges), payments and reviews came back from the readers with `ord`
    # in place of order_id
    assert sum("ord" in t.column_names and "order_id" not in t.column_names for t in got if t) == 4
    with engine.connect() as conn:
        items = conn.exec_driver_sql("SELECT count(*) FROM order_items").scalar_one()
    assert len(fast["item_ord"]) == items - 1 > 1000  # the orphan is dropped
    order_id = np.asarray(fast["order_id"], dtype=object)
    with engine.connect() as conn:  # each row sits with its own order
        for table, value, ord_, got in (("order_items", "price", "item_ord", "item_price"),
                                        ("payments", "value", "pay_ord", "pay_value"),
                                        ("reviews", "score", "review_ord", "review_score")):
            expected = conn.exec_driver_sql(f"SELECT order_id, {value} FROM {table} "
                                            "WHERE order_id IN (SELECT order_id FROM orders)").fetchall()
            pairs = zip(order_id[fast[ord_]], fast[got].tolist(), strict=True)
            assert sorted(pairs) == sorted((o, float(v)) for o, v in expected), table
    _assert_same_dataset(fast, slow)
    engine.dispose()


def test_reads_waiting_for_keys_end_when_the_keys_are_dropped(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A read waiting for keys that never come (the caller failed) ends with an error
    instead of hanging, and its reader process is free for the next read."""
    engine = sample_store(tmp_path)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    cols = [Col("order_id", "order_id", "str"), Col("price", "price", "float")]
    keys = columnar.SharedKeys("order_id")
    pending = columnar.start_read(engine, "order_items", cols, keys=keys)
    keys.close()  # never published
    with pytest.raises(RuntimeError, match="never published"):
        pending.result(timeout=60)
    assert read_columns(engine, "orders", COLS).num_rows > 1000
    engine.dispose()


def test_keys_are_written_for_reader_processes_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads that look keys up in this process (DB-API, PostgreSQL) leave no keys file to
    write; a read in a reader process gets one, published before or after it starts; when
    the file cannot be written the read looks its keys up in this process."""
    engine = sample_store(tmp_path)
    cols = [Col("order_id", "order_id", "str"), Col("price", "price", "float")]
    order_ids = read_columns(engine, "orders", COLS).column("order_id")
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 10**12)
    with columnar.SharedKeys("order_id") as keys:
        pending = columnar.start_read(engine, "order_items", cols, keys=keys)
        keys.publish(order_ids)
        local = pending.result(timeout=60)
        assert not Path(keys.path).exists()
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    for publish_first in (True, False):
        with columnar.SharedKeys("order_id") as keys:
            if publish_first:
                keys.publish(order_ids)
            pending = columnar.start_read(engine, "order_items", cols, keys=keys)
            if not publish_first:
                keys.publish(order_ids)
            helper = pending.result(timeout=60)
            assert Path(keys.path).exists()
        assert not Path(keys.folder).exists()
        assert helper.sort_by([("ord", "ascending"), ("price", "ascending")]).equals(
            local.sort_by([("ord", "ascending"), ("price", "ascending")]))
        assert pc.min(helper.column("ord")).as_py() >= 0
    with columnar.SharedKeys("order_id") as keys:  # a keys' file that cannot be written
        keys.publish(order_ids)
        Path(keys.folder).rmdir()
        here = columnar.start_read(engine, "order_items", cols, keys=keys).result(timeout=60)
    assert here.sort_by([("ord", "ascending"), ("price", "ascending")]).equals(
        local.sort_by([("ord", "ascending"), ("price", "ascending")]))
    engine.dispose()


def _rewrite_customers(engine: Engine, order_by: str, where: str = "1") -> None:
    """The customers table's rows written again in `order_by` order (its rowid order)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        conn.exec_driver_sql(f"CREATE TEMP TABLE c AS SELECT * FROM customers WHERE {where} ORDER BY {order_by}")
        conn.exec_driver_sql("DELETE FROM customers")
        conn.exec_driver_sql("INSERT INTO customers SELECT * FROM c ORDER BY rowid")
        conn.exec_driver_sql("DROP TABLE c")


def test_customers_in_key_order_give_the_same_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store read in key order lists its customers sorted: their ids are then taken as
    they are (no sort), and the dataset equals the one of the same store in another row
    order; a sorted list that misses a buyer takes the sort."""
    from analytics import dataset

    sorts: list[int] = []
    real_distinct = dataset.distinct_values  # the sort's first step
    monkeypatch.setattr(dataset, "distinct_values", lambda v: sorts.append(len(v)) or real_distinct(v))
    engine = sample_store(tmp_path)
    _rewrite_customers(engine, "customer_id DESC")
    shuffled = _dataset_arrays(engine)
    assert len(sorts) == 1, "customers out of key order must be sorted"
    _rewrite_customers(engine, "customer_id")
    in_order = _dataset_arrays(engine)
    assert len(sorts) == 1, "customers in key order were sorted again"
    for name, value in shuffled.items():
        assert np.array_equal(np.asarray(in_order[name], dtype=object), np.asarray(value, dtype=object)), name
    assert len(in_order["customer_ids"]) == len(set(in_order["customer_ids"])) > 1000
    assert in_order["customer_ids"] == sorted(in_order["customer_ids"])
    with engine.connect() as conn:
        buyer = conn.exec_driver_sql("SELECT customer_id FROM orders LIMIT 1").scalar_one()
    _rewrite_customers(engine, "customer_id", f"customer_id <> '{buyer}'")
    unlisted = _dataset_arrays(engine)
    assert len(sorts) == 2, "a buyer missing from the customers must take the sort"
    assert unlisted["customer_ids"] == in_order["customer_ids"]
    at = in_order["customer_ids"].index(buyer)
    assert not unlisted["listed"][at] and unlisted["state"][at] is None
    assert np.array_equal(np.delete(unlisted["listed"], at), np.delete(in_order["listed"], at))
    assert np.array_equal(unlisted["cust"], in_order["cust"])
    engine.dispose()


def _hex_ids(n: int, seed: int, width: int = 32) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(row) for row in rng.choice(list("0123456789abcdef"), size=(n, width))]


def test_sorted_hash_lookup_gives_arrows_positions() -> None:
    """Many keys: positions by sorted hashes, equal to Arrow's hash lookup for keys present
    (repeated, in any order), ids absent, ids of another length and nulls."""
    keys = pa.array(_hex_ids(120_000, seed=1))
    index = worker.KeyPositions.of(keys)
    assert index.packed is not None, "the sorted-hash path was not taken"
    rng = np.random.default_rng(2)
    present = keys.take(pa.array(rng.integers(0, len(keys), 150_000))).to_pylist()
    values = present + _hex_ids(20_000, seed=3) + _hex_ids(5_000, seed=4, width=36)
    rng.shuffle(values)
    values = pa.array(values)
    expected = pc.index_in(values, value_set=keys).cast(pa.int64()).fill_null(-1)
    got = index.positions(values)
    assert got.equals(expected)
    assert 140_000 < pc.sum(pc.greater_equal(got, 0)).as_py() <= 150_000
    again = worker.KeyPositions.from_table(index.to_table())  # as the reader processes get them
    assert again.positions(pa.chunked_array([values[:1000], values[1000:]])).equals(expected)
    with_nulls = pa.array([None, *values.to_pylist()[:99_999]])
    assert index.positions(with_nulls).to_pylist() == [-1, *expected.to_pylist()[:99_999]]


def test_a_hash_match_never_joins_different_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids whose hashes match a key's but whose text differs are not found; keys whose
    hashes repeat are each found (tried in turn), and a repeated key gives its first
    position, as Arrow's lookup does."""
    real = worker.hash_strings
    monkeypatch.setattr(worker, "hash_strings", lambda v: real(pc.utf8_slice_codeunits(v, 0, 6)))
    keys = pa.array([f"{i:06d}" + "a" * 26 for i in range(60_000)])
    index = worker.KeyPositions.of(keys)
    assert index.packed is not None
    twins = pa.array([f"{i:06d}" + "b" * 26 for i in range(60_000)])  # each hashes as key i
    assert pc.all(pc.equal(index.positions(twins), -1)).as_py()
    assert index.positions(keys).to_pylist() == list(range(60_000))
    # keys i and i + 50,000 hash alike: each is found, whichever of the two comes first
    clashing = pa.array([f"{i % 50_000:06d}" + f"{i:026d}" for i in range(60_000)])
    shared = worker.KeyPositions.of(clashing)
    assert shared.packed is not None
    assert shared.positions(clashing[::-1]).to_pylist() == list(range(59_999, -1, -1))
    strangers = pa.array([f"{i % 50_000:06d}" + "x" * 26 for i in range(60_000)])
    assert pc.all(pc.equal(shared.positions(strangers), -1)).as_py()
    repeated = pa.array([f"{i % 40_000:06d}" + "r" * 26 for i in range(80_000)])
    values = pa.array([f"{i:06d}" + "r" * 26 for i in range(39_999, -1, -1)] * 2)
    expected = pc.index_in(values, value_set=repeated).cast(pa.int64())
    assert worker.KeyPositions.of(repeated).positions(values).equals(expected)


def test_a_read_in_rowid_ranges_equals_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table read as several rowid ranges (one reader process each) has the rows of one
    read, with a condition that has an OR in it too."""
    engine = sample_store(tmp_path)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    monkeypatch.setattr(columnar, "_adbc_result", _counting(columnar._adbc_result, calls := []))
    where = "purchased_at < :t OR delivered_at IS NULL"
    whole = columnar.start_read(engine, "orders", COLS, where, {"t": "2018-01-01"}).result(timeout=120)
    assert len(calls) == 1
    split = columnar.start_read(engine, "orders", COLS, where, {"t": "2018-01-01"}, parts=3).result(timeout=120)
    assert len(calls) == 4
    assert split.num_rows == whole.num_rows > 1000
    assert _sorted(split).equals(_sorted(whole))
    everything = columnar.start_read(engine, "orders", COLS, parts=2).result(timeout=120)
    with engine.connect() as conn:
        assert everything.num_rows == conn.exec_driver_sql("SELECT count(*) FROM orders").scalar_one()
    engine.dispose()


def test_codes_of_dictionary_chunks_equal_codes_of_strings() -> None:
    """A column read dictionary-encoded (one dictionary per part) gives the codes and the
    distinct values of the same column read as strings."""
    from analytics.dataset import codes_in, distinct_values, sorted_unique

    ids = pa.array(_hex_ids(3_000, seed=6) + [None] * 10)
    plain = pa.chunked_array([ids[:1_500], ids[1_500:]])
    coded = pa.chunked_array([pc.dictionary_encode(ids[:1_500]), pc.dictionary_encode(ids[1_500:])])
    index = sorted_unique(plain)
    assert sorted_unique(distinct_values(coded)).equals(index)
    np.testing.assert_array_equal(codes_in(coded, index), codes_in(plain, index))
    assert (codes_in(coded, index)[-10:] == -1).all()


def test_readers_start_for_a_big_store_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store with at least ADBC_MIN_ROWS orders in a file gets its reader processes
    started ahead; a smaller one, or one in memory, none."""
    import os

    engine = sample_store(tmp_path)
    assert columnar.start_readers(engine) == []  # the sample is below ADBC_MIN_ROWS
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    assert columnar.start_readers(open_store("sqlite://")) == []
    started = columnar.start_readers(engine)
    pids = {task.result(timeout=60) for task in started}
    assert len(started) == columnar.READERS and os.getpid() not in pids
    engine.dispose()


def test_reader_processes_do_without_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow imports pandas on the first array it builds, only to ask whether values are
    pandas objects (about 0.3 s of CPU per reader process). Readers refuse the import: a whole
    dataset read through fresh readers (arguments bound, keys looked up, columns coded)
    leaves pandas unimported there, and still equals the DB-API read."""
    import importlib

    engine = sample_store(tmp_path)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 10**12)
    slow = _dataset_arrays(engine)
    monkeypatch.setattr(columnar, "ADBC_MIN_ROWS", 0)
    monkeypatch.setattr(columnar, "_adbc_result", _counting(columnar._adbc_result, calls := []))
    columnar.stop_readers()  # the readers of this read start afresh
    fast = _dataset_arrays(engine)
    assert len(calls) >= 5, "the reads did not go through the reader processes"
    _assert_same_dataset(fast, slow)
    pool = columnar._reader_pool()
    # builtins only: a function of this module would make the reader import the module
    # (and, through it, pandas)
    loaded = [pool.submit(eval, "'pandas' in __import__('sys').modules") for _ in range(4)]
    assert [task.result(timeout=60) for task in loaded] == [False] * 4
    with pytest.raises(ModuleNotFoundError, match="reader processes use no pandas"):
        pool.submit(importlib.import_module, "pandas").result(timeout=60)
    columnar.stop_readers()
    engine.dispose()
