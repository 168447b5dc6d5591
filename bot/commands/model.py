"""`/model`: the churn model's card — what it predicts, how well (out of time), on what."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from analytics.errors import NotAvailable
from analytics.model_store import load_card
from analytics.risk import RETRAIN_AT_CHANGE, scoring_info
from bot.answers import Answer, Figure, Table, fmt_int, fmt_num, fmt_pct
from bot.router import Command, CommandContext

TOP_FEATURES = 12


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    churn, clv = load_card(ctx.engine, "churn"), load_card(ctx.engine, "clv")
    if churn is None and clv is None:
        raise NotAvailable("No model has been trained yet: `pulse refresh` trains and stores it "
                           "(`pulse model evaluate` only measures it).")
    figures: list[Figure] = []
    tables: list[Table] = []
    notes: list[str] = []
    summary = ""
    as_of = None
    if churn is not None and churn.get("status") == "ok":
        summary, figures, tables, notes = _churn_card(churn)
        notes.append(_retraining(ctx, churn))
        as_of = churn.get("as_of")
    elif churn is not None:
        summary = (f"The supervised churn model could not be trained: {churn.get('reason')}. "
                   "Churn probabilities come from BG/NBD instead.")
        as_of = churn.get("as_of")
    if clv is not None:
        tables.append(_clv_table(clv))
        if clv.get("status") != "ok":
            notes.append(f"BG/NBD + Gamma-Gamma did not converge: {clv.get('reason')}. Expected "
                         "values fall back to each customer's historical spend per horizon.")
        as_of = as_of or clv.get("as_of")
    return Answer(
        command="/model", title="Churn model card",
        as_of=dt.date.fromisoformat(as_of) if as_of else None,
        summary=summary, figures=figures, tables=tables, notes=notes,
    )


def _churn_card(card: dict[str, Any]) -> tuple[str, list[Figure], list[Table], list[str]]:
    m = card.get("metrics", {})
    cut = card.get("cutoffs", {})
    rng = card.get("data_range", {})
    summary = (
        f"*{card.get('learner')}* with {card.get('calibration')} predicts "
        f"*{card.get('label')}*. Measured out of time: trained on features at {cut.get('train')} "
        f"with what happened in the next {card.get('horizon_days')} days, tested on customers at "
        f"{cut.get('test')}. The scoring model is refitted at {cut.get('final')} and scores "
        f"customers at {cut.get('scoring')}. Data: orders {rng.get('first_order')} to "
        f"{rng.get('last_order')}."
    )
    figures = [
        Figure("ROC-AUC (out of time)", fmt_num(m.get("roc_auc"), 3), m.get("roc_auc")),
        Figure("PR-AUC (churn class)", fmt_num(m.get("pr_auc"), 3), m.get("pr_auc")),
        Figure("Brier score", fmt_num(m.get("brier"), 4), m.get("brier")),
        Figure("Lift in the top decile", fmt_num(m.get("lift_top_decile"), 2), m.get("lift_top_decile")),
        Figure("Churn rate (test window)", fmt_pct(m.get("churn_rate")), m.get("churn_rate")),
        Figure("Test customers", fmt_int(m.get("customers")), m.get("customers")),
        Figure("Trained", str(card.get("trained_at", "")).replace("T", " "), card.get("trained_at")),
        Figure("Version", str(card.get("version")), card.get("version")),
    ]
    cv = card.get("selection", {}).get("cv_roc_auc", {})
    selection = pd.DataFrame({"learner": list(cv),
                              "CV ROC-AUC (training window)": [f"{v:.4f}" for v in cv.values()],
                              "chosen": ["yes" if k == card.get("kind") else "" for k in cv]})
    top = card.get("importance", [])[:TOP_FEATURES]
    importance = pd.DataFrame({"feature": [i["feature"] for i in top],
                               "ROC-AUC drop": [f"{i['importance']:+.4f}" for i in top],
                               "±": [f"{i['std']:.4f}" for i in top]})
    tables = [Table("Learner selection", selection)] if cv else []
    tables.append(Table("Permutation importance (test window)", importance,
                        note="Drop in ROC-AUC when the feature is shuffled; near 0 = not used."))
    notes = [
        "Features: " + ", ".join(card.get("features", [])) + ".",
        "Never used (they restate the label, see analytics/churn.py): "
        + ", ".join(card.get("excluded_features", [])) + ".",
        f"Training took {card.get('training_seconds')} s; data fingerprint "
        f"`{card.get('data_fingerprint')}`.",
    ]
    return summary, figures, tables, notes


def _retraining(ctx: CommandContext, card: dict[str, Any]) -> str:
    """When the refresh retrains this model, and whether the last refresh scored with it."""
    days = ctx.settings.churn_retrain_days
    rule = ("The refresh retrains it whenever the data or the as-of date change." if days == 0 else
            f"The refresh scores with it until its as-of date is {days} days past "
            f"{card.get('as_of')} or the purchases change by more than {RETRAIN_AT_CHANGE:.0%} "
            "(`analytics.churn_retrain_days`), then retrains it.")
    run = scoring_info(ctx.engine) or {}
    last = run.get("supervised") or {}
    if last.get("version") == card.get("version") and last.get("reused"):
        rule += f" The last refresh (as of {run.get('as_of')}) scored with it: {last['reused']}."
    return rule


def _clv_table(card: dict[str, Any]) -> Table:
    rows = [{"model": "BG/NBD + Gamma-Gamma", "status": card.get("status"),
             "version": card.get("version"), "fitted": str(card.get("trained_at", "")).replace("T", " ")}]
    for name in ("bgnbd", "gamma_gamma"):
        for key, value in (card.get(name) or {}).items():
            rows.append({"model": f"{name} {key}", "status": f"{value:.4g}", "version": "", "fitted": ""})
    return Table("CLV model (time unit: days)", pd.DataFrame(rows))


COMMAND = Command(
    name="model",
    usage="/model",
    summary="The churn model card: out-of-time metrics, features, training date; the CLV model's parameters.",
    examples=("/model",),
    handler=handle,
    cacheable=True,
    aliases=("model-card",),
)
