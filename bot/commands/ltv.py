"""`/ltv [state|region]`: lifetime value by geography, with quadrants and predicted CLV."""

from __future__ import annotations

from analytics import charts
from analytics.ltv import QUADRANTS, TOO_FEW, ltv_by_geography
from bot.answers import Answer, Chart, Figure, fmt_int, fmt_money
from bot.commands.args import one_of, parse_args
from bot.commands.common import base_answer, empty_note, subtitle, table
from bot.router import Command, CommandContext, UsageError


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    parsed = parse_args(args)
    level = one_of(parsed, ("state", "states", "region", "regions"), "state").rstrip("s")
    place = ctx.place(parsed.rest_text)
    if place.kind == "state":
        raise UsageError("`/ltv` compares states or regions; use `/ltv state`, `/ltv region` "
                         "or `/ltv state sudeste` (states of one region).")
    base = base_answer(ctx, "/ltv", f"Lifetime value by {level}", place)
    min_customers = ctx.settings.min_group_customers
    res = ltv_by_geography(ctx.engine, base["as_of"], place, level=level, min_customers=min_customers)
    if res.customers == 0:
        return empty_note(base, "customers")
    cur = ctx.settings.currency
    groups = res.groups.copy()
    predicted = _predicted_clv(ctx, level)
    if predicted is not None:
        groups = groups.merge(predicted, how="left", left_on="group", right_index=True)
    figures = [
        Figure("Customers", fmt_int(res.customers), res.customers),
        Figure("Revenue", fmt_money(res.revenue, cur), res.revenue),
        Figure("Average LTV to date", fmt_money(res.average_ltv, cur), res.average_ltv),
    ]
    if predicted is not None and "predicted_clv" in groups:
        total_pred = float((groups["predicted_clv"] * groups["customers"]).sum() / groups["customers"].sum())
        figures.append(Figure(f"Predicted CLV, next {ctx.settings.churn_horizon_days} days",
                              fmt_money(total_pred, cur), total_pred))
    figures.append(Figure("Thresholds", f"{fmt_int(res.volume_threshold)} customers · "
                          f"{fmt_money(res.ltv_threshold, cur)} LTV (medians)", None))
    classified = groups[groups["quadrant"] != TOO_FEW]
    sub = subtitle(res.as_of, place.label)
    chart = charts.scatter_chart(
        classified, "customers", "average_ltv", f"Customers vs average LTV by {level}", sub,
        label="group", size="revenue", xline=res.volume_threshold, yline=res.ltv_threshold,
        quadrant_labels=(QUADRANTS[(False, True)], QUADRANTS[(True, True)],
                         QUADRANTS[(False, False)], QUADRANTS[(True, False)]),
        log_x=True, value_format_x="number", value_format_y="money", currency=cur,
        x_label="Customers (log scale)", y_label="Average LTV")
    outliers = groups[groups["outlier"].fillna(False).astype(bool)]["group"].tolist()
    small = groups[groups["quadrant"] == TOO_FEW]["group"].tolist()
    notes = [f"Quadrants split at the median customers and median average LTV of the {level}s "
             f"with at least {min_customers} customers."]
    if small:
        notes.append(f"Not classified (fewer than {min_customers} customers): {', '.join(map(str, small))}.")
    if outliers:
        notes.append(f"Outliers (|z| > 2 on average LTV): {', '.join(map(str, outliers))}.")
    return Answer(
        **base, figures=figures, charts=[Chart(f"ltv-{level}-quadrants", "LTV quadrants", chart)],
        tables=[table(f"By {level}", groups,
                      ["group", "customers", "revenue", "average_ltv", "predicted_clv", "repeat_rate",
                       "quadrant"],
                      rename={"group": level, "average_ltv": "avg LTV", "predicted_clv": "pred. CLV",
                              "repeat_rate": "repeat"},
                      ints=["customers"], money=["revenue", "average_ltv", "predicted_clv"],
                      pct=["repeat_rate"])],
        notes=notes,
    )


def _predicted_clv(ctx: CommandContext, level: str):  # noqa: ANN202 - Series or None
    try:
        from analytics.risk import predicted_clv_by
    except ImportError:
        return None
    try:
        return predicted_clv_by(ctx.engine, level)
    except Exception:  # noqa: BLE001 - predicted CLV is an extra column; history still answers
        return None


COMMAND = Command(
    name="ltv",
    usage="/ltv [state|region] [REGION]",
    summary="Lifetime value by state or region: customers, average LTV, repeat rate, quadrants, predicted CLV.",
    examples=("/ltv", "/ltv region", "/ltv state nordeste"),
    handler=handle,
    cacheable=True,
)
