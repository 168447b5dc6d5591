"""Probabilistic customer-lifetime-value models: BG/NBD, Gamma-Gamma and the RFM summary they use.

- BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way") models the number
  of repeat purchases and the probability that a customer is still "alive".
- Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013 note) models the
  mean spend per transaction of repeat buyers.

Both follow the scikit-learn contract: parameters in ``__init__``, ``fit(summary)`` returns self,
learned state in attributes ending in ``_``. The input is the per-customer summary made by
:func:`rfm_summary` (columns ``frequency``, ``recency``, ``T``, ``monetary_value``), in one time
unit ("period") of ``period_days`` days.

Fitting maximises the log-likelihood with L-BFGS-B over the logarithms of the parameters (box
bounds ``[1e-6, 1e6]``) and an analytic gradient. Customers with identical ``(frequency,
recency, T)`` are grouped and weighted by their count, so the cost depends on the number of
distinct rows, not of customers; dates are at day granularity, so ``recency`` and ``T`` take few
distinct values and a million customers fit in seconds. A fit that does not converge, ends on a
parameter bound or gives non-finite values raises :class:`ConvergenceError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1
from sklearn.exceptions import NotFittedError

from analytics.errors import AnalyticsError
from analytics.groups import non_decreasing, run_starts

__all__ = [
    "BetaGeoFitter",
    "ConvergenceError",
    "GammaGammaFitter",
    "customer_lifetime_value",
    "rfm_summary",
]

_LOG_BOUNDS = (math.log(1e-6), math.log(1e6))
_BOUND_TOL = 1e-6
_START_MARGIN = 1.0  # a warm start is kept this far (in log-parameters) inside the bounds
_GRAD_ACCEPT = 1e-5  # on the mean log-likelihood per customer
_DAYS_PER_YEAR = 365.25
_DAYS_PER_MONTH = _DAYS_PER_YEAR / 12

FloatArray = NDArray[np.float64]


MIN_BGNBD_CUSTOMERS = 4  # one per parameter (r, alpha, a, b)


class ConvergenceError(AnalyticsError, RuntimeError):
    """The maximum-likelihood fit failed (no convergence, a parameter on its bound, NaN/inf).

    Callers fall back to another model; if it reaches the bot it is an AnalyticsError reply.
    """


# --------------------------------------------------------------------------- RFM summary


def rfm_summary(
    transactions: pd.DataFrame,
    customer_col: str,
    date_col: str,
    value_col: str | None,
    observation_end: Any,
    period_days: float = 1.0,
    calibration_end: Any = None,
) -> pd.DataFrame:
    """Per-customer frequency / recency / T / monetary value, as BG/NBD and Gamma-Gamma need.

    Timestamps are floored to the calendar day and all transactions of a customer on one day
    are merged into one purchase (values summed). Transactions after ``observation_end`` (a day,
    inclusive) are ignored. Times are expressed in periods of ``period_days`` days (7 = weeks):

    - ``frequency``: number of repeat purchases = distinct purchase days - 1;
    - ``recency``: time from the first to the last purchase;
    - ``T``: time from the first purchase to the end of the (calibration) period;
    - ``monetary_value``: mean value of the repeat purchases (the first one excluded), 0 if none.

    With ``calibration_end`` these four columns describe the calibration period (purchases up to
    and including that day; customers first seen later are dropped), and three columns describe
    the holdout period (after ``calibration_end`` up to ``observation_end``):
    ``frequency_holdout`` (purchase days), ``monetary_value_holdout`` (mean value per purchase
    day, 0 if none) and ``duration_holdout`` (its length in periods).

    Returns a DataFrame indexed by customer (sorted), named ``customer_col``.
    """
    if period_days <= 0:
        raise ValueError(f"period_days must be positive, got {period_days}")
    obs_end = pd.Timestamp(observation_end).normalize()
    cal_end = obs_end if calibration_end is None else pd.Timestamp(calibration_end).normalize()
    if cal_end > obs_end:
        raise ValueError(f"calibration_end {cal_end.date()} is after observation_end {obs_end.date()}")
    missing = [c for c in (customer_col, date_col, value_col) if c is not None and c not in transactions]
    if missing:
        raise ValueError(f"transactions lack column(s) {missing}")

    codes, customers = _sorted_factorize(transactions[customer_col])
    day = pd.to_datetime(transactions[date_col]).to_numpy().astype("datetime64[D]")
    if value_col is None:
        value = np.zeros(len(transactions))
    else:
        value = pd.to_numeric(transactions[value_col]).to_numpy(dtype=float)
        if np.isnan(value).any():
            raise ValueError(f"{value_col!r} has {int(np.isnan(value).sum())} missing values")
    obs_day = np.datetime64(obs_end.date(), "D")
    cal_day = np.datetime64(cal_end.date(), "D")
    keep = (codes >= 0) & ~np.isnat(day) & (day <= obs_day)
    if not keep.all():
        codes, day, value = codes[keep], day[keep], value[keep]
    day = day.astype(np.int64)  # days since 1970-01-01

    # One purchase per customer and day: sort on a (customer, day) key, sum each run's value.
    day0 = int(day.min()) if len(day) else 0
    span = int(day.max()) - day0 + 1 if len(day) else 1
    key = codes.astype(np.int64) * span + (day - day0)
    if not non_decreasing(key):  # (the refresh passes them sorted; an argsort of 10M keys: 0.7-3 s)
        order = np.argsort(key)
        key, value = key[order], value[order]
    codes, day = key // span, key % span + day0
    run_start = np.ones(len(codes), dtype=bool)
    run_start[1:] = (codes[1:] != codes[:-1]) | (day[1:] != day[:-1])
    run_id = np.cumsum(run_start) - 1
    p_value = np.bincount(run_id, weights=value, minlength=int(run_start.sum()))
    p_code, p_day = codes[run_start], day[run_start]

    in_cal = p_day <= cal_day.astype(np.int64)
    c_code, c_day, c_value = p_code[in_cal], p_day[in_cal], p_value[in_cal]
    first = np.ones(len(c_code), dtype=bool)
    first[1:] = c_code[1:] != c_code[:-1]
    last = np.ones(len(c_code), dtype=bool)
    last[:-1] = first[1:]
    slot = np.cumsum(first) - 1  # row of the customer in the summary
    n_days = np.bincount(slot)
    repeat_total = np.bincount(slot, weights=np.where(first, 0.0, c_value), minlength=len(n_days))
    frequency = n_days - 1
    monetary = np.where(frequency > 0, repeat_total / np.maximum(frequency, 1), 0.0)
    first_day = c_day[first]
    summary = pd.DataFrame(
        {
            "frequency": frequency.astype("int64"),
            "recency": (c_day[last] - first_day) / period_days,
            "T": (cal_day.astype(np.int64) - first_day) / period_days,
            "monetary_value": monetary,
        },
        index=pd.Index(customers.take(c_code[first]), name=customer_col),
    )

    if calibration_end is not None:
        slot_of_code = np.full(len(customers), -1)
        slot_of_code[c_code[first]] = np.arange(len(n_days))
        h_slot = slot_of_code[p_code[~in_cal]]
        known = h_slot >= 0  # customers first seen in the holdout are not in the summary
        h_slot, h_value = h_slot[known], p_value[~in_cal][known]
        h_count = np.bincount(h_slot, minlength=len(n_days))
        h_total = np.bincount(h_slot, weights=h_value, minlength=len(n_days))
        summary["frequency_holdout"] = h_count.astype("int64")
        summary["monetary_value_holdout"] = np.where(h_count > 0, h_total / np.maximum(h_count, 1), 0.0)
        summary["duration_holdout"] = (obs_end - cal_end).days / period_days
    if value_col is None:
        summary = summary.drop(columns=[c for c in summary if c.startswith("monetary_value")])
    return summary


# --------------------------------------------------------------------------- shared helpers


def _sorted_factorize(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """`pd.factorize(values, sort=True)`; by runs, without hashing, when `values` are
    numbers already in order (customer codes as the refresh passes them)."""
    array = values.to_numpy()
    if array.dtype.kind not in "iu" or not non_decreasing(array):
        return pd.factorize(values, sort=True)
    starts = run_starts(array)
    codes = np.repeat(np.arange(len(starts), dtype=np.intp), np.diff(np.r_[starts, len(array)]))
    return codes, pd.Index(array[starts])


def _column(summary: pd.DataFrame, name: str) -> FloatArray:
    if name not in summary:
        raise ValueError(f"summary lacks column {name!r} (make it with rfm_summary)")
    values = np.asarray(summary[name], dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"summary column {name!r} has missing or infinite values")
    return values


def _frequency_recency_t(summary: pd.DataFrame) -> tuple[FloatArray, FloatArray, FloatArray]:
    x = _column(summary, "frequency")
    t_x = _column(summary, "recency")
    t_cal = _column(summary, "T")
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("frequency must be a non-negative whole number")
    if np.any(t_x < 0) or np.any(t_x > t_cal):
        raise ValueError("recency must satisfy 0 <= recency <= T")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("recency must be 0 where frequency is 0")
    return x, t_x, t_cal


def _weights(weights: ArrayLike | None, n: int) -> FloatArray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be one finite, non-negative count per summary row")
    return w


def _group_rows(*columns: FloatArray) -> tuple[list[FloatArray], NDArray[np.intp]]:
    """Distinct rows of the given columns (lexicographically sorted) and each row's group id."""
    n = len(columns[0])
    if n == 0:
        return [c.copy() for c in columns], np.zeros(0, dtype=np.intp)
    order = np.lexsort(columns[::-1])
    sorted_cols = [c[order] for c in columns]
    new_group = np.zeros(n, dtype=bool)
    new_group[0] = True
    for c in sorted_cols:
        new_group[1:] |= c[1:] != c[:-1]
    ids_sorted = np.cumsum(new_group) - 1
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = ids_sorted
    return [c[new_group] for c in sorted_cols], inverse


def _maximise(
    neg_mean_ll: Callable[[FloatArray], tuple[float, FloatArray]],
    names: tuple[str, ...],
    start: FloatArray,
    penalizer_coef: float,
    max_iter: int,
    tol: float,
    model: str,
) -> tuple[FloatArray, int]:
    """L-BFGS-B on log-parameters; returns the natural parameters and the iteration count."""

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        value, grad = neg_mean_ll(log_params)
        if penalizer_coef:
            params = np.exp(log_params)
            value += penalizer_coef * float(np.sum(params**2))
            grad = grad + 2.0 * penalizer_coef * params**2
        if not np.isfinite(value):  # steer the line search away from overflow
            return 1e300, np.zeros_like(log_params)
        return value, grad

    res = minimize(
        objective, start, jac=True, method="L-BFGS-B",
        bounds=[_LOG_BOUNDS] * len(start),
        options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-8},
    )
    params = np.exp(res.x)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(names, params, strict=True))
    if not (np.all(np.isfinite(params)) and np.isfinite(res.fun) and res.fun < 1e299):
        raise ConvergenceError(f"{model} fit gave a non-finite likelihood or parameters ({shown})")
    on_bound = [
        name for name, v in zip(names, res.x, strict=True)
        if min(v - _LOG_BOUNDS[0], _LOG_BOUNDS[1] - v) < _BOUND_TOL
    ]
    if on_bound:
        raise ConvergenceError(
            f"{model} fit ended with {', '.join(on_bound)} on the bound of [1e-6, 1e6] ({shown}): "
            "the data do not identify the model (too few customers or too little variation?)"
        )
    # L-BFGS-B reports ABNORMAL when the last line search cannot improve on rounding noise;
    # at a stationary point (tiny projected gradient of the mean objective) that is convergence.
    grad_norm = _projected_grad_norm(res.x, res.jac)
    if not (res.success or (res.status == 2 and grad_norm <= _GRAD_ACCEPT)):
        raise ConvergenceError(
            f"{model} fit did not converge after {res.nit} iterations "
            f"(max_iter={max_iter}; {res.message}; max |gradient| {grad_norm:.2g}; {shown})"
        )
    return params, int(res.nit)


def _start(init: dict[str, float] | None, names: tuple[str, ...], default: list[float]) -> FloatArray:
    """The optimiser's starting log-parameters: `init`'s (a previous fit's, warm start) when it
    names every parameter with a positive finite value, kept `_START_MARGIN` inside the
    bounds (a start on a bound would look like a fit that ended there); else `default`'s."""
    values = [init.get(n) for n in names] if init else []
    usable = len(values) == len(names) and all(
        isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)
    if not usable:
        return np.log(default)
    low, high = _LOG_BOUNDS
    return np.clip(np.log(np.asarray(values, dtype=float)), low + _START_MARGIN, high - _START_MARGIN)


def _projected_grad_norm(log_params: FloatArray, grad: FloatArray) -> float:
    """Max |gradient| ignoring components that push against an active bound."""
    at_lower = (log_params <= _LOG_BOUNDS[0] + _BOUND_TOL) & (grad > 0)
    at_upper = (log_params >= _LOG_BOUNDS[1] - _BOUND_TOL) & (grad < 0)
    free = ~(at_lower | at_upper)
    return float(np.max(np.abs(grad[free]), initial=0.0))


# --------------------------------------------------------------------------- BG/NBD


def _distinct(x: FloatArray) -> tuple[FloatArray, NDArray[np.intp]]:
    """The distinct values of `x` and each row's place among them."""
    values, at = np.unique(x, return_inverse=True)
    return values, at.reshape(-1)


def _bgnbd_terms(
    params: FloatArray, x: FloatArray, t_x: FloatArray, t_cal: FloatArray,
    distinct: tuple[FloatArray, NDArray[np.intp]] | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]:
    """Per-row log-likelihood pieces: A1, A2 (alive at T), A3 (died after t_x), log L, x>0 mask.

    `distinct` is `_distinct(x)` when the caller has it already."""
    r, alpha, a, b = params
    # The special functions depend on the frequency alone, which takes a few hundred
    # values among hundreds of thousands of rows: each is computed once per distinct
    # frequency and gathered (the same floats as row by row, a fraction of the calls).
    ux, at = distinct if distinct is not None else _distinct(x)
    repeat = x > 0
    a1 = (gammaln(r + ux) - gammaln(r) + r * np.log(alpha))[at]
    a2 = (betaln(a, b + ux) - betaln(a, b))[at] - (r + x) * np.log(alpha + t_cal)
    # B(a+1, b+x-1) only exists for x > 0; elsewhere the term is absent (-inf).
    b_shift = np.where(ux > 0, b + ux - 1.0, 1.0)
    a3 = np.where(
        repeat,
        (betaln(a + 1.0, b_shift) - betaln(a, b))[at] - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return a1, a2, a3, a1 + np.logaddexp(a2, a3), repeat


def _bgnbd_neg_mean_ll(
    log_params: FloatArray, x: FloatArray, t_x: FloatArray, t_cal: FloatArray, w: FloatArray,
    distinct: tuple[FloatArray, NDArray[np.intp]] | None = None,
) -> tuple[float, FloatArray]:
    params = np.exp(log_params)
    r, alpha, a, b = params
    ux, at = distinct if distinct is not None else _distinct(x)
    _, a2, a3, ll, repeat = _bgnbd_terms(params, x, t_x, t_cal, (ux, at))
    n = w.sum()
    # Share of each of the two likelihood terms (w3 = 0 when x = 0).
    w2 = np.exp(a2 - np.logaddexp(a2, a3))
    w3 = np.exp(a3 - np.logaddexp(a2, a3))
    psi_abx = digamma(a + b + ux)[at]
    psi_ab = digamma(a + b)
    d_r = ((digamma(r + ux) - digamma(r) + np.log(alpha))[at]
           - w2 * np.log(alpha + t_cal) - w3 * np.log(alpha + t_x))
    d_alpha = r / alpha - (r + x) * (w2 / (alpha + t_cal) + w3 / (alpha + t_x))
    d_a = w2 * (digamma(a) - psi_abx) + w3 * (digamma(a + 1.0) - psi_abx) - (digamma(a) - psi_ab)
    d_b = (
        w2 * (digamma(b + ux)[at] - psi_abx)
        + np.where(repeat, w3 * (digamma(np.where(ux > 0, b + ux - 1.0, 1.0))[at] - psi_abx), 0.0)
        - (digamma(b) - psi_ab)
    )
    grad = np.array([w @ d_r, w @ d_alpha, w @ d_a, w @ d_b]) * params
    return -float(w @ ll) / n, -grad / n


class BetaGeoFitter:
    """BG/NBD model of repeat purchases and P(alive) (Fader, Hardie & Lee 2005).

    Purchases of an active customer follow a Poisson process with rate lambda ~ Gamma(r, alpha);
    after each repeat purchase the customer drops out with probability p ~ Beta(a, b).

    Parameters: ``penalizer_coef`` adds ``penalizer_coef * sum(theta**2)`` over (r, alpha, a, b)
    to the mean negative log-likelihood (0 = plain maximum likelihood); ``max_iter`` and ``tol``
    are the L-BFGS-B iteration cap and relative function tolerance; ``group`` fits on distinct
    ``(frequency, recency, T)`` rows weighted by their count (same optimum, far faster);
    ``init_params`` (dict r, alpha, a, b: a converged fit's ``params_``) starts the optimiser
    there instead of at a default point (a warm start: on nearly the same data, fewer
    iterations; where the likelihood is flat it may stop elsewhere on the flat ridge than a
    default start would, at the same likelihood). A start far from any optimum can stop
    on a plateau, as any start can (seen from a corner of the bounds on CDNOW): give one
    from a converged fit of similar data.

    Learned: ``params_`` (dict r, alpha, a, b), ``log_likelihood_`` (sum over customers,
    unpenalised), ``converged_``, ``n_customers_``, ``n_groups_``, ``n_iter_``.
    """

    def __init__(
        self, penalizer_coef: float = 0.0, max_iter: int = 1000, tol: float = 1e-12, group: bool = True,
        init_params: dict[str, float] | None = None,
    ) -> None:
        self.penalizer_coef = penalizer_coef
        self.max_iter = max_iter
        self.tol = tol
        self.group = group
        self.init_params = init_params

    def fit(self, summary: pd.DataFrame, weights: ArrayLike | None = None) -> BetaGeoFitter:
        """Fit on a summary with ``frequency``, ``recency``, ``T`` (``weights``: row counts).

        Raises ConvergenceError when nobody made a repeat purchase (the model is then not
        identified) or when the optimiser fails.
        """
        x, t_x, t_cal = _frequency_recency_t(summary)
        w = _weights(weights, len(x))
        if w.sum() <= 0:
            raise ValueError("BG/NBD needs at least one customer")
        if not np.any((x > 0) & (w > 0)):
            raise ConvergenceError(
                "BG/NBD cannot be fitted: no customer made a repeat purchase (all frequency 0)"
            )
        if w.sum() < MIN_BGNBD_CUSTOMERS:
            # Fewer customers than parameters: the likelihood is flat along some direction and
            # the optimiser stops wherever it runs out of slope (often far from anything real).
            raise ConvergenceError(
                f"BG/NBD cannot be fitted from {w.sum():g} customers: the model's four "
                f"parameters need at least {MIN_BGNBD_CUSTOMERS}"
            )
        if self.group:
            (x, t_x, t_cal), inverse = _group_rows(x, t_x, t_cal)
            w = np.bincount(inverse, weights=w, minlength=len(x))
        keep = w > 0
        x, t_x, t_cal, w = x[keep], t_x[keep], t_cal[keep], w[keep]

        scale = float(np.average(t_cal, weights=w)) or 1.0
        start = _start(self.init_params, ("r", "alpha", "a", "b"), [1.0, scale, 1.0, 1.0])
        distinct = _distinct(x)
        params, n_iter = _maximise(
            lambda lp: _bgnbd_neg_mean_ll(lp, x, t_x, t_cal, w, distinct),
            ("r", "alpha", "a", "b"), start, self.penalizer_coef, self.max_iter, self.tol, "BG/NBD",
        )
        ll = float(w @ _bgnbd_terms(params, x, t_x, t_cal, distinct)[3])
        if not np.isfinite(ll):
            raise ConvergenceError(f"BG/NBD fit gave a non-finite log-likelihood ({ll})")
        self.params_ = dict(zip(("r", "alpha", "a", "b"), map(float, params), strict=True))
        self.log_likelihood_ = ll
        self.converged_ = True
        self.n_customers_ = int(round(w.sum()))
        self.n_groups_ = len(x)
        self.n_iter_ = n_iter
        return self

    def _params(self) -> tuple[float, float, float, float]:
        if not hasattr(self, "params_"):
            raise NotFittedError("BetaGeoFitter is not fitted yet; call fit(summary) first")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def predict_alive(self, summary: pd.DataFrame) -> FloatArray:
        """P(customer still alive at T | frequency, recency, T); exactly 1 when frequency is 0."""
        r, alpha, a, b = self._params()
        x, t_x, t_cal = _frequency_recency_t(summary)
        return _p_alive(r, alpha, a, b, x, t_x, t_cal)

    def expected_purchases(self, t: float | ArrayLike, summary: pd.DataFrame) -> FloatArray:
        """E[number of purchases in (T, T + t] | frequency, recency, T], per customer.

        ``t`` is in the summary's periods: a scalar, or one value per row.
        """
        r, alpha, a, b = self._params()
        x, t_x, t_cal = _frequency_recency_t(summary)
        t_arr = np.broadcast_to(np.asarray(t, dtype=float), x.shape)
        if np.any(t_arr < 0):
            raise ValueError("t must be non-negative")
        return _conditional_expected(r, alpha, a, b, x, t_x, t_cal, t_arr)

    def expected_purchases_unconditional(self, t: float | ArrayLike) -> FloatArray | float:
        """E[X(t)]: expected repeat purchases in (0, t] of a customer acquired at time 0."""
        r, alpha, a, b = self._params()
        t_arr = np.asarray(t, dtype=float)
        if np.any(t_arr < 0):
            raise ValueError("t must be non-negative")
        z = t_arr / (alpha + t_arr)
        value = (a + b - 1.0) / (a - 1.0) * (
            1.0 - (alpha / (alpha + t_arr)) ** r * hyp2f1(r, b, a + b - 1.0, z)
        )
        return float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=float)


def _p_alive(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, t_cal: FloatArray
) -> FloatArray:
    repeat = x > 0
    b_shift = np.where(repeat, b + x - 1.0, 1.0)
    # 1 / (1 + a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)), in logs to avoid overflow.
    log_odds_dead = np.log(a / b_shift) + (r + x) * (np.log(alpha + t_cal) - np.log(alpha + t_x))
    return np.where(repeat, expit(-log_odds_dead), 1.0)


def _conditional_expected(
    r: float, alpha: float, a: float, b: float,
    x: FloatArray, t_x: FloatArray, t_cal: FloatArray, t: FloatArray,
) -> FloatArray:
    # Paper eq. (10): (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x;
    # a+b+x-1; z)] * P(alive), z = t/(alpha+T+t). Euler's transformation turns the bracketed
    # product into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose series stays short for
    # heavy buyers (large x) where the original one converges slowly and overflows.
    z = t / (alpha + t_cal + t)
    tail = (1.0 - z) ** (a - 1.0) * _hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
    expected = (a + b + x - 1.0) / (a - 1.0) * (1.0 - tail)
    return expected * _p_alive(r, alpha, a, b, x, t_x, t_cal)


def _hyp2f1(a: float, b: float, c: FloatArray, z: FloatArray) -> FloatArray:
    """Gauss 2F1 for 0 <= z < 1, avoiding scipy's NaN when c - a - b is an exact integer.

    scipy's transformation for z near 1 breaks down (slowly, to NaN) on that measure-zero set,
    hit e.g. by integer model parameters and a large frequency. 2F1 is smooth in c, so a
    1e-12 relative nudge of c gives the value to about that precision.
    """
    excess = c - a - b
    c = np.where(excess == np.round(excess), c * (1.0 + 1e-12) + 1e-12, c)  # also avoids its slow path
    value = hyp2f1(a, b, c, z)
    bad = ~np.isfinite(value)
    if np.any(bad):
        c_bad = np.broadcast_to(c, value.shape)[bad]
        z_bad = np.broadcast_to(z, value.shape)[bad]
        value[bad] = hyp2f1(a, b, c_bad * (1.0 + 1e-12) + 1e-12, z_bad)
    return value


# --------------------------------------------------------------------------- Gamma-Gamma


def _gg_ll(params: FloatArray, x: FloatArray, m: FloatArray,
           distinct: tuple[FloatArray, NDArray[np.intp]] | None = None) -> FloatArray:
    """log f(m_x | p, q, v, x): density of a repeat buyer's mean spend over x transactions."""
    p, q, v = params
    ux, at = distinct if distinct is not None else _distinct(x)
    px = p * x
    return (
        (gammaln(p * ux + q) - gammaln(p * ux) - gammaln(q) + q * np.log(v))[at]
        + (px - 1.0) * np.log(m) + px * np.log(x) - (px + q) * np.log(v + m * x)
    )


def _gg_neg_mean_ll(
    log_params: FloatArray, x: FloatArray, m: FloatArray, w: FloatArray,
    distinct: tuple[FloatArray, NDArray[np.intp]] | None = None,
) -> tuple[float, FloatArray]:
    params = np.exp(log_params)
    p, q, v = params
    ux, at = distinct if distinct is not None else _distinct(x)
    px = p * x
    ll = _gg_ll(params, x, m, (ux, at))
    log_vmx = np.log(v + m * x)
    psi_pxq = digamma(p * ux + q)[at]
    d_p = x * (psi_pxq - digamma(p * ux)[at] + np.log(m) + np.log(x) - log_vmx)
    d_q = psi_pxq - digamma(q) + np.log(v) - log_vmx
    d_v = q / v - (px + q) / (v + m * x)
    n = w.sum()
    grad = np.array([w @ d_p, w @ d_q, w @ d_v]) * params
    return -float(w @ ll) / n, -grad / n


class GammaGammaFitter:
    """Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005; Fader & Hardie 2013).

    A customer's transaction values are Gamma(p, nu) with nu ~ Gamma(q, v) across customers;
    ``v`` is the scale written gamma in the papers. Fitted on repeat buyers only (frequency > 0),
    on ``monetary_value`` = mean value of their repeat transactions, which must be positive.
    The model assumes spend is independent of purchase frequency.

    Parameters as for :class:`BetaGeoFitter` (``init_params``: dict p, q, v). Learned: ``params_`` (dict p, q, v),
    ``log_likelihood_`` (sum of log densities of each buyer's mean spend given x),
    ``converged_``, ``n_customers_`` (repeat buyers used), ``n_iter_``.
    A fit with q <= 1 (spend without a finite mean) raises ConvergenceError.
    """

    def __init__(
        self, penalizer_coef: float = 0.0, max_iter: int = 1000, tol: float = 1e-12, group: bool = True,
        init_params: dict[str, float] | None = None,
    ) -> None:
        self.penalizer_coef = penalizer_coef
        self.max_iter = max_iter
        self.tol = tol
        self.group = group
        self.init_params = init_params

    def fit(self, summary: pd.DataFrame, weights: ArrayLike | None = None) -> GammaGammaFitter:
        """Fit on the rows with frequency > 0 of a summary with ``frequency``, ``monetary_value``."""
        x = _column(summary, "frequency")
        m = _column(summary, "monetary_value")
        w = _weights(weights, len(x))
        buyers = (x > 0) & (w > 0)
        if np.any(m[buyers] <= 0):
            raise ValueError(
                f"monetary_value must be positive for repeat buyers; "
                f"{int(np.sum(m[buyers] <= 0))} are not (filter them out first)"
            )
        x, m, w = x[buyers], m[buyers], w[buyers]
        if len(x) == 0:
            raise ConvergenceError("Gamma-Gamma cannot be fitted: there are no repeat buyers")
        if self.group:
            (x, m), inverse = _group_rows(x, m)
            w = np.bincount(inverse, weights=w, minlength=len(x))

        start = _start(self.init_params, ("p", "q", "v"), [1.0, 1.0, float(np.average(m, weights=w))])
        distinct = _distinct(x)
        params, n_iter = _maximise(
            lambda lp: _gg_neg_mean_ll(lp, x, m, w, distinct),
            ("p", "q", "v"), start, self.penalizer_coef, self.max_iter, self.tol, "Gamma-Gamma",
        )
        if params[1] <= 1.0:
            raise ConvergenceError(
                f"Gamma-Gamma fit gave q = {params[1]:.3g} <= 1: spend has no finite mean"
            )
        ll = float(w @ _gg_ll(params, x, m, distinct))
        if not np.isfinite(ll):
            raise ConvergenceError(f"Gamma-Gamma fit gave a non-finite log-likelihood ({ll})")
        self.params_ = dict(zip(("p", "q", "v"), map(float, params), strict=True))
        self.log_likelihood_ = ll
        self.converged_ = True
        self.n_customers_ = int(round(w.sum()))
        self.n_iter_ = n_iter
        return self

    def conditional_expected_spend(self, summary: pd.DataFrame) -> FloatArray:
        """E[spend per transaction | frequency, monetary_value]; the population mean p*v/(q-1)
        for customers without repeat purchases."""
        if not hasattr(self, "params_"):
            raise NotFittedError("GammaGammaFitter is not fitted yet; call fit(summary) first")
        p, q, v = self.params_["p"], self.params_["q"], self.params_["v"]
        x = _column(summary, "frequency")
        m = np.where(x > 0, _column(summary, "monetary_value"), 0.0)
        return p * (v + x * m) / (p * x + q - 1.0)


# --------------------------------------------------------------------------- CLV


def customer_lifetime_value(
    bgf: BetaGeoFitter,
    ggf: GammaGammaFitter,
    summary: pd.DataFrame,
    horizon_days: float,
    discount_rate_annual: float,
    period_days: float = 1.0,
) -> FloatArray:
    """Discounted expected spend of each customer over the next ``horizon_days`` days.

    The horizon is cut into monthly steps (365.25/12 days; the last one may be shorter). For
    step k ending at day d_k, the BG/NBD expected purchases in the step,
    E[Y(d_k)] - E[Y(d_{k-1})], times the Gamma-Gamma expected spend per purchase, is discounted
    by (1 + discount_rate_annual) ** -(d_k / 365.25), and the steps are summed. ``period_days``
    is the time unit the models were fitted in (that of the summary). Revenue, not margin.
    """
    if horizon_days < 0:
        raise ValueError("horizon_days must be non-negative")
    if discount_rate_annual <= -1:
        raise ValueError("discount_rate_annual must be greater than -1")
    r, alpha, a, b = bgf._params()
    x, t_x, t_cal = _frequency_recency_t(summary)
    spend = ggf.conditional_expected_spend(summary)

    (gx, gt_x, gt_cal), inverse = _group_rows(x, t_x, t_cal)
    n_steps = math.ceil(horizon_days / _DAYS_PER_MONTH - 1e-9)
    ends = np.minimum(np.arange(1, n_steps + 1) * _DAYS_PER_MONTH, horizon_days)
    discounted = np.zeros(len(gx))
    previous = np.zeros(len(gx))
    for end in ends:
        cumulative = _conditional_expected(
            r, alpha, a, b, gx, gt_x, gt_cal, np.full(len(gx), end / period_days)
        )
        discounted += (cumulative - previous) * (1.0 + discount_rate_annual) ** (-end / _DAYS_PER_YEAR)
        previous = cumulative
    return discounted[inverse] * spend
