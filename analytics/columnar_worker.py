"""What the reader processes of `analytics.columnar` run: one ADBC query into an Arrow IPC file.

Kept apart so that a new reader process imports only pyarrow and the ADBC driver (the
driver's DB-API layer pulls in pandas; the store's modules pull in SQLAlchemy): a fresh
process is ready for its first read about half a second sooner.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.hashing import hash_strings

try:  # optional: the fast path on SQLite
    import adbc_driver_manager as _adbc_manager
    import adbc_driver_sqlite as _adbc
except ImportError:  # pragma: no cover - depends on the installation
    _adbc_manager = _adbc = None

ONE_BATCH_ROWS = 1 << 30  # the largest the driver accepts is below 2**31 - 1
READ_MMAP_BYTES = 1 << 30  # the helper's reads, as the store's own connections (storage/engine.py)
# How long a helper waits for keys to be published before it leaves the lookup to the caller
KEYS_WAIT_S = 3600.0
# Below this many keys or values, Arrow's hash lookup is as quick as sorted hashes
SORTED_LOOKUP_MIN = 50_000


def reader_started() -> None:
    """First step of each reader process: pandas becomes unimportable in it. pyarrow
    imports pandas on the first array it builds from Python or NumPy values (binding a
    query's arguments, `pa.table`, `to_numpy`) only to ask whether they are pandas
    objects: about 0.3 s of CPU per reader (more from a cold page cache), on the critical
    path of a whole-store read.
    Readers use no pandas, and pyarrow takes the refused import as "pandas absent"."""
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


class _NoPandas(importlib.abc.MetaPathFinder):
    """Refuses to import pandas (a `sys.modules` entry of None would not do: pyarrow's
    compiled import takes the None for the module)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] == "pandas":
            raise ModuleNotFoundError("reader processes use no pandas", name=fullname)
        return None


def read_to_file(path: str, sql: str, args: list, out: str, schema: pa.Schema,
                 lookup: tuple[str, str] | None = None, codes: tuple[str, ...] = ()) -> bool:
    """Run `sql` (`args` bound to its ?s) with ADBC and write the result, conformed to
    `schema`, as an Arrow IPC file at `out`; False when SQLite refused (e.g. "database is
    locked"). Conforming here parses the timestamp text off the caller's process, in
    parallel with its other reads, and the file carries 8-byte stamps instead of text.
    With `lookup` (keys file, column), the column is replaced by `ord`, its positions in
    the keys, once they are published (left as is if they never come). The `codes`
    columns come back as `as_codes` makes them."""
    try:
        table = _query(path, sql, args)
        if table.num_rows:
            table = conform([table.column(i) for i in range(table.num_columns)], schema)
    except (_adbc_manager.Error, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False  # refused (e.g. "database is locked") or mixed types: the DB-API path reads it
    table = as_codes(table, codes)
    if lookup is not None:
        keys = _published_keys(lookup[0])
        if keys is not None:
            table = with_positions(table, lookup[1], keys)
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return True


@contextlib.contextmanager
def _statement(path: str) -> Iterator[tuple[Any, Any]]:
    """An ADBC connection to the SQLite file `path` and a statement on it, closed after."""
    db = _adbc.connect(path)
    try:
        conn = _adbc_manager.AdbcConnection(db)
        try:
            stmt = _adbc_manager.AdbcStatement(conn)
            try:
                yield conn, stmt
            finally:
                stmt.close()
        finally:
            conn.close()
    finally:
        db.close()


def _query(path: str, sql: str, args: list) -> pa.Table:
    with _statement(path) as (_, stmt):
        # pages read through a memory map instead of a copy per page (about a
        # quarter less time on a full scan of the orders)
        stmt.set_sql_query(f"PRAGMA mmap_size={READ_MMAP_BYTES}")
        _fetch(stmt)
        # the driver infers each column's type from the first batch (an all-NULL
        # start reads as int64 and a later text value fails): one batch of all rows
        stmt.set_options(**{"adbc.sqlite.query.batch_rows": str(ONE_BATCH_ROWS)})
        stmt.set_sql_query(sql)
        stmt.prepare()
        if args:
            stmt.bind(pa.record_batch([pa.array([a]) for a in args],
                                      names=[f"p{i}" for i in range(len(args))]))
        return _fetch(stmt)


def _fetch(stmt: object) -> pa.Table:
    handle, _ = stmt.execute_query()  # type: ignore[attr-defined]
    return pa.RecordBatchReader._import_from_c(handle.address).read_all()


def ingest_to_file(source: str, out: str, definition: Sequence[str] = ()) -> bool:
    """Write the Arrow IPC file `source` into a new SQLite file `out` with ADBC's bulk
    ingest; False when it could not (`out` may then be left half-made: the caller drops
    it). A scratch file: no journal, no syncs. Without `definition`, into table `rows`
    (columns typed from Arrow: TEXT, INTEGER, REAL). With it (a store table's CREATE
    TABLE, then its CREATE INDEXes, as the store holds them), into that table made so,
    its indexes built after the rows: the store can then take table and indexes as they
    are (`storage.loaders.bulk.BulkWriter.insert_staged`)."""
    table_name = created_table(definition[0]) if definition else "rows"
    try:
        with pa.memory_map(source) as src:
            table = pa.ipc.open_file(src).read_all()
        with _statement(out) as (conn, stmt):
            for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF"):
                stmt.set_sql_query(pragma)
                _fetch(stmt)
            conn.set_autocommit(False)  # one transaction, not one per row
            if definition:
                stmt.set_sql_query(definition[0])
                stmt.execute_update()
            mode = _adbc_manager.INGEST_OPTION_MODE_APPEND if definition else _adbc_manager.INGEST_OPTION_MODE_CREATE
            stmt.set_options(**{_adbc_manager.INGEST_OPTION_TARGET_TABLE: table_name,
                                _adbc_manager.INGEST_OPTION_MODE: mode})
            stmt.bind_stream(table)
            stmt.execute_update()
            for index in definition[1:]:
                stmt.set_sql_query(index)
                stmt.execute_update()
            conn.commit()
    except (_adbc_manager.Error, pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return False
    return True


def created_table(create_table: str) -> str:
    """The table a CREATE TABLE statement makes (its name as written, quotes dropped)."""
    words = create_table.split("(", 1)[0].split()
    if [w.upper() for w in words[:2]] != ["CREATE", "TABLE"] or len(words) != 3:
        raise ValueError(f"not a plain CREATE TABLE: {create_table[:60]!r}")
    return words[2].strip('"`[]')


def _published_keys(path: str) -> KeyPositions | None:
    """The keys once published; None if their folder goes first (the caller gave up),
    the caller's process is gone, or after KEYS_WAIT_S."""
    parent, deadline, pause = os.getppid(), time.monotonic() + KEYS_WAIT_S, 0.001
    while not os.path.exists(path):
        if not os.path.isdir(os.path.dirname(path)) or os.getppid() != parent or time.monotonic() > deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    try:
        with pa.memory_map(path) as source:
            return KeyPositions.from_table(pa.ipc.open_file(source).read_all())
    except (OSError, pa.ArrowInvalid):
        return None


class KeyPositions:
    """String keys (e.g. the order_id of every order, as read) ready for looking values up.

    With many keys the lookup goes by sorted 64-bit words: each key's hash with its low
    bits replaced by the key's position, so one `np.sort` orders the hashes and carries
    every key's position along (an argsort of the hashes took three times as long, plus
    a gather). A lookup packs its values' hashes with their own positions the same way,
    sorts them and searches them in the keys' in order: sorted needles walk the keys in
    order, where the probes of a hash table of millions of strings (Arrow's `index_in`,
    which also rebuilds that table for every lookup) miss the CPU caches. Keys whose
    shortened hashes are equal lie side by side and are tried in turn, and every match
    is checked against the key itself, so a hash collision never joins two different
    ids; where keys repeat, the first one's position is given, as Arrow's lookup does.
    Keys with a null take Arrow's lookup."""

    def __init__(self, keys: pa.Array, packed: np.ndarray | None = None):
        self.keys = keys
        self.packed = packed  # sorted: hash, low `bits` bits replaced by the key's position
        self.bits = _position_bits(len(keys))

    @classmethod
    def of(cls, keys: pa.Array | pa.ChunkedArray) -> KeyPositions:
        keys = flat(keys)
        if len(keys) < SORTED_LOOKUP_MIN or keys.null_count or not _stringlike(keys.type):
            return cls(keys)
        packed = _packed(hash_strings(keys), _position_bits(len(keys)))
        packed.sort()
        return cls(keys, packed)

    def to_table(self) -> pa.Table:
        """The keys, with their packed hashes when they have them (for `from_table`)."""
        columns = {"k": self.keys}
        if self.packed is not None:
            columns["p"] = pa.array(self.packed)
        return pa.table(columns)

    @classmethod
    def from_table(cls, table: pa.Table) -> KeyPositions:
        keys = flat(table.column("k"))
        if "p" not in table.column_names:
            return cls(keys)
        return cls(keys, flat(table.column("p")).to_numpy())

    def positions(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Position of each value in the keys (int64, -1 when absent or null)."""
        values = flat(values)
        m = len(values)
        if m == 0:
            return pa.array([], pa.int64())
        if self.packed is None or m < SORTED_LOOKUP_MIN or values.type != self.keys.type:
            return pc.index_in(values, value_set=self.keys).cast(pa.int64()).fill_null(-1)
        bits = max(self.bits, _position_bits(m))  # the hash bits both sides keep: the rest
        low = np.uint64((1 << bits) - 1)
        needles = _packed(hash_strings(values), bits)
        needles.sort()
        order = np.bitwise_and(needles, low).view(np.int64)  # the value each sorted needle is of
        np.bitwise_and(needles, ~low, out=needles)
        # first key whose shortened hash is not below the value's (a searched word's low
        # bits are 0, so a key of the same shortened hash is never passed over)
        at = np.searchsorted(self.packed, needles)
        found = self._probe(at, needles, low)
        probe = np.empty(m, dtype=np.int64)
        probe[order] = found
        result = self._confirmed(values, probe)
        missed = np.flatnonzero((probe >= 0) & (result < 0))  # same shortened hash, other text
        if len(missed):
            place = np.empty(m, dtype=np.int64)
            place[order] = np.arange(m)
            at, pending = at[place[missed]], missed
            while len(pending):  # the next keys of the same shortened hash, in turn
                at += 1
                inside = at < len(self.packed)
                pending, at = pending[inside], at[inside]
                found = self._probe(at, needles[place[pending]], low)
                more = found >= 0
                pending, at, found = pending[more], at[more], found[more]
                got = self._confirmed(values, found, pending)
                result[pending] = got
                pending, at = pending[got < 0], at[got < 0]
        return pa.array(result)

    def _probe(self, at: np.ndarray, words: np.ndarray, low: np.uint64) -> np.ndarray:
        """The position of the key at each sorted place `at` (below the number of keys, or
        where searchsorted put a word past the last key) when its hash, shortened as `low`
        says, is the word's; else -1."""
        # a place past the end reads the last key, whose shortened hash is then below the word
        cand = self.packed.take(at, mode="clip")
        same = np.bitwise_and(cand, ~low) == words
        np.bitwise_and(cand, np.uint64((1 << self.bits) - 1), out=cand)
        found = cand.view(np.int64)
        found[~same] = -1
        return found

    def _confirmed(self, values: pa.Array, found: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """`found` (a key position per value of `rows`, all by default; -1 for none) where
        that key's text is the value's; else -1."""
        texts = values if rows is None else values.take(pa.array(rows))
        keys = self.keys.take(pa.array(found, mask=found < 0))
        same = pc.equal(texts, keys).fill_null(False).to_numpy(zero_copy_only=False)
        return np.where(same, found, -1)


def _position_bits(n: int) -> int:
    """Bits that hold a position below `n`."""
    return max(1, (n - 1).bit_length())


def _packed(hashes: np.ndarray, bits: int) -> np.ndarray:
    """`hashes` (changed in place) with their low `bits` bits replaced by their positions."""
    np.bitwise_and(hashes, ~np.uint64((1 << bits) - 1), out=hashes)
    np.bitwise_or(hashes, np.arange(len(hashes), dtype=np.uint64), out=hashes)
    return hashes


def flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One Array (a single chunk as it is: combine_chunks would copy it)."""
    if not isinstance(values, pa.ChunkedArray):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


def _stringlike(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def with_positions(table: pa.Table, column: str, keys: KeyPositions) -> pa.Table:
    """`table` with column `ord` (int64: position of the value in `keys`, -1 when absent
    or null) in place of `column`."""
    i = table.schema.get_field_index(column)
    return table.remove_column(i).append_column("ord", keys.positions(table.column(i)))


def positions_in(values: pa.Array | pa.ChunkedArray, keys: pa.Array) -> pa.Array:
    """Position of each value in `keys` (int64, -1 when absent or null); see `KeyPositions`."""
    return KeyPositions.of(keys).positions(values)


def as_codes(table: pa.Table, names: tuple[str, ...]) -> pa.Table:
    """`table` with each string column of `names` dictionary-encoded (one dictionary of its
    distinct values, any order; nulls stay null)."""
    for name in names:
        i = table.schema.get_field_index(name)
        if not pa.types.is_string(table.schema.field(i).type):
            continue  # coded already
        col = table.column(i).combine_chunks() if table.num_rows else pa.array([], pa.string())
        table = table.set_column(i, name, pc.dictionary_encode(col))
    return table


def conform(arrays: list, schema: pa.Schema) -> pa.Table:
    """The arrays as a table of `schema` (timestamps parsed from text)."""
    out = []
    for arr, f in zip(arrays, schema, strict=True):
        if arr.type != f.type:
            arr = arr.cast(pa.string()).cast(f.type) if pa.types.is_timestamp(f.type) else arr.cast(f.type)
        out.append(arr)
    return pa.table(out, schema=schema)
