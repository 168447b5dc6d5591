"""One load in progress: its run row, its transaction, quarantine, counters and progress."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import Connection, Engine, Index, Table, delete, literal, select, update
from sqlalchemy.schema import CreateIndex, DropIndex

from storage import schema
from storage.loaders.bulk import BulkWriter
from storage.loaders.report import LoadReport
from storage.loaders.sources import Chunk, SourceFile

Progress = Callable[[int, int | None], None]

# Column sizes PostgreSQL enforces (VARCHAR(n)); longer keys are quarantined.
KEY_LIMIT = 64
LOAD_CACHE_KIB = 16 * 1024  # SQLite page cache during a load (at most); its sorter buffers follow it
SORT_THREADS = 2


@dataclass
class LoadContext:
    """What a format loader gets: the open transaction and the bookkeeping of the load."""

    conn: Connection
    run_id: int
    fmt: str
    path: str
    options: dict
    progress: Progress | None = None
    writer: BulkWriter = field(init=False)
    rows_read: int = 0
    skipped: int = 0
    quarantined: Counter = field(default_factory=Counter)
    tables: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _done: int = 0

    def __post_init__(self) -> None:
        self.writer = BulkWriter(self.conn, stamp=self.run_id)

    # --- writing -----------------------------------------------------------------------

    def write(self, table: Table, frame: pd.DataFrame, merge: dict[str, str] | None = None,
              distinct: int | None = None) -> None:
        """Upsert `frame` into `table`; `distinct` = rows to add to the table's count
        (default: all rows of the frame)."""
        self.writer.upsert(table, frame, merge)
        self.tables[table.name] = self.tables.get(table.name, 0) + (len(frame) if distinct is None else distinct)

    def finish(self, table: Table) -> None:
        """`table` gets no more rows in this load (its staged rows can be written now)."""
        self.writer.finish_table(table)

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)

    def advance(self, rows: int, total: int | None = None) -> None:
        self._done += rows
        if self.progress is not None:
            self.progress(self._done, total)

    # --- quarantine --------------------------------------------------------------------

    def reject(self, source: SourceFile | str, raw: pd.DataFrame, reasons: pd.Series) -> pd.Series:
        """Quarantine the rows of `raw` that have a reason; returns the rejected mask.

        `raw` is the raw (string) frame whose index is the 0-based data row number.
        """
        mask = reasons.notna()
        if not mask.any():
            return mask
        rows = raw.loc[mask]
        why = reasons[mask].astype(str)
        self._quarantine(source, rows, why)
        return mask

    def reject_all(self, source: SourceFile | str, raw: pd.DataFrame, reason: str) -> None:
        if len(raw):
            self._quarantine(source, raw, pd.Series(reason, index=raw.index))

    def reject_chunk_extras(self, source: SourceFile, chunk: Chunk) -> None:
        """Quarantine what the CSV reader set aside: skipped malformed lines, a cut-off last row."""
        if chunk.bad_lines:
            frame = pd.DataFrame({"line": [n for n, _ in chunk.bad_lines]})
            # pandas gives the file line (1-based, header included); the index is the data row
            frame.index = pd.Index([n - 1 - chunk.header_lines for n, _ in chunk.bad_lines])
            reasons = pd.Series([f"malformed line ({msg})" for _, msg in chunk.bad_lines], index=frame.index)
            self._quarantine(source, frame, reasons)
        if chunk.cut is not None:
            self.reject_all(source, chunk.cut, "truncated last line (no line end)")

    def note_reading(self, source: SourceFile, stats: dict) -> None:
        """Notes on how a file was read (encoding fallback, missing final line end)."""
        if stats.get("cp1252_bytes"):
            self.notes.append(
                f"{source.label}: {stats['cp1252_bytes']:,} bytes were not UTF-8 and were read as cp1252 (Latin-1)."
            )
        if stats.get("unterminated_last_line"):
            self.notes.append(f"{source.label}: the last line has no line end (see quarantine if it was cut).")

    def _quarantine(self, source: SourceFile | str, rows: pd.DataFrame, reasons: pd.Series) -> None:
        label = source.label if isinstance(source, SourceFile) else source
        text = rows.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
        frame = pd.DataFrame({
            "load_run_id": self.run_id,
            "source": label,
            "row_number": (rows.index.to_numpy() + 1).astype("int64"),
            "row": text.rstrip("\n").split("\n"),
            "reason": reasons.to_numpy(),
        })
        self.writer.insert(schema.quarantine, frame)
        self.quarantined.update(reasons.value_counts().to_dict())

    # --- the report --------------------------------------------------------------------

    def report(self, duration_s: float) -> LoadReport:
        quarantined = {k: int(v) for k, v in sorted(self.quarantined.items())}
        return LoadReport(
            load_run_id=self.run_id,
            format=self.fmt,
            path=self.path,
            rows_read=self.rows_read,
            rows_loaded=self.rows_read - sum(quarantined.values()) - self.skipped,
            quarantined=quarantined,
            tables=dict(self.tables),
            counts=dict(self.counts),
            duration_s=round(duration_s, 3),
            skipped=self.skipped,
            notes=tuple(self.notes),
        )


# --- load_runs bookkeeping ---------------------------------------------------------------


def start_run(engine: Engine, fmt: str, path: str) -> int:
    """A load_runs row with status "running", committed on its own."""
    with engine.begin() as conn:
        result = conn.execute(schema.load_runs.insert().values(
            format=fmt, path=path, started_at=dt.datetime.now(), status="running",
        ))
        return int(result.inserted_primary_key[0])


def clear_earlier_quarantine(conn: Connection, run_id: int, fmt: str, path: str) -> int:
    """Delete quarantine rows of earlier loads of the same path and format (a re-load
    replaces them); returns how many were deleted."""
    runs = schema.load_runs
    earlier = select(runs.c.id).where(runs.c.format == fmt, runs.c.path == path, runs.c.id != run_id)
    result = conn.execute(delete(schema.quarantine).where(schema.quarantine.c.load_run_id.in_(earlier)))
    return result.rowcount or 0


@contextmanager
def load_pragmas(conn: Connection) -> Iterator[None]:
    """SQLite settings for the length of a load, restored after it (enter it before the
    load's transaction begins and leave it after that ends):
    - no memory-mapped I/O and a smaller page cache: pages of a big store mapped into the
      process count in its memory, and the load's own maps need the room (the OS file
      cache still serves the pages);
    - temporary files on disk: the index builds at the end of a first load sort every key,
      and with temp_store=MEMORY (the store's setting for queries) that sort would be held
      in memory whole instead of being bounded by the page cache;
    - helper threads for SQLite's sorter, which puts the staged rows in key order (a sorted
      copy of 1M orders: 3.7 s with two, 5.3 s with none) and builds the indexes;
    - a smaller page cache than the store's: the sorter's buffers are as big as the cache,
      and with the staged rows being sorted beside the reading of the next file the 10M
      load's peak was 2.2 GB with 64 MiB (1.8 GB with 16 MiB and 100,000-row chunks)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    # on the DB-API connection: outside any transaction, and without SQLAlchemy's autobegin
    raw = conn.connection.driver_connection
    saved = {p: raw.execute(f"PRAGMA {p}").fetchone()[0]
             for p in ("mmap_size", "cache_size", "temp_store", "threads")}
    raw.execute("PRAGMA mmap_size=0")
    raw.execute(f"PRAGMA cache_size={max(int(saved['cache_size'] or 0), -LOAD_CACHE_KIB)}")
    raw.execute("PRAGMA temp_store=FILE")
    raw.execute(f"PRAGMA threads={SORT_THREADS}")
    try:
        yield
    finally:
        for pragma, value in saved.items():
            raw.execute(f"PRAGMA {pragma}={int(value or 0)}")


def defer_indexes(conn: Connection, tables: Sequence[Table] = schema.CANONICAL_TABLES) -> list[Index]:
    """On SQLite, drop the secondary indexes of those `tables` that are empty (rebuilt by
    `restore_indexes` before commit): a first big load then fills each B-tree once, in
    order, instead of inserting at random places (about 45% less work for orders).
    Inside the caller's transaction, so a failed write gets them back on rollback."""
    if conn.dialect.name != "sqlite":
        return []
    dropped: list[Index] = []
    for table in tables:
        if not table.indexes or conn.execute(select(literal(1)).select_from(table).limit(1)).first():
            continue
        for index in sorted(table.indexes, key=lambda i: i.name):
            conn.execute(DropIndex(index, if_exists=True))
            dropped.append(index)
    return dropped


def restore_indexes(conn: Connection, dropped: list[Index]) -> None:
    for index in dropped:
        conn.execute(CreateIndex(index, if_not_exists=True))


def finish_run(conn: Connection, report: LoadReport) -> None:
    """Mark the run "ok" with its figures (inside the load's transaction)."""
    conn.execute(update(schema.load_runs).where(schema.load_runs.c.id == report.load_run_id).values(
        finished_at=dt.datetime.now(),
        status="ok",
        rows_read=report.rows_read,
        rows_loaded=report.rows_loaded,
        rows_quarantined=report.rows_quarantined,
        summary=report.to_json(),
    ))


def fail_run(engine: Engine, run_id: int, error: str, duration_s: float) -> None:
    """Mark the run "failed" with the error, in its own small transaction."""
    with engine.begin() as conn:
        conn.execute(update(schema.load_runs).where(schema.load_runs.c.id == run_id).values(
            finished_at=dt.datetime.now(),
            status="failed",
            summary=json.dumps({"error": error, "duration_s": round(duration_s, 3)}),
        ))
