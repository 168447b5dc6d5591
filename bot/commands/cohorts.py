"""`/cohorts [monthly|weekly] [STATE|REGION]`: acquisition cohorts and their retention."""

from __future__ import annotations

from analytics import charts
from analytics.cohorts import cohort_retention
from bot.answers import Answer, Chart, Figure, fmt_int, fmt_money, fmt_pct
from bot.commands.args import one_of, parse_args
from bot.commands.common import base_answer, empty_note, subtitle, table
from bot.router import Command, CommandContext

PERIOD_WORDS = {"monthly": "month", "month": "month", "months": "month",
                "weekly": "week", "week": "week", "weeks": "week"}


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    parsed = parse_args(args)
    period = PERIOD_WORDS[one_of(parsed, tuple(PERIOD_WORDS), "monthly")]
    place = ctx.place(parsed.rest_text)
    unit = "M" if period == "month" else "W"
    base = base_answer(ctx, "/cohorts", f"{'Monthly' if period == 'month' else 'Weekly'} cohorts", place)
    res = cohort_retention(ctx.engine, base["as_of"], place, period=period,
                           max_periods=12 if period == "month" else 12)
    if res.cohorts.empty:
        return empty_note(base, "customers")
    cur = ctx.settings.currency
    figures = [Figure("Cohorts", fmt_int(len(res.cohorts)), len(res.cohorts)),
               Figure("Customers", fmt_int(res.cohorts["size"].sum()), int(res.cohorts["size"].sum()))]
    for k, value in sorted(res.average.items()):
        figures.append(Figure(f"Average {unit}{k} retention", fmt_pct(value, 2), value))
    last = res.retention.tail(12 if period == "month" else 16)
    matrix = last.copy()
    matrix.columns = [f"{unit}{k}" for k in matrix.columns]
    sizes = res.cohorts.set_index("cohort").loc[matrix.index, "size"]
    heat = charts.heatmap(matrix, "Cohort retention", subtitle(res.as_of, place.label),
                          value_format="percent", row_label="Cohort (first purchase)",
                          col_label=f"{'Months' if period == 'month' else 'Weeks'} since first purchase",
                          row_sizes=sizes.to_numpy())
    cohorts_tbl = res.cohorts.tail(12).copy()
    for k in (1, 2, 3):
        if k in res.retention.columns:
            cohorts_tbl[f"{unit}{k}"] = res.retention.loc[cohorts_tbl["cohort"], k].to_numpy()
    m1 = res.average.get(1)
    summary = (f"On average {fmt_pct(m1, 2)} of a cohort buys again in the {('month' if period == 'month' else 'week')} "
               f"after its first purchase" if m1 is not None else "No cohort is old enough for retention yet")
    summary += f"; the current {period} ({res.current_period}) is still in progress." \
        if res.current_period_partial else "."
    return Answer(
        **base, summary=summary, figures=figures,
        tables=[table("Latest cohorts", cohorts_tbl,
                      ["cohort", "size", f"{unit}1", f"{unit}2", f"{unit}3", "revenue",
                       "revenue_per_customer"],
                      rename={"revenue_per_customer": "revenue / customer"},
                      ints=["size"], pct=[f"{unit}1", f"{unit}2", f"{unit}3"],
                      money=["revenue", "revenue_per_customer"],
                      note="Blank: the period has not been reached yet.")],
        charts=[Chart(f"cohorts-{period}-retention", "Cohort retention", heat)],
        notes=[f"Cohort revenue is in {cur}; retention = customers buying in period k / cohort size."
               ] + ([f"Total revenue of these cohorts: {fmt_money(res.cohorts['revenue'].sum(), cur)}."]
                    if len(res.cohorts) else []),
    )


COMMAND = Command(
    name="cohorts",
    usage="/cohorts [monthly|weekly] [STATE|REGION]",
    summary="Retention of first-purchase cohorts (heatmap), average M1–M3, revenue per cohort.",
    examples=("/cohorts", "/cohorts weekly", "/cohorts monthly RJ"),
    handler=handle,
    cacheable=True,
    aliases=("cohort", "retention"),
)
