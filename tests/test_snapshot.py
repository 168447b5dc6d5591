"""Incremental refresh reads (analytics/snapshot.py): after a second load, the kept
dataset brought up to date equals a full read of the store, and the refresh's tables are
the same either way; anything the snapshot cannot vouch for sends the read back to the
whole store. On SQLite files and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import Engine, delete, insert, select, update

from analytics import snapshot as snapshot_module
from analytics.dataset import Dataset, read_dataset
from analytics.groups import non_decreasing
from analytics.model_store import read_fingerprint
from analytics.refresh import refresh
from analytics.snapshot import (
    DELTA,
    SNAPSHOT_ENV,
    current_watermark,
    load_snapshot,
    merge,
    read_with_snapshot,
    snapshot_folder,
    wait_for_saves,
)
from storage import schema
from storage.generate import generate_olist
from storage.loaders import load_path
from storage.next_batch import next_batch


@pytest.fixture(scope="module")
def third(batches: tuple[Path, Path]) -> Path:
    """A third export: other orders of the first changed (some also changed by the second)
    and new ones."""
    out = batches[0].parent / "third"
    next_batch(batches[0], out, seed=9)
    return out


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("batches")
    generate_olist(root / "first", 400, 1_500, seed=3)
    next_batch(root / "first", root / "second", seed=5)
    return root / "first", root / "second"


def canonical(data: Dataset) -> dict[str, pd.DataFrame]:
    """The dataset as tables that do not depend on row order of the lines, payments and
    reviews, nor on the numbering of product and seller codes."""
    def named(codes: np.ndarray, names: np.ndarray) -> np.ndarray:
        out = np.full(len(codes), None, dtype=object)
        out[codes >= 0] = names[codes[codes >= 0]]
        return out

    def sort(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values(list(frame.columns), na_position="first").reset_index(drop=True)

    orders = pd.DataFrame({
        "order_id": data.order_id.to_pylist(), "customer": data.ids()[data.cust],
        **{f: getattr(data, f) for f in ("purchased", "purchase", "items_value", "freight_value",
                                         "delivered", "estimated")},
    })
    customers = pd.DataFrame({"customer": data.ids(), "state": data.state, "region": data.region,
                              "listed": data.listed})
    order_of = np.asarray(data.order_id.to_pylist(), dtype=object)
    items = sort(pd.DataFrame({
        "order": order_of[data.item_ord], "category": named(data.item_category, data.category_names),
        "quantity": data.item_quantity, "price": data.item_price, "freight": data.item_freight,
        "product": named(data.item_product, data.product_names),
        "seller": named(data.item_seller, data.seller_names),
    }))
    pays = sort(pd.DataFrame({
        "order": order_of[data.pay_ord], "method": named(data.pay_method, data.method_names),
        "installments": data.pay_installments, "value": data.pay_value,
    }))
    reviews = sort(pd.DataFrame({"order": order_of[data.review_ord], "score": data.review_score,
                                 "created": data.review_created}))
    return {"orders": orders, "customers": customers, "items": items, "payments": pays, "reviews": reviews,
            "categories": pd.DataFrame({"name": data.category_names}),
            "methods": pd.DataFrame({"name": data.method_names})}


def assert_same(a: Dataset, b: Dataset) -> None:
    left, right = canonical(a), canonical(b)
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], check_exact=True, obj=name)


def test_second_load_is_read_incrementally_and_equals_a_full_read(store: Engine, batches) -> None:
    first, second = batches
    load_path(store, first, "olist")
    data, report = read_with_snapshot(store, read_fingerprint(store))
    assert (report.mode, report.reason) == ("full", "no snapshot yet")
    assert report.watermark == current_watermark(store) == 1
    wait_for_saves()  # (written on a thread while the refresh goes on)
    assert snapshot_folder(store).is_dir()

    load_path(store, second, "olist")
    merged, report = read_with_snapshot(store, read_fingerprint(store))
    assert report.mode == "incremental", report.reason
    assert report.orders_read == 100 and report.watermark == 2  # 40 changed + 60 new
    full = read_dataset(store)
    assert len(full.cust) == len(data.cust) + 60
    assert_same(merged, full)
    # the lines in their orders' row order where the snapshot was saved and merged (the
    # new ones slotted in); a whole-store read leaves them as the store has them
    assert not non_decreasing(full.item_ord)  # (so the checks below can fail)
    assert non_decreasing(merged.item_ord)
    # what changed did change: 13 more canceled orders, a moved customer, new names
    assert int((~full.purchase).sum()) > int((~data.purchase).sum())
    assert "pix" in set(full.method_names) and "pix" not in set(data.method_names)
    assert (full.state == "AC").sum() > (data.state == "AC").sum()
    with store.connect() as conn:  # every customer's state as the store has it
        states = dict(conn.execute(select(schema.customers.c.customer_id, schema.customers.c.state)).all())
    assert len(states) == int(merged.listed.sum()) > int(data.listed.sum())
    assert {c: s for c, s, ok in zip(merged.ids(), merged.state, merged.listed, strict=True) if ok} == states

    # the merged dataset was kept: a third read with nothing new reads no orders
    again, report = read_with_snapshot(store, read_fingerprint(store))
    assert (report.mode, report.orders_read) == ("incremental", 0)
    assert_same(again, full)
    kept, _ = load_snapshot(snapshot_folder(store))
    assert kept is not None and kept.watermark == 2
    assert_same(kept.dataset(), full)
    assert non_decreasing(kept.dataset().item_ord)


def _tables(engine: Engine) -> dict[str, pd.DataFrame]:
    out = {}
    for table in (schema.customer_features, schema.customer_scores, schema.agg_cohorts,
                  schema.agg_categories, schema.segment_snapshots):
        with engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(select(table)).mappings().all())
        out[table.name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def test_incremental_refresh_writes_what_a_full_read_refresh_writes(store: Engine, batches) -> None:
    first, second = batches
    load_path(store, first, "olist")
    assert refresh(store).read["mode"] == "full"
    load_path(store, second, "olist")
    incremental = refresh(store)
    assert incremental.read["mode"] == "incremental" and incremental.read["orders_read"] == 100
    assert incremental.to_dict()["read"]["watermark"] == 2
    after_incremental = _tables(store)
    full = refresh(store, full_read=True)
    assert full.read["mode"] == "full" and full.read["reason"] == "a full read was asked for"
    assert full.as_of == incremental.as_of and full.customers == incremental.customers
    after_full = _tables(store)
    for name, frame in after_incremental.items():
        pd.testing.assert_frame_equal(frame, after_full[name], check_exact=False, rtol=1e-12, obj=name)


def test_rows_changed_behind_the_loads_back_send_the_read_to_the_whole_store(store: Engine, batches) -> None:
    first, _ = batches
    load_path(store, first, "olist")
    read_with_snapshot(store)
    with store.begin() as conn:  # an order canceled by hand keeps its load stamp
        some = conn.execute(select(schema.orders.c.order_id).where(
            schema.orders.c.status == "delivered").limit(1)).scalar()
        conn.execute(update(schema.orders).where(schema.orders.c.order_id == some).values(status="canceled"))
    data, report = read_with_snapshot(store, read_fingerprint(store))
    assert report.mode == "full" and "purchases" in report.reason
    assert_same(data, read_dataset(store))

    with store.begin() as conn:  # an order deleted by hand
        conn.execute(delete(schema.orders).where(schema.orders.c.order_id == some))
    data, report = read_with_snapshot(store)  # without a fingerprint: the counts
    assert report.mode == "full" and report.reason.startswith("the snapshot does not match the store (orders:")
    assert len(data.cust) == 1_499


def test_a_reload_of_everything_reads_the_whole_store(store: Engine, batches) -> None:
    first, _ = batches
    load_path(store, first, "olist")
    read_with_snapshot(store)
    load_path(store, first, "olist")  # every order rewritten (stamped by the new run)
    data, report = read_with_snapshot(store, read_fingerprint(store))
    assert (report.mode, report.orders_read) == ("full", 1_500)
    assert report.reason == "1,500 orders touched since run 1: reading them all is quicker"
    assert_same(data, read_dataset(store))
    # merged anyway, every kept row replaced (none kept) or none touched, from the snapshot's
    # files as from a dataset in memory: what a full read gives
    wait_for_saves()
    kept = load_snapshot(snapshot_folder(store))[0]
    files, run = kept.files, kept.watermark
    assert run == 2 and kept.delta is None
    everything = read_dataset(store, since=0)
    assert len(everything.cust) == 1_500
    for old in (files, files.dataset()):
        assert_same(merge(old, everything), data)
        assert_same(merge(old, read_dataset(store, since=run)), data)


def test_unstamped_rows_are_always_read_again(store: Engine, batches) -> None:
    first, _ = batches
    load_path(store, first, "olist")
    read_with_snapshot(store)
    with store.begin() as conn:  # written without a load (no stamp)
        conn.execute(insert(schema.customers).values(customer_id="by-hand", state="SP", source="test"))
        conn.execute(insert(schema.orders).values(
            order_id="hand-1", customer_id="by-hand", purchased_at=pd.Timestamp("2018-08-01 10:00").to_pydatetime(),
            status="delivered", items_value=10.0, freight_value=1.0, source="test"))
    data, report = read_with_snapshot(store, read_fingerprint(store))
    assert (report.mode, report.orders_read) == ("incremental", 1)
    again, report = read_with_snapshot(store, read_fingerprint(store))
    assert (report.mode, report.orders_read) == ("incremental", 1)  # still unstamped: read again
    assert_same(again, read_dataset(store))
    assert "by-hand" in set(again.ids())


def test_a_running_load_holds_the_watermark_back(store: Engine, batches) -> None:
    first, _ = batches
    load_path(store, first, "olist")
    with store.begin() as conn:
        running = conn.execute(insert(schema.load_runs).values(
            format="olist", path="x", started_at=pd.Timestamp.now().to_pydatetime(), status="running",
        )).inserted_primary_key[0]
        conn.execute(insert(schema.load_runs).values(
            format="olist", path="y", started_at=pd.Timestamp.now().to_pydatetime(), status="ok"))
    assert current_watermark(store) == running - 1 == 1
    _, report = read_with_snapshot(store)
    assert report.watermark == 1


def test_a_damaged_or_foreign_snapshot_is_not_used(store: Engine, batches) -> None:
    first, second = batches
    load_path(store, first, "olist")
    read_with_snapshot(store)
    wait_for_saves()
    folder = snapshot_folder(store)
    earlier_items = (folder / "items.arrow").read_bytes()
    load_path(store, second, "olist")
    assert read_with_snapshot(store)[1].mode == "incremental"  # a new generation written
    wait_for_saves()
    (folder / "items.arrow").write_bytes(earlier_items)  # as if swapped while being read
    data, report = read_with_snapshot(store)
    assert (report.mode, report.reason) == ("full", "the snapshot was being replaced")
    assert_same(data, read_dataset(store))

    wait_for_saves()
    (folder / "orders.arrow").write_bytes(b"not arrow")
    data, report = read_with_snapshot(store)
    assert report.mode == "full" and report.reason.startswith("the snapshot could not be read")
    assert_same(data, read_dataset(store))
    wait_for_saves()
    meta = folder / "meta.json"
    meta.write_text(meta.read_text().replace('"format": 1', '"format": 0'))
    _, report = read_with_snapshot(store)
    assert (report.mode, report.reason) == ("full", "the snapshot is of another version")
    _, report = read_with_snapshot(store)  # rewritten by the full read
    assert report.mode == "incremental"


def test_where_the_snapshot_lives(sqlite_url: str, tmp_path: Path, batches,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.store import open_store

    monkeypatch.delenv(SNAPSHOT_ENV, raising=False)
    engine = open_store(sqlite_url)
    load_path(engine, batches[0], "olist")
    folder = snapshot_folder(engine)
    assert folder.parent == tmp_path and folder.name.startswith("pulse.db.snapshot-")
    monkeypatch.setenv(SNAPSHOT_ENV, "off")
    assert snapshot_folder(engine) is None
    _, report = read_with_snapshot(engine)
    assert (report.mode, report.reason) == ("full", "no snapshot kept")
    assert not folder.exists()
    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path / "elsewhere"))
    assert snapshot_folder(engine).parent == tmp_path / "elsewhere"
    engine.dispose()


def test_new_rows_are_slotted_in_as_a_full_sort_would_put_them() -> None:
    from analytics.dataset import order_by_time
    from analytics.snapshot import _merged_order

    rng = np.random.default_rng(0)
    for n_kept, n_new in ((500, 40), (500, 0), (0, 30), (300, 300)):
        cust = rng.integers(0, 60, n_kept + n_new)
        at = rng.integers(0, 5, n_kept + n_new) * 1_000_000  # many ties on (customer, time)
        ids = pa.array([f"o{i:04d}" for i in rng.permutation(n_kept + n_new)])
        kept = order_by_time(cust[:n_kept], at[:n_kept], ids[:n_kept])
        order = np.concatenate([kept, np.arange(n_kept, n_kept + n_new)])
        cust, at, ids = cust[order], at[order], ids.take(pa.array(order))
        def ids_at(positions: np.ndarray, ids: pa.Array = ids) -> pa.Array:
            return ids.take(pa.array(positions, type=pa.int64()))

        assert np.array_equal(_merged_order(cust, at, ids_at, n_kept, 60), order_by_time(cust, at, ids))


@pytest.mark.parametrize("old_in_order", [True, False], ids=["old-in-order", "old-any-order"])
def test_new_lines_are_slotted_in_by_order_row_where_the_old_ones_are_in_that_order(old_in_order: bool) -> None:
    from analytics.snapshot import _Placement, _recode

    rng = np.random.default_rng(1)
    old_ord = np.sort(rng.integers(0, 400, 1_000))  # merged order rows of the old lines
    old_ord[rng.random(1_000) < 0.2] = -1  # lines of replaced orders
    if not old_in_order:
        old_ord = rng.permutation(old_ord)  # (a snapshot kept before the lines were ordered)
    kept = np.flatnonzero(old_ord >= 0)
    taken = set(old_ord[kept].tolist())
    free = np.array([r for r in range(450) if r not in taken])
    new_ord = rng.permutation(np.repeat(rng.choice(free, 40, replace=False), 2))  # two lines each
    place = _Placement.of(old_ord[kept], kept, new_ord)
    merged = place(old_ord, new_ord)
    expected = np.concatenate([old_ord[kept], new_ord])
    assert sorted(merged.tolist()) == sorted(expected.tolist())
    if old_in_order:
        assert non_decreasing(merged)
    else:  # the old lines in their order, the new ones after them
        assert np.array_equal(merged, expected)
    # every column follows the same rows, codes included (renumbered to the names used, sorted)
    line = np.arange(len(old_ord)) * 10
    new_line = np.arange(len(new_ord)) * 10 + 1
    where = place(line, new_line)
    assert np.array_equal(merged, np.concatenate([old_ord, new_ord])[np.where(where % 10 == 0, where // 10,
                                                                           len(old_ord) + where // 10)])
    old_names, new_names = np.array(["b", "d", "x"], dtype=object), np.array(["a", "d"], dtype=object)
    old_codes = np.where(old_ord % 3 == 0, 2, old_ord % 2)  # x where the row is a multiple of 3
    old_codes[kept[:5]] = -1
    new_codes = (new_ord % 2).astype(np.int64)
    codes, names = _recode(old_codes, place, old_names, new_codes, new_names, sort=True)
    named = np.where(codes >= 0, names[np.maximum(codes, 0)], None)
    want = place(np.where(old_codes >= 0, old_names[np.maximum(old_codes, 0)], None).astype(object),
                 new_names[new_codes])
    assert names.tolist() == ["a", "b", "d", "x"] and named.tolist() == want.tolist()


def test_a_load_finished_while_the_fingerprint_is_taken_is_read_with_it(store: Engine, batches, monkeypatch) -> None:  # noqa: ANN001
    """The incremental refresh takes the as-of date and the fingerprint beside its read;
    when a load finishes meanwhile, all three are taken again, so the fingerprint the
    refresh records is that of the data it read (and the churn model's retraining rule
    sees the load)."""
    from analytics import refresh as refresh_module
    from analytics.refresh import data_fingerprint
    from storage.store import get_meta

    first, second = batches
    load_path(store, first, "olist")
    assert refresh(store).read["mode"] == "full"
    calls = []

    def fingerprint_with_a_load_beside(engine: Engine):  # noqa: ANN202
        calls.append(1)
        if len(calls) == 1:  # the first one: taken while a load finishes
            taken = read_fingerprint(engine)
            load_path(store, second, "olist")
            return taken
        return read_fingerprint(engine)

    monkeypatch.setattr(refresh_module, "read_fingerprint", fingerprint_with_a_load_beside)
    report = refresh(store)
    assert len(calls) == 2 and report.read["watermark"] == 2
    assert report.read["mode"] == "incremental" and report.read["orders_read"] == 100  # the second load's
    monkeypatch.undo()
    assert report.fingerprint == get_meta(store, "data_fingerprint") == data_fingerprint(store)
    full = refresh(store, full_read=True)
    assert (full.customers, full.as_of) == (report.customers, report.as_of)


def test_the_orders_loaded_since_the_snapshot_are_kept_apart_as_a_delta(store: Engine, batches, third,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """While the orders touched since the snapshot are few, the read writes them (merged
    with the delta before) as the snapshot's delta and leaves its files as they are; the
    snapshot with the delta merged in is what a full read gives, load after load."""
    monkeypatch.setattr(snapshot_module, "DELTA_MOST", 0.5)  # (the batches are a tenth of this small store)
    first, second = batches
    load_path(store, first, "olist")
    read_with_snapshot(store, read_fingerprint(store))
    wait_for_saves()
    folder = snapshot_folder(store)
    base_files = {f.name: f.read_bytes() for f in folder.glob("*.arrow")}
    for run, batch in ((2, second), (3, third)):
        load_path(store, batch, "olist")
        data, report = read_with_snapshot(store, read_fingerprint(store))
        assert (report.mode, report.orders_read, report.watermark) == ("incremental", 100, run)
        full = read_dataset(store)
        assert_same(data, full)
        wait_for_saves()
        kept, _ = load_snapshot(folder)
        assert kept.watermark == run and kept.delta is not None
        assert {f.name: f.read_bytes() for f in folder.glob("*.arrow")} == base_files  # not rewritten
        assert_same(kept.dataset(), full)
    # the delta holds both loads' orders: the second's and the third's, 200 less those both changed
    assert 100 < kept.delta.n_orders < 200
    again, report = read_with_snapshot(store, read_fingerprint(store))
    assert (report.mode, report.orders_read) == ("incremental", 0)
    assert_same(again, full)

    # a delta that has grown past DELTA_MOST is merged into a new snapshot
    monkeypatch.setattr(snapshot_module, "DELTA_MOST", 0.05)
    load_path(store, second, "olist")  # (its orders touched again: stamped by run 4)
    data, report = read_with_snapshot(store, read_fingerprint(store))
    assert (report.mode, report.orders_read) == ("incremental", 100)
    wait_for_saves()
    kept, _ = load_snapshot(folder)
    assert (kept.watermark, kept.delta) == (4, None) and not (folder / DELTA).exists()
    assert_same(kept.dataset(), read_dataset(store))


def test_a_snapshot_whose_lines_are_not_in_order_is_saved_again_whole(store: Engine, batches,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot kept before the lines were saved in their orders' row order: the merge puts
    them in order, and the read saves the whole merged dataset instead of a delta, so that
    later merges find them in order."""
    monkeypatch.setattr(snapshot_module, "DELTA_MOST", 0.5)  # (a delta would be kept otherwise)
    first, second = batches
    load_path(store, first, "olist")
    with monkeypatch.context() as m:
        m.setattr(snapshot_module, "stable_order", lambda values: None)  # saved as the store has them
        read_with_snapshot(store, read_fingerprint(store))
        wait_for_saves()
    folder = snapshot_folder(store)
    kept, _ = load_snapshot(folder)
    assert not kept.files.lines_in_order()
    load_path(store, second, "olist")
    data, report = read_with_snapshot(store, read_fingerprint(store))
    assert report.mode == "incremental" and non_decreasing(data.item_ord)
    wait_for_saves()
    kept, _ = load_snapshot(folder)
    assert (kept.watermark, kept.delta) == (2, None) and not (folder / DELTA).exists()
    assert kept.files.lines_in_order()
    assert_same(kept.dataset(), read_dataset(store))


def test_a_delta_that_cannot_be_used_is_read_again_from_the_store(store: Engine, batches, third,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged delta, or one of another snapshot, is left aside: the orders since the
    snapshot's own watermark are read instead, and what is read equals a full read."""
    monkeypatch.setattr(snapshot_module, "DELTA_MOST", 0.5)
    first, second = batches
    load_path(store, first, "olist")
    read_with_snapshot(store)
    load_path(store, second, "olist")
    read_with_snapshot(store)
    wait_for_saves()
    folder = snapshot_folder(store)
    delta_orders = (folder / DELTA / "orders.arrow").read_bytes()
    load_path(store, third, "olist")
    read_with_snapshot(store)  # a new delta (runs 2 and 3)
    wait_for_saves()
    (folder / DELTA / "orders.arrow").write_bytes(delta_orders)  # of the delta before: another generation
    data, report = read_with_snapshot(store, read_fingerprint(store))
    assert report.mode == "incremental"  # (not a full read)
    assert report.orders_read > 100  # both loads' orders, read again since the snapshot's run 1
    assert_same(data, read_dataset(store))

    wait_for_saves()
    meta = folder / DELTA / "meta.json"
    meta.write_text(meta.read_text().replace('"base": "', '"base": "other-'))
    kept, _ = load_snapshot(folder)
    assert (kept.delta, kept.watermark) == (None, 1)
    data, report = read_with_snapshot(store, read_fingerprint(store))
    assert report.mode == "incremental" and report.orders_read > 100
    assert_same(data, read_dataset(store))
