"""Churn risk per customer, the at-risk list and its CSV — plain data, no Slack.

**Scores** (written to `customer_scores` by `RiskScorer` during the refresh, horizon H):
- `churn_prob` = P(no purchase in the next H days). From the supervised model
  (`analytics.churn`, `churn_source` = "supervised") when it can be trained; otherwise from
  BG/NBD (`churn_source` = "bgnbd"): 1 − P(alive) · (1 − ((α+T)/(α+T+H))^(r+x)), the
  model's probability of the same event. This is 1 − P(alive) corrected for the horizon: a
  customer who is alive may still make no purchase in H days, and BG/NBD puts P(alive) = 1
  for every one-time buyer, so plain 1 − P(alive) would call 97% of Olist customers
  risk-free although 99% of them do not come back within 90 days.
- `p_alive`, `expected_purchases` (next H days), `expected_spend` (per order, Gamma-Gamma)
  and `clv` (expected spend over the next H days, discounted yearly at `discount_rate`)
  from BG/NBD + Gamma-Gamma fitted on all purchases up to as-of (`analytics.clv`).
- expected future value = `clv` when BG/NBD and Gamma-Gamma converge, otherwise the
  customer's historical spend per H days: revenue × H / max(days since first purchase + 1, H).
- `value_at_risk` = churn_prob × expected future value: the spend of the next H days that
  is expected to be lost. At-risk lists are ranked by it, not by probability.
- `risk_band`: "high" when churn_prob ≥ `risk_high`, "medium" when ≥ `risk_medium`, else
  "low" (no band without a probability).
A BG/NBD fit that does not converge is reported (model card "clv", meta "risk_scoring")
and the scores fall back as above — never silently.

**At risk** means risk band "high", or churn_prob ≥ `min_prob` when one is given.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Select, and_, case, func, select

from analytics.churn import (
    ChurnModel,
    History,
    NotTrainable,
    churn_features,
    history_from,
    read_history,
    train_churn_model,
)
from analytics.clv import (
    BetaGeoFitter,
    ConvergenceError,
    GammaGammaFitter,
    customer_lifetime_value,
    rfm_summary,
)
from analytics.dataset import Dataset
from analytics.errors import NotAvailable
from analytics.filters import CUSTOMER_FACTS_META, customer_facts, scores_as_of
from analytics.model_store import data_fingerprint, load_card, load_model, save_model
from analytics.periods import end_of_day
from analytics.results import Result
from storage import schema
from storage.geography import ALL, Place
from storage.store import get_meta, set_meta

S, F = schema.customer_scores, schema.customer_features
BANDS = ("high", "medium", "low")
AT_RISK_BAND = "high"
_NO_GROUP = "(unknown)"  # the group of customers with no state (or segment)
SCORING_META_KEY = "risk_scoring"
CARD_FORMAT = 1  # bump when the card or the model's inputs change: forces a retrain
# A stored churn model may score until the as-of date is this many days past its own (0: the
# model is retrained whenever the data or the date change, as the churn model's issue, #4,
# asks; a store too big to retrain every night sets analytics.churn_retrain_days) ...
RETRAIN_AFTER_DAYS = 0
RETRAIN_AT_CHANGE = 0.05  # ... and while the purchases differ by at most this share from its data

EXPORT_COLUMNS: tuple[str, ...] = (
    "customer_id", "state", "region", "segment", "last_purchase", "orders", "revenue",
    "churn_probability", "expected_value_at_risk", "recommended_action",
)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------- scores


def risk_band(prob: np.ndarray | pd.Series, high: float, medium: float) -> np.ndarray:
    """"high" (≥ high), "medium" (≥ medium), "low", or None where prob is missing."""
    if not 0 < medium < high < 1:
        raise ValueError(f"need 0 < medium < high < 1, got medium={medium}, high={high}")
    p = np.asarray(prob, dtype=float)
    band = np.where(p >= high, "high", np.where(p >= medium, "medium", "low")).astype(object)
    band[np.isnan(p)] = None
    return band


def historical_value(revenue: np.ndarray | pd.Series, tenure_days: np.ndarray | pd.Series,
                     horizon_days: int) -> np.ndarray:
    """A customer's spend per `horizon_days` so far: revenue × H / max(tenure + 1, H)."""
    days = np.maximum(np.asarray(tenure_days, dtype=float) + 1, horizon_days)
    return np.asarray(revenue, dtype=float) * horizon_days / days


@dataclass(frozen=True, eq=False)
class ProbabilisticScores:
    """BG/NBD + Gamma-Gamma per customer (index customer_id) and the fitted parameters."""

    scores: pd.DataFrame  # p_alive, expected_purchases, expected_spend, clv, churn_prob
    bgnbd: dict[str, float]
    gamma_gamma: dict[str, float]
    customers: int
    repeat_buyers: int
    iterations: dict[str, int] = field(default_factory=dict)  # optimiser iterations per model
    warm: dict[str, bool] = field(default_factory=dict)  # per model: whether the warm start was used


FIT_KEYS = ("bgnbd", "gamma_gamma")  # the "clv" card's parameters of each fit


def fit_starts(card: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Where the next BG/NBD and Gamma-Gamma fits start (by `FIT_KEYS`): the parameters of
    the stored "clv" card when its fits converged (time in days); else nowhere (empty).
    A failed fit's stopping point is not used: it may lie on a plateau of the likelihood
    (no dropout: a near 0 and b huge) from which the optimiser need not find a better
    optimum that the data have since come to hold."""
    if not card or card.get("status") != "ok" or card.get("time_unit") != "day":
        return {}
    return {k: card[k] for k in FIT_KEYS if isinstance(card.get(k), dict)}


def _fitted(fitter: type[Any], frame: pd.DataFrame, start: dict[str, float] | None) -> tuple[Any, bool]:
    """`fitter` fitted on `frame`, from `start` when given (a warm start) and again from its
    default start if that fails; (the fitter, whether the warm start gave it)."""
    if start:
        try:
            return fitter(init_params=start).fit(frame), True
        except ConvergenceError:
            pass  # the data moved too far from the last fit's: as without one
    return fitter().fit(frame), False


def probabilistic_scores(history: History, as_of: dt.date, horizon_days: int,
                         discount_rate: float,
                         starts: dict[str, dict[str, float]] | None = None) -> ProbabilisticScores:
    """Fit BG/NBD and Gamma-Gamma (time in days) on purchases up to `as_of`; score everyone.

    `starts` (`fit_starts`: the last fits' parameters, by "bgnbd" and "gamma_gamma") start
    the optimisers there: the nightly refresh refits on nearly the same purchases, which
    from the last optimum takes fewer iterations (at ten million orders, 14 evaluations of
    the likelihood instead of 50, at about 0.07 s each). A warm fit that fails is done
    again from the default start.
    Raises ConvergenceError when either fit fails. Repeat buyers whose repeat orders are
    worth nothing (refunds, gifts) are left out of the Gamma-Gamma fit and predicted with a
    repeat spend of 0.
    """
    starts = starts or {}
    o = history.orders
    at = o["purchased_at"].to_numpy()
    buys = o["purchase"].to_numpy() & (at < np.datetime64(end_of_day(as_of)))
    if not buys.any():
        raise ConvergenceError("no purchases to fit BG/NBD on")
    # summarised by customer code, not id (hashing ten million id strings cost seconds at
    # a million customers); the codes run in id order, so the rows come in the same order.
    # Only these columns filtered (the orders' ids too would take a second at 10M orders).
    tx = pd.DataFrame({"customer": o["cust"].to_numpy()[buys], "at": at[buys],
                       "value": o["revenue"].to_numpy()[buys]})
    summary = rfm_summary(tx, "customer", "at", "value", as_of, period_days=1)
    summary.index = history.customer_ids[summary.index.to_numpy()]
    bgf, bg_warm = _fitted(BetaGeoFitter, summary, starts.get("bgnbd"))
    usable = ~((summary["frequency"] > 0) & (summary["monetary_value"] <= 0))
    ggf, gg_warm = _fitted(GammaGammaFitter, summary[usable], starts.get("gamma_gamma"))
    predict = summary.assign(monetary_value=summary["monetary_value"].clip(lower=0.0))
    p_alive = bgf.predict_alive(predict)
    r, alpha = bgf.params_["r"], bgf.params_["alpha"]
    t_cal, x = predict["T"].to_numpy(dtype=float), predict["frequency"].to_numpy(dtype=float)
    none_in_window = ((alpha + t_cal) / (alpha + t_cal + horizon_days)) ** (r + x)
    scores = pd.DataFrame({
        "p_alive": p_alive,
        "expected_purchases": bgf.expected_purchases(horizon_days, predict),
        "expected_spend": ggf.conditional_expected_spend(predict),
        "clv": customer_lifetime_value(bgf, ggf, predict, horizon_days, discount_rate, period_days=1),
        "churn_prob": 1.0 - p_alive * (1.0 - none_in_window),
    }, index=summary.index.rename("customer_id"))
    if not np.isfinite(scores.to_numpy(dtype=float)).all():
        raise ConvergenceError("BG/NBD or Gamma-Gamma gave non-finite predictions")
    return ProbabilisticScores(scores, dict(bgf.params_), dict(ggf.params_), len(summary),
                               int((summary["frequency"] > 0).sum()),
                               iterations={"bgnbd": bgf.n_iter_, "gamma_gamma": ggf.n_iter_},
                               warm={"bgnbd": bg_warm, "gamma_gamma": gg_warm})


def combine_scores(features: pd.DataFrame, supervised: pd.Series | None,
                   probabilistic: pd.DataFrame | None, *, horizon_days: int, risk_high: float,
                   risk_medium: float) -> pd.DataFrame:
    """The scorer's columns per customer of `features` (index customer_id, with `revenue`
    and `tenure_days`), following the module docstring's fallbacks."""
    index = features.index
    prob = (probabilistic.reindex(index) if probabilistic is not None
            else pd.DataFrame(np.nan, index=index, columns=["p_alive", "expected_purchases",
                                                            "expected_spend", "clv", "churn_prob"]))
    sup = (supervised.reindex(index).to_numpy(dtype=float) if supervised is not None
           else np.full(len(index), np.nan))
    # on arrays, both aligned to `index` already (Series.where aligned a million ids again)
    column = {name: prob[name].to_numpy(dtype=float) for name in prob.columns}
    supervised_known = ~np.isnan(sup)
    churn = np.where(supervised_known, sup, column["churn_prob"])
    source = np.where(supervised_known, "supervised", np.where(np.isnan(column["churn_prob"]), None, "bgnbd"))
    clv = column["clv"]
    future = np.where(np.isnan(clv), historical_value(features["revenue"], features["tenure_days"], horizon_days),
                      clv)
    out = pd.DataFrame({
        "churn_prob": churn,
        "churn_source": source.astype(object),
        "p_alive": column["p_alive"],
        "expected_purchases": column["expected_purchases"],
        "expected_spend": column["expected_spend"],
        "clv": clv,
        "value_at_risk": churn * future,
        "risk_band": risk_band(churn, risk_high, risk_medium),
    }, index=index)
    out.index.name = "customer_id"
    return out


# --------------------------------------------------------------------------- the refresh scorer


@dataclass(frozen=True, eq=False)
class PreparedChurn:
    """The churn features of a dataset as of a date (`RiskScorer.prepare`)."""

    dataset: Dataset
    as_of: dt.date
    history: History
    features: pd.DataFrame

    def of(self, dataset: Dataset, as_of: dt.date) -> bool:
        """Whether these are the features of that very dataset as of that date."""
        return self.dataset is dataset and self.as_of == as_of


class RiskScorer:
    """The refresh scorer: supervised churn model, BG/NBD + Gamma-Gamma, value at risk, bands.

    Call signature is the refresh's: ``scorer(engine, features, scores, as_of)``, plus the
    store already read (``dataset=``), its data fingerprint (``fingerprint=``, else
    computed here) and the churn features `prepare` made of it (``prepared=``) when the
    refresh has them.

    The supervised model is retrained when the horizon, the seed or the card format differ
    from the stored model card's, or when the data fingerprint or the as-of date do. With
    `retrain_after_days` > 0 (default 0: off), a model trained on nearly the same data
    scores on instead (`reuse_reason`): for that many days of as-of after its own, while the
    purchases differ by at most `RETRAIN_AT_CHANGE` from those it was trained on and the
    history starts on the same day. A nightly refresh then scores with the model of the
    last few days, as model-serving systems do, instead of refitting it for one more day of
    orders (at ten million orders, minutes of work each night). `retrain=True` forces a
    retrain.
    After a call, `version` names the models used and `last_run` describes what happened.
    """

    __name__ = "churn_risk"
    uses_dataset = True  # the refresh passes the store it has read
    uses_fingerprint = True  # ... and the data fingerprint it has computed
    uses_scores = False  # it reads the features and the store, not the scores (nor clusters)

    def __init__(self, horizon_days: int = 90, seed: int = 42, *, discount_rate: float = 0.10,
                 risk_high: float = 0.70, risk_medium: float = 0.40, retrain: bool = False,
                 retrain_after_days: int = RETRAIN_AFTER_DAYS):
        risk_band(np.array([0.5]), risk_high, risk_medium)  # validates the thresholds
        if retrain_after_days < 0:
            raise ValueError(f"retrain_after_days must be 0 or more, not {retrain_after_days}")
        self.retrain_after_days = retrain_after_days
        self.horizon_days = horizon_days
        self.seed = seed
        self.discount_rate = discount_rate
        self.risk_high = risk_high
        self.risk_medium = risk_medium
        self.retrain = retrain
        self.version = "churn-risk"
        self.last_run: dict[str, Any] = {}

    def prepare(self, dataset: Dataset, as_of: dt.date) -> PreparedChurn:
        """The churn features of `dataset` as of `as_of`, made ahead of the call that scores
        them (``prepared=``: the refresh makes them on a thread while it makes the RFM
        features)."""
        history = history_from(dataset)
        return PreparedChurn(dataset, as_of, history, churn_features(history, as_of))

    def __call__(self, engine: Engine, features: pd.DataFrame | None, scores: pd.DataFrame | None,
                 as_of: dt.date, dataset: Dataset | None = None, fingerprint: str | None = None,
                 prepared: PreparedChurn | None = None) -> pd.DataFrame:
        if prepared is not None and dataset is not None and prepared.of(dataset, as_of):
            history, X = prepared.history, prepared.features
        else:  # (prepared for another dataset or date: made again)
            history = read_history(engine, dataset)
            X = churn_features(history, as_of)
        if fingerprint is None:
            fingerprint = data_fingerprint(engine)
        # BG/NBD and Gamma-Gamma need only the history: fitted on a thread while the churn
        # model scores on this one (at 10M orders 3 s beside 6 s, both mostly out of the GIL)
        with ThreadPoolExecutor(1, thread_name_prefix="pulse-bgnbd") as beside:
            prob_job = beside.submit(self._probabilistic, history, as_of, fit_starts(load_card(engine, "clv")))
            model, churn_card = self._supervised(engine, history, as_of, fingerprint)
            supervised = model.predict(X) if model is not None else None
            prob_scores, clv_card = prob_job.result()
        clv_card = save_model(engine, "clv", {"name": "clv", "kind": "bgnbd-gg", **clv_card},
                              fingerprint=fingerprint)
        out = combine_scores(X, supervised, prob_scores, horizon_days=self.horizon_days,
                             risk_high=self.risk_high, risk_medium=self.risk_medium)
        sources = {str(k): int(v) for k, v in out["churn_source"].value_counts().items()}
        self.last_run = {
            "as_of": as_of.isoformat(), "horizon_days": self.horizon_days,
            "discount_rate": self.discount_rate, "risk_high": self.risk_high,
            "risk_medium": self.risk_medium, "customers": len(out), "churn_source": sources,
            "supervised": _card_summary(churn_card),
            "bgnbd": {"status": clv_card["status"], "reason": clv_card.get("reason"),
                      "version": clv_card.get("version")},
            "future_value": "clv" if prob_scores is not None else "historical",
        }
        with engine.begin() as conn:
            set_meta(conn, SCORING_META_KEY, self.last_run)
        kind = churn_card.get("kind") if model is not None else "bgnbd"
        self.version = f"cr-{kind}-{fingerprint[:8]}"
        return out.reset_index()

    def _probabilistic(self, history: History, as_of: dt.date,
                       starts: dict[str, dict[str, float]]) -> tuple[pd.DataFrame | None, dict[str, Any]]:
        """(BG/NBD + Gamma-Gamma scores, None when a fit failed; the card of the fit). No
        store access: it runs on a thread beside the store's use by the supervised model."""
        try:
            prob = probabilistic_scores(history, as_of, self.horizon_days, self.discount_rate, starts)
        except (ConvergenceError, ValueError) as exc:
            return None, {"status": "failed", "as_of": as_of.isoformat(), "horizon_days": self.horizon_days,
                          "reason": f"{type(exc).__name__}: {exc}"}
        return prob.scores, {"status": "ok", "as_of": as_of.isoformat(), "horizon_days": self.horizon_days,
                             "discount_rate": self.discount_rate, "bgnbd": prob.bgnbd,
                             "gamma_gamma": prob.gamma_gamma, "customers": prob.customers,
                             "repeat_buyers": prob.repeat_buyers, "time_unit": "day",
                             "iterations": prob.iterations, "warm_start": prob.warm}

    def _supervised(self, engine: Engine, history: History, as_of: dt.date,
                    fingerprint: str) -> tuple[ChurnModel | None, dict[str, Any]]:
        """The stored model when it is current, else a freshly trained (and stored) one."""
        wanted = {"as_of": as_of.isoformat(), "horizon_days": self.horizon_days, "seed": self.seed,
                  "format": CARD_FORMAT, "data_fingerprint": fingerprint}
        data = training_data(history)
        card = load_card(engine, "churn")
        reason = None if card is None or self.retrain else reuse_reason(
            card, wanted, data, self.retrain_after_days)
        if reason is not None:
            if card.get("status") == "unavailable":
                return None, card
            stored = load_model(engine, "churn")
            if stored is not None:
                return (ChurnModel(estimator=stored[1], evaluation=None, card=stored[0]),
                        {**stored[0], "reused": reason})
        try:
            model = train_churn_model(history, as_of, self.horizon_days, self.seed)
        except NotTrainable as exc:
            card = save_model(engine, "churn", {
                "name": "churn", "status": "unavailable", "reason": str(exc), "data": data,
                **{k: v for k, v in wanted.items() if k != "data_fingerprint"},
            }, fingerprint=fingerprint)
            return None, card
        card = save_model(engine, "churn", {**model.card, "status": "ok", "seed": self.seed,
                                            "format": CARD_FORMAT, "data": data}, model.estimator,
                          fingerprint=fingerprint)
        return ChurnModel(estimator=model.estimator, evaluation=model.evaluation, card=card), card


def training_data(history: History) -> dict[str, Any]:
    """What a model card records of the data it was trained on, for `reuse_reason`: the
    purchases (orders of any date whose status is a purchase) and the first one's day."""
    o = history.orders
    bought = o["purchased_at"].to_numpy()[o["purchase"].to_numpy(dtype=bool)]
    dated = bought[~np.isnat(bought)]
    first = pd.Timestamp(dated.min()).date().isoformat() if len(dated) else None
    return {"purchases": int(len(bought)), "first_purchase": first}


def reuse_reason(card: dict[str, Any], wanted: dict[str, Any], data: dict[str, Any],
                 retrain_after_days: int) -> str | None:
    """Why the stored churn model (`card`) may score the run described by `wanted` (its
    as-of date, horizon, seed, card format and data fingerprint) over `data`
    (`training_data`); None when it must be retrained (rules: `RiskScorer`)."""
    if any(card.get(k) != wanted[k] for k in ("horizon_days", "seed", "format")):
        return None
    if card.get("as_of") == wanted["as_of"] and card.get("data_fingerprint") == wanted["data_fingerprint"]:
        return "trained on the same data as of the same date"
    was = card.get("data") or {}
    if card.get("status") != "ok" or not was.get("purchases"):
        return None  # a model too little data refused is tried again on new data
    try:
        age = (dt.date.fromisoformat(wanted["as_of"]) - dt.date.fromisoformat(card["as_of"])).days
    except (KeyError, TypeError, ValueError):
        return None
    if not 0 <= age < retrain_after_days:  # (before its own date: it has seen the future)
        return None
    change = data["purchases"] / was["purchases"] - 1
    if was.get("first_purchase") != data["first_purchase"] or abs(change) > RETRAIN_AT_CHANGE:
        return None
    return (f"trained as of {card['as_of']} ({age} day{'s' if age != 1 else ''} earlier) on "
            f"{was['purchases']:,} purchases, {change:+.2%} since; retrained after "
            f"{retrain_after_days} days or a change over {RETRAIN_AT_CHANGE:.0%}")


def _card_summary(card: dict[str, Any]) -> dict[str, Any]:
    metrics = card.get("metrics") or {}
    return {"status": card.get("status"), "version": card.get("version"), "kind": card.get("kind"),
            "roc_auc": metrics.get("roc_auc"), "reason": card.get("reason"),
            "trained_as_of": card.get("as_of"), "reused": card.get("reused")}


def default_scorers(horizon_days: int = 90, seed: int = 42, *, discount_rate: float = 0.10,
                    risk_high: float = 0.70, risk_medium: float = 0.40,
                    retrain_after_days: int = RETRAIN_AFTER_DAYS) -> tuple[RiskScorer, ...]:
    """The scorers a refresh runs (pass the settings' values)."""
    return (RiskScorer(horizon_days, seed, discount_rate=discount_rate, risk_high=risk_high,
                       risk_medium=risk_medium, retrain_after_days=retrain_after_days),)


def scoring_info(engine: Engine) -> dict[str, Any] | None:
    """What the last scoring run did (sources, model versions, fallbacks), or None."""
    return get_meta(engine, SCORING_META_KEY)


# --------------------------------------------------------------------------- recommended action

_WIN_BACK = "Personal win-back: contact them directly with an exclusive offer."
_NURTURE = "Targeted offer on related categories before they lapse."
_SECOND_ORDER = "Second-order incentive: free shipping or a discount on the next order."
_REACTIVATE = "Low-cost reactivation email with a discount; stop if there is no response."
SEGMENT_ACTIONS: dict[str, str] = {
    "Champions": _WIN_BACK, "Loyal": _WIN_BACK, "Can't Lose Them": _WIN_BACK, "At Risk": _WIN_BACK,
    "Potential Loyalist": _NURTURE, "Need Attention": _NURTURE,
    "New": _SECOND_ORDER, "Promising": _SECOND_ORDER,
    "About to Sleep": _REACTIVATE, "Hibernating": _REACTIVATE, "Lost": _REACTIVATE,
}


def recommended_action(segment: str | None, band: str | None) -> str:
    """What to do about a customer: by RFM segment when the risk band is high, the same
    in the next campaign when it is medium, nothing special when it is low."""
    if band not in ("high", "medium"):
        return "No action: keep in regular campaigns."
    action = SEGMENT_ACTIONS.get(segment or "", _NURTURE)
    return action if band == "high" else f"Next campaign: {action[0].lower()}{action[1:]}"


# --------------------------------------------------------------------------- at-risk queries


@dataclass(frozen=True)
class RiskFilter:
    """Who an at-risk list is about: a place, an RFM segment and a probability floor."""

    place: Place = ALL
    segment: str | None = None
    min_prob: float | None = None  # None: risk band "high"

    def base_clause(self) -> Any:
        """WHERE for the scored customers in the place and segment (the base)."""
        clauses = [S.c.customer_id == F.c.customer_id]
        if not self.place.is_all:
            clauses.append(F.c[self.place.kind] == self.place.value)
        if self.segment:
            clauses.append(S.c.segment == self.segment)
        return and_(*clauses)

    def risk_clause(self, band_index: bool = True) -> Any:
        """WHERE for the customers at risk. `band_index=False` words the band test so that
        no index can serve it (`risk_band || ''`): the planner then starts from the place
        or segment instead of walking the whole band in value order."""
        if self.min_prob is not None:
            return S.c.churn_prob >= self.min_prob
        band = S.c.risk_band if band_index else S.c.risk_band.concat("")
        return band == AT_RISK_BAND

    @property
    def narrowed(self) -> bool:
        """Whether the base is narrower than every scored customer (a place or segment)."""
        return not self.place.is_all or bool(self.segment)


@dataclass(frozen=True, eq=False)
class AtRisk(Result):
    """Customers at risk for a filter: the figures, the top of the list, risk by group."""

    filter: RiskFilter
    customers: int  # scored customers in the place and segment (the base)
    at_risk: int
    value_at_risk: float  # Σ expected value at risk of the customers at risk
    revenue: float  # Σ historical revenue of the customers at risk
    top: pd.DataFrame  # EXPORT_COLUMNS + risk_band, churn_source; ranked by value at risk
    by_group: pd.DataFrame  # group, customers at risk, value_at_risk (largest first)
    group_level: str  # "state" or "segment"
    sources: dict[str, int] = field(default_factory=dict)  # churn_source -> customers (base)

    @property
    def share(self) -> float | None:
        return self.at_risk / self.customers if self.customers else None


def scores_available(engine: Engine) -> bool:
    """Whether the last refresh wrote churn probabilities."""
    with engine.connect() as conn:
        return conn.execute(select(S.c.customer_id).where(S.c.churn_prob.is_not(None)).limit(1)).first() is not None


def _why_no_scores(engine: Engine) -> str:
    info = scoring_info(engine) or {}
    if not info.get("customers"):
        return ("There are no churn scores yet: run `pulse refresh` (it trains the churn model "
                "and scores every customer).")
    sup, bg = info.get("supervised") or {}, info.get("bgnbd") or {}
    return ("There are no churn probabilities: the supervised churn model could not be trained "
            f"({sup.get('reason')}) and BG/NBD did not converge ({bg.get('reason')}). More "
            "purchase history (customers who come back) is needed.")


def _risk_facts(engine: Engine, risk_filter: RiskFilter) -> pd.DataFrame | None:
    """The `agg_customers` rows of the filter's place and segment, or None when the filter
    needs the scores themselves (a probability floor) or the facts were never built."""
    if risk_filter.min_prob is not None:
        return None
    return customer_facts(engine, risk_filter.place, risk_filter.segment)


@dataclass(frozen=True)
class _Figures:
    customers: int
    at_risk: int
    value_at_risk: float
    revenue: float
    sources: dict[str, int]
    groups: list[tuple]  # (group, customers at risk, Σ value at risk)


def _figures_from_facts(facts: pd.DataFrame, level: str) -> _Figures:
    risky = facts[facts["risk_band"] == AT_RISK_BAND]
    sources = facts.dropna(subset=["churn_source"]).groupby("churn_source")["customers"].sum()
    grouped = (risky.groupby(risky[level].fillna(_NO_GROUP), sort=False)
               .agg(at_risk=("customers", "sum"), value_at_risk=("value_at_risk", lambda v: v.sum(min_count=1))))
    return _Figures(
        customers=int(facts["customers"].sum()), at_risk=int(risky["customers"].sum()),
        value_at_risk=float(risky["value_at_risk"].sum()), revenue=float(risky["revenue"].sum()),
        sources={str(k): int(v) for k, v in sources.items()},
        groups=list(grouped.itertuples(name=None)),
    )


def _figures_from_scores(engine: Engine, risk_filter: RiskFilter, level: str) -> _Figures:
    base, risky = risk_filter.base_clause(), risk_filter.risk_clause()
    group_col = S.c.segment if level == "segment" else F.c.state
    with engine.connect() as conn:
        customers = int(conn.execute(select(func.count()).select_from(S).join(F, S.c.customer_id == F.c.customer_id)
                                     .where(base)).scalar())
        n, var, revenue = conn.execute(
            select(func.count(), func.sum(S.c.value_at_risk), func.sum(F.c.revenue))
            .select_from(S).join(F, S.c.customer_id == F.c.customer_id).where(base, risky)
        ).one()
        sources = dict(conn.execute(
            select(S.c.churn_source, func.count()).select_from(S)
            .join(F, S.c.customer_id == F.c.customer_id).where(base).group_by(S.c.churn_source)
        ).all())
        groups = conn.execute(
            select(group_col.label("group"), func.count().label("at_risk"),
                   func.sum(S.c.value_at_risk).label("value_at_risk"))
            .select_from(S).join(F, S.c.customer_id == F.c.customer_id).where(base, risky)
            .group_by(group_col)
        ).all()
    return _Figures(customers=customers, at_risk=int(n), value_at_risk=float(var or 0.0),
                    revenue=float(revenue or 0.0),
                    sources={str(k): int(v) for k, v in sources.items() if k is not None},
                    groups=[(_NO_GROUP if g is None else g, n, v) for g, n, v in groups])


def at_risk(engine: Engine, risk_filter: RiskFilter = RiskFilter(), *, top: int = 10) -> AtRisk:
    """Figures, the `top` customers by value at risk and value at risk per state (or, for
    one state, per RFM segment). The figures add up from `agg_customers` when the filter allows
    (no probability floor), else from the scores. Raises NotAvailable before churn scores
    exist."""
    if not scores_available(engine):
        raise NotAvailable(_why_no_scores(engine))
    level = "segment" if risk_filter.place.kind == "state" else "state"
    facts = _risk_facts(engine, risk_filter)
    figures = (_figures_from_facts(facts, level) if facts is not None
               else _figures_from_scores(engine, risk_filter, level))
    by_group = pd.DataFrame(figures.groups, columns=["group", "at_risk", "value_at_risk"])
    by_group = by_group.astype({"at_risk": "int64", "value_at_risk": float})
    by_group = by_group.sort_values(["value_at_risk", "group"], ascending=[False, True], ignore_index=True)
    top_rows = at_risk_frame(engine, risk_filter, limit=top) if top > 0 else _empty_rows()
    return AtRisk(
        as_of=scores_as_of(engine), place=risk_filter.place, filter=risk_filter,
        customers=figures.customers, at_risk=figures.at_risk, value_at_risk=figures.value_at_risk,
        revenue=figures.revenue, top=top_rows, by_group=by_group, group_level=level,
        sources=figures.sources,
    )


def walk_band_by_value(engine: Engine, risk_filter: RiskFilter, limit: int | None) -> bool:
    """Whether the at-risk list is read fastest by walking the whole band in value order
    (index `ix_scores_band_var`) and keeping the rows of the place and segment, rather than
    by reading every customer of the place or segment and sorting.

    Walking reads about `limit` × band / (the filter's customers at risk) rows, the whole
    band without a limit; starting from the place reads its customers. A walked row costs
    about two of the place's (its features row is looked up in value order, all over the
    table: the whole at-risk list of Sudeste at 10M orders took 7.2-8.2 s walked against
    4.4-4.9 s from the region's customers). The counts come from `agg_customers`. SQLite has no statistics to tell SP (four in ten customers at risk: the
    top 20 are the band's first 50 rows) from AC (one in fifteen hundred: the walk would
    read the whole band)."""
    if not risk_filter.narrowed or risk_filter.min_prob is not None:
        return True
    if get_meta(engine, CUSTOMER_FACTS_META) is None:
        return True
    A = schema.agg_customers
    in_filter = [A.c[risk_filter.place.kind] == risk_filter.place.value] if not risk_filter.place.is_all else []
    if risk_filter.segment:
        in_filter.append(A.c.segment == risk_filter.segment)
    band = A.c.risk_band == AT_RISK_BAND
    counts = select(
        func.sum(case((band, A.c.customers), else_=0)),
        func.sum(case((and_(*in_filter), A.c.customers), else_=0)),
        func.sum(case((and_(band, *in_filter), A.c.customers), else_=0)),
    )
    with engine.connect() as conn:
        band_total, base, at_risk_in_filter = (int(v or 0) for v in conn.execute(counts).one())
    walked = band_total if limit is None else min(band_total, limit * band_total / max(at_risk_in_filter, 1))
    return 2 * walked <= base


def at_risk_query(risk_filter: RiskFilter, limit: int | None = None, *, walk_band: bool = True) -> Select:
    """The customers at risk, ranked by value at risk (then customer id). `walk_band`: see
    `walk_band_by_value` (the same rows either way)."""
    stmt = (
        select(S.c.customer_id, F.c.state, F.c.region, S.c.segment, F.c.last_purchase, F.c.orders,
               F.c.revenue, S.c.churn_prob, S.c.value_at_risk, S.c.risk_band, S.c.churn_source)
        .select_from(S).join(F, S.c.customer_id == F.c.customer_id)
        .where(risk_filter.base_clause(), risk_filter.risk_clause(band_index=walk_band))
        .order_by(S.c.value_at_risk.desc().nulls_last(), S.c.customer_id)
    )
    return stmt if limit is None else stmt.limit(limit)


def _rows_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "state", "region", "segment", "last_purchase",
                                        "orders", "revenue", "churn_probability",
                                        "expected_value_at_risk", "risk_band", "churn_source"])
    frame["last_purchase"] = pd.to_datetime(frame["last_purchase"], format="ISO8601")
    frame["recommended_action"] = [recommended_action(s, b) for s, b in
                                   zip(frame["segment"], frame["risk_band"], strict=True)]
    return frame[[*EXPORT_COLUMNS, "risk_band", "churn_source"]]


def _empty_rows() -> pd.DataFrame:
    return _rows_frame([])


def at_risk_frame(engine: Engine, risk_filter: RiskFilter, limit: int | None = None) -> pd.DataFrame:
    """The ranked at-risk rows (EXPORT_COLUMNS + risk_band, churn_source) as a DataFrame."""
    stmt = at_risk_query(risk_filter, limit, walk_band=walk_band_by_value(engine, risk_filter, limit))
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(stmt)]
    return _rows_frame(rows)


def count_at_risk(engine: Engine, risk_filter: RiskFilter) -> int:
    with engine.connect() as conn:
        # a count reads every row either way: the place's or segment's are fewer than the band's
        return int(conn.execute(
            select(func.count()).select_from(S).join(F, S.c.customer_id == F.c.customer_id)
            .where(risk_filter.base_clause(), risk_filter.risk_clause(band_index=not risk_filter.narrowed))
        ).scalar())


# --------------------------------------------------------------------------- CSV


def neutralise(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, tab, CR first)
    gets a leading apostrophe; other values are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _csv_row(row: tuple) -> list[Any]:
    (customer_id, state, region, segment, last_purchase, orders, revenue, prob, var,
     band, _source) = row
    return [
        neutralise(str(customer_id)), neutralise(state or ""), neutralise(region or ""),
        neutralise(segment or ""), _day(last_purchase), "" if orders is None else int(orders),
        _money(revenue), "" if prob is None else f"{float(prob):.4f}", _money(var),
        neutralise(recommended_action(segment, band)),
    ]


def _day(value: Any) -> str:
    if value is None:
        return ""
    return value.date().isoformat() if isinstance(value, dt.datetime) else str(value)[:10]


def _money(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.2f}"


def iter_at_risk_csv(engine: Engine, risk_filter: RiskFilter, limit: int | None = None,
                     chunk_rows: int = 5_000) -> Iterator[bytes]:
    """The at-risk CSV (UTF-8, CRLF, header `EXPORT_COLUMNS`, ranked by value at risk) in chunks of
    `chunk_rows` rows, read from the store as it is written: memory stays flat however
    long the list. Text cells are neutralised against formula injection."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180; also quotes a lone CR
    writer.writerow(EXPORT_COLUMNS)
    with engine.connect() as conn:
        stmt = at_risk_query(risk_filter, limit, walk_band=walk_band_by_value(engine, risk_filter, limit))
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(stmt)
        for partition in result.partitions(chunk_rows):
            for row in partition:
                writer.writerow(_csv_row(tuple(row)))
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


# --------------------------------------------------------------------------- predicted CLV for /ltv


def predicted_clv_by(engine: Engine, level: str = "state") -> pd.DataFrame:
    """Mean predicted CLV over the next H days per state or region (index: the group,
    column `predicted_clv`), from the last refresh. Raises NotAvailable without CLV scores."""
    if level not in ("state", "region"):
        raise ValueError(f"level must be state or region, not {level!r}")
    facts = customer_facts(engine)
    if facts is not None:
        scored = facts[facts["clv_customers"] > 0]
        sums = scored.groupby(scored[level].fillna(_NO_GROUP))[["clv", "clv_customers"]].sum()
        frame = pd.DataFrame({"group": sums.index, "predicted_clv": sums["clv"] / sums["clv_customers"]})
    else:
        group = F.c[level]
        with engine.connect() as conn:
            rows = conn.execute(
                select(group.label("group"), func.avg(S.c.clv).label("predicted_clv"))
                .select_from(S).join(F, S.c.customer_id == F.c.customer_id)
                .where(S.c.clv.is_not(None)).group_by(group)
            ).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=["group", "predicted_clv"])
        frame["group"] = frame["group"].fillna(_NO_GROUP)
    if frame.empty:
        raise NotAvailable("There is no predicted CLV (BG/NBD and Gamma-Gamma were not fitted).")
    return frame.set_index("group")[["predicted_clv"]].astype(float)
