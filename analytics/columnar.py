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
- PostgreSQL: `COPY (SELECT …) TO STDOUT (FORMAT csv)` parsed by Arrow's C++ CSV reader
  (floats as float8 text, which PostgreSQL writes with exact round trip).
Timestamps are read as text and parsed by Arrow. Rows come in no particular order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import multiprocessing as mp
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Engine

try:  # optional: the fast path on SQLite
    import adbc_driver_sqlite.dbapi as _adbc
except ImportError:  # pragma: no cover - depends on the installation
    _adbc = None

# Below this many rows the DB-API read is quicker than starting the helper process.
ADBC_MIN_ROWS = 200_000
ONE_BATCH_ROWS = 1 << 30  # the largest the driver accepts is below 2**31 - 1
READ_MMAP_BYTES = 1 << 30  # the helper's reads, as the store's own connections (storage/engine.py)
_TYPES = {"str": pa.string(), "float": pa.float64(), "int": pa.int64(), "ts": pa.timestamp("us")}


@dataclass(frozen=True)
class Col:
    """One column to read: its output name, the SQL expression and its kind
    ("str", "float", "int" or "ts")."""

    name: str
    sql: str
    kind: str


def read_columns(engine: Engine, table: str, cols: Sequence[Col], where: str = "",
                 params: dict | None = None) -> pa.Table:
    """`cols` of the rows of `table` matching the SQL condition `where` (named :params)."""
    schema = pa.schema([(c.name, _TYPES[c.kind]) for c in cols])
    params = params or {}
    if engine.dialect.name == "sqlite":
        return _sqlite(engine, table, cols, where, params, schema)
    return _postgres(engine, table, cols, where, params, schema)


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


def _sqlite(engine: Engine, table: str, cols: Sequence[Col], where: str, params: dict,
            schema: pa.Schema) -> pa.Table:
    tail = f' FROM "{table}"' + (f" WHERE {where}" if where else "")
    names = re.findall(r"(?<!:):([A-Za-z_]\w*)", tail)
    args = [_sqlite_value(params[n]) for n in names]
    tail = re.sub(r"(?<!:):([A-Za-z_]\w*)", "?", tail)
    path = engine.url.database
    got = None
    if (_adbc is not None and path and path != ":memory:" and not path.startswith("file:")
            and _rows_about(engine, table) >= ADBC_MIN_ROWS):
        # no CASTs: ADBC types each column from all its values (one batch) and `_conform`
        # converts; a CAST per cell cost about a third of the read
        plain = "SELECT " + ", ".join(f'{c.sql} AS "{c.name}"' for c in cols) + tail
        got = _adbc_read(str(Path(path).resolve()), plain, args, schema)
    if got is not None:
        return got if got.num_rows else schema.empty_table()
    # CAST: SQLite's values are dynamically typed; one type per column for Arrow
    sql = "SELECT " + ", ".join(f'CAST({c.sql} AS {_SQLITE_CAST[c.kind]}) AS "{c.name}"' for c in cols) + tail
    with engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()
        try:
            rows = cur.execute(sql, args).fetchall()
        finally:
            cur.close()
    if not rows:
        return schema.empty_table()
    return _conform([pa.array(list(col)) for col in zip(*rows, strict=True)], schema)


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
            _POOL = ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn"))
        return _POOL


def _adbc_read(path: str, sql: str, args: list, schema: pa.Schema) -> pa.Table | None:
    """The query's rows read by ADBC in a helper process and conformed to `schema` there,
    or None when that fails (the caller then takes the DB-API path)."""
    fd, out = tempfile.mkstemp(prefix="pulse-read-", suffix=".arrow")
    os.close(fd)
    try:
        try:
            ok = _reader_pool().submit(_adbc_read_to_file, path, sql, args, out, schema).result()
        except (BrokenProcessPool, OSError, RuntimeError):
            global _POOL
            with _POOL_LOCK:
                _POOL = None  # a dead pool is not reused; this read takes the slow path
            return None
        if not ok:
            return None
        with pa.memory_map(out) as source:
            return pa.ipc.open_file(source).read_all()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)


def _adbc_read_to_file(path: str, sql: str, args: list, out: str, schema: pa.Schema) -> bool:
    """(In the helper process) run `sql` with ADBC and write the result, conformed to
    `schema`, as an Arrow IPC file at `out`; False when SQLite refused (e.g. "database is
    locked"). Conforming here parses the timestamp text off the caller's process, in
    parallel with its other reads, and the file carries 8-byte stamps instead of text."""
    try:
        with _adbc.connect(path) as con, con.cursor() as cur:
            # pages read through a memory map instead of a copy per page (about a quarter
            # less time on a full scan of the orders)
            cur.execute(f"PRAGMA mmap_size={READ_MMAP_BYTES}")
            cur.fetchall()
            # the driver infers each column's type from the first batch (an all-NULL
            # start reads as int64 and a later text value fails): one batch of all rows
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(ONE_BATCH_ROWS)})
            cur.execute(sql, args)
            table = cur.fetch_arrow_table()
        if table.num_rows:
            table = _conform([table.column(i) for i in range(table.num_columns)], schema)
    except (_adbc.Error, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False  # refused (e.g. "database is locked") or mixed types: the DB-API path reads it
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return True


def _conform(arrays: list, schema: pa.Schema) -> pa.Table:
    out = []
    for arr, f in zip(arrays, schema, strict=True):
        if arr.type != f.type:
            arr = arr.cast(pa.string()).cast(f.type) if pa.types.is_timestamp(f.type) else arr.cast(f.type)
        out.append(arr)
    return pa.table(out, schema=schema)


# --- PostgreSQL ------------------------------------------------------------------------------


def _postgres(engine: Engine, table: str, cols: Sequence[Col], where: str, params: dict,
              schema: pa.Schema) -> pa.Table:
    select_list = ", ".join(f"({c.sql})::float8" if c.kind == "float" else c.sql for c in cols)
    sql = f'SELECT {select_list} FROM "{table}"' + (f" WHERE {where}" if where else "")
    # COPY takes no parameters: render them as literals
    rendered = re.sub(r"(?<!:):([A-Za-z_]\w*)", lambda m: _pg_literal(params[m.group(1)]), sql)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        buf = io.BytesIO()
        with raw.cursor() as cur, cur.copy(f"COPY ({rendered}) TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                buf.write(block)
    return _parse_bytes(buf.getvalue(), schema)


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
