"""The benchmark's stages, each run in its own process (so its peak RSS is its own).

    python -m benchmarks.stages STAGE '{"url": ..., ...}'

A stage prints one line ``BENCH_RESULT {json}`` with its wall seconds and figures; the
suite (`benchmarks.suite`) starts it, reads that line and the child's rusage.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

RESULT_TAG = "BENCH_RESULT "


def _emit(result: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)


def _as_of(params: dict[str, Any]) -> dt.date:
    return dt.date.fromisoformat(params["as_of"])


# --- load -------------------------------------------------------------------------------


def stage_load(params: dict[str, Any]) -> dict[str, Any]:
    """CSV folder → a fresh store (validation included), then the auto as-of date."""
    from analytics.asof import resolve_as_of
    from storage.loaders import load_path
    from storage.store import open_store

    engine = open_store(params["url"])
    t0 = time.perf_counter()
    report = load_path(engine, params["data_dir"], "olist")
    seconds = time.perf_counter() - t0
    as_of = resolve_as_of(engine).date
    engine.dispose()
    orders = report.counts.get("orders", 0)
    return {
        "seconds": seconds, "rows": orders, "rows_read": report.rows_read,
        "rows_per_s": orders / seconds if seconds else None,
        "all_rows_per_s": report.rows_read / seconds if seconds else None,
        "tables": report.tables, "quarantined": report.rows_quarantined, "as_of": as_of.isoformat(),
    }


# --- the DuckDB yardstick ---------------------------------------------------------------

_YARD_FEATURES = """
CREATE OR REPLACE TEMP TABLE y_features AS
WITH items AS (
    SELECT order_id, SUM(price) AS items_value, SUM(freight_value) AS freight_value
    FROM i GROUP BY order_id
), purchases AS (
    SELECT c.customer_unique_id AS customer_id, o.order_purchase_timestamp AS ts,
           COALESCE(items.items_value, 0) + COALESCE(items.freight_value, 0) AS revenue
    FROM o JOIN c ON c.customer_id = o.customer_id
    LEFT JOIN items ON items.order_id = o.order_id
    WHERE o.order_status NOT IN ('canceled', 'unavailable')
      AND o.order_purchase_timestamp < $cutoff
)
SELECT customer_id, MIN(ts) AS first_purchase, MAX(ts) AS last_purchase,
       COUNT(*) AS orders, SUM(revenue) AS revenue,
       date_diff('day', CAST(MAX(ts) AS DATE), $as_of) AS recency_days
FROM purchases GROUP BY customer_id
"""

_YARD_SCORES = """
SELECT customer_id,
       LEAST(1 + FLOOR(5 * (RANK() OVER (ORDER BY recency_days DESC) - 1) / n), 5) AS r_score,
       LEAST(1 + FLOOR(5 * (RANK() OVER (ORDER BY orders) - 1) / n), 5) AS f_score,
       LEAST(1 + FLOOR(5 * (RANK() OVER (ORDER BY revenue) - 1) / n), 5) AS m_score
FROM y_features, (SELECT COUNT(*) AS n FROM y_features)
"""

_YARD_COHORTS = """
WITH activity AS (
    SELECT DISTINCT c.customer_unique_id AS customer_id,
           12 * year(o.order_purchase_timestamp) + month(o.order_purchase_timestamp) AS p
    FROM o JOIN c ON c.customer_id = o.customer_id
    WHERE o.order_status NOT IN ('canceled', 'unavailable')
      AND o.order_purchase_timestamp < $cutoff
), first AS (SELECT customer_id, MIN(p) AS c FROM activity GROUP BY customer_id)
SELECT first.c AS cohort, activity.p - first.c AS k, COUNT(*) AS active
FROM activity JOIN first USING (customer_id)
WHERE activity.p - first.c <= 12
GROUP BY 1, 2 ORDER BY 1, 2
"""


def stage_yardstick(params: dict[str, Any]) -> dict[str, Any]:
    """DuckDB in memory: per-customer RFM features, quintile scores and the monthly cohort
    matrix from the generated CSVs (reading the CSVs is timed apart)."""
    import duckdb

    data = Path(params["data_dir"])
    con = duckdb.connect(":memory:")
    t0 = time.perf_counter()
    for name, stem, cols in (
        ("o", "olist_orders_dataset", "order_id, customer_id, order_status, order_purchase_timestamp"),
        ("c", "olist_customers_dataset", "customer_id, customer_unique_id"),
        ("i", "olist_order_items_dataset", "order_id, price, freight_value"),
    ):
        path = next(data.glob(stem + ".csv*"))
        con.execute(f"CREATE TABLE {name} AS SELECT {cols} FROM read_csv_auto('{path}')")
    read_s = time.perf_counter() - t0
    as_of = _as_of(params)
    args = {"cutoff": dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time()), "as_of": as_of}
    t1 = time.perf_counter()
    con.execute(_YARD_FEATURES, args)
    scores = con.execute(_YARD_SCORES).to_arrow_table()
    cohorts = con.execute(_YARD_COHORTS, {"cutoff": args["cutoff"]}).fetchdf()
    seconds = time.perf_counter() - t1
    return {"seconds": seconds, "csv_read_s": read_s, "rows": params.get("orders"),
            "customers": scores.num_rows, "cohort_cells": len(cohorts)}


# --- features + RFM + cohorts, and the whole refresh ---------------------------------------


def stage_features(params: dict[str, Any]) -> dict[str, Any]:
    """features + RFM + the monthly cohort matrix, in-process, from the store."""
    from analytics.cohorts import cohort_retention
    from analytics.features import build_features
    from analytics.rfm import rfm_scores
    from storage.store import open_store

    engine = open_store(params["url"])
    as_of = _as_of(params)
    t0 = time.perf_counter()
    features = build_features(engine, as_of)
    t1 = time.perf_counter()
    rfm = rfm_scores(features)
    t2 = time.perf_counter()
    cohorts = cohort_retention(engine, as_of)
    t3 = time.perf_counter()
    engine.dispose()
    return {"seconds": t3 - t0, "rows": params.get("orders"), "customers": len(features),
            "parts": {"features": t1 - t0, "rfm": t2 - t1, "cohorts": t3 - t2},
            "segments": int(rfm["segment"].nunique()), "cohorts": len(cohorts.cohorts)}


def _scorers(params: dict[str, Any]) -> tuple:
    if not params.get("scorers", True):
        return ()
    try:
        from analytics.risk import default_scorers
    except Exception:  # noqa: BLE001 - the churn scorer may be absent in this checkout
        return ()
    return default_scorers(seed=42)


def stage_refresh(params: dict[str, Any]) -> dict[str, Any]:
    """The whole refresh (features, RFM, clusters, scorers, write). With `retrain` the churn
    model is trained (the model-training figure); without, the stored model is reused."""
    from analytics.refresh import refresh
    from storage.store import open_store

    engine = open_store(params["url"])
    scorers = _scorers(params)
    for s in scorers:
        if params.get("retrain") and hasattr(s, "retrain"):
            s.retrain = True
    t0 = time.perf_counter()
    report = refresh(engine, _as_of(params), scorers=scorers)
    seconds = time.perf_counter() - t0
    engine.dispose()
    return {"seconds": seconds, "rows": params.get("orders"), "customers": report.customers,
            "parts": {k: round(v, 3) for k, v in report.timings.items()},
            "scorers": [getattr(s, "__name__", type(s).__name__) for s in scorers],
            "scorer_errors": report.scorer_errors, "k": report.k}


# --- answers and the digest -----------------------------------------------------------------

ANSWER_COMMANDS = (
    "/kpis", "/kpis SP", "/cohorts", "/cohorts weekly", "/ltv", "/ltv region",
    "/delivery", "/payments", "/finance", "/migration", "/churn-risk", "/churn-risk SP top 20",
    "/model",
)


def _router(url: str):  # noqa: ANN202 - bot.router.Router
    from bot.router import Router
    from bot.settings import load_settings
    from storage.store import open_store

    settings = load_settings(env={"PULSE_DATABASE_URL": url}, dotenv=None)
    engine = open_store(url)
    return Router(engine, settings), engine


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))]


def stage_answers(params: dict[str, Any]) -> dict[str, Any]:
    """Each command's answer (figures + charts rendered): a cold pass, warm passes, then 20
    concurrent commands; and `/export-at-risk` of up to `export_rows` rows."""
    router, engine = _router(params["url"])
    commands = [c for c in ANSWER_COMMANDS if c.split()[0].lstrip("/") in router.commands]
    per: dict[str, list[float]] = {c: [] for c in commands}
    errors: dict[str, str] = {}
    cold: dict[str, float] = {}
    for rnd in range(int(params.get("passes", 2)) + 1):
        for text in commands:
            t0 = time.perf_counter()
            answer = router.handle(text)
            took = time.perf_counter() - t0
            if rnd == 0:
                cold[text] = took
            else:
                per[text].append(took)
            if answer.is_error:
                errors[text] = answer.summary[:200]
    warm = [v for vs in per.values() for v in vs]
    # 20 at once (what a busy channel does): the time each waits for its answer
    burst = [commands[i % len(commands)] for i in range(20)]

    def timed(text: str) -> float:
        t0 = time.perf_counter()
        router.handle(text)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=20) as pool:
        concurrent = list(pool.map(timed, burst))
    burst_s = time.perf_counter() - t0
    export_rows = int(params.get("export_rows", 100_000))
    t0 = time.perf_counter()
    exported = router.handle(f"/export-at-risk min-prob 0 limit {export_rows}")
    export_s = time.perf_counter() - t0
    if exported.is_error:
        errors["/export-at-risk"] = exported.summary[:200]
    engine.dispose()
    return {
        "seconds": statistics.median(warm or list(cold.values())) if commands else None,
        "p95_cold": _pct(list(cold.values()), 0.95), "p95_warm": _pct(warm, 0.95),
        "p95_concurrent20": _pct(concurrent, 0.95), "burst20_s": burst_s,
        "export_s": export_s, "export_rows": export_rows,
        "cold": cold, "warm_max": {c: max(v) for c, v in per.items() if v}, "errors": errors,
    }


def stage_digest(params: dict[str, Any]) -> dict[str, Any]:
    """Build the weekly digest with all its charts."""
    from bot.digest import build_digest

    router, engine = _router(params["url"])
    t0 = time.perf_counter()
    digest = build_digest(engine, router.settings)
    seconds = time.perf_counter() - t0
    engine.dispose()
    return {"seconds": seconds, "charts": len(digest.charts)}


STAGES = {
    "load": stage_load, "yardstick": stage_yardstick, "features": stage_features,
    "refresh": stage_refresh, "answers": stage_answers, "digest": stage_digest,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage, params = argv[0], json.loads(argv[1])
    os.environ.setdefault("MPLBACKEND", "Agg")
    _emit(STAGES[stage](params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
