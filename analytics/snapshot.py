"""Incremental reads: the refresh's dataset kept on disk, brought up to date with what
later loads wrote.

Every load stamps the rows it writes with its run id (`load_run`, see `storage.schema`).
After a refresh has read the store, `read_with_snapshot` keeps the dataset in a folder
(Arrow IPC files) with the *watermark*: the newest load run whose rows it holds for
sure. The next refresh reads only the orders that later loads touched (an order, or a
line, payment or review of it) with all their lines, payments and reviews, and the
customers they wrote, then swaps those orders in (`merge`): at 10M orders a day's load
costs a read of that day, not of the whole store.

Safe by construction:
- the watermark is taken before the read and stops below the oldest load still running
  (a load marks its run "ok" in the transaction that writes its rows, so an "ok" run's
  rows are all visible), so rows committed during or after a read are read again next time;
- rows no load stamped (written some other way) are always read again;
- the merged dataset is checked against the store's own aggregates (row counts, purchases,
  deliveries, revenue: `analytics.model_store.read_fingerprint`); on any mismatch (e.g.
  rows deleted by hand), a missing, unreadable or foreign snapshot, the whole store is
  read as before and the snapshot rewritten;
- the snapshot is written on a thread while the refresh goes on, into a new folder that
  then replaces the old one; every file carries the generation's token, so a reader that
  meets two generations (a swap while it reads) reads the store instead.
The orders later loads touched are kept apart, as a *delta* beside the snapshot (its
`delta/` folder, with the snapshot's token and its own watermark), while they are at most
`DELTA_MOST` of it: a nightly refresh then writes the day's few orders (and the earlier
days' since the snapshot), not the whole dataset again (2 GB at 10M orders), and merges
the delta in as it reads. A larger delta is merged into a new snapshot. A delta that is
missing, unreadable or of another snapshot is left aside: the orders since the
snapshot's own watermark are read instead.
When more than a fifth of the kept orders were touched (a reload), the whole store is
read: it is read columnar, the touched rows row by row.

Where it lives: beside a SQLite file, else (PostgreSQL) under the user's cache folder,
or in `PULSE_SNAPSHOT_DIR` when set ("off" disables it); its name carries the store's id
(meta "store_id") and, away from a SQLite file, a hash of the store's address, so two
stores never share one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine

from analytics.dataset import (
    ITEM_FIELDS,
    NAT,
    Dataset,
    codes_in,
    flat,
    order_by_time,
    put_items_in_order,
    read_dataset,
    sorted_unique,
    touched_orders,
)
from analytics.groups import non_decreasing, stable_order
from analytics.model_store import DataFingerprint, row_counts
from storage import schema
from storage.engine import sqlite_file, unmapped
from storage.store import current_watermark, get_meta, set_meta

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the files' layout or the Dataset's meaning changes
# Above this share of the kept orders touched, the whole store is read instead (a read of
# the touched rows goes row by row through the DB-API; a full read is columnar)
MOST = 0.2
# A delta of at most this share of the snapshot's orders (and of its customers) is kept
# apart; a larger one is merged into a new snapshot
DELTA_MOST = 0.1
DELTA = "delta"  # the delta's folder, inside the snapshot's
SNAPSHOT_ENV = "PULSE_SNAPSHOT_DIR"

# Dataset fields kept per file: each file is one Arrow table of equal-length columns.
_FILES = {
    "customers": ("customer_ids", "state", "region", "listed"),
    "orders": ("order_id", "cust", "purchased", "purchase", "items_value", "freight_value",
               "delivered", "estimated"),
    "items": ("item_ord", "item_category", "item_quantity", "item_price", "item_freight",
              "item_product", "item_seller"),
    "payments": ("pay_ord", "pay_method", "pay_installments", "pay_value"),
    "reviews": ("review_ord", "review_score", "review_created"),
    "category_names": ("category_names",),
    "method_names": ("method_names",),
    "product_names": ("product_names",),
    "seller_names": ("seller_names",),
}
_TOKEN = "pulse_snapshot"
_STRINGS = {"customer_ids", "order_id", "state", "region", "category_names", "method_names",
            "product_names", "seller_names"}


@dataclass(frozen=True)
class ReadReport:
    """How the refresh's dataset was read."""

    mode: str  # "incremental" or "full"
    reason: str  # for people: what was read, or why the whole store
    orders_read: int  # order rows read from the store
    watermark: int  # the snapshot now holds every load up to this run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_with_snapshot(engine: Engine, fingerprint: DataFingerprint | Future[DataFingerprint] | None = None,
                       *, full: bool = False) -> tuple[Dataset, ReadReport]:
    """The store's dataset (as `read_dataset`), read incrementally when a snapshot is kept
    (`full`: read the whole store and rewrite the snapshot).

    `fingerprint` (read just before, or being read beside: a future waited for when the
    merged dataset is checked) is what the merged dataset is checked against; without it,
    only the order and customer counts are."""
    folder = snapshot_folder(engine)
    if folder is None:
        watermark = current_watermark(engine)  # recorded: answers check it (analytics.asof)
        data = read_dataset(engine)
        return data, ReadReport("full", "no snapshot kept", len(data.cust), watermark)
    watermark = current_watermark(engine)  # before any read: later loads count as new
    wait_for_saves()
    kept, why = (None, "a full read was asked for") if full else load_snapshot(folder)
    data: Dataset | None = None
    if kept is not None and kept.watermark > watermark:
        why = "the snapshot is newer than the store's loads"
    elif kept is not None and (touched := touched_orders(engine, kept.watermark)) > MOST * kept.files.n_orders:
        why = f"{touched:,} orders touched since run {kept.watermark}: reading them all is quicker"
    elif kept is not None:
        new = read_dataset(engine, since=kept.watermark)
        why = None
        try:
            delta = merge(kept.delta, new) if kept.delta is not None else new
            data = merge(kept.files, delta)
        except SnapshotUnreadable as exc:  # a file damaged, or swapped while read
            data, why = None, str(exc)
        except (ValueError, IndexError, KeyError, pa.ArrowException) as exc:
            # a snapshot that does not fit the store's rows: read it all instead of failing
            data, mismatch = None, f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(fingerprint, Future):
                fingerprint = fingerprint.result()
            mismatch = check(data, fingerprint if fingerprint is not None else _counts(engine))
        if data is not None and mismatch is None:
            report = ReadReport("incremental", f"{len(new.cust):,} orders touched by loads after "
                                f"run {kept.watermark}", len(new.cust), watermark)
            if len(new.cust) or len(new.customer_ids) or kept.watermark != watermark:
                # (a snapshot kept before its lines were saved in order is saved again whole,
                # so that merges stop putting its lines in order every night)
                if _small(delta, data) and kept.files.lines_in_order():
                    _save_in_background(folder / DELTA, delta, watermark, base=kept.files.token)
                else:
                    _save_in_background(folder, data, watermark)
            return data, report
        data, why = None, why or f"the snapshot does not match the store ({mismatch})"
        del kept, new
    data = read_dataset(engine)
    _save_in_background(folder, data, watermark)
    return data, ReadReport("full", why, len(data.cust), watermark)


def _small(delta: Dataset, data: Dataset) -> bool:
    """Whether `delta` is kept apart from a snapshot of `data` (see DELTA_MOST)."""
    return (len(delta.cust) <= DELTA_MOST * len(data.cust)
            and len(delta.customer_ids) <= DELTA_MOST * len(data.customer_ids))


# --- merging ------------------------------------------------------------------------------


def merge(old: Dataset | SnapshotFiles, new: Dataset) -> Dataset:
    """`old` with the orders of `new` (read with `since`) in place of its rows of the same
    order_id, their lines, payments and reviews with them, and the customers of `new` as
    listed there: the dataset a full read would give (the lines in their orders' row order
    too, each order's perhaps in another order; the payments and reviews in another row
    order). A kept snapshot is merged file by file, each file's mapping let go
    once merged, so the old and the merged dataset are never all in memory at once."""
    files = old if isinstance(old, SnapshotFiles) else _InMemory(old)
    c = files.fields("customers")
    o = files.fields("orders")
    replaced = pc.is_in(o["order_id"], value_set=flat(new.order_id)).to_numpy(zero_copy_only=False)
    keep = ~replaced
    old_used = np.zeros(len(c["customer_ids"]), dtype=bool)
    old_used[o["cust"][keep]] = True
    new_used = np.zeros(new.n_customers, dtype=bool)
    new_used[new.cust] = True
    old_listed, new_listed = c["listed"], new.listed
    # the old snapshot's listed customers stay listed (loads never delete customers)
    ids = sorted_unique(pa.chunked_array([c["customer_ids"].filter(pa.array(old_used | old_listed)),
                                          new.customer_ids.filter(pa.array(new_used | new_listed))],
                                         type=pa.string()))
    old_at = codes_in(c["customer_ids"], ids)
    new_at = codes_in(new.customer_ids, ids)

    listed = np.zeros(len(ids), dtype=bool)
    state = np.full(len(ids), None, dtype=object)
    region = np.full(len(ids), None, dtype=object)
    for src, at in ((c, old_at), ({"listed": new.listed, "state": new.state, "region": new.region}, new_at)):
        rows = np.flatnonzero(src["listed"])
        listed[at[rows]] = True
        state[at[rows]] = src["state"][rows]
        region[at[rows]] = src["region"][rows]
    del c

    # rows in "concatenated" positions: the kept old rows (in their order), then the new ones
    kept_at = np.flatnonzero(keep)
    n_kept, n_old = len(kept_at), len(keep)
    cust = np.concatenate([old_at[o["cust"][kept_at]], new_at[new.cust]])
    purchased = np.concatenate([o["purchased"][kept_at], new.purchased])
    old_ids, new_ids = flat(o["order_id"]), flat(new.order_id)

    rows = _merged_order(cust, purchased, partial(_ids_at, old_ids, kept_at, new_ids), n_kept, len(ids))
    row_of = np.empty(len(rows), dtype=np.int64)  # concatenated position -> merged row
    row_of[rows] = np.arange(len(rows))
    old_row = np.full(n_old, -1, dtype=np.int64)
    old_row[keep] = row_of[:n_kept]
    new_row = row_of[n_kept:]
    del row_of

    # each merged column gathered straight from the old (mapped) one, the few new rows then
    # written in: one pass over the column instead of a filter, a concatenation and a take
    from_new = np.flatnonzero(rows >= n_kept)
    new_src = rows[from_new] - n_kept
    old_src = kept_at[np.minimum(rows, n_kept - 1)] if n_kept else np.zeros(len(rows), dtype=np.int64)

    def gathered(old_values: np.ndarray, new_values: np.ndarray) -> np.ndarray:
        out = old_values[old_src] if n_kept else np.empty(len(rows), dtype=new_values.dtype)
        out[from_new] = new_values[new_src]
        return out

    taken = old_ids.take(pa.array(old_src)) if n_kept else pa.nulls(len(rows), pa.string())
    is_new = np.zeros(len(rows), dtype=bool)
    is_new[from_new] = True
    f: dict[str, Any] = {
        "customer_ids": ids, "state": state, "region": region, "listed": listed,
        "order_id": pc.replace_with_mask(taken, pa.array(is_new), new_ids.take(pa.array(new_src))),
        "cust": cust[rows], "purchased": purchased[rows],
    }
    del taken, is_new, cust, purchased
    for name in ("purchase", "items_value", "freight_value", "delivered", "estimated"):
        f[name] = gathered(o[name], getattr(new, name))
    del o, old_ids
    # the lines on a thread, the payments and reviews on this one: numpy's gathers let go of
    # the GIL, and the merge is on the refresh's path while the other core may be idle
    with ThreadPoolExecutor(1, thread_name_prefix="pulse-merge") as beside:
        items = beside.submit(_children, files, "items", new, old_row, new_row, "item_ord", {
            "item_category": "category_names", "item_product": "product_names", "item_seller": "seller_names",
        }, ("item_quantity", "item_price", "item_freight"))
        f.update(_children(files, "payments", new, old_row, new_row, "pay_ord", {"pay_method": "method_names"},
                           ("pay_installments", "pay_value")))
        f.update(_children(files, "reviews", new, old_row, new_row, "review_ord", {},
                           ("review_score", "review_created")))
        f.update(items.result())
    put_items_in_order(f)  # (only a snapshot kept before the lines were saved in order needs it)
    return Dataset(**f)


def _ids_at(old_ids: pa.Array, kept_at: np.ndarray, new_ids: pa.Array, positions: np.ndarray) -> pa.Array:
    """The order_id at concatenated positions (the kept old rows, then the new ones)."""
    old_part = positions < len(kept_at)
    return pa.concat_arrays([old_ids.take(pa.array(kept_at[positions[old_part]])),
                             new_ids.take(pa.array(positions[~old_part] - len(kept_at)))])


def _merged_order(cust: np.ndarray, purchased: np.ndarray, ids_at: Callable[[np.ndarray], pa.Array],
                  n_kept: int, n_customers: int) -> np.ndarray:
    """`order_by_time` of the rows (`ids_at(positions)`: their order_id), the first `n_kept`
    of which are in that order already: only the rows of the customers with new rows are
    sorted, then slotted in by customer (a full sort of 10M rows costs seconds)."""
    affected = np.zeros(n_customers, dtype=bool)
    affected[cust[n_kept:]] = True
    moved = affected[cust[:n_kept]]
    group = np.concatenate([np.flatnonzero(moved), np.arange(n_kept, len(cust))])
    group = group[order_by_time(cust[group], purchased[group], ids_at(group))]
    stay = np.flatnonzero(~moved)
    # a customer's rows are all in `group` or all in `stay`: slot each group row in
    # before the first `stay` row of a later customer
    slot = np.searchsorted(cust[stay], cust[group]) + np.arange(len(group))
    rows = np.empty(len(cust), dtype=np.int64)
    rest = np.ones(len(cust), dtype=bool)
    rest[slot] = False
    rows[slot] = group
    rows[rest] = stay
    return rows


def _children(files: SnapshotFiles | _InMemory, file: str, new: Dataset, old_row: np.ndarray,
              new_row: np.ndarray, ord_field: str, coded: dict[str, str],
              plain: tuple[str, ...]) -> dict[str, Any]:
    """One child table merged: the old rows of kept orders and the new rows, the new ones
    slotted in by order row where the old ones are in that order (items: see
    `analytics.dataset`), else after them."""
    old = files.fields(file)
    old_ord = old_row[old[ord_field]]
    # the kept rows' positions, found once for every column (a boolean mask per column
    # searched it again: at ten million rows, 0.08 s a column against 0.03 s)
    kept = np.flatnonzero(old_ord >= 0)
    new_ord = new_row[getattr(new, ord_field)]
    place = _Placement.of(old_ord[kept], kept, new_ord)
    out: dict[str, Any] = {ord_field: place(old_ord, new_ord)}
    for name in plain:
        out[name] = place(old[name], getattr(new, name))
    for name, names_field in coded.items():
        out[name], out[names_field] = _recode(
            old[name], place, files.fields(names_field)[names_field], getattr(new, name),
            getattr(new, names_field), sort=names_field in ("category_names", "method_names"))
    return out


@dataclass(frozen=True, eq=False)
class _Placement:
    """Where a merged child table's rows come from: merged row i is old row `src[i]`, except
    the new rows, which go to rows `slot` (in their order; `src` holds any old row there)."""

    src: np.ndarray
    slot: np.ndarray

    @classmethod
    def of(cls, kept_ord: np.ndarray, kept: np.ndarray, new_ord: np.ndarray) -> _Placement:
        """The kept old rows (`kept`, their merged order rows `kept_ord`) and the new rows
        (order rows `new_ord`) merged: in order row order when the kept rows are in it, the
        new rows after them otherwise."""
        n = len(kept) + len(new_ord)
        if len(kept) and len(new_ord) and non_decreasing(kept_ord):
            # (no new row shares an order with a kept one: those orders were replaced)
            order = stable_order(new_ord)
            by_ord = new_ord if order is None else new_ord[order]
            slot = np.searchsorted(kept_ord, by_ord) + np.arange(len(by_ord))
            if order is not None:
                slot[order] = slot.copy()
        else:
            slot = np.arange(len(kept), n)
        src = np.zeros(n, dtype=np.int64)
        from_old = np.ones(n, dtype=bool)
        from_old[slot] = False
        src[from_old] = kept
        return cls(src, slot)

    def __call__(self, old_values: np.ndarray, new_values: np.ndarray) -> np.ndarray:
        """The merged column of the old rows' `old_values` and the new rows' `new_values`,
        each value written once into its place."""
        out = np.empty(len(self.src), dtype=np.result_type(old_values, new_values))
        if len(old_values):
            np.take(old_values, self.src, out=out)
        out[self.slot] = new_values
        return out


def _recode(old_codes: np.ndarray, place: _Placement, old_names: np.ndarray, new_codes: np.ndarray,
            new_names: np.ndarray, *, sort: bool) -> tuple[np.ndarray, np.ndarray]:
    """The merged codes (`place`d: the kept old rows' and the new rows'), all as codes into
    one names array, -1 kept for missing. With `sort` (categories, payment methods: few
    names), the names used, sorted, as a full read makes them. Without (products, sellers:
    any numbering), the old codes stay and the names the new rows bring are appended (names
    no longer used may stay: they only cost their string). The codes are written once into
    their place (a take and a concatenation copied them twice)."""
    if not sort:
        at = _positions(new_names, old_names).copy()
        extra = at < 0
        at[extra] = len(old_names) + np.arange(int(extra.sum()))
        out = place(old_codes, _through(new_codes, at))
        return out, np.concatenate([old_names, new_names[extra]]).astype(object)
    out = place(old_codes, np.full(len(new_codes), -1, dtype=np.int64))  # (the new rows' codes last)
    names = np.concatenate([old_names[_used(out, len(old_names))],
                            new_names[_used(new_codes, len(new_names))]]).astype(object)
    uniq = sorted_unique(pa.array(names, type=pa.string())).to_numpy(zero_copy_only=False).astype(object)
    lookup_old = _positions(old_names, uniq)
    if len(uniq) != len(old_names) or not np.array_equal(lookup_old, np.arange(len(old_names))):
        out[:] = _through(out, lookup_old)  # other names: the old codes renumbered
    out[place.slot] = _through(new_codes, _positions(new_names, uniq))
    return out, uniq


def _positions(names: np.ndarray, index: np.ndarray) -> np.ndarray:
    if not len(names):
        return np.empty(0, dtype=np.int64)
    return codes_in(pa.array(names, type=pa.string()), pa.array(index, type=pa.string()))


def _used(codes: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(codes[codes >= 0], minlength=n) > 0 if n else np.zeros(0, dtype=bool)


def _through(codes: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    out = np.full(len(codes), -1, dtype=np.int64)
    ok = codes >= 0
    out[ok] = lookup[codes[ok]]
    return out


# --- checking -------------------------------------------------------------------------------


def check(data: Dataset, expected: DataFingerprint | dict[str, int]) -> str | None:
    """What in `data` disagrees with the store's aggregates (None when nothing)."""
    counts = expected.counts if isinstance(expected, DataFingerprint) else expected
    got = {"orders": len(data.cust), "customers": int(data.listed.sum())}
    for table, n in got.items():
        if counts.get(table) != n:
            return f"{table}: {n:,} in the snapshot, {counts.get(table):,} in the store"
    if isinstance(expected, DataFingerprint):
        figures = {
            "purchases": (int(data.purchase.sum()), expected.purchases),
            "delivered": (int((data.delivered != NAT).sum()), expected.delivered),
        }
        for name, (mine, theirs) in figures.items():
            if mine != theirs:
                return f"{name}: {mine:,} in the snapshot, {theirs:,} in the store"
        revenue = float(np.sum(data.items_value) + np.sum(data.freight_value))
        if not np.isclose(revenue, expected.revenue, rtol=1e-9, atol=0.01):
            return f"revenue: {revenue:,.2f} in the snapshot, {expected.revenue:,.2f} in the store"
    return None


def _counts(engine: Engine) -> dict[str, int]:
    with unmapped(engine) as conn:
        return row_counts(conn, (schema.orders, schema.customers))


# --- on disk ----------------------------------------------------------------------------------


def snapshot_folder(engine: Engine) -> Path | None:
    """Where this store's snapshot is kept (None: not kept)."""
    setting = os.environ.get(SNAPSHOT_ENV)
    if setting is not None and setting.strip().lower() in ("", "off", "0", "no", "false"):
        return None
    path = sqlite_file(engine)
    if engine.dialect.name == "sqlite" and path is None:
        return None  # an in-memory store goes with its process
    store_id = _store_id(engine)
    if path and setting is None:
        file = Path(path).resolve()
        return file.parent / f"{file.name}.snapshot-{store_id}"
    base = Path(setting) if setting is not None else (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "retail-pulse")
    # a copy of a store carries its id: the address tells copies apart
    where = hashlib.sha256(engine.url.render_as_string(hide_password=True).encode()).hexdigest()[:12]
    return base / f"{engine.dialect.name}-{where}.snapshot-{store_id}"


def _store_id(engine: Engine) -> str:
    store_id = get_meta(engine, "store_id")
    if store_id is None:
        store_id = uuid.uuid4().hex[:16]
        with engine.begin() as conn:
            set_meta(conn, "store_id", store_id)
        store_id = get_meta(engine, "store_id") or store_id  # another process may have won
    return str(store_id)


_SAVES_LOCK = threading.Lock()
_SAVES: list[threading.Thread] = []


def _save_in_background(folder: Path, data: Dataset, watermark: int, *, base: str | None = None) -> None:
    """`save_snapshot` on a thread, while the refresh computes (the dataset is not changed
    after the read). Not a daemon: a command that ends waits for the files."""
    thread = threading.Thread(target=save_snapshot, args=(folder, data, watermark),
                              kwargs={"base": base}, name="pulse-snapshot", daemon=False)
    with _SAVES_LOCK:
        _SAVES[:] = [t for t in _SAVES if t.is_alive()]
        _SAVES.append(thread)
    thread.start()


def wait_for_saves() -> None:
    """Return once the snapshots this process is writing are written."""
    with _SAVES_LOCK:
        pending = list(_SAVES)
    for thread in pending:
        thread.join()


def save_snapshot(folder: Path, data: Dataset, watermark: int, *, base: str | None = None) -> bool:
    """Write `data` as the snapshot at `watermark` (whole or not at all); False when it
    could not be written (the refresh goes on; the next one reads the whole store). With
    `base` (a snapshot's token), `data` is that snapshot's delta, `folder` its DELTA folder."""
    started = time.perf_counter()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=folder.name + ".part-", dir=folder.parent))
        # every file carries the generation's token: a reader that meets files of two
        # generations (a swap while it reads) sees it and reads the store instead
        token = uuid.uuid4().hex
        # the lines saved in their orders' row order (as merges keep them): after a
        # whole-store read they are sorted here, on this thread, not on the refresh's
        lines_at = stable_order(data.item_ord)

        def column(name: str) -> Any:
            values = getattr(data, name)
            in_order = lines_at is not None and name in ITEM_FIELDS and values is not None
            return values[lines_at] if in_order else values

        try:
            for file, names in _FILES.items():
                table = pa.table({name: _to_arrow(name, column(name)) for name in names},
                                 metadata={_TOKEN: token})
                with pa.OSFile(str(part / f"{file}.arrow"), "wb") as sink, \
                        pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
            meta = {"format": FORMAT, "watermark": int(watermark), "token": token}
            (part / "meta.json").write_text(json.dumps(meta if base is None else {**meta, "base": base}))
            old = folder.with_name(folder.name + f".old-{uuid.uuid4().hex[:8]}")
            if folder.exists():
                os.replace(folder, old)
            os.replace(part, folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(part, ignore_errors=True)
    except (OSError, ValueError, pa.ArrowException) as exc:
        log.warning("refresh snapshot not written to %s: %s", folder, exc)
        return False
    log.info("refresh snapshot written to %s in %.1f s", folder, time.perf_counter() - started)
    return True


class SnapshotUnreadable(ValueError):
    """A kept snapshot's file could not be read, or is of another generation."""


class SnapshotFiles:
    """A kept snapshot: its files, each opened (memory-mapped, not copied) when asked for;
    one that cannot be read, or is of another generation than the meta's (a swap while
    reading), raises SnapshotUnreadable."""

    def __init__(self, folder: Path, token: str):
        self.folder = folder
        self.token = token

    def _table(self, file: str) -> pa.Table:
        try:
            table = pa.ipc.open_file(pa.memory_map(str(self.folder / f"{file}.arrow"))).read_all()
        except (OSError, pa.ArrowException) as exc:
            raise SnapshotUnreadable(f"the snapshot could not be read ({exc})") from exc
        if (table.schema.metadata or {}).get(_TOKEN.encode()) != self.token.encode():
            raise SnapshotUnreadable("the snapshot was being replaced")
        return table

    def fields(self, file: str) -> dict[str, Any]:
        """The Dataset fields `file` holds, as the Dataset holds them."""
        table = self._table(file)
        try:
            return {name: _from_arrow(name, table.column(name)) for name in _FILES[file]}
        except (KeyError, pa.ArrowException) as exc:
            raise SnapshotUnreadable(f"the snapshot could not be read ({exc})") from exc

    @cached_property
    def n_orders(self) -> int:
        return self._table("orders").num_rows  # the files' metadata only

    def lines_in_order(self) -> bool:
        """Whether the order lines are saved in their orders' row order (as since 161cc36)."""
        try:
            column = self._table("items").column("item_ord")
        except (SnapshotUnreadable, KeyError):
            return False
        return non_decreasing(_from_arrow("item_ord", column))

    def dataset(self) -> Dataset:
        """Every file read into one Dataset."""
        return Dataset(**{k: v for file in _FILES for k, v in self.fields(file).items()})


class _InMemory:
    """A Dataset seen file by file, as `SnapshotFiles` sees a kept one."""

    def __init__(self, data: Dataset):
        self.data = data

    def fields(self, file: str) -> dict[str, Any]:
        return {name: getattr(self.data, name) for name in _FILES[file]}


def snapshot_kept(engine: Engine) -> bool:
    """Whether a snapshot of this store is kept (a refresh then reads only what changed)."""
    folder = snapshot_folder(engine)
    return folder is not None and (folder / "meta.json").exists()


@dataclass(frozen=True)
class KeptSnapshot:
    """A kept snapshot's files and, when one is kept, its delta's."""

    files: SnapshotFiles
    watermark: int  # every load up to this run is in the files and the delta
    delta: SnapshotFiles | None = None

    def dataset(self) -> Dataset:
        """The kept dataset, the delta merged in."""
        return self.files.dataset() if self.delta is None else merge(self.files, self.delta.dataset())


def load_snapshot(folder: Path) -> tuple[KeptSnapshot | None, str]:
    """(the kept snapshot with its delta, or None; why not)."""
    wait_for_saves()
    meta = _meta(folder)
    if meta is None:
        return None, "no snapshot yet"
    if meta.get("format") != FORMAT:
        return None, "the snapshot is of another version"
    files = SnapshotFiles(folder, str(meta.get("token")))
    try:
        files.n_orders  # noqa: B018 - opens one file: a damaged or replaced one shows here
    except SnapshotUnreadable as exc:
        return None, str(exc)
    return _with_delta(KeptSnapshot(files, int(meta["watermark"]))), ""


def _with_delta(kept: KeptSnapshot) -> KeptSnapshot:
    """`kept` with its delta and the delta's watermark, or as it is when it has none it can
    use (what the delta held is then read from the store again)."""
    folder = kept.files.folder / DELTA
    meta = _meta(folder)
    if meta is None or meta.get("format") != FORMAT or meta.get("base") != kept.files.token:
        return kept
    try:
        watermark = int(meta["watermark"])
        delta = SnapshotFiles(folder, str(meta.get("token")))
        delta.n_orders  # noqa: B018 - as above
    except (KeyError, TypeError, ValueError, SnapshotUnreadable):
        return kept
    return KeptSnapshot(kept.files, watermark, delta) if watermark >= kept.watermark else kept


def _meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _to_arrow(name: str, values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return flat(values)
    if name in _STRINGS:
        return pa.array(values, type=pa.string())
    return pa.array(values)


def _from_arrow(name: str, col: pa.ChunkedArray) -> Any:
    """The column as the Dataset holds it; numbers as read-only views of the mapped file."""
    if name in ("customer_ids", "order_id"):
        return flat(col)
    values = flat(col).to_numpy(zero_copy_only=False)
    return values.astype(object) if name in _STRINGS else values
