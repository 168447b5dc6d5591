"""`/churn-risk [STATE|REGION|all] [top N] [segment NAME] [min-prob P]`: who is about to be
lost, and how much value goes with them.

Also home of the filter grammar that `/export-at-risk` and `pulse export-at-risk` share.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from analytics import charts
from analytics.rfm import SEGMENT_NAMES
from analytics.risk import RiskFilter, at_risk, scoring_info
from bot.answers import Answer, Button, Chart, Figure, fmt_int, fmt_money, fmt_pct
from bot.commands.args import float_option, int_option, parse_args
from bot.commands.common import base_answer, subtitle, table
from bot.router import Command, CommandContext, UsageError
from storage.geography import Place

DEFAULT_TOP = 10
MAX_TOP = 100


@dataclass(frozen=True)
class RiskArgs:
    """A parsed at-risk filter, and the options around it."""

    filter: RiskFilter
    top: int = DEFAULT_TOP
    limit: int | None = None

    def filter_text(self) -> str:
        """The filter as command words ("SP segment at-risk min-prob 0.8"), for buttons and audit."""
        return filter_words(self.filter.place, self.filter.segment, self.filter.min_prob)


def filter_words(place: Place, segment: str | None, min_prob: float | None) -> str:
    words = []
    if not place.is_all:
        words.append(shlex.quote(place.value))
    if segment:
        words += ["segment", segment_slug(segment)]
    if min_prob is not None:
        words += ["min-prob", f"{min_prob:g}"]
    return " ".join(words)


def _fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def segment_slug(name: str) -> str:
    """"Can't Lose Them" → "cant-lose-them" (what the segment option accepts)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("'", "")).strip("-")


def match_segment(text: str) -> str:
    """The RFM segment named by `text` (any case, spaces/hyphens optional, or a unique
    prefix); a UsageError lists the names otherwise."""
    key = _fold(text)
    exact = [n for n in SEGMENT_NAMES if _fold(n) == key]
    found = exact or [n for n in SEGMENT_NAMES if key and _fold(n).startswith(key)]
    if len(found) == 1:
        return found[0]
    names = ", ".join(f"`{segment_slug(n)}`" for n in SEGMENT_NAMES)
    raise UsageError(f"I don't know the segment “{text}”. Segments: {names}.")


def parse_risk_args(ctx: CommandContext, args: list[str], *, with_top: bool = False,
                    with_limit: bool = False) -> RiskArgs:
    """Place, `segment NAME`, `min-prob P` (0–1 or a percentage), and `top N` / `limit N`."""
    options = ["segment", "min-prob", "min_prob", "minprob"]
    options += ["top"] if with_top else []
    options += ["limit"] if with_limit else []
    parsed = parse_args(args, options=tuple(options))
    for alias in ("min_prob", "minprob"):
        if alias in parsed.options:
            parsed.options["min-prob"] = parsed.options.pop(alias)
    min_prob = float_option(parsed, "min-prob", None, 0.0, 1.0)
    segment = match_segment(parsed.options["segment"]) if "segment" in parsed.options else None
    top = int_option(parsed, "top", DEFAULT_TOP, 1, MAX_TOP) if with_top else DEFAULT_TOP
    limit = None
    if with_limit and "limit" in parsed.options:
        limit = int_option(parsed, "limit", 0, 1, ctx.settings.export_max_rows)
    place = ctx.place(parsed.rest_text)
    return RiskArgs(RiskFilter(place, segment, min_prob), top=top, limit=limit)


def risk_definition(risk_filter: RiskFilter, high: float, horizon: int) -> str:
    if risk_filter.min_prob is not None:
        return f"churn probability ≥ {risk_filter.min_prob:.0%}"
    return f"risk band high: churn probability ≥ {high:.0%} (no purchase in the next {horizon} days)"


def horizon_and_high(ctx: CommandContext) -> tuple[int, float]:
    """The churn horizon and high-risk threshold the stored scores were made with."""
    info = scoring_info(ctx.engine) or {}
    return (int(info.get("horizon_days", ctx.settings.churn_horizon_days)),
            float(info.get("risk_high", ctx.settings.risk_high)))


def source_notes(ctx: CommandContext, sources: dict[str, int]) -> list[str]:
    """Where the probabilities and values come from, and every fallback in force."""
    info = scoring_info(ctx.engine) or {}
    horizon = info.get("horizon_days", ctx.settings.churn_horizon_days)
    notes = []
    sup = info.get("supervised") or {}
    if sources.get("supervised"):
        auc = sup.get("roc_auc")
        auc_text = f", out-of-time ROC-AUC {auc:.3f}" if isinstance(auc, float) else ""
        notes.append(f"Churn probabilities: supervised model `{sup.get('version')}`{auc_text} "
                     "(`/model` shows its card).")
    if sources.get("bgnbd"):
        why = f" ({sup.get('reason')})" if sup.get("reason") else ""
        notes.append(f"The supervised churn model could not be trained{why}; "
                     f"{fmt_int(sources['bgnbd'])} customers' probabilities come from BG/NBD "
                     f"instead (P(no purchase in {horizon} days) = 1 − P(alive) × P(a purchase "
                     "in the window | alive)).")
    bg = info.get("bgnbd") or {}
    if bg.get("status") == "failed":
        notes.append(f"BG/NBD + Gamma-Gamma did not converge ({bg.get('reason')}), so no CLV: "
                     f"expected value = the customer's historical spend per {horizon} days.")
    else:
        notes.append(f"Expected value at risk = churn probability × predicted CLV over the next "
                     f"{horizon} days (BG/NBD + Gamma-Gamma, discounted).")
    return notes


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    ra = parse_risk_args(ctx, args, with_top=True)
    f = ra.filter
    base = base_answer(ctx, "/churn-risk", "Churn risk", f.place)
    res = at_risk(ctx.engine, f, top=ra.top)
    if res.as_of is not None:
        base["as_of"] = res.as_of
    cur = ctx.settings.currency
    horizon, high = horizon_and_high(ctx)
    if f.segment:
        base["filter_label"] += f" · segment {f.segment}"
    who = f"{fmt_int(res.at_risk)} of {fmt_int(res.customers)} customers ({fmt_pct(res.share)})"
    summary = (f"{who} are at risk — {risk_definition(f, high, horizon)}.\n"
               f"Expected value at risk over the next {horizon} days: "
               f"*{fmt_money(res.value_at_risk, cur)}*; their revenue to date: "
               f"{fmt_money(res.revenue, cur)}. The list is ranked by value at risk.")
    figures = [
        Figure("Customers", fmt_int(res.customers), res.customers),
        Figure("Customers at risk", fmt_int(res.at_risk), res.at_risk),
        Figure("Share of the base", fmt_pct(res.share), res.share),
        Figure(f"Value at risk (next {horizon} days)", fmt_money(res.value_at_risk, cur), res.value_at_risk),
        Figure("Revenue to date of those at risk", fmt_money(res.revenue, cur), res.revenue),
    ]
    top = res.top.copy()
    tables = [table(f"Top {len(top)} by value at risk", top,
                    ["customer_id", "state", "segment", "last_purchase", "orders", "revenue",
                     "churn_probability", "expected_value_at_risk", "recommended_action"],
                    rename={"customer_id": "customer", "last_purchase": "last purchase",
                            "churn_probability": "churn prob.", "expected_value_at_risk": "value at risk",
                            "recommended_action": "action"},
                    money=["revenue", "expected_value_at_risk"], pct=["churn_probability"],
                    ints=["orders"], dates=["last_purchase"])]
    level = res.group_level
    chart = charts.bar_chart(
        res.by_group.set_index("group")["value_at_risk"], f"Value at risk by {level}",
        subtitle(res.as_of, base["filter_label"]), value_format="money", currency=cur,
        note=f"Customers at risk: {risk_definition(f, high, horizon)}.")
    buttons = []
    if res.at_risk:
        buttons.append(Button("Export CSV", f"/export-at-risk {ra.filter_text()}".strip(),
                              "export_at_risk"))
    return Answer(**base, summary=summary, figures=figures, tables=tables,
                  charts=[Chart(f"churn-risk-by-{level}", f"Value at risk by {level}", chart)],
                  notes=source_notes(ctx, res.sources), buttons=buttons)


COMMAND = Command(
    name="churn-risk",
    usage="/churn-risk [STATE|REGION|all] [top N] [segment NAME] [min-prob P]",
    summary="Customers likely to be lost in the churn horizon, ranked by value at risk, with an export.",
    examples=("/churn-risk", "/churn-risk SP top 20", "/churn-risk sudeste segment at-risk min-prob 0.8"),
    handler=handle,
    cacheable=True,
    aliases=("churn", "at-risk", "risk"),
)
