"""The refresh: what it writes (on SQLite and PostgreSQL), scorers, empty stores, real data."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from analytics_data import Shop, loaded_store
from conftest import copy_store
from sqlalchemy import Engine, func, select

import analytics.facts as facts_module
from analytics.asof import resolve_as_of, stored_as_of
from analytics.refresh import SCORER_COLUMNS, data_fingerprint, refresh
from storage import schema
from storage.store import get_meta, open_store

AS_OF = dt.date(2024, 3, 31)


def small_shop(engine: Engine) -> None:
    """Six customers in SP and RJ (nobody in the other states)."""
    shop = Shop(engine)
    for cid, state in (("A", "SP"), ("B", "SP"), ("C", "RJ"), ("D", "RJ"), ("E", "SP"), ("F", "RJ")):
        shop.customer(cid, state)
    shop.order("a1", "A", "2024-03-30 10:00", [("toys", 300, 20)], payments=[("card", 6, 320)])
    shop.order("a2", "A", "2023-12-01 10:00", [("toys", 200, 20)], payments=[("card", 6, 220)])
    shop.order("b1", "B", "2023-05-01 10:00", [("books", 20, 5)], delivered="2023-05-20", estimated="2023-05-10",
               reviews=[(1, "2023-05-21")])
    shop.order("c1", "C", "2024-02-10 10:00", [("garden", 80, 10)])
    shop.order("d1", "D", "2022-01-10 10:00", [("toys", 15, 5)])
    shop.order("e1", "E", "2024-03-01 10:00", [("books", 50, 5)], status="canceled")
    shop.order("f1", "F", "2023-09-09 10:00", [("garden", 40, 5)])
    shop.order("f2", "F", "2023-10-09 10:00", [("garden", 45, 5)])
    shop.order("f3", "F", "2023-11-09 10:00", [("garden", 50, 5)])


def rows(engine: Engine, table) -> pd.DataFrame:  # noqa: ANN001
    with engine.connect() as conn:
        result = conn.execute(select(table))
        return pd.DataFrame([tuple(r) for r in result], columns=list(result.keys()))


def test_refresh_writes_features_scores_snapshots_and_meta(store: Engine) -> None:
    small_shop(store)
    report = refresh(store, AS_OF)
    assert report.as_of.mode == "fixed" and report.as_of.date == AS_OF
    assert report.customers == 5 and not report.empty  # E only canceled
    assert set(report.timings) >= {"as_of", "features", "rfm", "clusters", "write"}
    assert report.scorer_errors == {}

    features = rows(store, schema.customer_features).set_index("customer_id")
    assert sorted(features.index) == ["A", "B", "C", "D", "F"]
    assert (features["as_of"] == AS_OF).all()
    assert features.loc["A", "revenue"] == pytest.approx(540.0)
    assert features.loc["F", "orders"] == 3

    scores = rows(store, schema.customer_scores).set_index("customer_id")
    assert sorted(scores.index) == sorted(features.index)
    assert (scores["as_of"] == AS_OF).all() and (scores["model_version"] == report.model_version).all()
    assert scores["segment"].notna().all() and scores["cluster"].notna().all()
    assert scores["tier"].isin(["Low", "Mid", "High"]).all()
    assert scores[list(SCORER_COLUMNS)].isna().all().all()  # no scorers given
    # A bought two days ago with two orders: R 5 (≤30 days), F 3 → Potential Loyalist;
    # D's only order is over two years old: R 1, F 1 → Lost
    assert scores.loc["A", "segment"] == "Potential Loyalist"
    assert scores.loc["D", "segment"] == "Lost"
    assert report.segments == scores["segment"].value_counts().to_dict()

    snap = rows(store, schema.segment_snapshots)
    assert len(snap) == 5 and (snap["snapshot_date"] == AS_OF).all()
    assert snap.set_index("customer_id").loc["C", "state"] == "RJ"

    assert stored_as_of(store) == report.as_of
    assert get_meta(store, "data_fingerprint") == data_fingerprint(store)
    assert get_meta(store, "refresh")["customers"] == 5
    clusters = get_meta(store, "clusters")
    assert clusters["k"] == report.k and len(clusters["profiles"]) == report.k


def test_refresh_replaces_rows_and_keeps_other_snapshot_dates(store: Engine) -> None:
    small_shop(store)
    refresh(store, AS_OF)
    refresh(store, AS_OF)  # same date again: replaced, not doubled
    earlier = dt.date(2023, 10, 31)
    report = refresh(store, earlier)
    assert report.customers == 3  # B, D, F had bought by then (A first bought in December)
    with store.connect() as conn:
        n_features = conn.execute(select(func.count()).select_from(schema.customer_features)).scalar()
        by_date = dict(conn.execute(
            select(schema.segment_snapshots.c.snapshot_date, func.count())
            .group_by(schema.segment_snapshots.c.snapshot_date)).all())
    assert n_features == 3
    assert by_date == {AS_OF: 5, earlier: 3}


def test_empty_store_refresh_is_a_clear_result(store: Engine) -> None:
    report = refresh(store)
    assert report.empty and report.customers == 0 and report.k == 0
    assert "nothing to score" in report.message
    assert report.as_of.mode == "today"
    assert rows(store, schema.customer_scores).empty
    assert stored_as_of(store) == report.as_of


def test_no_purchases_by_the_as_of_date(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    small_shop(engine)
    report = refresh(engine, dt.date(2020, 1, 1))
    assert report.empty and rows(engine, schema.customer_features).empty


def test_scorers_add_columns_in_order_and_failures_are_reported(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    small_shop(engine)
    seen = {}

    def churn(engine, features, scores, as_of):  # noqa: ANN001, ANN202
        seen["as_of"] = as_of
        prob = (features["recency_days"] / 1000).clip(upper=1.0)
        band = pd.cut(prob, [-1, 0.4, 0.7, 2], labels=["low", "medium", "high"]).astype(str)
        return pd.DataFrame({"customer_id": features["customer_id"], "churn_prob": prob,
                             "churn_source": "test", "risk_band": band})

    churn.version = "churn-t1"

    def value_at_risk(engine, features, scores, as_of):  # noqa: ANN001, ANN202
        assert "churn_prob" in scores.columns  # sees the earlier scorer's output
        revenue = features.set_index("customer_id")["revenue"]
        return (scores.set_index("customer_id")["churn_prob"] * revenue).rename("value_at_risk").to_frame()

    def broken(engine, features, scores, as_of):  # noqa: ANN001, ANN202
        raise RuntimeError("model not trainable")

    def wrong_columns(engine, features, scores, as_of):  # noqa: ANN001, ANN202
        return pd.DataFrame({"customer_id": features["customer_id"], "segment": "X"})

    report = refresh(engine, AS_OF, scorers=[churn, value_at_risk, broken, wrong_columns])
    assert seen["as_of"] == AS_OF
    assert report.scorer_errors == {
        "broken": "RuntimeError: model not trainable",
        "wrong_columns": "ValueError: returned columns not in customer_scores: ['segment']",
    }
    assert "churn-t1" in report.model_version
    scores = rows(engine, schema.customer_scores).set_index("customer_id")
    assert scores.loc["D", "churn_prob"] == pytest.approx(0.811)  # 811 days since 2022-01-10
    assert scores.loc["D", "risk_band"] == "high" and scores.loc["A", "risk_band"] == "low"
    assert scores.loc["D", "value_at_risk"] == pytest.approx(0.811 * 20)
    assert (scores["segment"] != "X").all()
    assert scores["p_alive"].isna().all()


def test_scorers_that_do_not_read_the_scores_run_while_the_clusters_are_made(default_store_url: str,
                                                                          monkeypatch) -> None:  # noqa: ANN001
    """A scorer with `uses_scores = False` gets no scores table and runs while the clusters
    are made on a thread (the clusters here wait for it to start); its rows are merged in
    its turn, so a later scorer still sees them and the clusters."""
    import threading
    import time

    import analytics.refresh as R

    engine = open_store(default_store_url)
    small_shop(engine)
    scorer_started = threading.Event()
    seen = {}
    real = R.cluster_customers

    def clusters_waiting_for_the_scorer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["overlapped"] = scorer_started.wait(timeout=30)
        seen["clusters_thread"] = threading.current_thread().name
        return real(*args, **kwargs)

    def churn(engine, features, scores, as_of):  # noqa: ANN001, ANN202
        seen["churn_scores"] = scores
        seen["churn_thread"] = threading.current_thread().name
        scorer_started.set()
        return pd.DataFrame({"customer_id": features["customer_id"], "churn_prob": 0.25, "risk_band": "low"})

    churn.uses_scores = False
    churn.version = "early-1"

    def value(engine, features, scores, as_of):  # noqa: ANN001, ANN202
        seen["value_columns"] = set(scores.columns)
        return pd.DataFrame({"customer_id": scores["customer_id"], "value_at_risk": scores["churn_prob"] * 4})

    value.version = "late-1"
    monkeypatch.setattr(R, "cluster_customers", clusters_waiting_for_the_scorer)
    started = time.perf_counter()
    report = refresh(engine, AS_OF, scorers=[churn, value])
    wall = time.perf_counter() - started
    assert seen["overlapped"] is True
    assert seen["churn_scores"] is None and seen["churn_thread"] != seen["clusters_thread"]
    assert {"cluster", "tier", "churn_prob"} <= seen["value_columns"]
    assert report.scorer_errors == {} and report.model_version.endswith("+early-1+late-1")
    scores = rows(engine, schema.customer_scores)
    assert (scores["value_at_risk"] == 1.0).all() and scores["cluster"].notna().all()
    t = report.timings
    assert t["clusters"] > 0 and t["clusters_wait"] >= 0
    assert report.seconds == pytest.approx(wall, abs=0.25)  # "clusters" ran beside the scorer


def test_slow_facts_are_waited_for_inside_the_write(default_store_url: str, monkeypatch) -> None:  # noqa: ANN001
    """The features and scores are written while the facts still compute; the facts are
    then written in the same transaction. The wait is timed apart from the write, and the
    stages not done beside others add up to the refresh's wall time."""
    import time

    import analytics.refresh as R

    engine = open_store(default_store_url)
    small_shop(engine)
    real = R.compute_all_facts
    scores_when_facts_done = {}

    events = []

    class Recorded(R.BulkWriter):
        def insert(self, table, frame):  # noqa: ANN001, ANN202
            events.append(("insert", table.name))
            return super().insert(table, frame)

    def slow_facts(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        time.sleep(1.5)
        events.append(("facts done", None))
        with engine.connect() as conn:  # another connection: sees only what is committed
            scores_when_facts_done["rows"] = conn.execute(select(func.count()).select_from(schema.customer_scores)).scalar()
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "compute_all_facts", slow_facts)
    monkeypatch.setattr(R, "BulkWriter", Recorded)
    started = time.perf_counter()
    report = refresh(engine, AS_OF)
    wall = time.perf_counter() - started
    t = report.timings
    assert t["facts_wait"] > 0.3 and t["write"] >= 0 and t["facts"] > 0
    assert report.seconds == pytest.approx(wall, abs=0.25)
    assert events.index(("insert", "customer_scores")) < events.index(("facts done", None))
    assert scores_when_facts_done["rows"] == 0  # nothing committed until the facts were written too
    assert len(rows(engine, schema.customer_scores)) == 5  # E only canceled
    assert get_meta(engine, "facts")["as_of"] == AS_OF.isoformat()
    assert get_meta(engine, "refresh")["timings"]["facts_wait"] == pytest.approx(t["facts_wait"], abs=1e-3)


@pytest.mark.skipif(not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"),
                    reason="threads have no priority of their own to set here (Linux has)")
def test_facts_and_migration_give_way_to_the_scorers_and_clusters(default_store_url: str,
                                                                   monkeypatch) -> None:  # noqa: ANN001
    """The work needed only at the end of the write (the answer facts, the migration cells)
    runs on threads of lower CPU priority; the scorers and clusters keep the refresh's own."""
    import analytics.refresh as R

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    engine = open_store(default_store_url)
    small_shop(engine)
    seen: dict[str, int] = {}

    def recorded(name: str, real):  # noqa: ANN001, ANN202
        def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen[name] = nice()
            return real(*args, **kwargs)
        return run

    for name in ("compute_all_facts", "cells_since", "cluster_customers"):
        monkeypatch.setattr(R, name, recorded(name, getattr(R, name)))
    # the delivery facts, on a thread the facts' thread starts: its priority is inherited
    monkeypatch.setattr(facts_module, "_delivery", recorded("delivery facts", facts_module._delivery))

    def churn(engine, features, scores, as_of):  # noqa: ANN001, ANN202
        seen["scorer"] = nice()
        return pd.DataFrame({"customer_id": features["customer_id"], "churn_prob": 0.25})

    churn.uses_scores = False
    own = nice()
    report = refresh(engine, AS_OF, scorers=[churn])
    assert report.scorer_errors == {} and report.customers == 5
    lowered = min(19, own + R.YIELDING_NICE)
    assert seen == {"compute_all_facts": lowered, "delivery facts": lowered, "cells_since": lowered,
                    "cluster_customers": own, "scorer": own}
    assert nice() == own  # this thread's own priority is left as it was
    assert get_meta(engine, "facts")["as_of"] == AS_OF.isoformat()


def test_fingerprint_changes_with_the_data(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    small_shop(engine)
    refresh(engine, AS_OF)
    assert get_meta(engine, "data_fingerprint") == data_fingerprint(engine)
    Shop(engine).order("g1", "A", "2024-03-31 12:00", [("toys", 1, 0)])
    after = data_fingerprint(engine)
    assert after != get_meta(engine, "data_fingerprint")
    assert after["orders"] == 10 and after["last_purchased_at"] == "2024-03-31T12:00:00"


@pytest.mark.realdata
def test_olist_refresh(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    source = loaded_store(tmp_path_factory, "olist", "olist")
    engine = copy_store(source, tmp_path, "olist.db")  # the shared loaded store stays untouched
    report = refresh(engine)
    assert report.as_of.date == dt.date(2018, 8, 29) == resolve_as_of(engine).date
    assert report.customers == 94_990
    assert sum(report.segments.values()) == 94_990
    assert any(f.startswith("F: 97%") for f in report.fallbacks)
    assert 2 <= report.k <= 10
    with engine.connect() as conn:
        for table in (schema.customer_features, schema.customer_scores, schema.segment_snapshots):
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 94_990
        tiers = dict(conn.execute(select(schema.customer_scores.c.tier, func.count())
                                  .group_by(schema.customer_scores.c.tier)).all())
    assert set(tiers) == {"Low", "Mid", "High"}


def test_a_scorer_prepares_on_a_thread_while_the_features_are_made(default_store_url: str,
                                                                   monkeypatch) -> None:  # noqa: ANN001
    """A scorer's `prepare(dataset, as_of)` starts as soon as the store is read, on a thread
    of its own, beside the RFM features; what it returns is passed to the scorer's call. One
    that fails leaves the work to the call, and the refresh completes."""
    import analytics.refresh as R

    engine = open_store(default_store_url)
    small_shop(engine)
    features_started, prepare_started = threading.Event(), threading.Event()
    real_features = R.features_of

    def features_of(*args):  # noqa: ANN002, ANN202
        features_started.set()
        assert prepare_started.wait(10), "the preparation did not start beside the features"
        return real_features(*args)

    monkeypatch.setattr(R, "features_of", features_of)

    class Scorer:
        uses_dataset, uses_scores = True, False

        def __init__(self, fail: bool = False):
            self.fail = fail
            self.events: list[tuple[str, str]] = []

        def prepare(self, dataset, as_of: dt.date) -> None:  # noqa: ANN001
            prepare_started.set()
            self.events.append(("prepare", threading.current_thread().name))
            assert features_started.wait(10), "the features were not made beside the preparation"
            time.sleep(0.2)  # still preparing when the features are done
            if self.fail:
                raise RuntimeError("no preparation today")
            self.events.append(("prepared", threading.current_thread().name))
            return ("prepared", dataset, as_of)

        def __call__(self, engine, features, scores, as_of, dataset=None, prepared=None):  # noqa: ANN001, ANN204
            self.events.append(("call", threading.current_thread().name))
            assert prepared == (None if self.fail else ("prepared", dataset, as_of))
            return pd.DataFrame({"customer_id": features["customer_id"], "churn_prob": 0.25})

    for fail in (False, True):
        features_started.clear()
        prepare_started.clear()
        scorer = Scorer(fail)
        report = refresh(engine, AS_OF, scorers=[scorer])
        assert report.scorer_errors == {} and report.customers == 5
        kinds = [kind for kind, _ in scorer.events]
        assert kinds == (["prepare", "call"] if fail else ["prepare", "prepared", "call"])
        assert scorer.events[0][1].startswith("pulse-prepare") and scorer.events[-1][1] == "MainThread"
        with engine.connect() as conn:
            probs = conn.execute(select(schema.customer_scores.c.churn_prob)).scalars().all()
        assert probs == [0.25] * 5
