"""Segment migration: how customers moved between RFM segments from one snapshot to another.

`segment_snapshots` holds, per date, every customer's RFM segment, lifetime revenue,
state and region as of that date (the refresh writes its as-of date; `analytics.backfill`
writes past weeks). A migration compares an *earlier* and a *later* snapshot:

- **Rows** are the segment in the earlier snapshot, plus `NEW_CUSTOMERS` for customers
  in the later snapshot but not the earlier one (they are a row, never dropped).
  **Columns** are the segment in the later snapshot, plus `NOT_IN_LATER` for customers
  only in the earlier one (normally none: a customer with a purchase stays in every later
  snapshot; it shows up after data was removed). Segments keep the order of
  `analytics.rfm.SEGMENTS`; rows and columns with nobody in them are left out.
- **Row shares** = cell count / row total.
- **Rank order** is the order of `analytics.rfm.SEGMENTS`, best first (Champions … Lost).
  An *upgrade* moves to a better-ranked segment, a *downgrade* to a worse one; new
  customers and customers not in the later snapshot are neither.
- **Revenue** of a cell = lifetime revenue of its customers as of the later snapshot
  (the earlier one for `NOT_IN_LATER`). Per segment, `revenue_in` is the revenue of
  customers who came from another segment, `revenue_out` that of customers who left for
  another one, `revenue_new` that of new customers; net = in + new - out.
- **Flows** are the cells whose segment changed (earlier segment → different later
  segment), biggest first by customers, then revenue, then names. The new-customer row
  is reported on its own (`new_customers`), not as a flow.
- **Place**: a customer belongs to a place by the state/region of the later snapshot
  (the earlier one for customers missing from the later).

Choosing the snapshots (`resolve_snapshots`): the later is the latest snapshot on or
before `as_of`; the earlier is the latest one at least `weeks` × 7 days before it.

Every migration adds up from *cells*: customers and revenue per place, earlier and later
segment (`migration_cells`). The refresh stores the cells from the snapshots one and four
weeks back (the digest's and `/migration`'s default spans) to the snapshot it writes, in
`agg_migration`, computed from the snapshot in memory; a migration reads them when they
are stored (a few thousand rows instead of two snapshots of every customer) and otherwise
computes them from the two snapshots. Whoever rewrites a snapshot drops the cells that
name its date (`forget_cells`), so stored cells always match the snapshots.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, Engine, func, select

from analytics.columnar import Col, start_read
from analytics.errors import NotAvailable
from analytics.results import Result
from analytics.rfm import SEGMENT_NAMES
from storage import schema
from storage.geography import ALL, Place
from storage.loaders.bulk import BulkWriter

SNAP = schema.segment_snapshots
NEW_CUSTOMERS = "New customers"
NOT_IN_LATER = "Not in later snapshot"
RANK: dict[str, int] = {name: i for i, name in enumerate(SEGMENT_NAMES)}  # 0 = best
DIGEST_WEEKS = 1  # the weekly digest's span
COMMAND_WEEKS = 4  # `/migration`'s default span
STORED_WEEKS = (DIGEST_WEEKS, COMMAND_WEEKS)  # spans whose cells the refresh stores


@dataclass(frozen=True)
class Flow:
    """Customers who moved from one segment to another, and their revenue."""

    source: str
    target: str
    customers: int
    revenue: float
    share_of_source: float  # of the source row's customers

    @property
    def direction(self) -> str:
        """"upgrade", "downgrade" or "" (for rows/columns outside the rank order)."""
        if self.source not in RANK or self.target not in RANK:
            return ""
        return "upgrade" if RANK[self.target] < RANK[self.source] else "downgrade"

    def sentence(self) -> str:
        """"312 Champions became At Risk"."""
        return f"{self.customers:,} {self.source} became {self.target}"


@dataclass(frozen=True, eq=False)
class Migration(Result):
    """Movement between two snapshots; `as_of` is the later snapshot's date."""

    earlier: dt.date
    later: dt.date
    counts: pd.DataFrame  # rows: earlier segment (+ New customers); columns: later segment
    shares: pd.DataFrame  # counts / row total
    revenue: pd.DataFrame  # lifetime revenue of each cell's customers
    flows: pd.DataFrame  # source, target, customers, share_of_source, revenue, direction
    # segment, earlier, later, change, stayed, revenue_in, revenue_out, revenue_new, net_revenue
    by_segment: pd.DataFrame
    customers_earlier: int
    customers_later: int
    stayed: int
    upgrades: int
    downgrades: int
    upgrade_revenue: float
    downgrade_revenue: float
    new_customers: int
    new_revenue: float
    not_in_later: int

    @property
    def moved(self) -> int:
        return self.upgrades + self.downgrades

    def top_flows(self, n: int = 3) -> list[Flow]:
        """The `n` biggest flows between segments."""
        return [
            Flow(r.source, r.target, int(r.customers), float(r.revenue), float(r.share_of_source))
            for r in self.flows.head(n).itertuples(index=False)
        ]


def snapshot_dates(engine: Engine) -> list[dt.date]:
    """Dates that have a snapshot, oldest first."""
    with engine.connect() as conn:
        days = conn.execute(select(SNAP.c.snapshot_date).distinct().order_by(SNAP.c.snapshot_date))
        return [_as_date(d) for (d,) in days]


def resolve_snapshots(engine: Engine, as_of: dt.date, weeks: int = 1) -> tuple[dt.date, dt.date]:
    """(earlier, later) snapshot dates for a migration over `weeks` weeks ending by `as_of`.

    Raises NotAvailable (saying how to get snapshots) when either is missing.
    """
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    with engine.connect() as conn:
        later = _latest_snapshot(conn, as_of)
        if later is None:
            raise NotAvailable(
                f"There is no segment snapshot on or before {as_of}. Run `pulse refresh` "
                "(today's snapshot) and `pulse backfill --weeks 26` (past weeks)."
            )
        target = later - dt.timedelta(weeks=weeks)
        earlier = _latest_snapshot(conn, target)
    if earlier is None:
        raise NotAvailable(
            f"There is no segment snapshot {weeks} week{'s' if weeks != 1 else ''} before "
            f"{later} (on or before {target}). Run `pulse backfill --weeks {max(weeks, 26)}` "
            "to compute past weekly snapshots from the order history."
        )
    return earlier, later


def _latest_snapshot(conn: Connection, on_or_before: dt.date) -> dt.date | None:
    """The date of the latest snapshot on or before `on_or_before`, or None."""
    day = conn.execute(select(func.max(SNAP.c.snapshot_date)).where(SNAP.c.snapshot_date <= on_or_before)).scalar()
    return None if day is None else _as_date(day)


def read_snapshot(engine: Engine, day: dt.date) -> pd.DataFrame:
    """customer_id, segment, revenue, state, region of the snapshot of `day`."""
    return _snapshot_frame(_start_snapshot_read(engine, day).result())


def _start_snapshot_read(engine: Engine, day: dt.date) -> Future[pa.Table]:
    # a columnar read in the background: a snapshot has a row per customer, and a
    # migration reads two at once (row by row, one after the other, they took 6 s at a
    # million customers)
    return start_read(engine, SNAP.name, _SNAPSHOT_COLUMNS, "snapshot_date = :day", {"day": day})


def _snapshot_frame(table: pa.Table) -> pd.DataFrame:
    names = [c.name for c in _SNAPSHOT_COLUMNS]
    if not table.num_rows:
        return pd.DataFrame(columns=names)
    return table.select(names).to_pandas()


_SNAPSHOT_COLUMNS = (Col("customer_id", "customer_id", "str"), Col("segment", "segment", "str"),
                     Col("revenue", "revenue", "float"), Col("state", "state", "str"),
                     Col("region", "region", "str"))


def segment_migration(engine: Engine, as_of: dt.date, weeks: int = 1,
                      place: Place = ALL) -> Migration:
    """Migration between the snapshot `weeks` weeks before the latest one by `as_of`, and it."""
    earlier, later = resolve_snapshots(engine, as_of, weeks)
    return migration_between(engine, earlier, later, place)


def migration_between(engine: Engine, earlier: dt.date, later: dt.date,
                      place: Place = ALL) -> Migration:
    """Migration from the snapshot of `earlier` to that of `later` (both must exist): from
    the cells the refresh stored for the pair (`agg_migration`) when it did, else from the
    two snapshots."""
    cells = stored_cells(engine, earlier, later, place)
    if cells is None:
        before, after = _start_snapshot_read(engine, earlier), _start_snapshot_read(engine, later)
        cells = migration_cells(_snapshot_frame(before.result()), _snapshot_frame(after.result()))
    return from_cells(cells, earlier=earlier, later=later, place=place)


def transition(before: pd.DataFrame, after: pd.DataFrame, *, earlier: dt.date,
               later: dt.date, place: Place = ALL) -> Migration:
    """The migration between two snapshot frames (customer_id, segment, revenue, state, region)."""
    return from_cells(migration_cells(before, after), earlier=earlier, later=later, place=place)


CELL_COLUMNS = ["state", "region", "source", "target", "customers", "revenue"]


def migration_cells(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Customers and their revenue per place (state, region), earlier segment (`source`,
    or NEW_CUSTOMERS) and later segment (`target`, or NOT_IN_LATER) between two snapshot
    frames (customer_id, segment, revenue, state, region): every migration of any place
    adds up from these cells."""
    cols = ["customer_id", "segment", "revenue", "state", "region"]
    b = before[cols].rename(columns={c: f"{c}_b" for c in cols[1:]})
    a = after[cols].rename(columns={c: f"{c}_a" for c in cols[1:]})
    both = b.merge(a, on="customer_id", how="outer")
    in_later = both["segment_a"].notna()
    revenue = both["revenue_a"].where(in_later, both["revenue_b"])
    cells = pd.DataFrame({
        "state": both["state_a"].where(in_later, both["state_b"]).to_numpy(),
        "region": both["region_a"].where(in_later, both["region_b"]).to_numpy(),
        "source": both["segment_b"].fillna(NEW_CUSTOMERS).astype(object).to_numpy(),
        "target": both["segment_a"].fillna(NOT_IN_LATER).astype(object).to_numpy(),
        "revenue": pd.to_numeric(revenue, errors="coerce").fillna(0.0).to_numpy(),
    })
    grouped = cells.groupby(["state", "region", "source", "target"], dropna=False, sort=False)["revenue"]
    out = grouped.agg(["size", "sum"]).rename(columns={"size": "customers", "sum": "revenue"}).reset_index()
    return out.astype({"customers": "int64", "revenue": float})[CELL_COLUMNS]


def stored_cells(engine: Engine, earlier: dt.date, later: dt.date,
                 place: Place = ALL) -> pd.DataFrame | None:
    """The `agg_migration` cells of the pair in the place, or None when none are stored."""
    A = schema.agg_migration
    pair = (A.c.earlier == earlier) & (A.c.later == later)
    stmt = select(*[A.c[c] for c in CELL_COLUMNS]).where(pair)
    if not place.is_all:
        stmt = stmt.where(A.c[place.kind] == place.value)
    with engine.connect() as conn:
        if conn.execute(select(A.c.customers).where(pair).limit(1)).first() is None:
            return None
        rows = conn.execute(stmt).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=CELL_COLUMNS).astype(
        {"customers": "int64", "revenue": float})


def from_cells(cells: pd.DataFrame, *, earlier: dt.date, later: dt.date,
               place: Place = ALL) -> Migration:
    """The migration in `place` from cells (`migration_cells`), summed over the places in it."""
    if not place.is_all:
        cells = cells[cells[place.kind] == place.value]
    cells = (cells.groupby(["source", "target"], sort=False)[["customers", "revenue"]].sum()
             .reset_index())
    n = cells["customers"]
    rows = [s for s in SEGMENT_NAMES if (cells["source"] == s).any()]
    rows += sorted(set(cells["source"]) - set(SEGMENT_NAMES) - {NEW_CUSTOMERS})
    if (cells["source"] == NEW_CUSTOMERS).any():
        rows.append(NEW_CUSTOMERS)
    columns = [s for s in SEGMENT_NAMES if (cells["target"] == s).any()]
    columns += sorted(set(cells["target"]) - set(SEGMENT_NAMES) - {NOT_IN_LATER})
    if (cells["target"] == NOT_IN_LATER).any():
        columns.append(NOT_IN_LATER)

    grid = cells.set_index(["source", "target"])
    counts = (grid["customers"].unstack("target").reindex(index=rows, columns=columns)
              .fillna(0).astype(np.int64))
    rev = grid["revenue"].unstack("target").reindex(index=rows, columns=columns).fillna(0.0)
    for df in (counts, rev):
        df.index.name, df.columns.name = "from", "to"
    totals = counts.sum(axis=1)
    shares = counts.div(totals.where(totals > 0), axis=0)

    src_rank = cells["source"].map(RANK)
    tgt_rank = cells["target"].map(RANK)
    ranked = src_rank.notna() & tgt_rank.notna()
    up = ranked & (tgt_rank < src_rank)
    down = ranked & (tgt_rank > src_rank)
    new = cells["source"] == NEW_CUSTOMERS
    gone = cells["target"] == NOT_IN_LATER
    same = cells["source"] == cells["target"]

    flows = cells[~same & ~new & ~gone].copy()
    flows["share_of_source"] = flows["customers"] / flows["source"].map(totals).astype(float)
    flows["direction"] = [
        Flow(s, t, 0, 0.0, 0.0).direction for s, t in zip(flows["source"], flows["target"], strict=True)
    ]
    flows = flows.sort_values(["customers", "revenue", "source", "target"],
                              ascending=[False, False, True, True], ignore_index=True)
    flows = flows[["source", "target", "customers", "share_of_source", "revenue", "direction"]]

    return Migration(
        as_of=later, place=place, earlier=earlier, later=later,
        counts=counts, shares=shares, revenue=rev, flows=flows,
        by_segment=_by_segment(cells, same, new, gone),
        customers_earlier=int(n[~new].sum()), customers_later=int(n[~gone].sum()),
        stayed=int(n[same & ~new & ~gone].sum()),
        upgrades=int(n[up].sum()), downgrades=int(n[down].sum()),
        upgrade_revenue=float(cells.loc[up, "revenue"].sum()),
        downgrade_revenue=float(cells.loc[down, "revenue"].sum()),
        new_customers=int(n[new].sum()), new_revenue=float(cells.loc[new, "revenue"].sum()),
        not_in_later=int(n[gone].sum()),
    )


# --- stored cells (agg_migration) ----------------------------------------------------------


def start_earlier_reads(engine: Engine, later: dt.date) -> dict[dt.date, Future[pa.Table]]:
    """Background reads of the snapshots the spans of `STORED_WEEKS` before `later` start
    from (as `resolve_snapshots` picks them), by date."""
    with engine.connect() as conn:
        days = {_latest_snapshot(conn, later - dt.timedelta(weeks=weeks)) for weeks in STORED_WEEKS} - {None}
    return {day: _start_snapshot_read(engine, day) for day in sorted(days)}


def cells_since(reads: dict[dt.date, Future[pa.Table]], after: pd.DataFrame) -> dict[dt.date, pd.DataFrame]:
    """The migration cells from each earlier snapshot read (`start_earlier_reads`) to the
    snapshot frame `after`, by earlier date."""
    if after.empty:  # no snapshot is written: a migration never ends at it
        return {}
    return {day: migration_cells(_snapshot_frame(read.result()), after) for day, read in reads.items()}


def forget_cells(conn: Connection, days: Iterable[dt.date]) -> None:
    """Drop the stored cells of every pair that names one of `days` (snapshots rewritten)."""
    A, days = schema.agg_migration, list(days)
    if days:
        conn.execute(A.delete().where(A.c.earlier.in_(days) | A.c.later.in_(days)))


def write_cells(conn: Connection, later: dt.date, cells: dict[dt.date, pd.DataFrame]) -> int:
    """Store the cells from each earlier date to `later` (in the caller's transaction, the
    one that writes the snapshot of `later`); the rows written."""
    forget_cells(conn, [later])
    writer, rows = BulkWriter(conn), 0
    for earlier, frame in cells.items():
        if len(frame):
            rows += writer.insert(schema.agg_migration,
                                  frame.assign(earlier=earlier.isoformat(), later=later.isoformat()))
    return rows


def _by_segment(cells: pd.DataFrame, same: pd.Series, new: pd.Series,
                gone: pd.Series) -> pd.DataFrame:
    moved = ~same & ~new & ~gone
    names = [s for s in SEGMENT_NAMES
             if (cells["source"] == s).any() or (cells["target"] == s).any()]

    def total(mask: pd.Series, by: str, value: str = "customers") -> pd.Series:
        return cells[mask].groupby(by)[value].sum()

    out = pd.DataFrame({"segment": names})
    out["earlier"] = out["segment"].map(total(~new, "source")).fillna(0).astype(int)
    out["later"] = out["segment"].map(total(~gone, "target")).fillna(0).astype(int)
    out["change"] = out["later"] - out["earlier"]
    out["stayed"] = out["segment"].map(total(same & ~new, "source")).fillna(0).astype(int)
    out["revenue_in"] = out["segment"].map(total(moved, "target", "revenue")).fillna(0.0)
    out["revenue_out"] = out["segment"].map(total(moved, "source", "revenue")).fillna(0.0)
    out["revenue_new"] = out["segment"].map(total(new, "target", "revenue")).fillna(0.0)
    out["net_revenue"] = out["revenue_in"] + out["revenue_new"] - out["revenue_out"]
    return out


def _as_date(value) -> dt.date:  # noqa: ANN001
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])
