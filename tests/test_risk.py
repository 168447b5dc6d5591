"""Risk scores: bands, fallbacks (supervised → BG/NBD, CLV → historical value), the at-risk
list ranked by value at risk, the commands that show them, predicted CLV for /ltv."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from churn_data import AS_OF, HORIZON, insert, synthetic_shop
from conftest import new_store
from sqlalchemy import Engine, event, text

from analytics import clv as clv_module
from analytics import risk
from analytics.churn import read_history
from analytics.clv import ConvergenceError
from analytics.filters import CUSTOMER_FACTS_META
from analytics.model_store import data_fingerprint, load_card, read_fingerprint
from analytics.refresh import refresh
from analytics.rfm import SEGMENT_NAMES
from analytics.risk import (
    RiskFilter,
    at_risk,
    combine_scores,
    historical_value,
    predicted_clv_by,
    probabilistic_scores,
    recommended_action,
    risk_band,
)
from bot.commands import churn_risk, export_at_risk, model
from bot.router import Router
from bot.settings import Settings
from storage.geography import ALL, Place
from storage.store import get_meta, open_store


def router(engine: Engine, **settings) -> Router:  # noqa: ANN003
    r = Router(engine, Settings(**settings))
    for cmd in (churn_risk.COMMAND, export_at_risk.COMMAND, model.COMMAND):
        r.commands[cmd.name] = cmd
    return r


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The synthetic shop, refreshed with the risk scorer."""
    engine = new_store(tmp_path_factory.mktemp('risk'), "shop.db")
    insert(engine, synthetic_shop())
    report = refresh(engine, AS_OF, scorers=risk.default_scorers(HORIZON, 42), k=3)
    assert not report.scorer_errors
    return engine


def scores(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(text("SELECT s.*, f.revenue, f.tenure_days, f.state, f.region FROM customer_scores s "
                                "JOIN customer_features f USING (customer_id)"), conn).set_index("customer_id")


# --- bands, actions, values ---------------------------------------------------------------------


def test_risk_band_thresholds() -> None:
    p = np.array([0.0, 0.3999, 0.4, 0.6999, 0.7, 1.0, np.nan])
    assert list(risk_band(p, 0.7, 0.4)) == ["low", "low", "medium", "medium", "high", "high", None]
    assert list(risk_band(p[:6], 0.9, 0.1)) == ["low", "medium", "medium", "medium", "medium", "high"]
    for high, medium in ((0.4, 0.7), (0.7, 0.0), (1.0, 0.5)):
        with pytest.raises(ValueError):
            risk_band(p, high, medium)


def test_recommended_action_for_every_segment_and_band() -> None:
    assert set(risk.SEGMENT_ACTIONS) == set(SEGMENT_NAMES)
    for name in SEGMENT_NAMES:
        high, medium = recommended_action(name, "high"), recommended_action(name, "medium")
        assert high == risk.SEGMENT_ACTIONS[name] and medium.startswith("Next campaign: ")
    assert recommended_action("Champions", "low") == recommended_action(None, None)
    assert "win-back" in recommended_action("Can't Lose Them", "high")


def test_historical_value_per_horizon() -> None:
    # R$ 900 over 299 days → 300 days of life: R$ 270 per 90 days; a 10-day-old customer's
    # R$ 50 counts as spent over a whole horizon
    assert list(historical_value([900.0, 50.0], [299, 9], 90)) == pytest.approx([270.0, 50.0])


def test_combine_scores_fallbacks() -> None:
    f = pd.DataFrame({"revenue": [900.0, 100.0, 50.0], "tenure_days": [299, 89, 0]},
                     index=pd.Index(["a", "b", "c"], name="customer_id"))
    prob = pd.DataFrame({"p_alive": [0.9, 0.5, 1.0], "expected_purchases": [1.0, 0.2, 0.1],
                         "expected_spend": [100.0, 50.0, 40.0], "clv": [80.0, 9.0, 4.0],
                         "churn_prob": [0.3, 0.8, 0.95]}, index=f.index)
    sup = pd.Series([0.1, 0.75, np.nan], index=f.index)
    both = combine_scores(f, sup, prob, horizon_days=90, risk_high=0.7, risk_medium=0.4)
    assert list(both["churn_source"]) == ["supervised", "supervised", "bgnbd"]
    assert list(both["churn_prob"]) == [0.1, 0.75, 0.95]
    assert list(both["value_at_risk"]) == pytest.approx([0.1 * 80, 0.75 * 9, 0.95 * 4])
    assert list(both["risk_band"]) == ["low", "high", "high"]
    no_model = combine_scores(f, None, prob, horizon_days=90, risk_high=0.7, risk_medium=0.4)
    assert (no_model["churn_source"] == "bgnbd").all()
    assert list(no_model["churn_prob"]) == [0.3, 0.8, 0.95]
    no_clv = combine_scores(f, sup, None, horizon_days=90, risk_high=0.7, risk_medium=0.4)
    assert no_clv["clv"].isna().all() and no_clv["p_alive"].isna().all()
    assert list(no_clv["value_at_risk"])[:2] == pytest.approx([0.1 * 270, 0.75 * 100])
    assert pd.isna(no_clv["churn_source"].iloc[2]) and np.isnan(no_clv["value_at_risk"].iloc[2])


def test_bgnbd_churn_probability_is_the_horizon_event(scored: Engine) -> None:
    """P(no purchase in H days) from BG/NBD = 1 − P(alive)·(1 − ((α+T)/(α+T+H))^(r+x)),
    checked against an independent Monte Carlo of the fitted model for one customer."""
    ps = probabilistic_scores(read_history(scored), AS_OF, HORIZON, 0.10)
    s = ps.scores
    assert (s["churn_prob"] >= 1 - s["p_alive"] - 1e-12).all()
    assert s["clv"].gt(0).all() and s["expected_purchases"].gt(0).all()
    # Monte Carlo for a repeat buyer: draw (alive, λ) from the posterior, count purchases in H
    summary_row = _summary_of(scored).loc[s.index[s["p_alive"].lt(0.99)][0]]
    r, alpha = ps.bgnbd["r"], ps.bgnbd["alpha"]
    x, T = summary_row["frequency"], summary_row["T"]
    rng = np.random.default_rng(0)
    p_alive = s.loc[summary_row.name, "p_alive"]
    lam = rng.gamma(r + x, 1 / (alpha + T), 400_000)
    alive = rng.random(400_000) < p_alive
    none = ~alive | (rng.poisson(lam * HORIZON) == 0)
    assert s.loc[summary_row.name, "churn_prob"] == pytest.approx(none.mean(), abs=0.005)


def _summary_of(engine: Engine) -> pd.DataFrame:
    h = read_history(engine)
    o = h.orders[h.orders["purchase"]]
    tx = pd.DataFrame({"c": h.customer_ids[o["cust"].to_numpy()], "at": o["purchased_at"], "v": o["revenue"]})
    return clv_module.rfm_summary(tx, "c", "at", "v", AS_OF)


# --- the scorer in the refresh ----------------------------------------------------------------------


def test_scores_written_by_the_refresh(scored: Engine) -> None:
    s = scores(scored)
    assert len(s) > 400 and (s["churn_source"] == "supervised").all()
    assert s["churn_prob"].between(0, 1).all() and s["clv"].gt(0).all()
    assert np.allclose(s["value_at_risk"], s["churn_prob"] * s["clv"])
    assert (s["risk_band"] == risk_band(s["churn_prob"], 0.7, 0.4)).all()
    assert s["model_version"].str.contains("cr-").all()
    assert load_card(scored, "churn")["status"] == "ok" and load_card(scored, "clv")["status"] == "ok"


def test_fallback_to_bgnbd_when_the_model_cannot_be_trained(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    insert(engine, synthetic_shop(customers=80, seed=5, buy_rate=1 / 200))  # 2 came back at c0
    report = refresh(engine, AS_OF, scorers=risk.default_scorers(HORIZON, 42), k=2)
    assert not report.scorer_errors
    s = scores(engine)
    assert (s["churn_source"] == "bgnbd").all()
    expected = probabilistic_scores(read_history(engine), AS_OF, HORIZON, 0.10).scores
    assert np.allclose(s["churn_prob"], expected.loc[s.index, "churn_prob"])
    assert (s["churn_prob"] >= 1 - s["p_alive"] - 1e-12).all()
    card = load_card(engine, "churn")
    assert card["status"] == "unavailable" and "at least 25" in card["reason"]
    answer = router(engine).handle("/churn-risk")
    assert not answer.is_error
    assert any("could not be trained" in n and "BG/NBD" in n for n in answer.notes)
    m = router(engine).handle("/model")
    assert not m.is_error and "could not be trained" in m.summary


def test_the_refresh_reads_the_data_fingerprint_once(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    insert(engine, synthetic_shop(customers=80, seed=5, buy_rate=1 / 200))
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(statement)

    read_fingerprint(engine)
    fingerprint_queries = set(statements)
    statements.clear()
    report = refresh(engine, AS_OF, scorers=risk.default_scorers(HORIZON, 42), k=2)
    event.remove(engine, "before_cursor_execute", record)
    assert not report.scorer_errors
    # the refresh's summary and the churn scorer's hash come from one run of the queries
    assert {q: statements.count(q) for q in fingerprint_queries} == dict.fromkeys(fingerprint_queries, 1)

    # the fingerprint the refresh handed over is the one the scorer computes on its own
    stored = load_card(engine, "churn")["data_fingerprint"]
    alone = risk.RiskScorer(HORIZON, 42, retrain=True)
    alone(engine, None, None, AS_OF)
    assert stored == load_card(engine, "churn")["data_fingerprint"] == data_fingerprint(engine)
    assert alone.version in report.model_version


def test_no_model_at_all_is_said_plainly(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    insert(engine, synthetic_shop(customers=60, seed=5, buy_rate=1 / 400))  # BG/NBD does not fit either
    report = refresh(engine, AS_OF, scorers=risk.default_scorers(HORIZON, 42), k=2)
    assert not report.scorer_errors and scores(engine)["churn_prob"].isna().all()
    answer = router(engine).handle("/churn-risk")
    assert answer.is_error
    assert "could not be trained" in answer.summary and "did not converge" in answer.summary


def test_bgnbd_not_converging_keeps_the_supervised_model_and_says_so(
        default_store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self, summary, weights=None):  # noqa: ANN001, ANN202
        raise ConvergenceError("BG/NBD fit did not converge after 1000 iterations (test)")

    monkeypatch.setattr(risk.BetaGeoFitter, "fit", fail)
    engine = open_store(default_store_url)
    insert(engine, synthetic_shop())
    report = refresh(engine, AS_OF, scorers=risk.default_scorers(HORIZON, 42), k=2)
    assert not report.scorer_errors
    s = scores(engine)
    assert (s["churn_source"] == "supervised").all() and s["clv"].isna().all()
    expected_value = historical_value(s["revenue"], s["tenure_days"], HORIZON)
    assert np.allclose(s["value_at_risk"], s["churn_prob"] * expected_value)
    assert load_card(engine, "clv")["status"] == "failed"
    answer = router(engine).handle("/churn-risk")
    assert not answer.is_error and answer.figures
    assert any("did not converge" in n and "historical spend" in n for n in answer.notes)
    assert any("supervised model" in n for n in answer.notes)
    assert "did not converge" in " ".join(router(engine).handle("/model").notes)
    with pytest.raises(Exception, match="no predicted CLV"):
        predicted_clv_by(engine, "state")


def test_the_next_clv_fit_starts_where_the_last_converged(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    insert(engine, synthetic_shop())
    scorer = risk.RiskScorer(HORIZON, 42)
    earlier = AS_OF - dt.timedelta(days=14)
    scorer(engine, None, None, earlier)
    first = load_card(engine, "clv")
    assert first["status"] == "ok" and first["warm_start"] == {"bgnbd": False, "gamma_gamma": False}
    assert risk.fit_starts(first) == {"bgnbd": first["bgnbd"], "gamma_gamma": first["gamma_gamma"]}

    out = scorer(engine, None, None, AS_OF).set_index("customer_id")  # two weeks of purchases later
    second = load_card(engine, "clv")
    assert second["warm_start"] == {"bgnbd": True, "gamma_gamma": True}
    assert second["bgnbd"] != first["bgnbd"]
    cold = probabilistic_scores(read_history(engine), AS_OF, HORIZON, 0.10)
    assert cold.warm == {"bgnbd": False, "gamma_gamma": False}
    for key in ("bgnbd", "gamma_gamma"):
        assert second["iterations"][key] < cold.iterations[key], key
        for name, value in cold.bgnbd.items() if key == "bgnbd" else cold.gamma_gamma.items():
            assert second[key][name] == pytest.approx(value, rel=1e-4), (key, name)
    assert len(out) == len(cold.scores) > 400
    for col in ("p_alive", "expected_purchases", "expected_spend", "clv"):
        np.testing.assert_allclose(out[col].astype(float), cold.scores.loc[out.index, col], rtol=1e-5,
                                   err_msg=col)


def test_fit_starts_only_from_a_converged_fit_in_days() -> None:
    ok = {"status": "ok", "time_unit": "day", "bgnbd": {"r": 1.0, "alpha": 2.0, "a": 0.5, "b": 3.0},
          "gamma_gamma": {"p": 5.0, "q": 4.0, "v": 100.0}}
    assert risk.fit_starts(ok) == {"bgnbd": ok["bgnbd"], "gamma_gamma": ok["gamma_gamma"]}
    assert risk.fit_starts({**ok, "status": "failed"}) == {}
    assert risk.fit_starts({**ok, "time_unit": "week"}) == {}
    assert risk.fit_starts({k: v for k, v in ok.items() if k != "time_unit"}) == {}
    assert risk.fit_starts(None) == {}
    assert risk.fit_starts({**ok, "gamma_gamma": None}) == {"bgnbd": ok["bgnbd"]}


def test_a_warm_fit_that_fails_is_done_again_from_the_default_start(
        scored: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    history = read_history(scored)
    cold = probabilistic_scores(history, AS_OF, HORIZON, 0.10)

    class WarmFails(clv_module.BetaGeoFitter):
        def fit(self, summary, weights=None):  # noqa: ANN001, ANN202
            if self.init_params is not None:
                raise ConvergenceError("BG/NBD fit did not converge (test)")
            return super().fit(summary, weights)

    monkeypatch.setattr(risk, "BetaGeoFitter", WarmFails)
    again = probabilistic_scores(history, AS_OF, HORIZON, 0.10,
                                 {"bgnbd": cold.bgnbd, "gamma_gamma": cold.gamma_gamma})
    assert again.warm == {"bgnbd": False, "gamma_gamma": True}
    assert again.bgnbd == cold.bgnbd and again.iterations["bgnbd"] == cold.iterations["bgnbd"]
    pd.testing.assert_series_equal(again.scores["p_alive"], cold.scores["p_alive"])


# --- the at-risk list -------------------------------------------------------------------------------


def test_at_risk_is_ranked_by_value_not_probability(scored: Engine) -> None:
    s = scores(scored)
    res = at_risk(scored, RiskFilter(min_prob=0.5), top=1000)
    chosen = s[s["churn_prob"] >= 0.5]
    assert res.at_risk == len(chosen) == len(res.top) and res.customers == len(s)
    assert res.value_at_risk == pytest.approx(chosen["value_at_risk"].sum())
    assert res.revenue == pytest.approx(chosen["revenue"].sum())
    assert res.share == pytest.approx(len(chosen) / len(s))
    v = res.top["expected_value_at_risk"].to_numpy()
    assert np.all(np.diff(v) <= 0)
    # probability alone would give another order
    assert list(res.top["customer_id"]) != list(chosen.sort_values("churn_prob", ascending=False).index)
    assert res.by_group["value_at_risk"].sum() == pytest.approx(res.value_at_risk)
    assert res.by_group["at_risk"].sum() == res.at_risk


def test_at_risk_default_is_the_high_band_and_filters_combine(scored: Engine) -> None:
    s = scores(scored)
    res = at_risk(scored, top=5)
    assert res.at_risk == (s["risk_band"] == "high").sum() and len(res.top) == 5
    place = Place("state", "SP", "São Paulo (SP)")
    seg = s["segment"].value_counts().index[0]
    both = at_risk(scored, RiskFilter(place, seg), top=0)
    in_base = s[(s["state"] == "SP") & (s["segment"] == seg)]
    assert both.customers == len(in_base)
    assert both.at_risk == (in_base["risk_band"] == "high").sum()
    assert both.group_level == "segment"


def _expected_figures(s: pd.DataFrame, place: Place, segment: str | None) -> dict:
    """At-risk figures computed in pandas from the scores joined to the features."""
    base = s
    if not place.is_all:
        base = base[base[place.kind] == place.value]
    if segment:
        base = base[base["segment"] == segment]
    risky = base[base["risk_band"] == "high"]
    level = "segment" if place.kind == "state" else "state"
    groups = risky.groupby(risky[level].fillna("(unknown)"))["value_at_risk"].agg(["size", "sum"])
    return {"customers": len(base), "at_risk": len(risky), "value_at_risk": risky["value_at_risk"].sum(),
            "revenue": risky["revenue"].sum(), "sources": base["churn_source"].value_counts().to_dict(),
            "groups": {g: (int(n), v) for g, (n, v) in groups.iterrows()}}


def test_at_risk_figures_add_up_from_the_risk_facts(scored: Engine) -> None:
    """The refresh writes agg_customers; the figures of every place and segment filter taken
    from it equal those computed from the scores, in pandas and by the raw-score queries."""
    assert get_meta(scored, CUSTOMER_FACTS_META)["rows"] > 0
    s = scores(scored)
    seg = s["segment"].value_counts().index[0]
    region = s["region"].dropna().iloc[0]
    for place, segment in ((ALL, None), (ALL, seg), (Place("state", "SP", "SP"), None),
                           (Place("state", "SP", "SP"), seg), (Place("region", region, region), None)):
        f = RiskFilter(place, segment)
        res, want = at_risk(scored, f, top=0), _expected_figures(s, place, segment)
        raw = risk._figures_from_scores(scored, f, res.group_level)
        assert (res.customers, res.at_risk) == (want["customers"], want["at_risk"]) == (raw.customers, raw.at_risk)
        assert res.value_at_risk == pytest.approx(want["value_at_risk"]) == raw.value_at_risk
        assert res.revenue == pytest.approx(want["revenue"]) == raw.revenue
        assert res.sources == want["sources"] == raw.sources
        got = {g: (n, v) for g, n, v in res.by_group.itertuples(index=False)}
        assert got.keys() == want["groups"].keys()
        for g, (n, v) in want["groups"].items():
            assert got[g][0] == n and got[g][1] == pytest.approx(v)
        assert list(res.by_group["value_at_risk"]) == sorted(res.by_group["value_at_risk"], reverse=True)


def test_churn_risk_command(scored: Engine) -> None:
    answer = router(scored).handle("/churn-risk top 5 min-prob 0.6")
    assert not answer.is_error, answer.summary
    figs = {f.label: f.raw for f in answer.figures}
    res = at_risk(scored, RiskFilter(min_prob=0.6))
    assert figs["Customers at risk"] == res.at_risk
    assert figs["Value at risk (next 90 days)"] == pytest.approx(res.value_at_risk)
    assert len(answer.tables[0].frame) == 5 and answer.charts[0].png.startswith(b"\x89PNG")
    (button,) = answer.buttons
    assert button.command == "/export-at-risk min-prob 0.6" and button.action_id == "export_at_risk"
    assert any("supervised model" in n for n in answer.notes)
    seg = router(scored).handle("/churn-risk SP segment cant-lose-them")
    assert not seg.is_error and "segment Can't Lose Them" in seg.filter_label
    assert router(scored).handle("/churn-risk segment nonsense").is_error
    assert router(scored).handle("/churn-risk min-prob 2").is_error


def test_model_command_shows_the_card(scored: Engine) -> None:
    answer = router(scored).handle("/model")
    assert not answer.is_error
    figs = {f.label: f.raw for f in answer.figures}
    card = load_card(scored, "churn")
    assert figs["ROC-AUC (out of time)"] == card["metrics"]["roc_auc"]
    assert figs["Version"] == card["version"]
    assert "2024-01-02" in answer.summary and "no purchase in the 90 days" in answer.summary
    assert any("days_per_order" in n for n in answer.notes)
    assert any("retrains it whenever the data or the as-of date change" in n for n in answer.notes)
    weekly = router(scored, churn_retrain_days=7).handle("/model")
    rule = f"scores with it until its as-of date is 7 days past {card['as_of']}"
    assert any(rule in n and "then retrains it" in n for n in weekly.notes)


def test_model_command_says_the_last_refresh_scored_with_an_earlier_model(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    engine = new_store(tmp_path, "m.db")
    insert(engine, synthetic_shop())
    weekly = risk.default_scorers(HORIZON, 42, retrain_after_days=7)
    refresh(engine, AS_OF, scorers=weekly, k=2)
    card = load_card(engine, "churn")
    monkeypatch.setattr(risk, "train_churn_model", lambda *a, **k: pytest.fail("retrained"))
    later = AS_OF + dt.timedelta(days=2)
    report = refresh(engine, later, scorers=weekly, k=2)
    assert not report.scorer_errors and report.as_of.date == later
    assert get_meta(engine, risk.SCORING_META_KEY)["supervised"]["trained_as_of"] == AS_OF.isoformat()
    notes = " ".join(router(engine, churn_retrain_days=7).handle("/model").notes)
    assert (f"The last refresh (as of {later}) scored with it: trained as of {AS_OF} (2 days earlier)"
            in notes), notes
    assert load_card(engine, "churn")["version"] == card["version"]


def test_commands_need_scores(default_store_url: str) -> None:
    engine = open_store(default_store_url)
    answer = router(engine).handle("/churn-risk")
    assert answer.is_error and "pulse refresh" in answer.summary
    assert router(engine).handle("/model").is_error


def test_predicted_clv_by_geography(scored: Engine) -> None:
    s = scores(scored)
    by_state = predicted_clv_by(scored, "state")
    expected = s.groupby("state")["clv"].mean()
    assert np.allclose(by_state.loc[expected.index, "predicted_clv"], expected)
    assert set(predicted_clv_by(scored, "region").index) <= {"Sudeste", "Nordeste", "Sul"}


def test_at_risk_queries_on_both_dialects(store: Engine) -> None:
    """The SQL behind /churn-risk and the CSV on SQLite and PostgreSQL."""
    insert(store, synthetic_shop(customers=200, seed=11))
    refresh(store, AS_OF, scorers=risk.default_scorers(HORIZON, 42), k=2)
    s = scores(store)
    res = at_risk(store, RiskFilter(min_prob=0.3), top=3)
    assert res.at_risk == (s["churn_prob"] >= 0.3).sum()
    assert res.value_at_risk == pytest.approx(s.loc[s["churn_prob"] >= 0.3, "value_at_risk"].sum())
    csv = b"".join(risk.iter_at_risk_csv(store, RiskFilter(min_prob=0.3), chunk_rows=7)).decode()
    assert len(csv.strip().splitlines()) == res.at_risk + 1
    assert isinstance(res.as_of, dt.date) and res.as_of == AS_OF
    # the default filter adds up from agg_customers, written by INSERT … SELECT on both dialects
    assert at_risk(store, top=0).at_risk == (s["risk_band"] == "high").sum() > 0


def test_customer_facts_in_memory_equal_the_query(scored: Engine) -> None:
    """The refresh groups its frames in pandas (`customer_facts_frame`); the query that
    `build_facts` runs alone over the stored rows gives the same groups and sums."""
    from analytics.facts import CUSTOMER_FACT_KEYS, customer_facts_frame, write_customer_facts

    with scored.connect() as conn:
        features = pd.read_sql(text("SELECT * FROM customer_features"), conn)
        stored = pd.read_sql(text("SELECT * FROM customer_scores"), conn)
    in_memory = customer_facts_frame(features, stored)
    with scored.connect() as conn:
        transaction = conn.begin()
        write_customer_facts(conn)
        queried = pd.read_sql(text("SELECT * FROM agg_customers"), conn)
        transaction.rollback()

    def ordered(frame: pd.DataFrame) -> pd.DataFrame:
        keys = frame[CUSTOMER_FACT_KEYS].astype(object).fillna("(null)")
        return frame.assign(**keys).sort_values(CUSTOMER_FACT_KEYS, ignore_index=True)

    a, b = ordered(in_memory), ordered(queried)
    assert len(a) == len(b) > 3
    assert (a[CUSTOMER_FACT_KEYS] == b[CUSTOMER_FACT_KEYS]).all().all()
    for col in ("customers", "buyers", "orders", "repeaters", "clv_customers"):
        assert (a[col].astype(int) == b[col].astype(int)).all(), col
    for col in ("revenue", "value_at_risk", "clv"):
        assert (a[col].isna() == b[col].isna()).all(), col
        assert a[col].fillna(0).to_numpy() == pytest.approx(b[col].fillna(0).to_numpy(), rel=1e-9), col


def test_at_risk_list_read_either_way_gives_the_same_rows(store: Engine) -> None:
    """The ranked list read by walking the band in value order or from the place's (or
    segment's) customers is the same list, on both dialects; the walk is chosen for the
    whole base and a place with many customers at risk, not for one with few."""
    shop = synthetic_shop(customers=300, seed=5)
    shop["customers"].loc[shop["customers"].index[:8], ["state", "region"]] = ("AC", "Norte")
    insert(store, shop)
    refresh(store, AS_OF, scorers=risk.default_scorers(HORIZON, 42), k=2)
    s = scores(store)
    high = s[s["risk_band"] == "high"]
    by_state = high["state"].value_counts()
    assert 0 < by_state["AC"] < 8 and by_state.iloc[0] > 30
    big, small = Place("state", by_state.index[0], by_state.index[0]), Place("state", "AC", "Acre (AC)")
    seg = high["segment"].value_counts().index[0]
    for f in (RiskFilter(), RiskFilter(big), RiskFilter(small), RiskFilter(segment=seg),
              RiskFilter(big, seg), RiskFilter(small, min_prob=0.2)):
        want = s[s["churn_prob"] >= 0.2] if f.min_prob is not None else high
        if not f.place.is_all:
            want = want[want["state"] == f.place.value]
        if f.segment:
            want = want[want["segment"] == f.segment]
        # by value at risk, largest first, then customer id
        want_ids = list(want.sort_index().sort_values("value_at_risk", ascending=False, kind="stable").index)
        for limit in (3, None):
            with store.connect() as conn:
                got = {walk: [r[0] for r in conn.execute(risk.at_risk_query(f, limit, walk_band=walk))]
                       for walk in (True, False)}
            assert got[True] == got[False] == want_ids[:limit]
        assert risk.count_at_risk(store, f) == len(want)
        assert len(risk.at_risk_frame(store, f, limit=4)) == min(4, len(want))
    assert risk.walk_band_by_value(store, RiskFilter(), 3) and risk.walk_band_by_value(store, RiskFilter(), None)
    assert risk.walk_band_by_value(store, RiskFilter(big), 1)
    assert not risk.walk_band_by_value(store, RiskFilter(small), 3)
    assert not risk.walk_band_by_value(store, RiskFilter(small), None)


def test_churn_features_prepared_ahead_are_used_only_for_their_dataset_and_date(scored: Engine,
                                                                              monkeypatch) -> None:  # noqa: ANN001
    """`RiskScorer.prepare` makes the churn features that a call with the same dataset and
    date scores; the scores are those of a call that makes them itself."""
    from analytics.dataset import read_dataset

    data = read_dataset(scored)
    made: list[dt.date] = []
    real = risk.churn_features

    def counted(history, cutoff):  # noqa: ANN001, ANN202
        made.append(cutoff)
        return real(history, cutoff)

    monkeypatch.setattr(risk, "churn_features", counted)
    scorer = risk.RiskScorer(HORIZON, 42)
    plain = scorer(scored, None, None, AS_OF, dataset=data)
    assert made == [AS_OF]

    prepared = scorer.prepare(data, AS_OF)
    assert made == [AS_OF, AS_OF]
    pd.testing.assert_frame_equal(scorer(scored, None, None, AS_OF, dataset=data, prepared=prepared), plain)
    assert made == [AS_OF, AS_OF]  # the call scored what was prepared

    # prepared for another date, or of another dataset: made again for the call's
    other_day = AS_OF - dt.timedelta(days=30)
    for other in (scorer.prepare(data, other_day), scorer.prepare(read_dataset(scored), AS_OF)):
        before = len(made)
        pd.testing.assert_frame_equal(scorer(scored, None, None, AS_OF, dataset=data, prepared=other), plain)
        assert made[before:] == [AS_OF]
