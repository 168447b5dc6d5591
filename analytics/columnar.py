"""Fast columnar reads of a few columns of a store table into Arrow.

A DB-API fetch builds one Python object per cell, which at millions of rows costs more
than the analysis itself. So:
- SQLite: the ADBC SQLite driver (`adbc-driver-sqlite`, a PyPI wheel with its own
  SQLite) reads the rows straight into Arrow in C, in a helper process that hands the
  table back as an Arrow IPC file. Not in this process: two SQLite libraries on one
  file in one process break each other's POSIX locks (closing one library's file
  descriptor drops the other's locks), which ends in "disk I/O error" or worse for the
  store's own connections. Without the driver, the DB-API cursor's rows are turned
  into Arrow column by column (slower, same result);
- PostgreSQL: the ADBC PostgreSQL driver (`adbc-driver-postgresql`) reads the query's
  `COPY … (FORMAT binary)` straight into Arrow in C, on a thread: the server sends
  binary values instead of formatting text, and nothing is parsed (the whole-store read
  at a million orders in about half the time). Without the driver, or when it fails (an option of the URL libpq does not
  take, say), `COPY (SELECT …) TO STDOUT (FORMAT csv)` parsed by Arrow's C++ CSV reader
  (floats as float8 text, which PostgreSQL writes with exact round trip).
On SQLite timestamps are read as text and parsed by Arrow. Rows come in no particular order.

A read can also look its key column up in the key strings of an earlier read
(`SharedKeys`, e.g. the order_id of every order): the helper process does the lookup once
those keys are published, so the lookups of several tables run in the helpers, in
parallel with each other and with the caller's work, and the keys' strings are not sent
back. `start_read` hands the query to a helper before it returns, so reads start in the
order they are asked for.

The same helpers also stage big writes (`start_staging`): a helper writes the rows, as
Arrow, into a scratch SQLite file of their own with ADBC's bulk ingest, and the store's
connection copies them with one `INSERT … SELECT` in its own transaction
(`storage.loaders.bulk.BulkWriter.insert_staged`), instead of binding every value of
every row from Python (at a million rows, about a third of the time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import multiprocessing as mp
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Engine

from analytics.columnar_worker import (
    KeyPositions,
    as_codes,
    conform,
    created_table,
    ingest_to_file,
    read_to_file,
    reader_started,
    with_positions,
)
from storage.engine import libpq_uri, sqlite_file, unmapped

try:  # optional: the fast path on SQLite
    import adbc_driver_sqlite as _adbc
except ImportError:  # pragma: no cover - depends on the installation
    _adbc = None
try:  # optional: the fast path on PostgreSQL
    import adbc_driver_postgresql.dbapi as _adbc_pg
except ImportError:  # pragma: no cover - depends on the installation
    _adbc_pg = None

# Below this many rows the DB-API read is quicker than starting the helper process.
ADBC_MIN_ROWS = 200_000
# Below this many rows a staged write saves less than the scratch file costs.
STAGED_MIN_ROWS = 50_000
READERS = 2  # reader processes
_TYPES = {"str": pa.string(), "float": pa.float64(), "int": pa.int64(), "ts": pa.timestamp("us")}


@dataclass(frozen=True)
class Col:
    """One column to read: its output name, the SQL expression and its kind
    ("str", "float", "int" or "ts")."""

    name: str
    sql: str
    kind: str


def read_columns(engine: Engine, table: str, cols: Sequence[Col], where: str = "",
                 params: dict | None = None, keys: SharedKeys | None = None,
                 codes: Sequence[str] = ()) -> pa.Table:
    """`cols` of the rows of `table` matching the SQL condition `where` (named :params).
    With `keys`, the column `keys.column` is replaced by `ord` (see `SharedKeys.positions`);
    the string columns named in `codes` come dictionary-encoded (see `as_codes`), made
    where the rows are read."""
    return start_read(engine, table, cols, where, params, keys, codes).result()


def start_read(engine: Engine, table: str, cols: Sequence[Col], where: str = "",
               params: dict | None = None, keys: SharedKeys | None = None,
               codes: Sequence[str] = (), *, few: bool = False, parts: int = 1) -> Future[pa.Table]:
    """`read_columns` in the background: the read is queued (on SQLite, handed to a helper
    process) before this returns; the future gives its table. `few`: `where` picks few
    rows of a big table, read in this process (a helper process costs more than they do).
    `parts`: on SQLite, the rows are read as that many rowid ranges, each by a helper of
    its own, so that a big table arrives sooner and the helpers share the work evenly."""
    codes = tuple(codes)
    schema = pa.schema([(c.name, _TYPES[c.kind]) for c in cols])
    params = params or {}
    if engine.dialect.name != "sqlite":
        return _threads().submit(_finish, lambda: _postgres(engine, table, cols, where, params, schema), keys, codes)
    tail = f' FROM "{table}"' + (f" WHERE ({where})" if where else "")
    names = re.findall(r"(?<!:):([A-Za-z_]\w*)", tail)
    args = [_sqlite_value(params[n]) for n in names]
    tail = re.sub(r"(?<!:):([A-Za-z_]\w*)", "?", tail)
    path = sqlite_file(engine)

    def slow() -> pa.Table:
        return _sqlite_dbapi(engine, cols, tail, args, schema)

    helped = _adbc is not None and not few and path is not None
    rows = _rows_about(engine, table) if helped else 0
    if helped and rows >= ADBC_MIN_ROWS:
        # no CASTs: ADBC types each column from all its values (one batch) and `conform`
        # converts; a CAST per cell cost about a third of the read
        plain = "SELECT " + ", ".join(f'{c.sql} AS "{c.name}"' for c in cols) + tail
        queries = [(plain, args)]
        if parts > 1:
            cut = [rows * i // parts for i in range(1, parts)]
            joiner = " AND" if where else " WHERE"
            queries = ([(plain + joiner + " rowid <= ?", [*args, cut[0]])]
                       + [(plain + joiner + " rowid > ? AND rowid <= ?", [*args, lo, hi])
                          for lo, hi in zip(cut, cut[1:], strict=False)]
                       + [(plain + joiner + " rowid > ?", [*args, cut[-1]])])
        pending = [_adbc_submit(str(Path(path).resolve()), sql, a, schema, keys, codes) for sql, a in queries]

        def fast() -> pa.Table:
            got = [_adbc_result(*p) if p is not None else None for p in pending]
            if any(g is None for g in got):
                return slow()
            return got[0] if len(got) == 1 else pa.concat_tables(got)

        if any(p is not None for p in pending):
            return _threads().submit(_finish, fast, keys, codes)
    return _threads().submit(_finish, slow, keys, codes)


def _finish(read: Callable[[], pa.Table], keys: SharedKeys | None, codes: tuple[str, ...]) -> pa.Table:
    table = as_codes(read(), codes)  # leaves the columns a helper coded as they are
    return keys.positions(table) if keys is not None else table


class SharedKeys:
    """Key strings published once (e.g. the order_id of every order, as read) for later
    reads to look their key column up in. A read given these keys returns column `ord`,
    the position of its key in them (-1 when absent or null), in place of `column`.
    Helper processes find the published keys in an Arrow IPC file; use as a context
    manager so that file goes, and waiting helpers stop waiting, whatever happens."""

    def __init__(self, column: str):
        self.column = column
        self.folder = tempfile.mkdtemp(prefix="pulse-keys-")
        self.path = os.path.join(self.folder, "keys.arrow")
        self.index: KeyPositions | None = None  # the published keys, ready for lookups
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._wanted = self._written = False

    def publish(self, values: pa.Array | pa.ChunkedArray) -> None:
        """Make `values` (strings, nulls allowed) the keys; readers waiting for them go on."""
        with self._lock:
            self.index = KeyPositions.of(values)  # sorted once here, for every reader
            if self._wanted:
                self._write()
        self._ready.set()

    def wanted_by_helper(self) -> None:
        """A helper process will look for the keys' file (written only when one does)."""
        with self._lock:
            self._wanted = True
            if self.index is not None:
                self._write()

    def _write(self) -> None:
        if self._written:
            return
        part = self.path + ".part"
        table = self.index.to_table()
        with pa.OSFile(part, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        os.replace(part, self.path)  # helpers see the whole file or none
        self._written = True

    def positions(self, table: pa.Table) -> pa.Table:
        """`table` with `ord` in place of `column` (as is, when a helper did the lookup)."""
        if "ord" in table.column_names:
            return table
        self._ready.wait()
        if self.index is None:
            raise RuntimeError("the keys were never published")
        return with_positions(table, self.column, self.index)

    def close(self) -> None:
        self._ready.set()  # the caller's threads stop waiting (positions() then raises)
        shutil.rmtree(self.folder, ignore_errors=True)  # helpers stop waiting when it is gone

    def __enter__(self) -> SharedKeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_THREAD_LOCK = threading.Lock()
_THREADS: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    global _THREADS
    with _THREAD_LOCK:
        if _THREADS is None:
            _THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pulse-read")
        return _THREADS


def fast_sqlite_available() -> bool:
    """Whether the ADBC SQLite driver is installed (else reads fall back to the DB-API)."""
    return _adbc is not None


# --- SQLite ---------------------------------------------------------------------------------


def _sqlite_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # how the store holds timestamps
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


_SQLITE_CAST = {"str": "TEXT", "float": "REAL", "int": "INTEGER", "ts": "TEXT"}


def _sqlite_dbapi(engine: Engine, cols: Sequence[Col], tail: str, args: list,
                  schema: pa.Schema) -> pa.Table:
    # CAST: SQLite's values are dynamically typed; one type per column for Arrow
    sql = "SELECT " + ", ".join(f'CAST({c.sql} AS {_SQLITE_CAST[c.kind]}) AS "{c.name}"' for c in cols) + tail
    with unmapped(engine) as conn:
        cur = conn.connection.driver_connection.cursor()
        try:
            rows = cur.execute(sql, args).fetchall()
        finally:
            cur.close()
    if not rows:
        return schema.empty_table()
    return conform([pa.array(list(col)) for col in zip(*rows, strict=True)], schema)


def _rows_about(engine: Engine, table: str) -> int:
    """The table's largest rowid: its row count when nothing was deleted, found in O(log n)."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f'SELECT max(rowid) FROM "{table}"').scalar() or 0)


_POOL_LOCK = threading.Lock()
_POOL: ProcessPoolExecutor | None = None


def _reader_pool() -> ProcessPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # spawn, not fork: the bot's threads may hold locks a forked child would inherit
            _POOL = ProcessPoolExecutor(max_workers=READERS, mp_context=mp.get_context("spawn"),
                                        initializer=reader_started)
        return _POOL


def start_readers(engine: Engine) -> list[Future[int]]:
    """Start the reader processes of a big SQLite store's reads now (a fresh one takes
    about half a second to be ready): a refresh that will read the whole store calls this
    before its other first steps. Nothing happens where reads take no helper. Returns a
    task per process started (each gives the process id)."""
    path = sqlite_file(engine) if engine.dialect.name == "sqlite" else None
    if _adbc is None or path is None or _rows_about(engine, "orders") < ADBC_MIN_ROWS:
        return []
    try:
        pool = _reader_pool()
        # each task the pool cannot give an idle process starts one
        return [pool.submit(os.getpid) for _ in range(READERS)]
    except (BrokenProcessPool, OSError, RuntimeError):
        _drop_pool()
        return []


def _adbc_submit(path: str, sql: str, args: list, schema: pa.Schema, keys: SharedKeys | None,
                 codes: tuple[str, ...] = ()) -> tuple[Future, str, pa.Schema] | None:
    """Queue the query in a helper process (None when the pool cannot take it)."""
    lookup = None
    if keys is not None:
        try:
            keys.wanted_by_helper()
        except OSError:
            return None  # the keys' file cannot be written: the caller reads and looks up here
        lookup = (keys.path, keys.column)
    fd, out = tempfile.mkstemp(prefix="pulse-read-", suffix=".arrow")
    os.close(fd)
    try:
        return _reader_pool().submit(read_to_file, path, sql, args, out, schema, lookup, codes), out, schema
    except (BrokenProcessPool, OSError, RuntimeError):
        _drop_pool()
        with contextlib.suppress(OSError):
            os.unlink(out)
        return None


def _adbc_result(future: Future, out: str, schema: pa.Schema) -> pa.Table | None:
    """The helper's table, or None when it failed (the caller then takes the DB-API path)."""
    try:
        try:
            ok = future.result()
        except (BrokenProcessPool, OSError, RuntimeError):
            _drop_pool()  # a dead pool is not reused; this read takes the slow path
            return None
        if not ok:
            return None
        with pa.memory_map(out) as source:
            table = pa.ipc.open_file(source).read_all()
        return table if table.num_rows else schema.empty_table()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)


def _drop_pool() -> None:
    global _POOL
    with _POOL_LOCK:
        _POOL = None


def stop_readers() -> None:
    """Stop this process's reader processes (started again by the next read that needs them).
    A multiprocessing child must call it before it ends: such a child waits for its own
    children at exit without first telling the pool to stop, and would wait for ever."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


# --- staged writes ---------------------------------------------------------------------------


class StagedRows:
    """Rows being written by a helper process into a scratch SQLite file (table `rows`, or
    the store table whose `definition` it was given: `table`); `path()` waits for it. Use
    as a context manager, or `close()`, so the file goes."""

    def __init__(self, folder: str, out: str, future: Future[bool], table: str = "rows"):
        self.folder = folder
        self.table = table
        self._out = out
        self._future = future

    def path(self) -> str | None:
        """The scratch file once written; None when the helper could not write it."""
        try:
            ok = self._future.result()
        except (BrokenProcessPool, OSError, RuntimeError):
            _drop_pool()
            return None
        return self._out if ok else None

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> StagedRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def staging_pays(engine: Engine, rows: int) -> bool:
    """Whether `start_staging` would stage this many rows for this store: a SQLite file
    store, the ADBC driver installed, at least STAGED_MIN_ROWS rows."""
    return _adbc is not None and sqlite_file(engine) is not None and rows >= STAGED_MIN_ROWS


def start_staging(engine: Engine, rows: pa.Table, definition: Sequence[str] = ()) -> StagedRows | None:
    """Hand `rows` (as `storage.loaders.bulk.sqlite_arrow` makes them) to a helper process
    that writes them into a scratch SQLite file; None where that does not pay or cannot
    be done (see `staging_pays`; or no helper process). `definition`: the store table's
    CREATE TABLE and CREATE INDEXes (`storage.loaders.bulk.sqlite_definition`), for rows
    staged in a copy of the table with its indexes built (`ingest_to_file`)."""
    if not staging_pays(engine, rows.num_rows):
        return None
    folder = tempfile.mkdtemp(prefix="pulse-stage-")
    source, out = os.path.join(folder, "rows.arrow"), os.path.join(folder, "rows.db")
    try:
        table = created_table(definition[0]) if definition else "rows"
    except ValueError:  # a definition this does not read: the rows staged as plain rows
        definition, table = (), "rows"
    try:
        with pa.OSFile(source, "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
            writer.write_table(rows)
        future = _reader_pool().submit(ingest_to_file, source, out, list(definition))
    except (BrokenProcessPool, OSError, RuntimeError):
        _drop_pool()
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return StagedRows(folder, out, future, table)


# --- PostgreSQL ------------------------------------------------------------------------------


def _postgres(engine: Engine, table: str, cols: Sequence[Col], where: str, params: dict,
              schema: pa.Schema) -> pa.Table:
    select_list = ", ".join(f"({c.sql})::float8" if c.kind == "float" else c.sql for c in cols)
    sql = f'SELECT {select_list} FROM "{table}"' + (f" WHERE {where}" if where else "")
    # COPY takes no parameters: render them as literals
    rendered = re.sub(r"(?<!:):([A-Za-z_]\w*)", lambda m: _pg_literal(params[m.group(1)]), sql)
    fast = _postgres_adbc(engine, rendered, schema)
    if fast is not None:
        return fast
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        buf = io.BytesIO()
        with raw.cursor() as cur, cur.copy(f"COPY ({rendered}) TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                buf.write(block)
    return _parse_bytes(buf.getvalue(), schema)


def _postgres_adbc(engine: Engine, sql: str, schema: pa.Schema) -> pa.Table | None:
    """`sql`'s rows read with the ADBC PostgreSQL driver, conformed to `schema`; None
    without the driver or when it fails (the caller then takes the COPY text path)."""
    if _adbc_pg is None:
        return None
    uri = libpq_uri(engine)
    try:
        with _adbc_pg.connect(uri) as conn, conn.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        # int4 columns (a CASE, say) widen to int64; the drivers' field metadata goes
        return conform([table.column(i) for i in range(table.num_columns)], schema)
    except (_adbc_pg.Error, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _pg_literal(value: object) -> str:
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


# --- parsing ----------------------------------------------------------------------------------


def _parse(texts: list[str], schema: pa.Schema) -> pa.Table:
    data = "\n".join(t for t in texts if t)
    return _parse_bytes(data.encode("utf-8"), schema)


def _parse_bytes(data: bytes, schema: pa.Schema) -> pa.Table:
    if not data:
        return schema.empty_table()
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=schema.names, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False,
            timestamp_parsers=[pacsv.ISO8601],
        ),
    )
    return table.cast(schema)
