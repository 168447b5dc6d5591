"""BG/NBD, Gamma-Gamma and CLV: published CDNOW figures, model identities, edge cases."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from analytics.clv import (
    BetaGeoFitter,
    ConvergenceError,
    GammaGammaFitter,
    customer_lifetime_value,
    rfm_summary,
)
from analytics.errors import AnalyticsError
from benchmarks.bench_bgnbd import TRUE_BGNBD, simulate
from tests.conftest import data_path

CAL_END = "1997-09-30"  # 39 weeks from 1997-01-01, as in Fader, Hardie & Lee (2005)
OBS_END = "1998-06-30"


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    raw = pd.read_csv(
        data_path("cdnow", "CDNOW_sample.txt.gz"), sep=r"\s+", header=None,
        names=["master_id", "customer", "date", "cds", "dollars"],
        dtype={"master_id": str, "customer": str, "date": str},
    )
    raw["date"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    return raw


@pytest.fixture(scope="module")
def summary(cdnow: pd.DataFrame) -> pd.DataFrame:
    return rfm_summary(cdnow, "customer", "date", "dollars", OBS_END, period_days=7,
                       calibration_end=CAL_END)


@pytest.fixture(scope="module")
def bgf(summary: pd.DataFrame) -> BetaGeoFitter:
    return BetaGeoFitter().fit(summary)


@pytest.fixture(scope="module")
def ggf(summary: pd.DataFrame) -> GammaGammaFitter:
    return GammaGammaFitter().fit(summary)


def toy_summary() -> pd.DataFrame:
    return pd.DataFrame({
        "frequency": [0, 1, 3, 3, 6, 0],
        "recency": [0.0, 2.0, 10.0, 30.0, 35.0, 0.0],
        "T": [5.0, 20.0, 38.0, 38.0, 38.0, 39.0],
        "monetary_value": [0.0, 20.0, 35.0, 15.0, 50.0, 0.0],
    })


# ---------------------------------------------------------------- RFM summary on the raw file


@pytest.mark.realdata
def test_rfm_summary_matches_plain_pandas(cdnow: pd.DataFrame, summary: pd.DataFrame) -> None:
    # Independent computation: one purchase per customer and day, split at the calibration end.
    daily = cdnow.groupby(["customer", "date"])["dollars"].sum().reset_index()
    cal = daily[daily["date"] <= CAL_END]
    hold = daily[(daily["date"] > CAL_END) & (daily["date"] <= OBS_END)]
    first = cal.groupby("customer")["date"].min()
    last = cal.groupby("customer")["date"].max()
    n_days = cal.groupby("customer").size()
    first_value = cal.sort_values("date").groupby("customer")["dollars"].first()
    repeat_mean = ((cal.groupby("customer")["dollars"].sum() - first_value) / (n_days - 1)).where(
        n_days > 1, 0.0
    )

    assert len(summary) == 2357 and summary.index.is_unique
    assert int((summary["frequency"] > 0).sum()) == 946
    s = summary.loc[first.index]
    np.testing.assert_array_equal(s["frequency"], n_days - 1)
    np.testing.assert_allclose(s["recency"], (last - first).dt.days / 7)
    np.testing.assert_allclose(s["T"], (pd.Timestamp(CAL_END) - first).dt.days / 7)
    np.testing.assert_allclose(s["monetary_value"], repeat_mean, rtol=1e-12)
    holdout_days = hold.groupby("customer").size().reindex(s.index, fill_value=0)
    np.testing.assert_array_equal(s["frequency_holdout"], holdout_days)
    assert (s["duration_holdout"] == 39.0).all()
    # Hardie's worked example customer: x = 2, t_x = 30.43, T = 38.86 weeks.
    assert s.loc["0001", "frequency"] == 2
    assert s.loc["0001", ["recency", "T"]].round(2).tolist() == [30.43, 38.86]


def test_rfm_summary_merges_same_day_and_cuts_at_observation_end() -> None:
    tx = pd.DataFrame({
        "c": ["a", "a", "a", "a", "b", "c"],
        "d": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 18:00", "2024-01-08", "2024-01-15",
                             "2024-01-03", "2024-02-01"], format="ISO8601"),
        "v": [10.0, 5.0, 20.0, 40.0, 7.0, 1.0],
    })
    s = rfm_summary(tx, "c", "d", "v", "2024-01-15", period_days=7)
    assert s.index.name == "c" and list(s.index) == ["a", "b"]  # c buys after the end
    assert s.loc["a"].tolist() == [2, 2.0, 2.0, 30.0]  # 01-01 merged; repeats 20 and 40
    assert s.loc["b"].tolist() == [0, 0.0, 12 / 7, 0.0]

    split = rfm_summary(tx, "c", "d", "v", "2024-01-15", calibration_end="2024-01-08")
    assert split.loc["a", ["frequency", "recency", "T"]].tolist() == [1, 7.0, 7.0]
    assert split.loc["a", "monetary_value"] == 20.0
    assert split.loc["a", ["frequency_holdout", "monetary_value_holdout", "duration_holdout"]].tolist() == [1, 40.0, 7.0]
    with pytest.raises(ValueError, match="calibration_end"):
        rfm_summary(tx, "c", "d", "v", "2024-01-15", calibration_end="2024-02-01")


def test_rfm_summary_of_codes_in_order_equals_that_of_the_rows_shuffled() -> None:
    # integer customer codes sorted by code and time (as the refresh passes them) take a
    # path without hashing or sorting; shuffled, or as strings, they take pandas' own
    rng = np.random.default_rng(4)
    n = 5_000
    tx = pd.DataFrame({"c": np.sort(rng.integers(0, 700, n) * 3),
                       "d": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 200 * 24, n), unit="h"),
                       "v": rng.gamma(2.0, 20.0, n).round(2)})
    tx = tx.sort_values(["c", "d"], ignore_index=True)
    fast = rfm_summary(tx, "c", "d", "v", "2024-06-30", calibration_end="2024-05-01")
    shuffled = rfm_summary(tx.sample(frac=1.0, random_state=1), "c", "d", "v", "2024-06-30",
                           calibration_end="2024-05-01")
    as_text = rfm_summary(tx.assign(c=tx["c"].map("{:05d}".format)), "c", "d", "v", "2024-06-30",
                          calibration_end="2024-05-01")
    assert len(fast) > 600 and list(fast.index) == sorted(fast.index)
    pd.testing.assert_frame_equal(fast, shuffled, rtol=1e-12)
    np.testing.assert_allclose(fast.to_numpy(), as_text.to_numpy(), rtol=1e-12)
    assert list(as_text.index) == [f"{c:05d}" for c in fast.index]


# ---------------------------------------------------------------- published CDNOW estimates


@pytest.mark.realdata
def test_bgnbd_reproduces_fader_hardie_lee_2005(bgf: BetaGeoFitter) -> None:
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert bgf.params_[name] == pytest.approx(value, abs=5e-4), name
    assert bgf.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)
    assert bgf.converged_ and bgf.n_customers_ == 2357


@pytest.mark.realdata
def test_gamma_gamma_reproduces_published_estimates(ggf: GammaGammaFitter) -> None:
    assert ggf.n_customers_ == 946
    assert ggf.params_["p"] == pytest.approx(6.25, abs=5e-3)
    assert ggf.params_["q"] == pytest.approx(3.74, abs=5e-3)
    assert ggf.params_["v"] == pytest.approx(15.44, abs=5e-3)  # gamma in the paper
    assert ggf.log_likelihood_ == pytest.approx(-4055.92, abs=5e-3)
    assert ggf.converged_


@pytest.mark.realdata
def test_expectations_match_hardies_spreadsheet(bgf: BetaGeoFitter) -> None:
    times = np.array([0.1429, 1.0, 3.0, 31.8571, 32.0, 78.0])
    expected = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576])
    np.testing.assert_allclose(bgf.expected_purchases_unconditional(times), expected, atol=6e-4)
    one = pd.DataFrame({"frequency": [2], "recency": [30.43], "T": [38.86]})
    assert bgf.expected_purchases(39, one)[0] == pytest.approx(1.226, abs=1e-3)


# ---------------------------------------------------------------- model identities


@pytest.mark.realdata
def test_grouping_with_weights_gives_the_same_fit(summary: pd.DataFrame, bgf: BetaGeoFitter) -> None:
    counts = summary.groupby(["frequency", "recency", "T"]).size().rename("n").reset_index()
    assert len(counts) == bgf.n_groups_ < len(summary)
    weighted = BetaGeoFitter().fit(counts, weights=counts["n"])
    assert weighted.params_ == bgf.params_
    assert weighted.log_likelihood_ == bgf.log_likelihood_
    assert weighted.n_customers_ == 2357

    ungrouped = BetaGeoFitter(group=False).fit(summary)
    assert ungrouped.n_groups_ == len(summary)
    for name, value in bgf.params_.items():
        assert ungrouped.params_[name] == pytest.approx(value, rel=1e-7)
    assert ungrouped.log_likelihood_ == pytest.approx(bgf.log_likelihood_, rel=1e-12)

    repeaters = summary[summary["frequency"] > 0]
    gg_weighted = GammaGammaFitter().fit(pd.concat([repeaters, repeaters.iloc[:100]]))
    gg_doubled = GammaGammaFitter().fit(
        repeaters, weights=np.where(np.arange(len(repeaters)) < 100, 2, 1)
    )
    assert gg_weighted.params_ == gg_doubled.params_


def test_likelihoods_and_gradients_match_the_row_by_row_formulas() -> None:
    # the fits compute each special function once per distinct frequency; the values must
    # be those of the papers' formulas written row by row, and the gradients the slopes
    from scipy.optimize import approx_fprime
    from scipy.special import betaln, gammaln

    from analytics.clv import _bgnbd_neg_mean_ll, _bgnbd_terms, _gg_ll, _gg_neg_mean_ll

    s = simulate(3000, seed=5, period_days=1.0, window_days=273, cohort_days=84)
    x, t_x, t_cal = (s[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    w = np.random.default_rng(1).integers(1, 4, len(x)).astype(float)
    for r, alpha, a, b in ((0.24, 30.0, 0.8, 2.4), (1.5, 4.0, 0.05, 9.0)):
        ll = _bgnbd_terms(np.array([r, alpha, a, b]), x, t_x, t_cal)[3]
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + t_cal)
        a3 = [betaln(a + 1, b + xi - 1) - betaln(a, b) - (r + xi) * np.log(alpha + ti) if xi > 0 else -np.inf
              for xi, ti in zip(x, t_x, strict=True)]
        np.testing.assert_allclose(ll, a1 + np.logaddexp(a2, a3), rtol=1e-13)
        log_params = np.log([r, alpha, a, b])
        value, grad = _bgnbd_neg_mean_ll(log_params, x, t_x, t_cal, w)
        assert value == pytest.approx(-(w @ ll) / w.sum(), rel=1e-13)
        slope = approx_fprime(log_params, lambda lp: _bgnbd_neg_mean_ll(lp, x, t_x, t_cal, w)[0], 1e-7)
        np.testing.assert_allclose(grad, slope, rtol=1e-4, atol=1e-7)

    buyers = x > 0
    xb, mb, wb = x[buyers], s["monetary_value"].to_numpy()[buyers], w[buyers]
    p, q, v = 6.25, 3.74, 15.44
    expected = (gammaln(p * xb + q) - gammaln(p * xb) - gammaln(q) + q * np.log(v)
                + (p * xb - 1) * np.log(mb) + p * xb * np.log(xb) - (p * xb + q) * np.log(v + mb * xb))
    np.testing.assert_allclose(_gg_ll(np.array([p, q, v]), xb, mb), expected, rtol=1e-13)
    log_params = np.log([p, q, v])
    slope = approx_fprime(log_params, lambda lp: _gg_neg_mean_ll(lp, xb, mb, wb)[0], 1e-7)
    np.testing.assert_allclose(_gg_neg_mean_ll(log_params, xb, mb, wb)[1], slope, rtol=1e-4, atol=1e-7)


@pytest.mark.realdata
def test_fitted_models_survive_pickling(summary: pd.DataFrame, bgf: BetaGeoFitter,
                                        ggf: GammaGammaFitter) -> None:
    # The models table stores joblib (pickle) dumps.
    bgf2, ggf2 = pickle.loads(pickle.dumps((bgf, ggf)))
    assert bgf2.params_ == bgf.params_ and ggf2.params_ == ggf.params_
    np.testing.assert_array_equal(bgf2.predict_alive(summary), bgf.predict_alive(summary))
    np.testing.assert_array_equal(
        customer_lifetime_value(bgf2, ggf2, summary, 365, 0.1, period_days=7),
        customer_lifetime_value(bgf, ggf, summary, 365, 0.1, period_days=7),
    )


def test_p_alive_is_one_without_repeats_and_falls_with_t() -> None:
    bgf = BetaGeoFitter()
    bgf.params_ = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    s = toy_summary()
    alive = bgf.predict_alive(s)
    assert (alive[s["frequency"] == 0] == 1.0).all()
    assert ((alive > 0) & (alive < 1))[s["frequency"] > 0].all()
    longer = pd.DataFrame({"frequency": 3, "recency": 10.0, "T": np.arange(10.0, 200.0, 5.0)})
    assert (np.diff(bgf.predict_alive(longer)) < 0).all()
    # More recent last purchase, same x and T: more likely alive.
    assert alive[3] > alive[2]
    # A heavy buyer long gone: no overflow, P(alive) ~ 0.
    gone = pd.DataFrame({"frequency": [400], "recency": [1.0], "T": [300.0]})
    assert 0.0 <= bgf.predict_alive(gone)[0] < 1e-12


def test_conditional_expectation_of_a_new_customer_is_the_unconditional_one() -> None:
    # Conditional (Euler-transformed) and unconditional formulas are computed separately.
    bgf = BetaGeoFitter()
    new = pd.DataFrame({"frequency": [0], "recency": [0.0], "T": [0.0]})
    for params in ({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
                   {"r": 1.5, "alpha": 20.0, "a": 2.5, "b": 6.0}):
        bgf.params_ = params
        for t in (0.5, 10.0, 52.0, 300.0):
            assert bgf.expected_purchases(t, new)[0] == pytest.approx(
                bgf.expected_purchases_unconditional(t), rel=1e-10
            )


def test_expected_purchases_grows_with_t_and_frequency() -> None:
    bgf = BetaGeoFitter()
    bgf.params_ = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    s = pd.DataFrame({"frequency": [5, 5, 5], "recency": [30.0] * 3, "T": [38.0] * 3})
    e = bgf.expected_purchases(np.array([1.0, 10.0, 100.0]), s)
    assert (np.diff(e) > 0).all() and e[0] > 0
    more = pd.DataFrame({"frequency": [1, 5, 20], "recency": [30.0] * 3, "T": [38.0] * 3})
    assert (np.diff(bgf.expected_purchases(10.0, more)) > 0).all()


def test_expectation_is_finite_when_scipy_hyp2f1_hits_an_integer_case() -> None:
    # c - a - b of the hypergeometric term is an integer here, where scipy returns NaN.
    s = pd.DataFrame({"frequency": [500, 0], "recency": [9.0, 0.0], "T": [10.0, 10.0]})
    bgf = BetaGeoFitter()
    bgf.params_ = {"r": 2.0, "alpha": 100.0, "a": 3.0, "b": 50.0}
    exact = bgf.expected_purchases(5000.0, s)
    bgf.params_ = {"r": 2.0, "alpha": 100.0, "a": 3.0 + 1e-9, "b": 50.0}
    np.testing.assert_allclose(exact, bgf.expected_purchases(5000.0, s), rtol=1e-7)
    assert np.isfinite(exact).all() and (exact > 0).all()


def test_penalizer_shrinks_and_costs_likelihood() -> None:
    # data the model identifies: a sample of the BG/NBD process, the benchmark's simulator
    # (a Poisson count with a uniform recency let a and b run to their bounds on SciPy 1.17)
    s = simulate(2_000, seed=7, period_days=7.0, window_days=273, cohort_days=84)
    plain = BetaGeoFitter().fit(s)
    assert plain.params_["r"] == pytest.approx(TRUE_BGNBD["r"], rel=0.25)  # the sample's own parameters
    assert plain.params_["alpha"] == pytest.approx(TRUE_BGNBD["alpha"], rel=0.25)
    shrunk = BetaGeoFitter(penalizer_coef=0.01).fit(s)
    assert shrunk.log_likelihood_ < plain.log_likelihood_
    assert sum(v**2 for v in shrunk.params_.values()) < sum(v**2 for v in plain.params_.values())


# ---------------------------------------------------------------- CLV


@pytest.mark.realdata
def test_clv_is_discounted_spend_and_monotone_in_rate(
    summary: pd.DataFrame, bgf: BetaGeoFitter, ggf: GammaGammaFitter
) -> None:
    spend = ggf.conditional_expected_spend(summary)
    undiscounted = customer_lifetime_value(bgf, ggf, summary, 365, 0.0, period_days=7)
    # With no discounting the monthly steps telescope to E[purchases in 365 days] x spend.
    np.testing.assert_allclose(undiscounted, bgf.expected_purchases(365 / 7, summary) * spend, rtol=1e-10)
    values = [customer_lifetime_value(bgf, ggf, summary, 365, rate, period_days=7)
              for rate in (0.0, 0.05, 0.2, 1.0)]
    for richer, poorer in zip(values, values[1:], strict=False):
        assert (poorer < richer).all()
    assert (values[-1] > 0).all()
    assert (customer_lifetime_value(bgf, ggf, summary, 0, 0.1, period_days=7) == 0).all()
    longer = customer_lifetime_value(bgf, ggf, summary, 730, 0.1, period_days=7)
    assert (longer > values[1]).all()


@pytest.mark.realdata
def test_time_unit_does_not_change_clv(cdnow: pd.DataFrame, summary: pd.DataFrame,
                                       bgf: BetaGeoFitter, ggf: GammaGammaFitter) -> None:
    daily = rfm_summary(cdnow, "customer", "date", "dollars", CAL_END, period_days=1)
    bgf_days = BetaGeoFitter().fit(daily)
    assert bgf_days.params_["alpha"] == pytest.approx(7 * bgf.params_["alpha"], rel=1e-5)
    assert bgf_days.params_["r"] == pytest.approx(bgf.params_["r"], rel=1e-5)
    np.testing.assert_allclose(
        customer_lifetime_value(bgf_days, ggf, daily, 365, 0.1, period_days=1),
        customer_lifetime_value(bgf, ggf, summary, 365, 0.1, period_days=7),
        rtol=1e-4,
    )


def test_expected_spend_shrinks_towards_the_population_mean() -> None:
    ggf = GammaGammaFitter()
    ggf.params_ = {"p": 6.25, "q": 3.74, "v": 15.44}
    s = toy_summary()
    spend = ggf.conditional_expected_spend(s)
    population = 6.25 * 15.44 / (3.74 - 1)
    assert spend[0] == pytest.approx(population) and spend[5] == pytest.approx(population)
    # Between the customer's own mean and the population mean, closer to their own with more x.
    assert population > spend[3] > 15.0 and 50.0 > spend[4] > population
    same_mean = pd.DataFrame({"frequency": [1, 6, 60], "monetary_value": 50.0})
    assert (np.diff(ggf.conditional_expected_spend(same_mean)) > 0).all()


# ---------------------------------------------------------------- failures


def test_no_repeat_purchases_raise_convergence_error() -> None:
    s = pd.DataFrame({"frequency": 0, "recency": 0.0, "T": np.linspace(1, 50, 100),
                      "monetary_value": 0.0})
    with pytest.raises(ConvergenceError, match="no customer made a repeat purchase"):
        BetaGeoFitter().fit(s)
    with pytest.raises(ConvergenceError, match="no repeat buyers"):
        GammaGammaFitter().fit(s)
    assert issubclass(ConvergenceError, RuntimeError) and issubclass(ConvergenceError, AnalyticsError)


def test_unidentified_fits_raise_convergence_error() -> None:
    same_spend = pd.DataFrame({"frequency": [1, 2, 3, 1], "recency": [1.0, 2.0, 3.0, 4.0],
                               "T": [5.0] * 4, "monetary_value": [10.0] * 4})
    with pytest.raises(ConvergenceError, match="bound"):
        GammaGammaFitter().fit(same_spend)
    with pytest.raises(ConvergenceError, match="BG/NBD"):
        BetaGeoFitter().fit(same_spend.iloc[:1])
    with pytest.raises(ConvergenceError, match="did not converge"):
        BetaGeoFitter(max_iter=2).fit(toy_summary())


@pytest.mark.realdata
def test_a_warm_start_reaches_the_same_optimum_in_fewer_iterations(
        summary: pd.DataFrame, bgf: BetaGeoFitter, ggf: GammaGammaFitter) -> None:
    """Refitting on nearly the same customers (one in five hundred left out) from the last
    fit's parameters: the cold fit's optimum, in fewer iterations."""
    nearly = summary.drop(summary.index[::500])
    for fitter, last in ((BetaGeoFitter, bgf), (GammaGammaFitter, ggf)):
        cold = fitter().fit(nearly)
        warm = fitter(init_params=last.params_).fit(nearly)
        assert warm.params_ != last.params_  # it did refit
        assert warm.n_iter_ < cold.n_iter_, fitter.__name__
        assert warm.log_likelihood_ == pytest.approx(cold.log_likelihood_, rel=1e-10)
        for name, value in cold.params_.items():
            assert warm.params_[name] == pytest.approx(value, rel=1e-4), name


@pytest.mark.realdata
def test_a_warm_start_on_a_bound_or_unusable_is_handled(summary: pd.DataFrame, bgf: BetaGeoFitter) -> None:
    # a start on a bound is moved inside it (else the fit could not leave it without
    # looking stuck there), and the fit still finds the published optimum
    for name, edge in (("a", 1e-6), ("b", 1e6), ("r", 1e6)):
        refit = BetaGeoFitter(init_params={**bgf.params_, name: edge}).fit(summary)
        assert refit.log_likelihood_ == pytest.approx(bgf.log_likelihood_, rel=1e-10), name
        for key, value in bgf.params_.items():
            assert refit.params_[key] == pytest.approx(value, rel=1e-4), (name, key)
    # a start that does not name every parameter with a positive number: the default start
    for bad in ({"r": 1.0}, {**bgf.params_, "a": float("nan")}, {**bgf.params_, "b": 0.0},
                {**bgf.params_, "alpha": "1"}, {}):
        refit = BetaGeoFitter(init_params=bad).fit(summary)
        assert refit.params_ == bgf.params_ and refit.n_iter_ == bgf.n_iter_, bad


def test_bad_input_and_unfitted_use_are_reported() -> None:
    with pytest.raises(ValueError, match="recency"):
        BetaGeoFitter().fit(pd.DataFrame({"frequency": [1], "recency": [9.0], "T": [5.0]}))
    with pytest.raises(ValueError, match="frequency"):
        BetaGeoFitter().fit(pd.DataFrame({"frequency": [1.5], "recency": [1.0], "T": [5.0]}))
    with pytest.raises(ValueError, match="lacks column 'T'"):
        BetaGeoFitter().fit(pd.DataFrame({"frequency": [1], "recency": [1.0]}))
    with pytest.raises(ValueError, match="positive"):
        GammaGammaFitter().fit(toy_summary().assign(monetary_value=[0, 0, 10, -1, 5, 0]))
    with pytest.raises(NotFittedError):
        BetaGeoFitter().predict_alive(toy_summary())
    with pytest.raises(NotFittedError):
        GammaGammaFitter().conditional_expected_spend(toy_summary())
