"""Time BG/NBD (and Gamma-Gamma) fits on synthetic customers drawn from the models themselves.

    python -m benchmarks.bench_bgnbd --customers 1000000

Customers are acquired uniformly over the first ``--cohort-days`` of a ``--window-days``
calibration window (CDNOW: 12 weeks of a 39-week window) and then buy and drop out as BG/NBD
says, with CDNOW-like parameters (Fader, Hardie & Lee 2005, in weeks). As in real data, the
times are then rounded to whole days (a repeat buyer's recency to at least one day)
and expressed in periods of ``--period-days`` days: day granularity is what keeps the number of
distinct (frequency, recency, T) groups small, and grouping is what makes the fit fast.
Purchases that fall on the same day are not merged here (at these rates they are rare).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from analytics.clv import BetaGeoFitter, GammaGammaFitter, customer_lifetime_value

TRUE_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # per week
TRUE_GG = {"p": 6.25, "q": 3.74, "v": 15.44}


def simulate(
    n: int, seed: int, period_days: float, window_days: int, cohort_days: int
) -> pd.DataFrame:
    """A summary (frequency, recency, T, monetary_value) of ``n`` simulated customers."""
    rng = np.random.default_rng(seed)
    r, alpha, a, b = (TRUE_BGNBD[k] for k in ("r", "alpha", "a", "b"))
    t_days = window_days - rng.integers(0, cohort_days, size=n)
    t_weeks = t_days / 7.0
    rate = rng.gamma(r, 1.0 / alpha, size=n)  # purchases per week while alive
    dropout = rng.beta(a, b, size=n)
    arrivals = rng.poisson(rate * t_weeks)  # purchases in (0, T] had the customer stayed alive
    lifetime_purchases = rng.geometric(dropout)  # dies right after this repeat purchase
    x = np.minimum(arrivals, lifetime_purchases)
    # Given `arrivals` events in (0, T], the x-th one is T times a Beta(x, arrivals - x + 1).
    buyers = x > 0
    t_x = np.zeros(n)
    t_x[buyers] = t_weeks[buyers] * rng.beta(x[buyers], arrivals[buyers] - x[buyers] + 1)
    recency_days = np.where(buyers, np.clip(np.rint(t_x * 7.0), 1, t_days), 0)

    p, q, v = (TRUE_GG[k] for k in ("p", "q", "v"))
    nu = rng.gamma(q, 1.0 / v, size=n)  # each customer's spend rate
    mean_spend = np.zeros(n)
    mean_spend[buyers] = rng.gamma(p * x[buyers], 1.0 / (x[buyers] * nu[buyers]))
    return pd.DataFrame({
        "frequency": x,
        "recency": recency_days / period_days,
        "T": t_days / period_days,
        "monetary_value": np.round(np.maximum(mean_spend, 0.01), 2),
    })


def _fmt(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in params.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2005)
    parser.add_argument("--period-days", type=float, default=7.0, help="time unit of the fit")
    parser.add_argument("--window-days", type=int, default=273, help="calibration window")
    parser.add_argument("--cohort-days", type=int, default=84, help="acquisition period")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    summary = simulate(args.customers, args.seed, args.period_days, args.window_days, args.cohort_days)
    print(f"simulated {len(summary):,} customers in {time.perf_counter() - started:.2f} s "
          f"({int((summary['frequency'] > 0).sum()):,} repeat buyers)")

    started = time.perf_counter()
    bgf = BetaGeoFitter().fit(summary)
    fit_s = time.perf_counter() - started
    print(f"BG/NBD fit: {fit_s:.2f} s, {bgf.n_groups_:,} distinct (x, t_x, T) groups, "
          f"{bgf.n_iter_} iterations, LL {bgf.log_likelihood_:,.1f}")
    print(f"  fitted  {_fmt(bgf.params_)}  (per {args.period_days:g} days)")
    print(f"  true    {_fmt(TRUE_BGNBD)}  (per 7 days)")

    started = time.perf_counter()
    ggf = GammaGammaFitter().fit(summary)
    print(f"Gamma-Gamma fit: {time.perf_counter() - started:.2f} s on {ggf.n_customers_:,} repeat "
          f"buyers, {ggf.n_iter_} iterations")
    print(f"  fitted  {_fmt(ggf.params_)}")
    print(f"  true    {_fmt(TRUE_GG)}")

    started = time.perf_counter()
    alive = bgf.predict_alive(summary)
    print(f"predict_alive: {time.perf_counter() - started:.2f} s (mean {alive.mean():.3f})")
    started = time.perf_counter()
    clv = customer_lifetime_value(bgf, ggf, summary, 365, 0.10, period_days=args.period_days)
    print(f"CLV 365 days at 10%/year: {time.perf_counter() - started:.2f} s "
          f"(mean {clv.mean():.2f}, total {clv.sum():,.0f})")


if __name__ == "__main__":
    main()
