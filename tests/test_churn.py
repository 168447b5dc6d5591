"""The supervised churn model on small data: labels, features known at the cutoff, no
recency in disguise, training, metrics, and the model store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analytics_data import Shop
from churn_data import AS_OF, HORIZON, cut_at, insert, synthetic_shop
from conftest import new_store
from sqlalchemy import Engine, text

from analytics import churn
from analytics.churn import (
    EXCLUDED_FEATURES,
    FEATURES,
    NotTrainable,
    _first_of_largest,
    churn_features,
    churn_labels,
    group_extreme,
    read_history,
    score_metrics,
    train_churn_model,
)
from analytics.features import build_features
from analytics.model_store import data_fingerprint, load_card, load_model, save_model
from storage.store import NON_PURCHASE_STATUSES, get_meta, open_store


@pytest.fixture(scope="module")
def shop_tables() -> dict[str, pd.DataFrame]:
    return synthetic_shop()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, shop_tables) -> Engine:  # noqa: ANN001
    engine = new_store(tmp_path_factory.mktemp('churn'), "shop.db")
    insert(engine, shop_tables)
    return engine


@pytest.fixture(scope="module")
def trained(shop: Engine) -> churn.ChurnModel:
    return train_churn_model(read_history(shop), AS_OF, HORIZON, seed=42)


# --- labels ------------------------------------------------------------------------------------


def test_label_window_is_the_h_days_after_the_cutoff(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    s = Shop(engine)
    for c in "ABCDE":
        s.customer(c)
    cutoff = dt.date(2024, 1, 31)
    s.order("a1", "A", "2024-01-31 23:59", [("x", 10, 0)])  # on the cutoff day: a feature
    s.order("b1", "B", "2024-01-10 10:00", [("x", 10, 0)])
    s.order("b2", "B", "2024-04-30 23:00", [("x", 10, 0)])  # day cutoff + 90: came back
    s.order("c1", "C", "2024-01-10 10:00", [("x", 10, 0)])
    s.order("c2", "C", "2024-05-01 00:00", [("x", 10, 0)])  # day cutoff + 91: too late
    s.order("d1", "D", "2024-01-10 10:00", [("x", 10, 0)])
    s.order("d2", "D", "2024-02-15 10:00", [("x", 10, 0)], status="canceled")  # not a purchase
    s.order("e1", "E", "2024-02-01 00:00", [("x", 10, 0)])  # first purchase after the cutoff
    h = read_history(engine)
    labels = churn_labels(h, cutoff, 90)
    assert labels.to_dict() == {"A": 1, "B": 0, "C": 1, "D": 1}
    assert list(churn_features(h, cutoff).index) == ["A", "B", "C", "D"]


# --- features ----------------------------------------------------------------------------------


def test_hand_worked_features(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    s = Shop(engine)
    s.customer("A", "RJ").customer("B", "SP")
    cutoff = dt.date(2024, 3, 31)
    s.order("a1", "A", "2024-01-01 10:00", [("toys", 100, 10), ("books", 50, 0)],
            delivered="2024-01-20 12:00", estimated="2024-01-15",
            payments=[("credit_card", 3, 120), ("voucher", 1, 40)], reviews=[(2, "2024-01-21")])
    s.order("a2", "A", "2024-03-01 10:00", [("toys", 200, 20)],
            delivered="2024-03-05 12:00", estimated="2024-03-10",
            payments=[("boleto", 1, 220)], reviews=[(4, "2024-04-02")])  # review after cutoff
    s.order("a3", "A", "2024-03-30 10:00", [("toys", 30, 0)], delivered="2024-04-03 12:00",
            estimated="2024-04-05")  # delivered after the cutoff
    s.order("a4", "A", "2024-02-01 10:00", [("toys", 999, 0)], status="canceled")
    s.order("b1", "B", "2024-03-31 09:00", [("garden", 40, 5)], payments=[("boleto", 1, 45)])
    f = churn_features(read_history(engine), cutoff)
    a, b = f.loc["A"], f.loc["B"]
    assert a["orders"] == 3 and a["revenue"] == pytest.approx(160 + 220 + 30)
    assert a["avg_ticket"] == pytest.approx(410 / 3) and a["max_ticket"] == pytest.approx(220)
    assert a["first_order_value"] == pytest.approx(160)
    assert a["ticket_trend"] == pytest.approx(((220 + 30) / 2) / 160)
    assert a["tenure_days"] == (dt.date(2024, 3, 31) - dt.date(2024, 1, 1)).days
    assert a["days_per_order"] == pytest.approx((a["tenure_days"] + 1) / 3)
    assert a["items"] == 4 and a["categories"] == 2 and a["top_category"] == "toys"
    assert a["avg_installments"] == pytest.approx((3 + 1) / 2)  # a3 has no payment rows
    assert a["voucher_share"] == pytest.approx(40 / (160 + 220))
    assert a["first_payment"] == "credit_card"
    assert a["late_share"] == pytest.approx(1 / 2)  # a1 late, a2 early, a3 not delivered yet
    assert a["avg_delivery_days"] == pytest.approx((19.083333 + 4.083333) / 2, abs=1e-4)
    assert a["avg_review"] == 2 and a["min_review"] == 2  # a2's review is written after the cutoff
    assert a["freight"] == pytest.approx(30) and a["freight_share"] == pytest.approx(30 / 410)
    assert a["cancelled_orders"] == 1
    assert (a["state"], a["region"]) == ("RJ", "Sudeste")
    assert b["orders"] == 1 and b["tenure_days"] == 0 and np.isnan(b["ticket_trend"])
    assert np.isnan(b["late_share"]) and np.isnan(b["avg_review"])


def test_features_use_only_data_known_at_the_cutoff(tmp_path: Path, shop_tables) -> None:  # noqa: ANN001
    """Features from a store cut at the cutoff (later orders with their rows, later reviews,
    later deliveries removed) equal those from the full store."""
    cutoff = dt.date(2024, 2, 15)
    full = new_store(tmp_path, "full.db")
    cut = new_store(tmp_path, "cut.db")
    insert(full, shop_tables)
    insert(cut, cut_at(shop_tables, cutoff))
    from_full = churn_features(read_history(full), cutoff)
    assert len(from_full) > 250
    pd.testing.assert_frame_equal(from_full, churn_features(read_history(cut), cutoff))
    # the later data exists and would change them
    assert not churn_features(read_history(full), AS_OF).loc[from_full.index].equals(from_full)


def test_features_do_not_depend_on_when_later_purchases_happened(tmp_path: Path, shop_tables) -> None:  # noqa: ANN001
    """The recency rule: moving a repeat buyer's later orders earlier in time (with their
    deliveries, estimates and reviews, by whole days, all still before the cutoff) changes
    no feature — though it does change recency."""
    cutoff = dt.date(2024, 4, 1)
    t = dict(shop_tables)
    o = t["orders"]
    # orders settled (delivered, reviewed: at most 22 days later) well before the cutoff
    o = o[o["purchased_at"] < pd.Timestamp(cutoff) - pd.Timedelta(days=60)]
    kept = set(o["order_id"])
    t = {**t, "orders": o, "order_items": t["order_items"][t["order_items"]["order_id"].isin(kept)],
         "payments": t["payments"][t["payments"]["order_id"].isin(kept)],
         "reviews": t["reviews"][t["reviews"]["order_id"].isin(kept)]}
    day = o["purchased_at"].dt.normalize()
    bought = ~o["status"].isin(NON_PURCHASE_STATUSES)
    first_day = o["customer_id"].map(day[bought].groupby(o["customer_id"][bought]).min())
    gap = (day - first_day).dt.days.fillna(0).to_numpy()  # > 0: a later day than the first purchase
    rng = np.random.default_rng(1)
    shift = pd.to_timedelta(np.where(gap > 1, rng.integers(1, np.maximum(gap, 2)), 0), unit="D")
    assert (shift > pd.Timedelta(0)).sum() > 100
    moved = dict(t)
    moved["orders"] = o.assign(**{c: o[c] - shift for c in
                                  ("purchased_at", "delivered_at", "estimated_delivery_at")})
    by_order = pd.Series(shift.to_numpy(), index=o["order_id"].to_numpy())
    r = t["reviews"]
    moved["reviews"] = r.assign(created_at=r["created_at"] - r["order_id"].map(by_order).to_numpy())
    a = new_store(tmp_path, "a.db")
    b = new_store(tmp_path, "b.db")
    insert(a, t)
    insert(b, moved)
    pd.testing.assert_frame_equal(churn_features(read_history(a), cutoff),
                                  churn_features(read_history(b), cutoff))
    # the move did change recency (build_features has it): the test has teeth
    ra = build_features(a, cutoff).set_index("customer_id")["recency_days"]
    rb = build_features(b, cutoff).set_index("customer_id")["recency_days"]
    assert (ra != rb).sum() > 50


def test_recency_never_is_a_feature() -> None:
    assert not set(EXCLUDED_FEATURES) & set(FEATURES)
    assert not [f for f in FEATURES if "recen" in f or "last" in f or "gap" in f]


# --- training and metrics ------------------------------------------------------------------------


def test_trained_model_is_evaluated_out_of_time(trained: churn.ChurnModel) -> None:
    e = trained.evaluation
    assert (e.train_cutoff, e.test_cutoff) == (dt.date(2024, 1, 2), dt.date(2024, 4, 1))
    assert e.kind in ("hgb", "logistic") and set(e.cv_auc) == {"hgb", "logistic"}
    assert e.kind == max(e.cv_auc, key=e.cv_auc.get)
    assert e.test.roc_auc > 0.65  # frequent buyers come back; the model sees it
    assert 0 < e.test.brier < 0.25 and e.test.lift_top_decile > 1
    assert set(e.importance["feature"]) == set(e.features)
    card = trained.card
    assert card["metrics"]["roc_auc"] == pytest.approx(e.test.roc_auc, abs=1e-6)
    assert card["cutoffs"] == {"train": "2024-01-02", "test": "2024-04-01", "final": "2024-04-01",
                               "scoring": "2024-06-30"}
    assert "recency_days" in card["excluded_features"] and "recency_days" not in card["features"]


def test_predictions_are_calibrated_probabilities(shop: Engine, trained: churn.ChurnModel) -> None:
    h = read_history(shop)
    p = trained.predict(churn_features(h, AS_OF))
    assert p.between(0, 1).all() and p.index.is_unique
    # mean predicted churn near the observed churn rate of the last window
    observed = churn_labels(h, dt.date(2024, 4, 1), HORIZON).mean()
    assert abs(p.mean() - observed) < 0.1


def test_fold_models_are_averaged_only_for_small_training_sets(monkeypatch) -> None:  # noqa: ANN001
    rng = np.random.default_rng(3)
    n = 900
    X = pd.DataFrame({"orders": rng.integers(1, 6, n).astype(float), "revenue": rng.gamma(2.0, 50.0, n)})
    y = pd.Series((rng.random(n) < 1 / (1 + X["orders"].to_numpy())).astype(int))
    small = churn.fit_calibrated("logistic", X, y, seed=1, features=("orders", "revenue"))
    assert small.ensemble and len(small.calibrated_classifiers_) == churn.CV_FOLDS
    monkeypatch.setattr(churn, "ENSEMBLE_MAX_ROWS", n - 1)
    big = churn.fit_calibrated("logistic", X, y, seed=1, features=("orders", "revenue"))
    assert not big.ensemble and len(big.calibrated_classifiers_) == 1
    p = churn.churn_probability(big, X)
    assert ((p >= 0) & (p <= 1)).all()
    # out-of-fold calibration still tracks the base rate, and ranks frequent buyers lower
    assert abs(p.mean() - y.mean()) < 0.05
    assert p[X["orders"].to_numpy() >= 4].mean() < p[X["orders"].to_numpy() == 1].mean()


def test_learners_are_compared_on_a_stratified_sample_of_a_big_training_set(monkeypatch) -> None:  # noqa: ANN001
    rng = np.random.default_rng(5)
    n = 3_000
    X = pd.DataFrame({c: rng.gamma(2.0, 10.0, n) for c in churn.NUMERIC_FEATURES})
    for c in churn.CATEGORICAL_FEATURES:
        X[c] = rng.choice(["a", "b", "c"], n).astype(object)
    y = pd.Series((rng.random(n) < 1 / (1 + X["orders"].to_numpy() / 20)).astype(int))
    seen: list[tuple[int, float]] = []
    real = churn.cross_val_score

    def recording(estimator, X_, y_, **kw):  # noqa: ANN001, ANN202 - sklearn's own signature
        seen.append((len(X_), float(np.mean(y_))))
        return real(estimator, X_, y_, **kw)

    monkeypatch.setattr(churn, "cross_val_score", recording)
    monkeypatch.setattr(churn, "SELECTION_MAX_ROWS", 1_000)
    kind, scores = churn.choose_kind(X, y, seed=2)
    assert kind in churn.KINDS and set(scores) == set(churn.KINDS)
    assert [size for size, _ in seen] == [1_000] * len(churn.KINDS)
    assert all(abs(rate - y.mean()) < 0.002 for _, rate in seen)  # the churn rate kept
    seen.clear()
    monkeypatch.setattr(churn, "SELECTION_MAX_ROWS", n)
    churn.choose_kind(X, y, seed=2)
    assert [size for size, _ in seen] == [n] * len(churn.KINDS)


def test_too_few_returning_customers_is_not_trainable(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    tables = synthetic_shop(customers=60, seed=5, buy_rate=1 / 2000)  # almost nobody returns
    insert(engine, tables)
    with pytest.raises(NotTrainable, match="at least 25"):
        train_churn_model(read_history(engine), AS_OF, HORIZON, seed=42)


def test_score_metrics_by_hand() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0] * 2)
    perfect = score_metrics(y, y * 0.9 + 0.05)
    assert perfect.roc_auc == 1 and perfect.pr_auc == pytest.approx(1)
    assert perfect.lift_top_decile == pytest.approx(1 / 0.4)  # top 2 are churners, base rate 0.4
    assert perfect.brier == pytest.approx(0.05 ** 2)
    flat = score_metrics(y, np.full(len(y), 0.4))
    assert flat.roc_auc == 0.5 and flat.brier == pytest.approx(0.24)


def test_importance_sample_keeps_the_rare_class() -> None:
    y = np.r_[np.zeros(9_900, int), np.ones(100, int)]
    rows = churn.importance_sample(y, 1_000, seed=1)
    assert len(rows) == 1_000 and y[rows].sum() == 100 and np.all(np.diff(rows) > 0)


# --- the model store ------------------------------------------------------------------------------


def test_model_round_trips_through_the_store(shop: Engine, trained: churn.ChurnModel) -> None:
    card = save_model(shop, "churn-test", trained.card, trained.estimator)
    assert card["version"].startswith("churn-test-") and card["data_fingerprint"] == data_fingerprint(shop)
    assert card["trained_at"] and load_card(shop, "churn-test") == card
    loaded_card, estimator = load_model(shop, "churn-test")
    X = churn_features(read_history(shop), AS_OF)
    assert np.allclose(churn.churn_probability(estimator, X), trained.predict(X))
    assert loaded_card["metrics"] == trained.card["metrics"]


def test_fingerprint_changes_with_the_data(tmp_path: Path, shop_tables) -> None:  # noqa: ANN001
    engine = new_store(tmp_path, "fp.db")
    insert(engine, shop_tables)
    before = data_fingerprint(engine)
    assert data_fingerprint(engine) == before
    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET status = 'canceled' WHERE order_id = 'o00001'"))
    after_status = data_fingerprint(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET items_value = items_value + 1 WHERE order_id = 'o00002'"))
    assert len({before, after_status, data_fingerprint(engine)}) == 3


def test_refresh_retrains_only_when_the_data_changed(tmp_path: Path, shop_tables, monkeypatch) -> None:  # noqa: ANN001
    """With no reuse window (churn_retrain_days = 0, the default): any change of the data retrains."""
    from analytics import risk

    engine = new_store(tmp_path, "r.db")
    insert(engine, shop_tables)
    calls = []
    real = risk.train_churn_model
    monkeypatch.setattr(risk, "train_churn_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    scorer = risk.RiskScorer(HORIZON, seed=42)
    first = scorer(engine, None, None, AS_OF)
    version = load_card(engine, "churn")["version"]
    second = scorer(engine, None, None, AS_OF)
    assert len(calls) == 1 and load_card(engine, "churn")["version"] == version
    pd.testing.assert_frame_equal(first, second)
    assert get_meta(engine, "churn_model_fingerprint") == data_fingerprint(engine)
    with engine.begin() as conn:  # new data: retrain
        conn.execute(text("UPDATE orders SET items_value = items_value * 2 WHERE order_id = 'o00003'"))
    scorer(engine, None, None, AS_OF)
    assert len(calls) == 2
    scorer.horizon_days = 60  # another horizon: retrain
    scorer(engine, None, None, AS_OF)
    assert len(calls) == 3 and load_card(engine, "churn")["horizon_days"] == 60


def test_a_model_of_nearly_the_same_data_scores_for_a_week(tmp_path: Path, shop_tables,  # noqa: ANN001
                                                           monkeypatch) -> None:
    from sqlalchemy import func, select, update

    from analytics import risk
    from storage import schema

    engine = new_store(tmp_path, "w.db")
    insert(engine, shop_tables)
    calls = []
    real = risk.train_churn_model
    monkeypatch.setattr(risk, "train_churn_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert risk.RiskScorer(HORIZON).retrain_after_days == risk.RETRAIN_AFTER_DAYS == 0  # off by default
    scorer = risk.RiskScorer(HORIZON, seed=42, retrain_after_days=7)
    scorer(engine, None, None, AS_OF)
    card = load_card(engine, "churn")
    orders = schema.orders
    with engine.connect() as conn:
        purchases = conn.execute(select(func.count()).select_from(orders).where(
            orders.c.status.not_in(NON_PURCHASE_STATUSES))).scalar_one()
    assert calls == [1] and card["data"]["purchases"] == purchases
    assert scorer.last_run["supervised"]["reused"] is None

    def run(as_of: dt.date) -> str | None:
        scorer(engine, None, None, as_of)
        return scorer.last_run["supervised"]["reused"]

    with engine.begin() as conn:  # one order's value changed: the same purchases, the same start
        conn.execute(text("UPDATE orders SET items_value = items_value * 2 WHERE order_id = 'o00003'"))
    assert data_fingerprint(engine) != card["data_fingerprint"]
    reused = run(AS_OF)
    assert calls == [1] and reused.startswith(f"trained as of {AS_OF} (0 days earlier) on {purchases:,}")
    later = run(AS_OF + dt.timedelta(days=6))
    assert calls == [1] and "(6 days earlier)" in later and "+0.00% since" in later
    assert load_card(engine, "churn")["version"] == card["version"]  # the stored model, unchanged
    assert run(AS_OF + dt.timedelta(days=7)) is None and calls == [1, 1]  # a week on: retrained
    assert load_card(engine, "churn")["as_of"] == (AS_OF + dt.timedelta(days=7)).isoformat()
    assert run(AS_OF) is None and len(calls) == 3  # a model of a later date never scores earlier
    assert run(AS_OF) is not None and len(calls) == 3

    with engine.begin() as conn:  # the history starts earlier: retrained
        conn.execute(update(orders).where(orders.c.order_id == "o00002")
                     .values(purchased_at=dt.datetime(2001, 1, 1, 12)))
    assert run(AS_OF) is None and len(calls) == 4
    with engine.begin() as conn:  # over 5 % of the purchases canceled: retrained
        ids = conn.execute(select(orders.c.order_id).where(orders.c.status.not_in(NON_PURCHASE_STATUSES))
                           .order_by(orders.c.order_id.desc()).limit(purchases // 10)).scalars().all()
        conn.execute(update(orders).where(orders.c.order_id.in_(ids)).values(status="canceled"))
    assert run(AS_OF) is None and len(calls) == 5
    scorer.horizon_days = 60  # another horizon: retrained whatever the date
    assert run(AS_OF) is None and len(calls) == 6
    with pytest.raises(ValueError, match="retrain_after_days"):
        risk.RiskScorer(HORIZON, retrain_after_days=-1)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 5_000])
def test_distinct_ints_equals_numpy_unique(n: int) -> None:
    values = np.random.default_rng(n).integers(-50, 2_000, n)
    assert np.array_equal(churn.distinct_ints(values), np.unique(values))


@pytest.mark.parametrize("seed", range(5))
def test_group_extremes_and_first_of_largest_in_runs_and_not(seed: int) -> None:
    """The per-group max/min (as pandas' groupby says, rows in any order) and each group's
    first row of its largest value, the same with groups in runs (no sort) as out of order
    (a sort); NaN ignored, ties to the first row, a group of NaN only gives its first."""
    rng = np.random.default_rng(seed)
    n, size = 2_000, 300
    groups = np.sort(rng.integers(0, size - 20, n))  # some codes in range have no rows
    values = rng.integers(0, 6, n).astype(float)  # few values: many ties
    values[rng.random(n) < 0.2] = np.nan
    values[groups == groups[0]] = np.nan  # a group with nothing but NaN
    frame = pd.DataFrame({"g": groups, "v": values})
    for how in ("max", "min"):
        expected = getattr(frame.groupby("g")["v"], how)().reindex(range(size)).to_numpy()
        np.testing.assert_array_equal(group_extreme(groups, values, size, how), expected)
        shuffle = rng.permutation(n)
        np.testing.assert_array_equal(group_extreme(groups[shuffle], values[shuffle], size, how), expected)

    def first_of_largest(g: int) -> int:
        rows = np.flatnonzero(groups == g)
        known = rows[~np.isnan(values[rows])]
        return int(rows[0] if not len(known) else known[np.argmax(values[known])])  # argmax: first

    expected_rows = np.array([first_of_largest(g) for g in np.unique(groups)])
    np.testing.assert_array_equal(_first_of_largest(groups, values), expected_rows)
    # the groups' runs in reverse order (rows of a group in their order): the sort's way
    order = np.concatenate([np.flatnonzero(groups == g) for g in np.unique(groups)[::-1]])
    assert not np.all(np.diff(groups[order]) >= 0)
    np.testing.assert_array_equal(order[_first_of_largest(groups[order], values[order])], expected_rows)
