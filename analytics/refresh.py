"""The refresh: features → RFM, clusters, tiers (+ churn/CLV scorers) → the score tables.

`refresh` runs after every load and nightly. It computes everything first, then writes
in ONE transaction, so readers never see features of one as-of date next to scores of
another:
- `customer_features`: all rows replaced;
- `customer_scores`: all rows replaced (as_of, model_version, RFM, cluster, tier and the
  scorers' columns);
- `segment_snapshots`: the rows of the as-of date replaced (earlier dates are kept, for
  segment migration);
- `meta`: "as_of" (AsOf.to_dict()), "refreshed_at", "data_fingerprint" (compare with
  `data_fingerprint(engine)` to skip work when the data has not changed), "refresh" (this
  report) and "clusters" (k selection, cluster profiles and a sample of the 2-D
  projection, for answers and charts without re-clustering);
- the answer facts (`agg_*`, `analytics.facts`), computed on a thread of lower CPU priority
  while the clusters (on another thread) and scorers run (they need only the dataset and
  the RFM segments);
- `agg_migration`: the segment migration cells from the snapshots the digest's and
  `/migration`'s default spans start from to this snapshot (`analytics.migration`),
  computed on another thread beside them.

Scorers (churn, P(alive), CLV, …) plug in without changing this module: a scorer is a
callable ``scorer(engine, features, scores, as_of) -> DataFrame`` that gets the features,
the scores so far (each scorer sees the columns of the ones before it) and the as-of
date, and returns `customer_id` (column or index) plus any of `SCORER_COLUMNS`. Its
optional `version` attribute goes into the model version; with a true `uses_dataset`
attribute it is also passed ``dataset=`` (the store as read once by the refresh,
`analytics.dataset.Dataset`) so that it need not read the store again, and with a true
`uses_fingerprint` attribute ``fingerprint=`` (the `analytics.model_store.data_fingerprint`
hash, from the same queries as the refresh's own summary). A scorer with a false
`uses_scores` attribute is passed ``scores=None`` and runs while the clusters are made on
a thread beside it (its rows are still merged in its turn). A scorer with a true
`uses_dataset` and a ``prepare(dataset, as_of)`` method has it called on a thread of its
own as soon as the store is read, while the features and RFM scores are made; what it
returns (None: nothing) is passed to the call as ``prepared=`` (the churn scorer makes its
churn features there). A scorer that raises, or
returns other columns, is reported in `RefreshReport.scorer_errors` and skipped; the
rest of the refresh still completes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Engine, Table
from threadpoolctl import threadpool_limits

from analytics.asof import AsOf, resolve_as_of
from analytics.clusters import ClusterResult, cluster_customers
from analytics.columnar import StagedRows, staging_pays, start_readers, start_staging
from analytics.dataset import Dataset
from analytics.facts import ComputedFacts, build_facts, compute_all_facts, customer_facts_frame
from analytics.features import features_of
from analytics.joins import join_by_customer, same_customers
from analytics.migration import cells_since, start_earlier_reads, write_cells
from analytics.model_store import DataFingerprint, read_fingerprint
from analytics.priority import lower_priority, niceness
from analytics.rfm import rfm_scores
from analytics.snapshot import read_with_snapshot, snapshot_kept
from storage import schema
from storage.loaders.bulk import BulkWriter, sqlite_arrow, sqlite_definition
from storage.loaders.context import defer_indexes, restore_indexes
from storage.store import current_watermark, set_meta

MODEL_VERSION = "rp1"  # bump when the feature, RFM or cluster rules change
SCORER_COLUMNS = ("churn_prob", "churn_source", "p_alive", "expected_purchases",
                  "expected_spend", "clv", "value_at_risk", "risk_band")
PROJECTION_SAMPLE = 2_000
# timings of work done on a thread beside the other stages ("clusters_wait": how long the
# clusters held up the refresh after the scorers that do not need them)
OVERLAPPED = ("facts", "migration", "clusters")
YIELDING_NICE = 10  # how much lower the priority of the threads of work needed last

Scorer = Callable[[Engine, pd.DataFrame, pd.DataFrame, dt.date], pd.DataFrame]


@dataclass(frozen=True, eq=False)
class RefreshReport:
    """What a refresh did: the as-of, counts, model facts and seconds per stage."""

    as_of: AsOf
    customers: int
    model_version: str
    segments: dict[str, int]  # customers per RFM segment
    k: int  # behaviour clusters (0 when there is nobody to cluster)
    knee_k: int | None
    fallbacks: tuple[str, ...]  # RFM scoring fallbacks used
    timings: dict[str, float]  # stage -> seconds
    fingerprint: dict[str, Any]
    scorer_errors: dict[str, str] = field(default_factory=dict)
    read: dict[str, Any] = field(default_factory=dict)  # analytics.snapshot.ReadReport

    @property
    def empty(self) -> bool:
        return self.customers == 0

    @property
    def seconds(self) -> float:
        """Wall seconds: the stages one after another ("facts" and "migration" ran beside them)."""
        return sum(v for k, v in self.timings.items() if k not in OVERLAPPED)

    @property
    def message(self) -> str:
        """One line for people."""
        if self.empty:
            return (f"No purchases on or before {self.as_of.date}: nothing to score "
                    f"(tables cleared, as-of recorded).")
        return (f"Scored {self.customers:,} customers as of {self.as_of.date} "
                f"({len(self.segments)} RFM segments, {self.k} clusters) in {self.seconds:.1f} s.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.to_dict(), "customers": self.customers,
            "model_version": self.model_version, "segments": self.segments, "k": self.k,
            "knee_k": self.knee_k, "fallbacks": list(self.fallbacks),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "fingerprint": self.fingerprint, "scorer_errors": self.scorer_errors, "read": self.read,
        }


def data_fingerprint(engine: Engine) -> dict[str, Any]:
    """Cheap summary of the canonical tables: row counts and the latest purchase time."""
    return fingerprint_summary(read_fingerprint(engine))


def fingerprint_summary(fingerprint: DataFingerprint) -> dict[str, Any]:
    """The refresh's summary (meta "data_fingerprint") of fingerprint aggregates already read."""
    last = fingerprint.last_purchase
    return {**fingerprint.counts,
            "last_purchased_at": None if last is None else pd.Timestamp(last).isoformat()}


def refresh(
    engine: Engine,
    as_of: AsOf | dt.date | None = None,
    seed: int = 42,
    scorers: Sequence[Scorer] = (),
    *,
    k: int | None = None,
    full_read: bool = False,
) -> RefreshReport:
    """Rebuild features and scores as of `as_of` (None: auto; a date: fixed) and store them.

    The store is read incrementally when a snapshot of the last read is kept
    (`analytics.snapshot`); `full_read` reads all of it."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    if full_read or not snapshot_kept(engine):
        start_readers(engine)  # the whole store will be read: its readers start meanwhile
        as_of = _resolved(engine, as_of)
        # taken before the store is read: data loaded in between then counts as new at the
        # next refresh (the churn model is retrained for it) instead of as already seen
        fingerprint = read_fingerprint(engine)
        lap("as_of")
        # one columnar read shared by features, scorers and facts
        data, read = read_with_snapshot(engine, fingerprint, full=full_read)
    else:
        # The kept snapshot is mapped and brought up to date while the as-of date and the
        # fingerprint (scans of whole tables: seconds at 10M orders) are worked out beside
        # it. A load that finished meanwhile may be in one and not the others: then all three
        # are taken again, one after the other as above.
        watermark, asked = current_watermark(engine), as_of
        ends: list[float] = []
        with ThreadPoolExecutor(2, thread_name_prefix="pulse-early") as early:
            as_of_job = early.submit(_resolved, engine, asked)
            fingerprint_job = early.submit(read_fingerprint, engine)
            for job in (as_of_job, fingerprint_job):
                job.add_done_callback(lambda _: ends.append(time.perf_counter()))
            data, read = read_with_snapshot(engine, fingerprint_job)
            as_of, fingerprint = as_of_job.result(), fingerprint_job.result()
        timings["as_of"] = max(ends) - clock  # (worked out beside the read: "read" includes it)
        if current_watermark(engine) != watermark:
            del data
            as_of = _resolved(engine, asked)
            fingerprint = read_fingerprint(engine)
            data, read = read_with_snapshot(engine, fingerprint)
    lap("read")
    # the snapshots the digest's and /migration's spans start from, read in the background
    # (after the dataset: their reads would hold up its reader processes)
    earlier_reads = start_earlier_reads(engine, as_of.date)
    with _Preparations(scorers, data, as_of.date) as preparations:
        features = features_of(data, as_of.date)
        lap("features")
        rfm = rfm_scores(features)
        lap("rfm")

        errors: dict[str, str] = {}
        versions = []
        # The answer facts need only the dataset and the RFM segments (scorers never change a
        # segment), so they are computed on a thread while the clusters and scorers run: numpy,
        # pandas and scikit-learn let go of the GIL in their loops, and both cores work.
        snapshot = _snapshot_rows(rfm, features)
        day = as_of.date.isoformat()
        feature_rows, snapshot_rows = features.assign(as_of=day), snapshot.assign(snapshot_date=day)
        # The facts and the migration cells are needed only at the end of the write, the scores
        # before it: their threads give way to this one and the clusters' for the CPU, so the
        # scores come sooner instead of every thread sharing both cores alike.
        # (native libraries single-threaded while three threads work: see cluster_customers;
        # set here once, so the threads' own limits, entered and left in any order, restore it)
        with _Writes(engine) as writes, ThreadPoolExecutor(1, thread_name_prefix="pulse-beside") as pool, \
                ThreadPoolExecutor(2, thread_name_prefix="pulse-last", initializer=lower_priority,
                                   initargs=(niceness() + YIELDING_NICE,)) as last, \
                threadpool_limits(limits=1):
            # on SQLite, helper processes stage the features and the snapshot for the write now
            writes.stage(schema.customer_features, feature_rows, with_indexes=True)
            writes.stage(schema.segment_snapshots, snapshot_rows)
            facts_job = last.submit(partial(compute_all_facts, beside=True), data, as_of.date,
                                    rfm[["customer_id", "segment"]])
            cells_job = last.submit(_timed, cells_since, earlier_reads, snapshot)
            # the clusters are made on a thread too, while the scorers that do not read the
            # scores table (the churn scorer) run on this one: neither waits for the other
            clusters_job = pool.submit(_timed, cluster_customers, features, seed, k) if len(features) else None
            outputs: dict[int, pd.DataFrame | None] = {}
            for i, scorer in enumerate(scorers):
                if not getattr(scorer, "uses_scores", True):
                    outputs[i] = _run_scorer(scorer, engine, features, None, as_of.date, data, fingerprint,
                                             errors, lap, preparations.result(i))
            clusters, timings["clusters"] = clusters_job.result() if clusters_job else (None, 0.0)
            lap("clusters_wait")
            scores = _scores_table(rfm, clusters)
            for i, scorer in enumerate(scorers):
                extra = outputs[i] if i in outputs else _run_scorer(
                    scorer, engine, features, scores.copy(), as_of.date, data, fingerprint, errors, lap,
                    preparations.result(i))
                if extra is None:
                    continue
                try:
                    scores = _merge_scorer(scores, extra)
                except Exception as exc:  # noqa: BLE001 - rows that do not fit skip the scorer, not the refresh
                    errors[_scorer_name(scorer)] = f"{type(exc).__name__}: {exc}"
                else:
                    versions.append(str(getattr(scorer, "version", _scorer_name(scorer))))
            k_fitted = clusters.k if clusters else 0
            model_version = "+".join([f"{MODEL_VERSION}-k{k_fitted}-s{seed}", *versions])[:64]
            report = RefreshReport(
                as_of=as_of, customers=len(features), model_version=model_version,
                segments={s: int(n) for s, n in rfm["segment"].value_counts().items()},
                k=k_fitted, knee_k=clusters.knee_k if clusters else None,
                fallbacks=tuple(rfm.attrs.get("fallbacks", ())), timings=timings,
                fingerprint=fingerprint_summary(fingerprint), scorer_errors=errors, read=read.to_dict(),
            )
            customer_rows = customer_facts_frame(features, scores)
            # the features, scores and snapshot are written while the facts may still be computed
            # on their thread (at 10M orders they take longer than the clusters and scorers)
            _write(engine, as_of, feature_rows, scores, snapshot_rows, model_version, clusters, report, seed,
                   facts_job, cells_job, customer_rows, writes)
        lap("write")
        timings["write"] -= timings["facts_wait"]  # waited for inside the write, counted apart
        return report


class _Preparations:
    """The scorers' work that needs only the dataset and the as-of date (a scorer's optional
    ``prepare(dataset, as_of)``, for a scorer with a true `uses_dataset`), started on a
    thread as soon as the store is read: the features and RFM scores are made on one core
    meanwhile, and the other would wait. What it returns is passed to its call."""

    def __init__(self, scorers: Sequence[Scorer], data: Dataset, day: dt.date):
        self.jobs: dict[int, Future[Any]] = {}
        self.pool: ThreadPoolExecutor | None = None
        for i, scorer in enumerate(scorers):
            prepare = getattr(scorer, "prepare", None)
            if prepare is None or not getattr(scorer, "uses_dataset", False):
                continue
            if self.pool is None:
                self.pool = ThreadPoolExecutor(1, thread_name_prefix="pulse-prepare")
            self.jobs[i] = self.pool.submit(prepare, data, day)

    def result(self, i: int) -> Any:
        """What scorer `i` prepared, once it is ready; None when it has no preparation or its
        preparation failed (its call then does the work itself and reports what fails)."""
        job = self.jobs.pop(i, None)
        if job is None:
            return None
        try:
            return job.result()
        except Exception:  # noqa: BLE001 - see above
            return None

    def __enter__(self) -> _Preparations:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _scorer_name(scorer: Scorer) -> str:
    return getattr(scorer, "__name__", type(scorer).__name__)


def _run_scorer(scorer: Scorer, engine: Engine, features: pd.DataFrame, scores: pd.DataFrame | None,
                day: dt.date, data: Any, fingerprint: DataFingerprint, errors: dict[str, str],
                lap: Callable[[str], None], prepared: Any = None) -> pd.DataFrame | None:
    """The scorer's rows (None when it raised: the error is recorded), its time as a lap.
    `prepared`: what its ``prepare`` returned (passed as ``prepared=`` when not None)."""
    name = _scorer_name(scorer)
    extra: dict[str, Any] = {}
    if getattr(scorer, "uses_dataset", False):
        extra["dataset"] = data
    if getattr(scorer, "uses_fingerprint", False):
        extra["fingerprint"] = fingerprint.digest
    if prepared is not None:
        extra["prepared"] = prepared
    try:
        out = scorer(engine, features, scores, day, **extra)
    except Exception as exc:  # noqa: BLE001 - a failing scorer must not stop the refresh
        errors[name] = f"{type(exc).__name__}: {exc}"
        out = None
    lap(f"scorer:{name}")
    return out


def _resolved(engine: Engine, as_of: AsOf | dt.date | None) -> AsOf:
    return as_of if isinstance(as_of, AsOf) else resolve_as_of(engine, fixed=as_of)


def _scores_table(rfm: pd.DataFrame, clusters: ClusterResult | None) -> pd.DataFrame:
    table = rfm[["customer_id", "r_score", "f_score", "m_score", "segment"]]
    if clusters is None:
        return table.assign(cluster=pd.Series(dtype="int64"), cluster_name=pd.Series(dtype=object),
                            tier=pd.Series(dtype=object))
    return join_by_customer(table, clusters.assignments[["customer_id", "cluster", "cluster_name", "tier"]])


def _merge_scorer(scores: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    if "customer_id" not in extra.columns:
        extra = extra.rename_axis("customer_id").reset_index()
    unknown = set(extra.columns) - {"customer_id", *SCORER_COLUMNS}
    if unknown:
        raise ValueError(f"returned columns not in customer_scores: {sorted(unknown)}")
    kept = scores.drop(columns=[c for c in extra.columns if c != "customer_id" and c in scores.columns])
    # (rows for the scores' customers in their order are one per customer, as the scores')
    aligned = same_customers(kept, extra)
    if not aligned and extra["customer_id"].duplicated().any():
        raise ValueError("returned more than one row for a customer")
    return join_by_customer(kept, extra, aligned=aligned)


def _snapshot_rows(rfm: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """The segment snapshot of the as-of date (scorers never change a segment)."""
    return join_by_customer(rfm[["customer_id", "segment"]], features[["customer_id", "revenue", "state", "region"]])


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    return fn(*args), time.perf_counter() - started


class _Writes:
    """The refresh's big tables on their way to the write: staged by a helper process
    where that pays (`analytics.columnar.start_staging`), else inserted from the frame."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.staged: dict[str, StagedRows] = {}

    def stage(self, table: Table, frame: pd.DataFrame, *, with_indexes: bool = False) -> None:
        """Start staging `frame`'s rows for `table` (nothing happens where it does not pay).
        `with_indexes`: in a copy of the table with its indexes built, for a table that is
        emptied and filled again (see `copies_indexes`)."""
        if not staging_pays(self.engine, len(frame)):
            return
        try:
            rows = sqlite_arrow(table, frame)
        except (TypeError, ValueError, pa.ArrowException):
            return  # a column Arrow cannot carry: those rows are bound from Python
        definition = []
        if with_indexes:
            with self.engine.connect() as conn:
                definition = sqlite_definition(conn, table)
        staged = start_staging(self.engine, rows, definition)
        if staged is not None:
            self.staged[table.name] = staged

    def copies_indexes(self, table: Table) -> bool:
        """Whether `table`'s rows are staged with its indexes built (waits for the staging):
        copied into the emptied table, they bring their index entries, and its indexes must
        stay (on SQLite's one writer the index builds took 4.8 s of the 10M refresh's write,
        in a helper process they are built beside it)."""
        staged = self.staged.get(table.name)
        return staged is not None and staged.table == table.name and staged.path() is not None

    def insert(self, writer: BulkWriter, table: Table, frame: pd.DataFrame) -> int:
        """Insert `frame` into `table`: from its staged file when there is one."""
        staged = self.staged.get(table.name)
        path = staged.path() if staged is not None else None
        if path is None:
            return writer.insert(table, frame)
        return writer.insert_staged(table, path, list(frame.columns), as_made=self.copies_indexes(table))

    def __enter__(self) -> _Writes:
        return self

    def __exit__(self, *exc: object) -> None:
        for staged in self.staged.values():
            staged.close()


def _write(engine: Engine, as_of: AsOf, feature_rows: pd.DataFrame, scores: pd.DataFrame,
           snapshot: pd.DataFrame, model_version: str, clusters: ClusterResult | None,
           report: RefreshReport, seed: int, facts_job: Future[ComputedFacts],
           cells_job: Future[tuple[dict[dt.date, pd.DataFrame], float]], customer_rows: pd.DataFrame,
           writes: _Writes) -> None:
    """Replace the features, scores, the as-of snapshot, the answer facts and the migration
    cells in one transaction; the facts and cells are waited for after the rows that do not
    need them are written (the wait is timed as "facts_wait"). `feature_rows` and
    `snapshot` are the rows to write (as-of dates set), those `writes` may have staged."""
    score_rows = scores.assign(as_of=as_of.date.isoformat(), model_version=model_version)
    score_rows = score_rows[[c.name for c in schema.customer_scores.columns if c.name in score_rows.columns]]
    writes.stage(schema.customer_scores, score_rows, with_indexes=True)
    S = schema.segment_snapshots
    timings = report.timings
    with engine.connect() as conn:
        writer = BulkWriter(conn)
        try:
            with conn.begin():
                conn.execute(schema.customer_features.delete())
                conn.execute(schema.customer_scores.delete())
                conn.execute(S.delete().where(S.c.snapshot_date == as_of.date))
                deferred = []
                # the scores last: their rows are staged (and indexed) while the others are copied
                for table, rows in ((schema.customer_features, feature_rows), (S, snapshot),
                                    (schema.customer_scores, score_rows)):
                    if not writes.copies_indexes(table):
                        # (SQLite) their secondary indexes built after the rows, not row by row
                        # at random places: at 100,000 customers the scores' insert took 1.5 s
                        # with them and 0.35 s without, plus 0.5 s to build them
                        deferred += defer_indexes(conn, (table,))
                    with writer.overlapped():  # SQLite inserts one batch while the next one's rows are made
                        writes.insert(writer, table, rows)
                restore_indexes(conn, deferred)
                waited = time.perf_counter()
                facts = facts_job.result()
                cells, timings["migration"] = cells_job.result()
                timings["facts_wait"] = time.perf_counter() - waited
                timings["facts"] = facts.seconds  # on a thread, beside the clusters, scorers and the write
                build_facts(engine, as_of.date, conn, computed=facts, customers=customer_rows)
                write_cells(conn, as_of.date, cells)
                set_meta(conn, "as_of", as_of.to_dict())
                set_meta(conn, "refreshed_at", dt.datetime.now().isoformat(timespec="seconds"))
                set_meta(conn, "data_fingerprint", report.fingerprint)
                set_meta(conn, "refresh", report.to_dict())
                set_meta(conn, "clusters", _cluster_summary(clusters, seed))
        finally:
            try:
                writer.detach_staged()  # (SQLite detaches a file read in a transaction only after it)
            except Exception:  # noqa: BLE001 - a connection left with a file attached is not reused
                conn.invalidate()


def _cluster_summary(clusters: ClusterResult | None, seed: int) -> dict[str, Any] | None:
    """Small JSON of the clustering: selection metrics, profiles, a projection sample."""
    if clusters is None:
        return None
    proj = clusters.projection
    if len(proj) > PROJECTION_SAMPLE:
        take = np.sort(np.random.default_rng(seed).choice(len(proj), PROJECTION_SAMPLE, replace=False))
        proj = proj.iloc[take]
    return {
        "k": clusters.k, "knee_k": clusters.knee_k, "seed": clusters.seed,
        "features_used": list(clusters.features_used), "sample_size": clusters.sample_size,
        "minibatch": clusters.minibatch, "explained_variance": list(clusters.explained_variance),
        "selection": _records(clusters.selection),
        "profiles": _records(clusters.profiles),
        "projection": _records(proj[["x", "y", "cluster"]].round(4)),
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records (NaN → None, numpy scalars → Python)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in clean.to_dict("records")]
