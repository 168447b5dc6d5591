"""The benchmark's stages, each run in its own process (so its peak RSS is its own).

    python -m benchmarks.stages STAGE '{"url": ..., ...}'

A stage prints one line ``BENCH_RESULT {json}`` with its wall seconds and figures; the
suite (`benchmarks.suite`) starts it, reads that line and the child's rusage.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
    scores = con.sql(_YARD_SCORES).to_arrow_table()  # (a DB-API result would copy the rows once more)
    cohorts = con.execute(_YARD_COHORTS, {"cutoff": args["cutoff"]}).fetchdf()
    seconds = time.perf_counter() - t1
    return {"seconds": seconds, "csv_read_s": read_s, "rows": params.get("orders"),
            "customers": scores.num_rows, "cohort_cells": len(cohorts)}


# --- features + RFM + cohorts, and the whole refresh ---------------------------------------


def stage_features(params: dict[str, Any]) -> dict[str, Any]:
    """features + RFM + the monthly cohort matrix, in-process, from the store (read once, as
    the refresh does; "features" includes that read, also reported apart as "read")."""
    from analytics.cohorts import cohort_retention
    from analytics.dataset import read_dataset
    from analytics.features import build_features
    from analytics.rfm import rfm_scores
    from storage.store import open_store

    engine = open_store(params["url"])
    as_of = _as_of(params)
    t0 = time.perf_counter()
    data = read_dataset(engine, full=False)
    t_read = time.perf_counter()
    features = build_features(engine, as_of, dataset=data)
    t1 = time.perf_counter()
    rfm = rfm_scores(features)
    t2 = time.perf_counter()
    cohorts = cohort_retention(engine, as_of, dataset=data)
    t3 = time.perf_counter()
    engine.dispose()
    return {"seconds": t3 - t0, "rows": params.get("orders"), "customers": len(features),
            "parts": {"features": t1 - t0, "rfm": t2 - t1, "cohorts": t3 - t2, "read": t_read - t0},
            "segments": int(rfm["segment"].nunique()), "cohorts": len(cohorts.cohorts)}


def _scorers(params: dict[str, Any]) -> tuple:
    if not params.get("scorers", True):
        return ()
    try:
        from analytics.risk import default_scorers
    except Exception:  # noqa: BLE001 - the churn scorer may be absent in this checkout
        return ()
    return default_scorers(seed=42, retrain_after_days=int(params.get("retrain_after_days", 0)))


def stage_refresh(params: dict[str, Any]) -> dict[str, Any]:
    """The whole refresh (features, RFM, clusters, scorers, write). With `retrain` the churn
    model is trained (the model-training figure); without, the stored model is reused."""
    from analytics.refresh import refresh
    from bot.memory import refresh_malloc
    from storage.store import open_store

    engine = open_store(params["url"])
    scorers = _scorers(params)
    for s in scorers:
        if params.get("retrain") and hasattr(s, "retrain"):
            s.retrain = True
    t0 = time.perf_counter()
    # the whole store read, as a first refresh (or `pulse refresh --full`) does, with malloc
    # set as `pulse refresh` and the bot's refresh process set it
    with refresh_malloc():
        report = refresh(engine, _as_of(params), scorers=scorers, full_read=True)
    seconds = time.perf_counter() - t0
    engine.dispose()
    return {"seconds": seconds, "rows": params.get("orders"), "customers": report.customers,
            "parts": {k: round(v, 3) for k, v in report.timings.items()},
            "scorers": [getattr(s, "__name__", type(s).__name__) for s in scorers],
            "scorer_errors": report.scorer_errors, "k": report.k, "read": report.read}


# --- the next day: a day's export loaded, then an incremental read ---------------------------


def stage_day_load(params: dict[str, Any]) -> dict[str, Any]:
    """Make the next export of the generated data (a day's worth: one 730th of the orders
    new and as many changed) and load it; its figures. The suite runs it in a process of
    its own before each "day_" stage, so that stage's time and memory are the refresh's."""
    from storage.loaders import load_path
    from storage.next_batch import next_batch
    from storage.store import open_store

    engine = open_store(params["url"])
    data = Path(params["data_dir"])
    n = max(30, min(params["orders"] // 730, params["orders"] // 4))
    folder = data.parent / f"{data.name}-day-{secrets.token_hex(4)}"
    t0 = time.perf_counter()
    next_batch(data, folder, seed=secrets.randbits(32), changed=n, new=n)
    made = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = load_path(engine, folder, "olist")
    loaded = time.perf_counter() - t1
    shutil.rmtree(folder, ignore_errors=True)
    engine.dispose()
    return {"seconds": loaded, "new_orders": n, "changed_orders": n, "batch_made_s": round(made, 2),
            "rows_read": report.rows_read}


def stage_day_features(params: dict[str, Any]) -> dict[str, Any]:
    """Features + RFM + cohorts on the incremental read (the snapshot the last refresh
    kept, brought up to date with the day the "day_load" stage loaded)."""
    from analytics.cohorts import cohort_retention
    from analytics.features import build_features
    from analytics.rfm import rfm_scores
    from analytics.snapshot import read_with_snapshot
    from storage.store import open_store

    engine = open_store(params["url"])
    as_of = _as_of(params)
    t0 = time.perf_counter()
    data, read = read_with_snapshot(engine)
    t_read = time.perf_counter()
    features = build_features(engine, as_of, dataset=data)
    rfm = rfm_scores(features)
    cohorts = cohort_retention(engine, as_of, dataset=data)
    t1 = time.perf_counter()
    engine.dispose()
    return {"seconds": t1 - t0, "rows": params.get("orders"), "customers": len(features),
            "parts": {"read": t_read - t0, "features_rfm_cohorts": t1 - t_read},
            "read": read.to_dict(), "segments": int(rfm["segment"].nunique()),
            "cohorts": len(cohorts.cohorts)}


def stage_day_refresh_kept(params: dict[str, Any]) -> dict[str, Any]:
    """"day_refresh" with `analytics.churn_retrain_days` = 7: the churn model trained in
    the last week scores the new day instead of being retrained for it."""
    return stage_day_refresh({**params, "retrain_after_days": 7})


def stage_day_refresh(params: dict[str, Any]) -> dict[str, Any]:
    """The whole refresh after "day_load", with the incremental read and the as-of date
    moved to the new data, as the nightly refresh runs (the churn model is retrained for
    the new data, unless `retrain_after_days` says otherwise)."""
    from analytics.refresh import refresh
    from bot.memory import refresh_malloc
    from storage.store import open_store

    engine = open_store(params["url"])
    scorers = _scorers(params)
    t0 = time.perf_counter()
    with refresh_malloc():
        report = refresh(engine, None, scorers=scorers)
    seconds = time.perf_counter() - t0
    churn_model = _churn_model_use(engine)
    engine.dispose()
    return {"seconds": seconds, "rows": params.get("orders"), "customers": report.customers,
            "parts": {k: round(v, 3) for k, v in report.timings.items()}, "read": report.read,
            "as_of": report.as_of.date.isoformat(), "scorer_errors": report.scorer_errors,
            "churn_model": churn_model}


def _churn_model_use(engine) -> dict[str, Any]:  # noqa: ANN001 - Engine
    """Whether the last refresh trained the churn model or scored with a kept one."""
    from analytics.risk import scoring_info

    supervised = (scoring_info(engine) or {}).get("supervised") or {}
    return {"trained_as_of": supervised.get("trained_as_of"), "reused": supervised.get("reused")}


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


def _burst(handle, texts: list[str]) -> tuple[list[float], float]:  # noqa: ANN001
    """Each text answered at once on its own thread: (seconds each waited, wall seconds)."""

    def timed(text: str) -> float:
        t0 = time.perf_counter()
        handle(text)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        took = list(pool.map(timed, texts))
    return took, time.perf_counter() - t0


def _spread(values: list[float]) -> dict[str, float | None]:
    return {"p50": _pct(values, 0.5), "p95": _pct(values, 0.95), "p99": _pct(values, 0.99),
            "max": max(values) if values else None, "n": len(values)}


MISS_COMMANDS = ("/kpis {s}", "/delivery {s}", "/payments {s}", "/finance {s}", "/churn-risk {s}")


def _slack_rounds(url: str, rounds: list[tuple[str, list[str]]], *, cache: bool = True,
                  timeout: float = 300.0, **bot: Any) -> dict[str, Any]:
    """The real Bolt app in its own process (benchmarks/slack_bot.py) against the Slack
    emulator: each round posts its signed slash commands all at once and records each
    acknowledgement and when the answer (message, then its charts) reached Slack."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    from slack_emulator import SlackEmulator

    # throwaway credentials shared by the local emulator and the bot under test
    token, secret = "xoxb-" + secrets.token_hex(12), secrets.token_hex(16)
    out: dict[str, Any] = {}
    with SlackEmulator(token=token) as emu:
        params = {"url": url, "api_url": emu.base_url, "token": token, "secret": secret,
                  "cache": cache, **bot}
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.slack_bot", json.dumps(params)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root, text=True)
        try:
            line = proc.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"the bot did not start: {line!r}")
            endpoint = f"http://127.0.0.1:{int(line.split()[1])}/slack/events"
            base = emu.response_url("x")[:-1]
            for r, (name, texts) in enumerate(rounds):
                emu.reset()
                users = [f"UB{r:02d}{i:04d}" for i in range(len(texts))]
                job = {"endpoint": endpoint, "secret": secret, "team_id": emu.team_id,
                       "app_id": emu.app_id, "response_url": base,
                       "commands": [list(c) for c in zip(users, texts, strict=True)]}
                fired = subprocess.run([sys.executable, "-m", "benchmarks.slack_bot", "fire",
                                        json.dumps(job)], capture_output=True, text=True,
                                       cwd=root, check=True)
                got = json.loads(fired.stdout.strip().splitlines()[-1])
                sent, acks = got["sent"], got["acks"]
                posted: dict[str, float] = {}  # user -> when the answer reached Slack
                thread: dict[str, float] = {}  # user -> ts of the in-channel answer
                deadline = time.time() + timeout
                while len(posted) < len(users) and time.time() < deadline:
                    for call in emu.calls("chat.postMessage"):
                        blob = json.dumps(call.params.get("blocks") or [])
                        for u in users:
                            if u not in posted and call.ok and f"<@{u}>" in blob:
                                posted[u], thread[u] = call.time, float(call.response["ts"])
                    for resp in emu.responses():
                        if resp.name in users and resp.name not in posted:
                            posted[resp.name] = resp.time  # an ephemeral or error reply
                    time.sleep(0.02)
                time.sleep(1.0)  # let the last charts finish uploading
                uploads = emu.uploads("C0GENERAL")
                done = []
                for u in users:
                    if u not in posted:
                        continue
                    last = max([up.time for up in uploads if u in thread and up.thread_ts
                                and float(up.thread_ts) == thread[u]], default=posted[u])
                    done.append(max(last, posted[u]) - sent)
                out[name] = {"ack": _spread(acks), "answer_posted": _spread(
                    [posted[u] - sent for u in users if u in posted]),
                    "answer_with_charts": _spread(done), "unanswered": len(users) - len(done)}
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    return out


def stage_answers(params: dict[str, Any]) -> dict[str, Any]:
    """Each command's answer (figures + charts rendered), first computed on every request
    (the old path), then pre-rendered and served from the answer cache: cold and warm
    passes, 20 concurrent commands, the same through the real Slack app (acks and answers),
    cache misses, and `/export-at-risk` of up to `export_rows` rows. With `passes` 0 (the
    smoke run) the uncached burst and the misses are left out and Slack gets one round."""
    from bot.answer_cache import AnswerCache, warm_texts

    router, engine = _router(params["url"])
    cache = AnswerCache(router)
    commands = [c for c in ANSWER_COMMANDS if c.split()[0].lstrip("/") in router.commands]
    errors: dict[str, str] = {}
    burst = [commands[i % len(commands)] for i in range(20)]
    # before: every request computes and renders
    cold: dict[str, float] = {}
    computed = {}
    for text in commands:
        t0 = time.perf_counter()
        answer = computed[text] = router.handle(text)
        cold[text] = time.perf_counter() - t0
        if answer.is_error:
            errors[text] = answer.summary[:200]
    quick = int(params.get("passes", 2)) == 0  # the smoke run: each part once, no misses
    uncached20, uncached_burst_s = ([], None) if quick else _burst(router.handle, burst)
    # after: pre-rendered once after the refresh, then served
    scope = params.get("warm_scope", "defaults")
    if quick:  # keep the cold pass's answers instead of rendering them again
        for text in commands:
            key = cache.key_for(text)
            if key is not None:
                cache.store(key, computed[text])
    report = cache.warm(commands if quick else [*commands, *warm_texts(router, scope)])
    per: dict[str, list[float]] = {c: [] for c in commands}
    for _ in range(int(params.get("passes", 2))):
        for text in commands:
            t0 = time.perf_counter()
            cache.handle(text)
            per[text].append(time.perf_counter() - t0)
    warm = [v for vs in per.values() for v in vs]
    concurrent, burst_s = _burst(cache.handle, burst)
    states = _states(engine)
    misses = [MISS_COMMANDS[i % len(MISS_COMMANDS)].format(s=states[i % len(states)])
              for i in range(20)] if states and scope != "all" and not quick else []
    slack: dict[str, Any] = {}
    if params.get("slack", True):
        try:
            n = 1 if quick else int(params.get("slack_rounds", 3))
            rounds = [(f"cached-{i}", burst) for i in range(n)]
            if misses:
                rounds.append(("misses", misses))
            slack = _slack_rounds(params["url"], rounds)
        except Exception as exc:  # noqa: BLE001 - the other figures still count
            errors["slack"] = repr(exc)[:300]
    export_rows = int(params.get("export_rows", 100_000))
    t0 = time.perf_counter()
    exported = router.handle(f"/export-at-risk min-prob 0 limit {export_rows}")
    export_s = time.perf_counter() - t0
    if exported.is_error:
        errors["/export-at-risk"] = exported.summary[:200]
    engine.dispose()
    acks = [v for k, r in slack.items() if k.startswith("cached") for v in [r["ack"]["p99"]] if v]
    answers = [r["answer_with_charts"]["p95"] for k, r in slack.items()
               if k.startswith("cached") and r["answer_with_charts"]["p95"] is not None]
    return {
        "seconds": statistics.median(warm or list(cold.values())) if commands else None,
        "p95_cold": _pct(list(cold.values()), 0.95), "p95_warm": _pct(warm, 0.95),
        "p95_concurrent20": _pct(concurrent, 0.95), "concurrent20": _spread(concurrent),
        "burst20_s": burst_s, "uncached": {"p95_cold": _pct(list(cold.values()), 0.95),
                                           "concurrent20": _spread(uncached20),
                                           "burst20_s": uncached_burst_s},
        "warm_up": {"scope": scope, "rendered": report.rendered, "already": report.already,
                    "not_cached": report.skipped, "seconds": report.seconds},
        "slack": slack, "slack_ack_p99": max(acks) if acks else None,
        "slack_answer_p95": max(answers) if answers else None,
        "export_s": export_s, "export_rows": export_rows,
        "exported_rows": exported.export.rows if exported.export else 0,
        "cold": cold, "warm_max": {c: max(v) for c, v in per.items() if v}, "errors": errors,
    }


def _states(engine) -> list[str]:  # noqa: ANN001 - Engine
    from bot.router import _known_places

    return sorted(_known_places(engine)[0])


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
    "refresh": stage_refresh, "day_load": stage_day_load, "day_features": stage_day_features,
    "day_refresh": stage_day_refresh, "day_refresh_kept": stage_day_refresh_kept,
    "answers": stage_answers, "digest": stage_digest,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage, params = argv[0], json.loads(argv[1])
    from bot.memory import one_arena

    one_arena()  # as `pulse` and the bot's refresh process do, before any thread starts
    os.environ.setdefault("MPLBACKEND", "Agg")
    # imported here, not at the top: the store's reader processes import this module (the
    # main module of the process that spawns them) and do not draw
    import matplotlib

    matplotlib.use("Agg")
    _emit(STAGES[stage](params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
