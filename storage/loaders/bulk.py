"""Bulk upserts of DataFrames into the store, inside the caller's transaction.

SQLite: one `INSERT … ON CONFLICT DO UPDATE` run by the DB-API cursor's executemany, or
during a load gathered in scratch files and applied in key order at its end
(`storage.loaders.staged`); or, for a plain insert of rows already staged in a scratch SQLite file
(`analytics.columnar.start_staging`, from `sqlite_arrow`), one `INSERT … SELECT` from it.
PostgreSQL: COPY (CSV) into a temporary staging table, then one
`INSERT … SELECT … ON CONFLICT DO UPDATE`. Both run on the connection the caller
opened with `engine.begin()`, so a failed load rolls every write back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Date, DateTime, Float, Index, Integer, Table
from sqlalchemy.schema import CreateIndex

from storage.loaders.staged import Segment, StagedUpserts

# Per-column SQL for ON CONFLICT DO UPDATE; "{t}" is the target table, "{c}" the column.
KEEP_EARLIEST = (
    'CASE WHEN excluded."{c}" IS NOT NULL AND ("{t}"."{c}" IS NULL OR excluded."{c}" < "{t}"."{c}") '
    'THEN excluded."{c}" ELSE "{t}"."{c}" END'
)
KEEP_IF_NULL = 'COALESCE(excluded."{c}", "{t}"."{c}")'

# SQLite rows per executemany: bounds the Python tuples alive at once (this batch and the one running)
BATCH_ROWS = 20_000


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_datetimes(values: pd.Series) -> np.ndarray:
    """Datetimes as SQLAlchemy writes them to SQLite ('YYYY-MM-DD HH:MM:SS.ffffff'), None for NaT."""
    stamps = np.asarray(values.to_numpy(dtype="datetime64[us]"))
    if not len(stamps):
        return np.empty(0, dtype=object)
    text = np.datetime_as_string(stamps, unit="us")  # 'YYYY-MM-DDTHH:MM:SS.ffffff', in C
    chars = text.view(np.uint32).reshape(len(text), text.dtype.itemsize // 4)
    nat = np.isnat(stamps)
    if (chars[~nat, 10] == ord("T")).all():  # four-digit years: swap the 'T' in place
        chars[:, 10] = np.where(nat, chars[:, 10], ord(" "))
    else:
        text = np.char.replace(text, "T", " ")
    out = text.astype(object)
    out[nat] = None
    return out


_TENS = (np.arange(100) // 10 + ord("0")).astype(np.uint8)  # the two digits of 0..99
_ONES = (np.arange(100) % 10 + ord("0")).astype(np.uint8)
_STAMP = b"0000-00-00 00:00:00.000000"  # SQLAlchemy's text of a datetime on SQLite


def sql_datetime_strings(values: pd.Series) -> pa.Array:
    """`sql_datetimes` as an Arrow string array, its digits written by numpy arithmetic:
    200,000 stamps in 37-54 ms, against 169-197 ms through numpy's datetime text and a
    Python string per value (five such columns in every chunk of orders)."""
    stamps = np.asarray(values.to_numpy(dtype="datetime64[us]")).view(np.int64)
    nat = stamps == np.iinfo(np.int64).min
    days, rest = np.divmod(np.where(nat, 0, stamps), 86_400_000_000)
    # the proleptic Gregorian date of a day number (H. Hinnant's civil_from_days)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    if len(year) and (year.min() < 0 or year.max() > 9999):
        return pa.array(sql_datetimes(values), pa.string())  # not four digits: numpy's text
    seconds, micro = np.divmod(rest, 1_000_000)
    pairs = (  # (column of the first digit, a value 0..99)
        (0, year // 100), (2, year % 100), (5, month), (8, doy - (153 * mp + 2) // 5 + 1),
        (11, seconds // 3600), (14, seconds // 60 % 60), (17, seconds % 60),
        (20, micro // 10_000), (22, micro // 100 % 100), (24, micro % 100),
    )
    # one row per character while writing (each write is one contiguous run), then turned
    text = np.empty((len(_STAMP), len(stamps)), dtype=np.uint8)
    for at, char in enumerate(_STAMP):
        if chr(char) in "-: .":
            text[at] = char
    for at, value in pairs:
        np.take(_TENS, value, out=text[at])
        np.take(_ONES, value, out=text[at + 1])
    text = np.ascontiguousarray(text.T)
    valid = pa.py_buffer(np.packbits(~nat, bitorder="little")) if nat.any() else None
    offsets = np.arange(0, text.size + 1, len(_STAMP), dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), len(stamps), [valid, pa.py_buffer(offsets), pa.py_buffer(text)],
                                 null_count=int(nat.sum()))


def sql_dates(values: pd.Series) -> np.ndarray:
    """Dates as 'YYYY-MM-DD' (what SQLAlchemy's Date reads back on SQLite), None when missing."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        codes, uniques = pd.factorize(values.to_numpy(dtype="datetime64[us]"))
        text = pd.Series(uniques).dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
        return np.append(text, None)[codes]
    # each distinct value converted once (a refresh writes one as-of date on every row)
    codes, uniques = pd.factorize(values.astype(object).to_numpy(), use_na_sentinel=True)
    text = [v.isoformat()[:10] if hasattr(v, "isoformat") else v for v in uniques]
    return np.array([*text, None], dtype=object)[codes]


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`frame` in key order (Arrow sorts strings several times faster than pandas)."""
    if len(frame) < 2:
        return frame
    table = pa.table({k: pa.array(frame[k].array if hasattr(frame[k].array, "__arrow_array__") else frame[k])
                      for k in keys})
    order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]).to_numpy()
    return frame.iloc[order]


def sqlite_definition(conn: Connection, table: Table) -> list[str]:
    """SQLite: `table`'s CREATE TABLE as the store holds it, then its CREATE INDEXes (the
    statements the store's schema records; none for a table it lacks)."""
    rows = conn.exec_driver_sql(
        "SELECT type, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
        "AND type IN ('table', 'index') ORDER BY type = 'index', name", (table.name,)).all()
    return [sql for kind, sql in rows] if rows and rows[0][0] == "table" else []


def sqlite_arrow(table: Table, frame: pd.DataFrame) -> pa.Table:
    """`frame`'s rows as Arrow columns holding what `BulkWriter.insert` binds on SQLite:
    dates and datetimes as SQLAlchemy's text, whole-number columns as integers (or floats,
    whose whole values SQLite's INTEGER affinity stores as integers), missing values as
    nulls (NaN too). Raises TypeError or pyarrow's ArrowException for a column it cannot
    carry as one Arrow type (e.g. an object column of strings and numbers)."""
    columns = {}
    for name in frame.columns:
        s = frame[name]
        kind = table.c[name].type
        if isinstance(kind, Date) and not isinstance(kind, DateTime):
            arr = pa.array(sql_dates(s), pa.string())
        elif isinstance(kind, DateTime) or pd.api.types.is_datetime64_any_dtype(s.dtype):
            arr = sql_datetime_strings(s)
        elif isinstance(s.dtype, np.dtype) and s.dtype.kind in "biu":
            arr = pa.array(s.to_numpy(), pa.int64())
        elif isinstance(s.dtype, np.dtype) and s.dtype.kind == "f":
            arr = pa.array(s.to_numpy(), pa.float64(), from_pandas=True)
        else:  # object and extension columns: strings, nullable numbers
            arr = pa.array(s.array if hasattr(s.array, "__arrow_array__") else s.to_numpy(), from_pandas=True)
            if pa.types.is_null(arr.type):
                arr = arr.cast(pa.string())
            elif pa.types.is_boolean(arr.type):
                arr = arr.cast(pa.int64())
            elif not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
                      or pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
                raise TypeError(f"column {name!r} holds {arr.type}, not text or numbers")
        columns[name] = arr
    return pa.table(columns)


STAMP_COLUMN = "load_run"


class BulkWriter:
    """Writes DataFrames to tables of the store on one open Connection (one transaction).
    With `stamp` (a load run's id), every row written to a table that has a `load_run`
    column gets it."""

    def __init__(self, conn: Connection, stamp: int | None = None):
        self.conn = conn
        self.stamp = stamp
        self.dialect = conn.dialect.name
        self._staged: set[str] = set()
        self._worker: ThreadPoolExecutor | None = None
        self._scratch: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []  # on the writer thread, in order
        self._scratch_pending: Future | None = None
        self._attached: list[str] = []
        self._staged_upserts: StagedUpserts | None = None
        self._deferred: list[Index] = []

    def stage_upserts(self, staged: StagedUpserts | None, deferred: Sequence[Index] = ()) -> None:
        """From now on, gather SQLite upserts in `staged` (see `storage.loaders.staged`)
        until `finish_table` or `apply_staged`; None: upsert chunk by chunk. `deferred`:
        indexes dropped for the load, built by `finish_table` once their table has its rows."""
        self._staged_upserts = staged if self.dialect == "sqlite" else None
        self._deferred = list(deferred) if self._staged_upserts is not None else []

    def finish_table(self, table: Table) -> None:
        """`table` gets no more rows in this load: its staged rows, and the indexes deferred
        for it, are written now; within `overlapped`, on the writer thread, beside the
        caller's work on the next table."""
        if self._staged_upserts is None:
            return
        indexes = [i for i in self._deferred if i.table is table]
        self._deferred = [i for i in self._deferred if i.table is not table]
        builds = [str(CreateIndex(i, if_not_exists=True).compile(dialect=self.conn.dialect)) for i in indexes]
        self._apply(self._staged_upserts.close(table.name), builds)

    def apply_staged(self) -> None:
        """Write every upsert still gathered into its table (inside the transaction), and
        wait until that is done."""
        if self._staged_upserts is not None:
            self._apply(self._staged_upserts.close(), [])
            self._wait()

    def _apply(self, segments: list[Segment], builds: list[str]) -> None:
        if not segments and not builds:
            return
        self._wait_scratch()  # their last rows are in their files
        staged, raw = self._staged_upserts, self._raw()

        def work() -> None:
            for seg in segments:
                if staged.seal(seg):
                    self._insert_from_file(seg.table, seg.path, seg.columns, seg.keys, seg.conflict)
            for sql in builds:
                raw.execute(sql)

        if self._worker is not None:
            self._pending.append(self._worker.submit(work))  # queued: it holds no rows in memory
        else:
            work()

    @contextmanager
    def overlapped(self) -> Iterator[None]:
        """Within this block, SQLite statements run on a helper thread while the caller
        prepares the next batch (sqlite3 releases the GIL while SQLite works), and staged
        rows are appended to their scratch files on another. One batch of rows at most
        waits on each, in order; an error surfaces at the next write or at the end of the
        block."""
        if self.dialect != "sqlite" or self._worker is not None:
            yield
            return
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="pulse-writer")
        self._scratch = ThreadPoolExecutor(1, thread_name_prefix="pulse-scratch")
        try:
            yield
            self._wait()
        finally:
            for attr in ("_scratch", "_worker"):
                pool = getattr(self, attr)
                setattr(self, attr, None)
                pool.shutdown(wait=True)  # work still running ends before the rollback
            self._pending, self._scratch_pending = [], None

    def _wait_scratch(self) -> None:
        pending, self._scratch_pending = self._scratch_pending, None
        if pending is not None:
            pending.result()

    def _wait(self) -> None:
        """Until every write handed to the helper threads has been done."""
        self._wait_scratch()
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def _raw(self):  # noqa: ANN202 - DB-API connection
        return self.conn.connection.driver_connection

    def upsert(self, table: Table, frame: pd.DataFrame, merge: dict[str, str] | None = None) -> int:
        """Insert rows, updating those whose primary key exists; returns the rows written.

        `frame` holds some of the table's columns (the primary key among them), with at
        most one row per key. `merge` gives the SQL of columns that must not simply be
        overwritten (see KEEP_EARLIEST, KEEP_IF_NULL).
        """
        if frame.empty:
            return 0
        frame = self._stamped(table, frame)
        cols = list(frame.columns)
        pk = [c.name for c in table.primary_key.columns]
        updates = []
        for c in cols:
            if c in pk:
                continue
            rule = (merge or {}).get(c, 'excluded."{c}"')
            updates.append(f"{_q(c)} = " + rule.format(t=table.name, c=c))
        conflict = f" ON CONFLICT ({', '.join(map(_q, pk))}) " + (
            f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        )
        collist = ", ".join(map(_q, cols))
        if self.dialect == "sqlite":
            if self._stage_upsert(table, frame, pk, conflict):
                return len(frame)
            sql = f"INSERT INTO {_q(table.name)} ({collist}) VALUES ({', '.join('?' * len(cols))}){conflict}"
            # rows in key order fill the B-trees sequentially (about twice as fast as random order)
            ordered = _sorted(frame, pk)
            for lo in range(0, len(ordered), BATCH_ROWS):
                self._executemany(sql, self._rows(table, ordered.iloc[lo: lo + BATCH_ROWS]))
        else:
            stage = self._stage(table)
            self._copy(stage, cols, table, frame)
            self._raw().execute(
                f"INSERT INTO {_q(table.name)} ({collist}) SELECT {collist} FROM {_q(stage)}{conflict}"
            )
        return len(frame)

    def _stage_upsert(self, table: Table, frame: pd.DataFrame, pk: list[str], conflict: str) -> bool:
        """Hand `frame` to the staged upserts, if they are on and can take it; False when
        it must be written now (after what was staged for its table, to keep their order)."""
        staged = self._staged_upserts
        if staged is None:
            return False
        columns = set(frame.columns)
        try:
            rows = sqlite_arrow(table, frame) if staged.can_take(table.name, columns, conflict) else None
        except (TypeError, pa.ArrowException):
            rows = None
        if rows is None or not staged.matches(table.name, columns, conflict):
            self._apply(staged.close(table.name), [])
            if rows is None:
                return False
        seg = staged.segment(table.name, tuple(pk), conflict, rows.column_names)
        if self._scratch is not None:
            self._wait_scratch()
            self._scratch_pending = self._scratch.submit(staged.append, seg, rows)
        else:
            staged.append(seg, rows)
        return True

    def insert(self, table: Table, frame: pd.DataFrame) -> int:
        """Plain insert (no key conflicts expected); returns the rows written."""
        if frame.empty:
            return 0
        frame = self._stamped(table, frame)
        cols = list(frame.columns)
        if self.dialect == "sqlite":
            sql = f"INSERT INTO {_q(table.name)} ({', '.join(map(_q, cols))}) VALUES ({', '.join('?' * len(cols))})"
            for lo in range(0, len(frame), BATCH_ROWS):
                self._executemany(sql, self._rows(table, frame.iloc[lo: lo + BATCH_ROWS]))
        else:
            self._copy(table.name, cols, table, frame)
        return len(frame)

    def insert_staged(self, table: Table, path: str, columns: list[str], *, as_made: bool = False) -> int:
        """Plain insert of the rows of a scratch SQLite file (SQLite only: table `rows`
        with `columns`, see `sqlite_arrow`); returns the rows written. The file stays
        attached to this connection until `detach_staged`, which must wait until the
        transaction has ended (SQLite refuses to detach a file read in an open one).
        `as_made`: the file holds `table` itself, made from its `sqlite_definition` with
        its indexes built; into an empty `table` SQLite then copies the rows and every
        index's entries as they are (its transfer optimisation of `INSERT INTO t SELECT *
        FROM other.t`), instead of building the indexes on this connection."""
        self._wait()
        if not as_made:
            return self._insert_from_file(table.name, path, columns)
        name = self._attach(path)
        return self._raw().execute(f"INSERT INTO main.{_q(table.name)} SELECT * FROM {name}.{_q(table.name)}").rowcount

    def _insert_from_file(self, table: str, path: str, columns: Sequence[str], order: Sequence[str] = (),
                          conflict: str = "") -> int:
        """`INSERT … SELECT` from table `rows` of the scratch SQLite file `path` (attached
        until `detach_staged`), in `order` and then the file's row order when given, with
        the `conflict` clause; returns the rows written."""
        name = self._attach(path)
        raw = self._raw()
        collist = ", ".join(map(_q, columns))
        sql = f"INSERT INTO main.{_q(table)} ({collist}) SELECT {collist} FROM {name}.rows"
        if order:
            # WHERE true: SQLite's grammar needs it between a SELECT and ON CONFLICT
            sql += f" WHERE true ORDER BY {', '.join(map(_q, order))}, rowid"
        return raw.execute(sql + conflict).rowcount

    def _attach(self, path: str) -> str:
        """Attach the scratch file `path` (until `detach_staged`); its schema name."""
        name = f"pulse_staged_{len(self._attached)}"
        self._raw().execute(f"ATTACH DATABASE ? AS {name}", (path,))
        self._attached.append(name)
        return name

    def detach_staged(self) -> None:
        """Detach the scratch files `insert_staged` attached (after the transaction)."""
        raw = self._raw()
        while self._attached:
            raw.execute(f"DETACH DATABASE {self._attached.pop()}")

    def _stamped(self, table: Table, frame: pd.DataFrame) -> pd.DataFrame:
        if self.stamp is None or STAMP_COLUMN not in table.c or STAMP_COLUMN in frame.columns:
            return frame
        return frame.assign(**{STAMP_COLUMN: self.stamp})

    # --- SQLite ------------------------------------------------------------------------

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        self._submit(self._run, sql, rows)

    def _submit(self, work: Callable[..., None], *args: object) -> None:
        """Run `work(*args)` on the writer thread when overlapped (after what was handed to
        the helper threads before it), else now."""
        if self._worker is not None:
            self._wait()
            self._pending.append(self._worker.submit(work, *args))
        else:
            work(*args)

    def _run(self, sql: str, rows: list[tuple]) -> None:
        cur = self._raw().cursor()
        try:
            cur.executemany(sql, rows)
        finally:
            cur.close()

    @staticmethod
    def _rows(table: Table, frame: pd.DataFrame) -> list[tuple]:
        columns = []
        for name in frame.columns:
            s = frame[name]
            kind = table.c[name].type
            if isinstance(kind, Date) and not isinstance(kind, DateTime):
                columns.append(sql_dates(s).tolist())
            elif isinstance(kind, DateTime) or pd.api.types.is_datetime64_any_dtype(s.dtype):
                columns.append(sql_datetimes(s).tolist())
            elif isinstance(kind, Integer) and not pd.api.types.is_integer_dtype(s.dtype):
                # whole floats bind as INTEGER through SQLite's column affinity; NaN binds as NULL
                columns.append(s.astype("float64").tolist())
            elif pd.api.types.is_extension_array_dtype(s.dtype) and not pd.api.types.is_string_dtype(s.dtype):
                columns.append(s.astype(object).where(s.notna(), None).tolist())
            else:
                # str columns give NaN for missing values, which SQLite binds as NULL
                columns.append(s.tolist())
        return list(zip(*columns, strict=True))

    # --- PostgreSQL ----------------------------------------------------------------------

    def _stage(self, table: Table) -> str:
        stage = f"_pulse_stage_{table.name}"
        raw = self._raw()
        if stage not in self._staged:
            raw.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {_q(stage)} "
                f"(LIKE {_q(table.name)} INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            self._staged.add(stage)
        else:
            raw.execute(f"TRUNCATE {_q(stage)}")
        return stage

    def _copy(self, target: str, cols: list[str], table: Table, frame: pd.DataFrame) -> None:
        out = {}
        for name in cols:
            s = frame[name]
            kind = table.c[name].type
            if isinstance(kind, Date) and not isinstance(kind, DateTime):
                out[name] = sql_dates(s)
            elif isinstance(kind, DateTime) or pd.api.types.is_datetime64_any_dtype(s.dtype):
                out[name] = sql_datetimes(s)
            elif isinstance(kind, Integer):
                out[name] = s.astype("float64").round().astype("Int64")
            elif isinstance(kind, Float):
                out[name] = s.astype("float64")
            elif pd.api.types.is_string_dtype(s.dtype):
                out[name] = s.str.replace("\x00", "", regex=False)  # PostgreSQL text cannot hold NUL
            else:
                out[name] = s
        # pyarrow writes CSV several times faster than pandas; nulls become empty
        # (unquoted) fields, which COPY reads as NULL
        table_ = pa.Table.from_pandas(pd.DataFrame(out), preserve_index=False)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table_, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        cur = self._raw().cursor()
        try:
            with cur.copy(f"COPY {_q(target)} ({', '.join(map(_q, cols))}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(memoryview(sink.getvalue()))
        finally:
            cur.close()
