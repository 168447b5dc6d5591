"""Loading source files into the canonical tables: `load_path` is the entry point.

Formats: "olist" (the Kaggle Olist CSVs: a folder, a zip of it, files plain or
.gz/.xz/.bz2/.zip), "online-retail" (UCI Online Retail and Online Retail II) and
"transactions" (any CSV of purchases, given a column mapping). Every load:

- records a `load_runs` row ("running", then "ok" or "failed" with the error);
- writes all canonical rows and its quarantine rows in ONE transaction, so a failed
  or refused load leaves the store as it was (only the failed load_runs row remains);
- is idempotent: rows are upserted on their source ids, and the quarantine rows of
  earlier loads of the same path and format are replaced, so loading a file twice
  changes no count;
- validates with vectorised pandas; bad rows go to `quarantine` with the reason and
  the raw row (see each format's module for its treatment); rows_read = rows_loaded
  + quarantined + skipped;
- handles broken files: a last line without a line end that has fewer fields than the
  header is quarantined ("truncated last line"), a complete one loads (exporters often
  omit the final newline); a line with too many fields is quarantined ("malformed
  line"); a file cut inside a quoted field, or a compressed file cut short, is refused;
- streams every file in chunks (option `chunksize`, default 100,000 rows): Online
  Retail and transactions hold the chunks plus about 40 bytes per distinct order; Olist
  joins its tables through compact hashed id maps (`storage.loaders.keys`, about 12
  bytes per id) and writes them table by table (see `storage.loaders.olist`);
- on a SQLite file, gathers the rows in scratch files beside the store and puts each
  table's rows in in key order (`storage.loaders.staged`).

Common options: encoding (default: UTF-8, cp1252 for bytes that are not UTF-8),
chunksize, date_format (default: inferred per column from its first values).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine

from storage.engine import sqlite_file
from storage.loaders import olist, online_retail, transactions
from storage.loaders.bulk import BulkWriter
from storage.loaders.context import (
    LoadContext,
    clear_earlier_quarantine,
    defer_indexes,
    fail_run,
    finish_run,
    load_pragmas,
    restore_indexes,
    start_run,
)
from storage.loaders.report import LoadError, LoadReport
from storage.loaders.sources import (
    DEFAULT_CHUNKSIZE,
    CsvOptions,
    list_sources,
    read_header,
    single_source,
)
from storage.loaders.staged import staged_upserts
from storage.loaders.transactions import MAPPING_FIELDS

__all__ = [
    "FORMATS", "MAPPING_FIELDS", "LoadError", "LoadReport",
    "detect_format", "load_path", "parse_mapping", "parse_options",
]

FORMATS = ("olist", "online-retail", "transactions")

_MODULES = {"olist": olist, "online-retail": online_retail, "transactions": transactions}

# splits "a=1,b=x,y,c=2" before each "key=" (so values may hold commas)
_PAIRS = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_\-]*\s*=)")


def _pairs(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    text = text.strip()
    if not text:
        return out
    for part in _PAIRS.split(text):
        key, sep, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or not key:
            raise LoadError(f"{what}: “{part.strip()}” is not of the form key=value.")
        out[key] = value.strip()
    return out


def parse_mapping(text: str) -> dict[str, str]:
    """A column mapping from "customer=CustomerID,order=TransactionID,timestamp=...,amount=...".

    Keys are canonical fields (see MAPPING_FIELDS; a few synonyms such as order_id,
    date and value are accepted); values are column names of the file, or positions
    "0", "1", ... for a file without a header.
    """
    raw = _pairs(text, "--map")
    mapping: dict[str, str] = {}
    for key, column in raw.items():
        canon = transactions.FIELD_ALIASES.get(key, key)
        if canon not in MAPPING_FIELDS:
            raise LoadError(
                f"--map: unknown field “{key}”; accepted: {', '.join(MAPPING_FIELDS)}."
            )
        if not column:
            raise LoadError(f"--map: field “{key}” has no column name.")
        mapping[canon] = column
    return mapping


def parse_options(text: str | list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Options from "sep=whitespace,date_format=%Y%m%d" (or a list of "key=value" items)."""
    if text is None:
        return {}
    if isinstance(text, str):
        return _pairs(text, "--option")
    out: dict[str, str] = {}
    for item in text:
        out.update(_pairs(item, "--option"))
    return out


def _normalise_options(fmt: str, options: dict | None) -> dict:
    accepted = _MODULES[fmt].OPTIONS
    out: dict = {}
    for key, value in (options or {}).items():
        k = str(key).strip().lower().replace("-", "_")
        if k not in accepted:
            raise LoadError(
                f"option “{key}” is not accepted for {fmt}; accepted: {', '.join(sorted(accepted))}."
            )
        out[k] = value
    chunksize = out.get("chunksize", DEFAULT_CHUNKSIZE)
    try:
        out["chunksize"] = int(chunksize)
        if out["chunksize"] < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise LoadError(f"option chunksize: {chunksize!r} is not a positive whole number.") from None
    return out


def detect_format(path: str | Path) -> str | None:
    """"olist" or "online-retail" when the files say so (names or header), else None.

    Cheap: looks at file names and, for a single file, its header line only. A generic
    CSV cannot be told apart from a broken one, so "transactions" is never guessed.
    """
    path = Path(path).expanduser()
    if not path.exists():
        return None
    try:
        sources = list_sources(path)
        if olist.find_tables(sources, strict=False).get("orders") is not None:
            return "olist"
        if path.is_file() and olist.table_of(sources[0].stem) is not None:
            return "olist"
        if online_retail.looks_like(read_header(single_source(path), CsvOptions())):
            return "online-retail"
    except LoadError:
        return None
    return None


def _detach_scratch_files(conn: Connection, writer: BulkWriter) -> None:
    """Detach the scratch files the load read (after its transaction); a connection that
    cannot detach them is discarded rather than pooled with them."""
    try:
        writer.detach_staged()
    except sqlite3.Error:
        conn.invalidate()


def load_path(
    engine: Engine,
    path: str | Path,
    fmt: str | None = None,
    *,
    mapping: dict[str, str] | None = None,
    options: dict | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> LoadReport:
    """Load the file(s) at `path` in format `fmt` (None or "auto": detected) into the store.

    Raises LoadError, naming the problem, when the input is refused; the store is then
    unchanged apart from a "failed" load_runs row. `mapping` (transactions only) maps
    canonical fields to columns; `options` are per format (see each module's OPTIONS);
    `progress(done_rows, total_rows_or_None)` is called as chunks are written.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise LoadError(f"{path} does not exist.")
    if fmt in (None, "auto"):
        fmt = detect_format(path)
        if fmt is None:
            if mapping:
                fmt = "transactions"
            else:
                raise LoadError(
                    f"cannot tell the format of {path}; give --format "
                    f"({'|'.join(FORMATS)}) and, for transactions, a --map."
                )
    if fmt not in FORMATS:
        raise LoadError(f"unknown format “{fmt}”; accepted: {', '.join(FORMATS)}.")
    if mapping and fmt != "transactions":
        raise LoadError(f"a column mapping is only used with --format transactions, not {fmt}.")
    opts = _normalise_options(fmt, options)
    where = str(path.resolve())

    run_id = start_run(engine, fmt, where)
    started = time.perf_counter()
    try:
        # the settings are changed and restored outside the transaction (SQLite allows no
        # temp_store change inside one)
        with engine.connect() as conn, load_pragmas(conn), staged_upserts(sqlite_file(engine)) as staged:
            ctx = LoadContext(conn, run_id, fmt, where, opts, progress)
            try:
                with conn.begin():
                    clear_earlier_quarantine(conn, run_id, fmt, where)
                    deferred = defer_indexes(conn)
                    ctx.writer.stage_upserts(staged, deferred)
                    if fmt == "transactions":
                        transactions.load(ctx, path, mapping or {}, opts)
                    else:
                        _MODULES[fmt].load(ctx, path, opts)
                    ctx.writer.apply_staged()
                    restore_indexes(conn, deferred)
                    report = ctx.report(time.perf_counter() - started)
                    finish_run(conn, report)
            finally:
                _detach_scratch_files(conn, ctx.writer)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, LoadError) else f"{type(exc).__name__}: {exc}"
        fail_run(engine, run_id, message, time.perf_counter() - started)
        raise
    return report
