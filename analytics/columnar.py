"""Fast columnar reads of a few columns of a store table into Arrow.

A DB-API fetch builds one Python object per cell, which at millions of rows costs more
than the analysis itself. So:
- SQLite: the ADBC SQLite driver (`adbc-driver-sqlite`, a PyPI wheel with its own
  SQLite) reads the rows straight into Arrow in C; without it, the DB-API cursor's
  rows are turned into Arrow column by column (slower, same result);
- PostgreSQL: `COPY (SELECT …) TO STDOUT (FORMAT csv)` parsed by Arrow's C++ CSV reader
  (floats as float8 text, which PostgreSQL writes with exact round trip).
Timestamps are read as text and parsed by Arrow. Rows come in no particular order.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Engine

try:  # optional: the fast path on SQLite
    import adbc_driver_sqlite.dbapi as _adbc
except ImportError:  # pragma: no cover - depends on the installation
    _adbc = None

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
    # CAST: SQLite's values are dynamically typed; one type per column for Arrow
    select_list = ", ".join(f'CAST({c.sql} AS {_SQLITE_CAST[c.kind]}) AS "{c.name}"' for c in cols)
    sql = f'SELECT {select_list} FROM "{table}"' + (f" WHERE {where}" if where else "")
    names = re.findall(r"(?<!:):([A-Za-z_]\w*)", sql)
    args = [_sqlite_value(params[n]) for n in names]
    sql = re.sub(r"(?<!:):([A-Za-z_]\w*)", "?", sql)
    path = engine.url.database
    got = None
    if _adbc is not None and path and path != ":memory:" and not path.startswith("file:"):
        try:
            with _adbc.connect(path) as con, con.cursor() as cur:
                cur.execute(sql, args)
                got = cur.fetch_arrow_table()
        except _adbc.Error:  # e.g. "database is locked" (no busy timeout there): the slow path
            got = None
    if got is not None:
        if got.num_rows == 0:
            return schema.empty_table()
        arrays = [got.column(i) for i in range(got.num_columns)]
    else:
        with engine.connect() as conn:
            cur = conn.connection.driver_connection.cursor()
            try:
                rows = cur.execute(sql, args).fetchall()
            finally:
                cur.close()
        if not rows:
            return schema.empty_table()
        arrays = [pa.array(list(col)) for col in zip(*rows, strict=True)]
    return _conform(arrays, schema)


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
