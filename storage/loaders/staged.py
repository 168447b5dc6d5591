"""A SQLite load's upserts gathered in scratch files and applied once, in key order.

A load reads its files in chunks, in file order, so each chunk's keys fall all over the
primary-key B-tree. Once that tree outgrows SQLite's page cache, every chunk rewrites
most of its pages, and a load grows faster than its size (20x from 1M to 10M orders).
Here each chunk is appended, as Arrow, to a scratch SQLite file with ADBC's bulk ingest
(no index, no journal, values bound in C), and once a table has all its rows (at the
latest at the end of the load) one `INSERT … SELECT … ORDER BY key` has SQLite sort them
(an external merge sort in bounded memory) and fill the tree once, in order. Rows of one key keep their file
order (the scratch rowid breaks ties), so the table's ON CONFLICT rules merge them as
chunk-by-chunk upserts would.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

try:
    import adbc_driver_sqlite.dbapi as _adbc
except ImportError:  # the driver is optional: loads then upsert chunk by chunk
    _adbc = None

# SQLite attaches at most 10 databases; the load keeps each scratch file attached until
# its transaction ends (`BulkWriter.detach_staged`: SQLite refuses to detach a file read in
# an open transaction)
MAX_SEGMENTS = 8


@dataclass
class Segment:
    """Rows for one table, one column list and one conflict rule, in one scratch file."""

    table: str
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    conflict: str
    path: str
    closed: bool = False  # takes no more rows (applied, or queued to be)
    conn: Any = None  # the ADBC connection writing it, opened by its first rows
    rows: int = 0


@dataclass
class StagedUpserts:
    """Scratch files in `folder`, one per segment; see the module's docstring.

    The segments are chosen and closed on the loading thread; `append` may run on a
    helper thread (one at a time, in order), and `seal` on the thread that writes the
    store's connection."""

    folder: str
    segments: list[Segment] = field(default_factory=list)

    def open_segment(self, table: str) -> Segment | None:
        return next((s for s in self.segments if s.table == table and not s.closed), None)

    def matches(self, table: str, columns: set[str], conflict: str) -> bool:
        """Whether rows of these columns and rule go to `table`'s open segment."""
        seg = self.open_segment(table)
        return seg is not None and set(seg.columns) == columns and seg.conflict == conflict

    def can_take(self, table: str, columns: set[str], conflict: str) -> bool:
        """Whether such rows can be staged: in the open segment, or in a new one (the open
        one, if any, must then be closed and applied first)."""
        return self.matches(table, columns, conflict) or len(self.segments) < MAX_SEGMENTS

    def segment(self, table: str, keys: tuple[str, ...], conflict: str, columns: list[str]) -> Segment:
        """`table`'s open segment for these columns and rule, or a new one."""
        if self.matches(table, set(columns), conflict):
            return self.open_segment(table)  # type: ignore[return-value]
        seg = Segment(table, tuple(columns), keys, conflict,
                      os.path.join(self.folder, f"segment_{len(self.segments)}.db"))
        self.segments.append(seg)
        return seg

    def close(self, table: str | None = None) -> list[Segment]:
        """Close the open segments (of `table`, or all) to more rows; returns them."""
        out = [s for s in self.segments if not s.closed and (table is None or s.table == table)]
        for seg in out:
            seg.closed = True
        return out

    @staticmethod
    def append(seg: Segment, rows: pa.Table) -> None:
        """Append `rows` to the scratch file of `seg`."""
        if seg.conn is None:
            seg.conn = _adbc.connect(seg.path, autocommit=True)
            with seg.conn.cursor() as cur:
                # a scratch file: nothing to roll back or recover
                for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF", "BEGIN"):
                    cur.execute(pragma)
        with seg.conn.cursor() as cur:
            cur.adbc_ingest("rows", rows.select(list(seg.columns)), mode="append" if seg.rows else "create")
        seg.rows += rows.num_rows

    @staticmethod
    def seal(seg: Segment) -> bool:
        """Commit and close the scratch file of `seg`, to be read into the store
        (`BulkWriter`); False when it got no rows."""
        if seg.conn is None:
            return False
        with seg.conn.cursor() as cur:
            cur.execute("COMMIT")
        seg.conn.close()
        seg.conn = None
        return True

    def remove(self) -> None:
        """Close what is still being written and delete the folder."""
        for seg in self.segments:
            if seg.conn is not None:
                seg.conn.close()
                seg.conn = None
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def staged_upserts(store_file: str | None) -> Iterator[StagedUpserts | None]:
    """Scratch files for a load into the SQLite file `store_file`, in a folder beside it
    (a temporary folder may be in memory, and these files grow as big as the load's
    tables); None without a file or without the ADBC driver. Removed on leaving."""
    if _adbc is None or store_file is None:
        yield None
        return
    try:
        folder = tempfile.mkdtemp(prefix=".pulse-load-", dir=Path(store_file).resolve().parent)
    except OSError:
        folder = tempfile.mkdtemp(prefix="pulse-load-")
    staged = StagedUpserts(folder)
    try:
        yield staged
    finally:
        staged.remove()
